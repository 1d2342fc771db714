//! Pixel work shared by the OCR pipeline's processors: bilinear resize of an RGB8 region straight into the
//! normalised, planar BGR `f32` bytes a PP-OCR model reads.
//!
//! The arithmetic is fixed to match the Python baseline (bench/python/ocr_ort.py) operation for operation:
//! OpenCV's INTER_LINEAR sampling (half-pixel centres, edge clamped) in `f32`, then `v * scale + bias`, so the
//! two produce the same tensors to the last bit on the same pixels.

/// An RGB8 image, or a rectangle of one, as rows of interleaved pixels.
#[derive(Clone, Copy, Debug)]
pub struct RgbView<'a> {
    /// The whole image's pixels (`stride * rows * 3` bytes at least).
    pub pixels: &'a [u8],
    /// Pixels per row of `pixels`.
    pub stride: usize,
    /// The rectangle: left, top, width, height, in pixels.
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

/// Where the planes of one image go in an output tensor of little-endian `f32` bytes, `[3, rows, row_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct PlanarOut {
    /// Offset of the image's first plane, in elements.
    pub offset: usize,
    /// Elements between planes (rows x row_stride of the tensor).
    pub plane: usize,
    /// Elements between rows.
    pub row_stride: usize,
}

/// `v * scale + bias` maps a 0..255 sample to the model's range: PP-OCR's `(v / 255 - mean) / std`.
#[derive(Clone, Copy, Debug)]
pub struct Normalize {
    pub scale: f32,
    pub bias: f32,
}

/// PP-OCR's normalisation for both its detector and recogniser (rapidocr 3.10): `(v / 255 - 0.5) / 0.5`.
pub const PPOCR: Normalize = Normalize { scale: (2.0f64 / 255.0) as f32, bias: -1.0 };

/// One output coordinate's two source samples and the weight of the second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tap {
    pub i0: usize,
    pub i1: usize,
    pub f: f32,
}

/// Bilinear taps for scaling `src` samples to `dst`, OpenCV's INTER_LINEAR way: the centre of output sample
/// `d` maps to `(d + 0.5) * src / dst - 0.5`, clamped to the edge samples.
pub fn taps(src: usize, dst: usize) -> Vec<Tap> {
    let scale = src as f64 / dst as f64;
    let last = src.saturating_sub(1);
    (0..dst)
        .map(|d| {
            let pos = ((d as f64 + 0.5) * scale - 0.5).clamp(0.0, last as f64);
            let i0 = pos.floor() as usize;
            Tap { i0, i1: (i0 + 1).min(last), f: (pos - i0 as f64) as f32 }
        })
        .collect()
}

/// Scratch rows reused across calls, so resizing many crops allocates only when a crop is wider than any before.
#[derive(Default)]
pub struct Scratch {
    rows: [Vec<f32>; 2],
}

/// Resizes `src` to `dst_w` x `dst_h`, writing normalised B, G, R planes into `out` (little-endian `f32` bytes)
/// at `at`. Columns past `dst_w` in each output row are left as they are (the caller's padding).
///
/// Separable: each needed source row is interpolated horizontally once into a scratch row (two are kept, as
/// consecutive output rows mostly share their source rows when scaling up), then output rows blend two of them.
pub fn resize_into(
    src: RgbView<'_>,
    dst_w: usize,
    dst_h: usize,
    norm: Normalize,
    out: &mut [u8],
    at: PlanarOut,
    scratch: &mut Scratch,
) {
    if dst_w == 0 || dst_h == 0 || src.width == 0 || src.height == 0 {
        return;
    }
    let xt = taps(src.width, dst_w);
    let yt = taps(src.height, dst_h);
    let mut cached = [usize::MAX; 2];
    for row in &mut scratch.rows {
        row.clear();
        row.resize(dst_w * 3, 0.0);
    }
    for (dy, t) in yt.iter().enumerate() {
        // Keep the scratch rows holding source rows t.i0 and t.i1, in that order, computing only what is new.
        if cached[0] != t.i0 {
            if cached[1] == t.i0 {
                scratch.rows.swap(0, 1);
                cached.swap(0, 1);
            } else {
                horizontal(src, t.i0, &xt, &mut scratch.rows[0]);
                cached[0] = t.i0;
            }
        }
        if cached[1] != t.i1 {
            horizontal(src, t.i1, &xt, &mut scratch.rows[1]);
            cached[1] = t.i1;
        }
        let (fy, gy) = (t.f, 1.0 - t.f);
        let [top, bot] = &scratch.rows;
        let row = |c: usize| {
            let start = (at.offset + c * at.plane + dy * at.row_stride) * 4;
            start..start + dst_w * 4
        };
        // Plane 0 is blue: PP-OCR was trained on OpenCV's BGR images.
        let Ok([b, g, r]) = out.get_disjoint_mut([row(0), row(1), row(2)]) else { return };
        let planes = b.chunks_exact_mut(4).zip(g.chunks_exact_mut(4)).zip(r.chunks_exact_mut(4));
        for (((b, g), r), (t, u)) in planes.zip(top.chunks_exact(3).zip(bot.chunks_exact(3))) {
            let v = |c: usize| (gy * t[c] + fy * u[c]) * norm.scale + norm.bias;
            r.copy_from_slice(&v(0).to_le_bytes());
            g.copy_from_slice(&v(1).to_le_bytes());
            b.copy_from_slice(&v(2).to_le_bytes());
        }
    }
}

/// Interpolates source row `y` of `src` horizontally into `row` (interleaved RGB, `xt.len() * 3` samples).
fn horizontal(src: RgbView<'_>, y: usize, xt: &[Tap], row: &mut [f32]) {
    let start = ((src.y + y) * src.stride + src.x) * 3;
    let Some(line) = src.pixels.get(start..start + src.width * 3) else { return };
    for (o, t) in row.chunks_exact_mut(3).zip(xt) {
        let (p, q) = (&line[t.i0 * 3..t.i0 * 3 + 3], &line[t.i1 * 3..t.i1 * 3 + 3]);
        let (f, g) = (t.f, 1.0 - t.f);
        o[0] = g * f32::from(p[0]) + f * f32::from(q[0]);
        o[1] = g * f32::from(p[1]) + f * f32::from(q[1]);
        o[2] = g * f32::from(p[2]) + f * f32::from(q[2]);
    }
}

/// Decodes little-endian `f32` bytes (tests and callers that read a tensor back).
pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(pixels: &[u8], w: usize, h: usize) -> RgbView<'_> {
        RgbView { pixels, stride: w, x: 0, y: 0, width: w, height: h }
    }

    #[test]
    fn same_size_is_a_plain_normalised_copy_in_bgr_order() {
        let px: Vec<u8> = (0..2 * 3 * 3).map(|i| (i * 13) as u8).collect();
        let mut out = vec![0u8; 3 * 2 * 3 * 4];
        resize_into(
            view(&px, 3, 2),
            3,
            2,
            Normalize { scale: 1.0, bias: 0.0 },
            &mut out,
            PlanarOut { offset: 0, plane: 6, row_stride: 3 },
            &mut Scratch::default(),
        );
        let v = f32s(&out);
        for y in 0..2 {
            for x in 0..3 {
                for c in 0..3 {
                    assert_eq!(v[c * 6 + y * 3 + x], f32::from(px[(y * 3 + x) * 3 + 2 - c]));
                }
            }
        }
    }

    #[test]
    fn taps_follow_opencv_half_pixel_centres() {
        // Upscaling 2 -> 4: centres at -0.25 (clamped), 0.25, 0.75, 1.25 (clamped to 1).
        let t = taps(2, 4);
        assert_eq!(t[0], Tap { i0: 0, i1: 1, f: 0.0 });
        assert_eq!(t[1], Tap { i0: 0, i1: 1, f: 0.25 });
        assert_eq!(t[2], Tap { i0: 0, i1: 1, f: 0.75 });
        assert_eq!(t[3], Tap { i0: 1, i1: 1, f: 0.0 });
        // Downscaling 4 -> 2 samples between source pixels 0|1 and 2|3.
        let t = taps(4, 2);
        assert_eq!(t[0], Tap { i0: 0, i1: 1, f: 0.5 });
        assert_eq!(t[1], Tap { i0: 2, i1: 3, f: 0.5 });
    }

    #[test]
    fn a_sub_rectangle_is_resized_into_its_slot_and_padding_is_kept() {
        // 4x2 image, grey levels by column; resize the middle 2x2 to 4x2 into a 6 wide row with padding 7.
        let mut px = Vec::new();
        for _y in 0..2 {
            for x in 0..4u8 {
                px.extend_from_slice(&[x * 10, x * 10, x * 10]);
            }
        }
        let pad = 7.0f32.to_le_bytes();
        let mut out: Vec<u8> = std::iter::repeat_n(pad, 3 * 2 * 6).flatten().collect();
        let src = RgbView { pixels: &px, stride: 4, x: 1, y: 0, width: 2, height: 2 };
        let id = Normalize { scale: 1.0, bias: 0.0 };
        resize_into(
            src,
            4,
            2,
            id,
            &mut out,
            PlanarOut { offset: 0, plane: 12, row_stride: 6 },
            &mut Scratch::default(),
        );
        let v = f32s(&out);
        assert_eq!(&v[0..6], &[10.0, 12.5, 17.5, 20.0, 7.0, 7.0]);
        assert_eq!(&v[24..30], &[10.0, 12.5, 17.5, 20.0, 7.0, 7.0]);
    }

    #[test]
    fn ppocr_normalisation_maps_0_and_255_to_minus_one_and_one() {
        assert_eq!(0.0 * PPOCR.scale + PPOCR.bias, -1.0);
        assert!((255.0 * PPOCR.scale + PPOCR.bias - 1.0).abs() < 1e-6);
        for v in [0u8, 1, 100, 128, 254] {
            let direct = (f32::from(v) / 255.0 - 0.5) / 0.5;
            assert!((f32::from(v) * PPOCR.scale + PPOCR.bias - direct).abs() < 1e-6);
        }
    }
}
