//! The PP-OCR detector's input: the decoded image scaled to a size the network accepts and normalised.

use ocr_imaging::{PPOCR, PlanarOut, RgbView, Scratch, resize_into};

use crate::decode::Rgb8;

/// rapidocr's `Global.max_side_len`: the longer side is scaled down to this. rapidocr's detector would then
/// scale the *shorter* side up to 736 (`limit_type: min`); that is left out, as it multiplies the detector's
/// work many times over for wide images whose text is already legible.
pub const MAX_SIDE_LEN: usize = 2000;

/// The detector's input size for an `h` x `w` image (rapidocr's `reduce_max_side`): the longer side scaled to
/// at most `max_side`, then each side rounded to the nearest multiple of 32 (ties to even, as Python's
/// `round`), and at least 32. Returns (height, width).
pub fn det_size(h: usize, w: usize, max_side: usize) -> (usize, usize) {
    let mut ratio = 1.0f64;
    if h.max(w) > max_side {
        ratio = if h > w { max_side as f64 / h as f64 } else { max_side as f64 / w as f64 };
    }
    let round32 = |v: usize| (((((v as f64) * ratio) as usize) as f64 / 32.0).round_ties_even() as usize * 32).max(32);
    (round32(h), round32(w))
}

/// The detector's `x`: `f32 [1, 3, height, width]` as little-endian bytes, B, G, R planes.
pub struct DetInput {
    pub width: usize,
    pub height: usize,
    pub bytes: Vec<u8>,
}

pub fn det_input(img: &Rgb8, max_side: usize) -> DetInput {
    let (height, width) = det_size(img.height, img.width, max_side);
    let mut bytes = vec![0u8; 3 * height * width * 4];
    let src = RgbView { pixels: &img.pixels, stride: img.width, x: 0, y: 0, width: img.width, height: img.height };
    let at = PlanarOut { offset: 0, plane: height * width, row_stride: width };
    resize_into(src, width, height, PPOCR, &mut bytes, at, &mut Scratch::default());
    DetInput { width, height, bytes }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_to_32_and_the_longer_side_is_limited() {
        assert_eq!(det_size(200, 470, 2000), (192, 480)); // 6.25 -> 6, 14.69 -> 15
        assert_eq!(det_size(48, 80, 2000), (64, 64)); // 1.5 -> 2 and 2.5 -> 2: ties to even
        assert_eq!(det_size(10, 10, 2000), (32, 32));
        assert_eq!(det_size(1000, 4000, 2000), (512, 1984)); // 500 -> 15.6 -> 16, 2000 -> 62.5 -> 62
        assert_eq!(det_size(4000, 1000, 2000), (1984, 512));
    }

    #[test]
    fn a_white_image_normalises_to_ones() {
        let img = Rgb8 { width: 40, height: 30, pixels: vec![255; 40 * 30 * 3] };
        let x = det_input(&img, MAX_SIDE_LEN);
        assert_eq!((x.height, x.width), (32, 32));
        let v = ocr_imaging::f32s(&x.bytes);
        assert_eq!(v.len(), 3 * 32 * 32);
        assert!(v.iter().all(|&v| (v - 1.0).abs() < 1e-6));
    }

    /// Compares with arrays the Python baseline dumped: `OCR_PARITY_DIRS=dir1:dir2 cargo test ... -- --nocapture`
    /// where each dir holds `image.png` (or `.jpg`), `meta.txt` (`W0 H0 W H ...`), `rgb.bin` and `x.bin`.
    #[test]
    fn matches_the_python_baseline_when_given_its_dumps() {
        let Ok(dirs) = std::env::var("OCR_PARITY_DIRS") else { return };
        for dir in dirs.split(':') {
            let read = |name: &str| std::fs::read(format!("{dir}/{name}")).unwrap();
            let file = std::fs::read(format!("{dir}/image.png"))
                .or_else(|_| std::fs::read(format!("{dir}/image.jpg")))
                .unwrap();
            let meta: Vec<usize> = String::from_utf8(read("meta.txt"))
                .unwrap()
                .lines()
                .next()
                .unwrap()
                .split_whitespace()
                .map(|v| v.parse().unwrap())
                .collect();
            let img = crate::decode::decode(&file, crate::decode::Limits::default()).unwrap();
            assert_eq!((img.width, img.height), (meta[0], meta[1]), "{dir}");
            let rgb = read("rgb.bin");
            let pixel_diff = img.pixels.iter().zip(&rgb).map(|(a, b)| a.abs_diff(*b)).max().unwrap_or(0);
            let start = std::time::Instant::now();
            for _ in 0..9 {
                let img = crate::decode::decode(&file, crate::decode::Limits::default()).unwrap();
                std::hint::black_box(det_input(&img, MAX_SIDE_LEN));
            }
            let ms = start.elapsed().as_secs_f64() * 1000.0 / 9.0;
            let x = det_input(&img, MAX_SIDE_LEN);
            assert_eq!((x.width, x.height), (meta[2], meta[3]), "{dir}");
            let (ours, theirs) = (ocr_imaging::f32s(&x.bytes), ocr_imaging::f32s(&read("x.bin")));
            assert_eq!(ours.len(), theirs.len());
            let diff = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            let same = ours.iter().zip(&theirs).filter(|(a, b)| a.to_bits() == b.to_bits()).count();
            println!(
                "{dir}: pixels max diff {pixel_diff}; x {}x{}: {same}/{} identical, max |diff| {diff:e}; \
                 decode + det_input {ms:.2} ms",
                x.width,
                x.height,
                ours.len()
            );
            if file.starts_with(b"\x89PNG") {
                assert_eq!(pixel_diff, 0, "{dir}");
                assert!(diff < 1e-5, "{dir}");
            }
        }
    }
}
