//! Decoding an uploaded PNG or JPEG file into RGB8 pixels, refusing what is not an image or is too large.
//!
//! Every failure here is the client's (a garbage upload, an image past the limits), so the messages are
//! written for them. Sizes are checked from the header, before the pixel buffer is allocated.

use std::io::Cursor;

use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

/// The largest image accepted: per side and in pixels (40 MP is a large phone photo; past it the decoded
/// pixels alone exceed 120 MB).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_side: u32,
    pub max_pixels: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_side: 8192, max_pixels: 40_000_000 }
    }
}

/// Interleaved RGB8 pixels, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Rgb8 {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
const JPEG_MAGIC: &[u8] = b"\xff\xd8\xff";

/// Decodes a PNG or JPEG file. Transparent pixels are composited over white: text is usually drawn dark on a
/// transparent background, and dropping the alpha would leave it dark on black.
pub fn decode(data: &[u8], limits: Limits) -> Result<Rgb8, String> {
    if data.is_empty() {
        return Err("the image is empty".into());
    }
    if data.starts_with(PNG_MAGIC) {
        decode_png(data, limits)
    } else if data.starts_with(JPEG_MAGIC) {
        decode_jpeg(data, limits)
    } else {
        Err(format!(
            "the image is neither PNG nor JPEG ({} bytes starting {:02x?})",
            data.len(),
            &data[..data.len().min(4)]
        ))
    }
}

fn check_size(width: u32, height: u32, limits: Limits) -> Result<(), String> {
    if width == 0 || height == 0 {
        return Err(format!("the image is {width}x{height} pixels"));
    }
    if width > limits.max_side || height > limits.max_side || u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(format!(
            "the image is {width}x{height} pixels; at most {} per side and {} in all are accepted",
            limits.max_side, limits.max_pixels
        ));
    }
    Ok(())
}

fn decode_png(data: &[u8], limits: Limits) -> Result<Rgb8, String> {
    let mut decoder = png::Decoder::new(Cursor::new(data));
    // Palette and low bit depths expanded to 8 bits, tRNS to an alpha channel, 16 bits cut to their high byte.
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(|e| format!("cannot decode the PNG image: {e}"))?;
    let (width, height) = reader.info().size();
    check_size(width, height, limits)?;
    let size = reader.output_buffer_size().ok_or("the PNG image is too large")?;
    let mut buf = vec![0u8; size];
    let frame = reader.next_frame(&mut buf).map_err(|e| format!("cannot decode the PNG image: {e}"))?;
    buf.truncate(frame.buffer_size());
    let (color, _) = reader.output_color_type();
    let channels = match color {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => return Err("the PNG palette could not be expanded".into()),
    };
    let (w, h) = (width as usize, height as usize);
    let pixels =
        if channels == 3 && frame.line_size == w * 3 { buf } else { to_rgb(buf, w, h, frame.line_size, channels) };
    Ok(Rgb8 { width: w, height: h, pixels })
}

fn decode_jpeg(data: &[u8], limits: Limits) -> Result<Rgb8, String> {
    // The decoder's own size cap is lifted to JPEG's largest so that `check_size` gives the message.
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX));
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(data), options);
    decoder.decode_headers().map_err(|e| format!("cannot decode the JPEG image: {e}"))?;
    let (width, height) = decoder.dimensions().ok_or("cannot decode the JPEG image: no frame header")?;
    check_size(width as u32, height as u32, limits)?;
    let channels = decoder.output_colorspace().map_or(3, |c| c.num_components());
    let size = decoder.output_buffer_size().ok_or("the JPEG image is too large")?;
    let mut buf = vec![0u8; size];
    decoder.decode_into(&mut buf).map_err(|e| format!("cannot decode the JPEG image: {e}"))?;
    let (w, h) = (width, height);
    if channels == 3 {
        return Ok(Rgb8 { width: w, height: h, pixels: buf });
    }
    Ok(Rgb8 { width: w, height: h, pixels: to_rgb(buf, w, h, w * channels, channels) })
}

/// Gray, gray+alpha, RGB or RGBA rows (`line` bytes apart) -> packed RGB, alpha composited over white with
/// rounding: `(c * a + 255 * (255 - a) + 127) / 255`, as the Python baseline does. Three or more channels are
/// packed in place (a 40 MP RGBA image would otherwise hold 280 MB at once).
fn to_rgb(mut buf: Vec<u8>, width: usize, height: usize, line: usize, channels: usize) -> Vec<u8> {
    let over_white = |c: u8, a: u8| ((u32::from(c) * u32::from(a) + 255 * (255 - u32::from(a)) + 127) / 255) as u8;
    let pixels = width * height;
    if channels >= 3 {
        // Every pixel moves to an index no greater than the one it is read from, so a forward pass is safe.
        for y in 0..height {
            for x in 0..width {
                let (src, dst) = (y * line + x * channels, (y * width + x) * 3);
                let Some(p) = buf.get(src..src + channels) else { break };
                let rgb = if channels == 4 {
                    [over_white(p[0], p[3]), over_white(p[1], p[3]), over_white(p[2], p[3])]
                } else {
                    [p[0], p[1], p[2]]
                };
                buf[dst..dst + 3].copy_from_slice(&rgb);
            }
        }
        buf.resize(pixels * 3, 255);
        return buf;
    }
    let mut out = Vec::with_capacity(pixels * 3);
    for row in buf.chunks(line.max(1)).take(height) {
        let row = &row[..(width * channels).min(row.len())];
        if channels == 1 {
            row.iter().for_each(|&v| out.extend_from_slice(&[v, v, v]));
        } else {
            row.chunks_exact(2).for_each(|p| out.extend_from_slice(&[over_white(p[0], p[1]); 3]));
        }
    }
    out.resize(pixels * 3, 255);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32, color: png::ColorType, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().unwrap();
        w.write_image_data(data).unwrap();
        w.finish().unwrap();
        out
    }

    #[test]
    fn rgb_png_round_trips() {
        let px: Vec<u8> = (0..2 * 3 * 3).map(|i| i as u8 * 7).collect();
        let img = decode(&png(3, 2, png::ColorType::Rgb, &px), Limits::default()).unwrap();
        assert_eq!((img.width, img.height), (3, 2));
        assert_eq!(img.pixels, px);
    }

    #[test]
    fn gray_and_alpha_pngs_become_rgb_over_white() {
        let img = decode(&png(2, 1, png::ColorType::Grayscale, &[0, 200]), Limits::default()).unwrap();
        assert_eq!(img.pixels, [0, 0, 0, 200, 200, 200]);
        let img = decode(&png(2, 1, png::ColorType::GrayscaleAlpha, &[0, 255, 0, 0]), Limits::default()).unwrap();
        assert_eq!(img.pixels, [0, 0, 0, 255, 255, 255]);
        // Opaque black, fully transparent black, half-transparent black.
        let rgba = [0, 0, 0, 255, 0, 0, 0, 0, 0, 0, 0, 128];
        let img = decode(&png(3, 1, png::ColorType::Rgba, &rgba), Limits::default()).unwrap();
        assert_eq!(img.pixels, [0, 0, 0, 255, 255, 255, 127, 127, 127]);
    }

    #[test]
    fn colour_and_grey_jpegs_decode_to_rgb() {
        // Pillow reads these (made by Pillow at quality 95) as the values asserted, within a level or two.
        let near = |got: &[u8], want: [u8; 3]| got.iter().zip(want).all(|(g, w)| g.abs_diff(w) <= 3);
        let img = decode(include_bytes!("../testdata/red_blue.jpg"), Limits::default()).unwrap();
        assert_eq!((img.width, img.height), (16, 16));
        let px = |x: usize, y: usize| &img.pixels[(y * 16 + x) * 3..(y * 16 + x) * 3 + 3];
        assert!(near(px(0, 8), [220, 30, 30]) && near(px(15, 8), [31, 30, 220]), "{:?} {:?}", px(0, 8), px(15, 8));
        let img = decode(include_bytes!("../testdata/gray.jpg"), Limits::default()).unwrap();
        assert_eq!(img.pixels.len(), 16 * 16 * 3);
        assert!(near(&img.pixels[8 * 16 * 3..8 * 16 * 3 + 3], [87, 87, 87]), "{:?}", &img.pixels[8 * 48..8 * 48 + 3]);
    }

    #[test]
    fn garbage_empty_and_truncated_files_are_refused() {
        assert!(decode(b"", Limits::default()).unwrap_err().contains("empty"));
        assert!(decode(b"GIF89a....", Limits::default()).unwrap_err().contains("neither PNG nor JPEG"));
        let file = png(4, 4, png::ColorType::Rgb, &[9; 48]);
        assert!(decode(&file[..file.len() - 20], Limits::default()).unwrap_err().contains("PNG"));
        assert!(decode(b"\xff\xd8\xff\xe0garbage", Limits::default()).unwrap_err().contains("JPEG"));
    }

    #[test]
    fn images_past_the_limits_are_refused_from_their_header() {
        let file = png(30, 20, png::ColorType::Rgb, &[0; 30 * 20 * 3]);
        let side = Limits { max_side: 25, max_pixels: 10_000 };
        assert!(decode(&file, side).unwrap_err().contains("30x20"));
        let area = Limits { max_side: 100, max_pixels: 599 };
        assert!(decode(&file, area).unwrap_err().contains("at most"));
        assert!(decode(&file, Limits { max_side: 30, max_pixels: 600 }).is_ok());
    }
}
