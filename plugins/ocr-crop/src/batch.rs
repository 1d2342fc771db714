//! The recogniser's batch: each text box cropped from the original pixels, scaled to height 48 with its aspect
//! kept, and padded to one common width (rapidocr's `resize_norm_img`).

use ocr_imaging::{PPOCR, PlanarOut, RgbView, Scratch, resize_into};

use crate::boxes::TextBox;

/// PP-OCR's recogniser reads lines 48 pixels tall.
pub const REC_HEIGHT: usize = 48;
/// rapidocr's `rec_img_shape` width: no batch is narrower than this.
pub const REC_MIN_WIDTH: usize = 320;
/// No batch is wider than this (a line 85 times longer than it is tall): beyond it every row of the batch
/// would cost megabytes of padding, so longer lines are squeezed to fit instead.
pub const REC_MAX_WIDTH: usize = 4096;

/// `f32 [n, 3, 48, width]` as little-endian bytes, one row per box, in the boxes' order.
pub struct RecBatch {
    pub n: usize,
    pub width: usize,
    pub bytes: Vec<u8>,
}

/// The batch width: 48 x the widest box's aspect ratio, at least 320 and at most `REC_MAX_WIDTH`.
pub fn batch_width(boxes: &[TextBox]) -> usize {
    let mut max_ratio = REC_MIN_WIDTH as f64 / REC_HEIGHT as f64;
    for b in boxes {
        max_ratio = max_ratio.max((b.x1 - b.x0) as f64 / (b.y1 - b.y0) as f64);
    }
    ((REC_HEIGHT as f64 * max_ratio) as usize).min(REC_MAX_WIDTH)
}

/// Crops `boxes` out of the `width` x `height` RGB8 image into the recogniser's batch. Padding is 0 after
/// normalisation (mid-grey), as rapidocr pads.
pub fn rec_batch(rgb: &[u8], width: usize, height: usize, boxes: &[TextBox]) -> RecBatch {
    let w = batch_width(boxes);
    let row = 3 * REC_HEIGHT * w;
    let mut bytes = vec![0u8; boxes.len() * row * 4];
    let mut scratch = Scratch::default();
    for (i, b) in boxes.iter().enumerate() {
        let (x1, y1) = (b.x1.min(width), b.y1.min(height));
        let (cw, ch) = (x1.saturating_sub(b.x0), y1.saturating_sub(b.y0));
        if cw == 0 || ch == 0 {
            continue;
        }
        let resized_w = ((REC_HEIGHT as f64 * (cw as f64 / ch as f64)).ceil() as usize).clamp(1, w);
        let src = RgbView { pixels: rgb, stride: width, x: b.x0, y: b.y0, width: cw, height: ch };
        let at = PlanarOut { offset: i * row, plane: REC_HEIGHT * w, row_stride: w };
        resize_into(src, resized_w, REC_HEIGHT, PPOCR, &mut bytes, at, &mut scratch);
    }
    RecBatch { n: boxes.len(), width: w, bytes }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tb(x0: usize, y0: usize, x1: usize, y1: usize) -> TextBox {
        TextBox { x0, y0, x1, y1, score: 1.0 }
    }

    #[test]
    fn width_follows_the_widest_box_within_bounds() {
        assert_eq!(batch_width(&[tb(0, 0, 10, 10)]), 320);
        assert_eq!(batch_width(&[tb(0, 0, 10, 10), tb(0, 0, 400, 20)]), 960);
        assert_eq!(batch_width(&[tb(0, 0, 8000, 10)]), REC_MAX_WIDTH);
    }

    #[test]
    fn crops_are_scaled_to_48_and_padded_with_zero() {
        // 100x40 image: black left half, white right half. Box 1 is all black (20x8 -> 120x48), box 2 spans the
        // edge (40x10 -> 192x48).
        let (w, h) = (100, 40);
        let mut rgb = vec![255u8; w * h * 3];
        for y in 0..h {
            for x in 0..50 {
                rgb[(y * w + x) * 3..(y * w + x) * 3 + 3].fill(0);
            }
        }
        let batch = rec_batch(&rgb, w, h, &[tb(10, 10, 30, 18), tb(30, 20, 70, 30)]);
        assert_eq!((batch.n, batch.width), (2, 320));
        let v = ocr_imaging::f32s(&batch.bytes);
        let at = |i: usize, c: usize, y: usize, x: usize| v[((i * 3 + c) * REC_HEIGHT + y) * 320 + x];
        for c in 0..3 {
            for y in [0, 23, 47] {
                assert_eq!(at(0, c, y, 0), -1.0);
                assert_eq!(at(0, c, y, 119), -1.0);
                assert_eq!(at(0, c, y, 120), 0.0);
                assert_eq!(at(1, c, y, 0), -1.0);
                assert!((at(1, c, y, 191) - 1.0).abs() < 1e-6);
                assert_eq!(at(1, c, y, 192), 0.0);
            }
        }
    }
}
