//! Text boxes from the detector's probability map: DB post-processing (rapidocr's `DBPostProcess`) with
//! axis-aligned boxes, as the pipeline reads horizontal text.
//!
//! Threshold, 2x2 dilation, 8-connected regions, a score per region (mean probability over its box), unclip
//! (grow by area x ratio / perimeter), scale to the original image, clamp, drop slivers, sort in reading order.
//! Regions are found on horizontal runs with union-find: DB maps are solid blobs, so a row holds a few runs
//! and the work is a pass over the map plus a little per run, with no recursion and no per-pixel labels.

/// Post-processing thresholds; the defaults are rapidocr 3.10's (config.yaml, `Det`).
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// A pixel is text when its probability is above this.
    pub thresh: f32,
    /// A region is kept when its box's mean probability is at least this.
    pub box_thresh: f64,
    /// How far a box grows: its area x this / its perimeter (DB shrinks text regions when it is trained).
    pub unclip_ratio: f64,
    /// At most this many regions are considered, in raster order of their first pixel.
    pub max_candidates: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params { thresh: 0.3, box_thresh: 0.5, unclip_ratio: 1.6, max_candidates: 1000 }
    }
}

/// rapidocr's `min_size`: regions whose shorter side is under this many map pixels are noise.
const MIN_SIZE: f64 = 3.0;
/// rapidocr's `_BOX_SORT_Y_THRESHOLD`: boxes whose tops are closer than this (original pixels) share a line.
const LINE_Y_TOLERANCE: usize = 10;

/// A text box in original image pixels: the crop is columns `x0..x1` and rows `y0..y1`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TextBox {
    pub x0: usize,
    pub y0: usize,
    pub x1: usize,
    pub y1: usize,
    /// Mean detector probability over the region's box, before it grew.
    pub score: f64,
}

/// Inclusive bounding box of a region, in map pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub xmin: usize,
    pub xmax: usize,
    pub ymin: usize,
    pub ymax: usize,
}

/// A horizontal run of set pixels: row `y`, columns `x0..x1`.
#[derive(Clone, Copy)]
struct Run {
    y: u32,
    x0: u32,
    x1: u32,
}

fn find(parent: &mut [u32], mut i: u32) -> u32 {
    while parent[i as usize] != i {
        let up = parent[parent[i as usize] as usize];
        parent[i as usize] = up;
        i = up;
    }
    i
}

/// The 8-connected regions of `prob > thresh` after a 2x2 dilation (OpenCV's, anchored at the kernel's
/// bottom-right: a pixel is set when it or its left, upper or upper-left neighbour is), in raster order of
/// their first pixel.
pub fn regions(prob: &[f32], width: usize, height: usize, thresh: f32) -> Vec<Region> {
    let mut runs: Vec<Run> = Vec::new();
    let mut row_start = Vec::with_capacity(height + 1);
    let mut prev = vec![false; width];
    let mut cur = vec![false; width];
    let mut parent: Vec<u32> = Vec::new();
    for y in 0..height {
        let Some(line) = prob.get(y * width..(y + 1) * width) else { break };
        for (c, &p) in cur.iter_mut().zip(line) {
            *c = p > thresh;
        }
        row_start.push(runs.len());
        let mut open: Option<usize> = None;
        let mut left = false;
        for x in 0..=width {
            let set = x < width && {
                let here = cur[x] || prev[x];
                let d = here || left;
                left = here;
                d
            };
            match (set, open) {
                (true, None) => open = Some(x),
                (false, Some(x0)) => {
                    runs.push(Run { y: y as u32, x0: x0 as u32, x1: x as u32 });
                    parent.push((runs.len() - 1) as u32);
                    open = None;
                }
                _ => {}
            }
        }
        std::mem::swap(&mut prev, &mut cur);
        if y > 0 {
            // Join each run with the runs of the row above it touches, diagonals included: [a0, a1) and
            // [c0, c1) touch when a0 <= c1 and c0 <= a1. The run ending first cannot touch anything further on.
            let (mut a, a_end) = (row_start[y - 1], row_start[y]);
            let (mut c, c_end) = (row_start[y], runs.len());
            while a < a_end && c < c_end {
                let (ra, rc) = (runs[a], runs[c]);
                if ra.x0 <= rc.x1 && rc.x0 <= ra.x1 {
                    let (pa, pc) = (find(&mut parent, a as u32), find(&mut parent, c as u32));
                    // The root is the earlier run, so a region's root is its first run in raster order.
                    if pa != pc {
                        parent[pa.max(pc) as usize] = pa.min(pc);
                    }
                }
                if ra.x1 < rc.x1 {
                    a += 1;
                } else {
                    c += 1;
                }
            }
        }
    }
    // A region first appears at its root run, so regions come out in the order of their roots.
    let mut slot = vec![u32::MAX; runs.len()];
    let mut out: Vec<Region> = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let r = find(&mut parent, i as u32) as usize;
        let (x0, x1, y) = (run.x0 as usize, run.x1 as usize - 1, run.y as usize);
        if slot[r] == u32::MAX {
            slot[r] = out.len() as u32;
            out.push(Region { xmin: x0, xmax: x1, ymin: y, ymax: y });
        } else {
            let b = &mut out[slot[r] as usize];
            b.xmin = b.xmin.min(x0);
            b.xmax = b.xmax.max(x1);
            b.ymax = y;
        }
    }
    out
}

/// Mean probability over a region's box (rapidocr's `box_score_fast` for an axis-aligned box).
fn box_score(prob: &[f32], width: usize, r: &Region) -> f64 {
    let mut sum = 0.0f64;
    for y in r.ymin..=r.ymax {
        let row = &prob[y * width + r.xmin..=y * width + r.xmax];
        sum += row.iter().map(|&p| f64::from(p)).sum::<f64>();
    }
    sum / ((r.xmax - r.xmin + 1) * (r.ymax - r.ymin + 1)) as f64
}

/// Text boxes in an `orig_w` x `orig_h` image from its `map_w` x `map_h` probability map, in reading order.
pub fn find_boxes(prob: &[f32], map_w: usize, map_h: usize, orig_w: usize, orig_h: usize, p: &Params) -> Vec<TextBox> {
    if map_w == 0 || map_h == 0 || orig_w == 0 || orig_h == 0 || prob.len() < map_w * map_h {
        return Vec::new();
    }
    let mut boxes = Vec::new();
    for r in regions(prob, map_w, map_h, p.thresh).iter().take(p.max_candidates) {
        let (bw, bh) = ((r.xmax - r.xmin) as f64, (r.ymax - r.ymin) as f64);
        if bw.min(bh) < MIN_SIZE {
            continue;
        }
        let score = box_score(prob, map_w, r);
        if score.is_nan() || score < p.box_thresh {
            continue;
        }
        // Offsetting a rectangle by `dist` (pyclipper, round joins) and taking its bounding box grows each side.
        let dist = bw * bh * p.unclip_ratio / (2.0 * (bw + bh));
        if bw.min(bh) + 2.0 * dist < MIN_SIZE + 2.0 {
            continue;
        }
        let scale = |v: f64, map: usize, orig: usize| {
            ((v / map as f64) * orig as f64).round_ties_even().clamp(0.0, (orig - 1) as f64) as usize
        };
        let (x0, x1) = (scale(r.xmin as f64 - dist, map_w, orig_w), scale(r.xmax as f64 + dist, map_w, orig_w));
        let (y0, y1) = (scale(r.ymin as f64 - dist, map_h, orig_h), scale(r.ymax as f64 + dist, map_h, orig_h));
        if x1 - x0 <= 3 || y1 - y0 <= 3 {
            continue;
        }
        boxes.push(TextBox { x0, y0, x1, y1, score });
    }
    sort_reading_order(&mut boxes);
    boxes
}

/// rapidocr's `sorted_boxes`: by top edge; a box whose top is within `LINE_Y_TOLERANCE` of the previous box's
/// joins its line, and each line reads left to right.
pub fn sort_reading_order(boxes: &mut [TextBox]) {
    boxes.sort_by_key(|b| b.y0);
    let mut line = 0usize;
    let mut keyed: Vec<(usize, usize, usize, TextBox)> = Vec::with_capacity(boxes.len());
    for (i, b) in boxes.iter().enumerate() {
        if i > 0 && b.y0 - boxes[i - 1].y0 >= LINE_Y_TOLERANCE {
            line += 1;
        }
        keyed.push((line, b.x0, i, *b));
    }
    keyed.sort_by_key(|k| (k.0, k.1, k.2));
    for (b, k) in boxes.iter_mut().zip(keyed) {
        *b = k.3;
    }
}

/// The item's json: `{"boxes": [[x0, y0, x1, y1], ...], "scores": [...], "width": W0, "height": H0}`.
pub fn to_json(boxes: &[TextBox], width: usize, height: usize) -> String {
    let list = |f: &dyn Fn(&TextBox) -> String| boxes.iter().map(f).collect::<Vec<_>>().join(",");
    format!(
        r#"{{"boxes":[{}],"scores":[{}],"width":{width},"height":{height}}}"#,
        list(&|b| format!("[{},{},{},{}]", b.x0, b.y0, b.x1, b.y1)),
        list(&|b| format!("{:.4}", b.score)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: dilate into a grid, then flood-fill from each unvisited set pixel in raster order.
    fn brute_regions(bits: &[bool], w: usize, h: usize) -> Vec<Region> {
        let at = |x: isize, y: isize| x >= 0 && y >= 0 && bits[y as usize * w + x as usize];
        let mut d = vec![false; w * h];
        for y in 0..h as isize {
            for x in 0..w as isize {
                d[y as usize * w + x as usize] = at(x, y) || at(x - 1, y) || at(x, y - 1) || at(x - 1, y - 1);
            }
        }
        let mut seen = vec![false; w * h];
        let mut out = Vec::new();
        for start in 0..w * h {
            if !d[start] || seen[start] {
                continue;
            }
            seen[start] = true;
            let mut stack = vec![start];
            let mut r = Region { xmin: w, xmax: 0, ymin: h, ymax: 0 };
            while let Some(i) = stack.pop() {
                let (x, y) = (i % w, i / w);
                r.xmin = r.xmin.min(x);
                r.xmax = r.xmax.max(x);
                r.ymin = r.ymin.min(y);
                r.ymax = r.ymax.max(y);
                for dy in -1isize..=1 {
                    for dx in -1isize..=1 {
                        let (nx, ny) = (x as isize + dx, y as isize + dy);
                        if nx < 0 || ny < 0 || nx >= w as isize || ny >= h as isize {
                            continue;
                        }
                        let j = ny as usize * w + nx as usize;
                        if d[j] && !seen[j] {
                            seen[j] = true;
                            stack.push(j);
                        }
                    }
                }
            }
            out.push(r);
        }
        out
    }

    #[test]
    fn regions_match_a_flood_fill_on_random_maps() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for case in 0..300 {
            let (w, h) = (1 + case % 23, 1 + (case * 7) % 19);
            let density = [0.05, 0.2, 0.4, 0.6][case % 4];
            let prob: Vec<f32> = (0..w * h)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    if (seed % 1000) as f64 / 1000.0 < density { 0.9 } else { 0.1 }
                })
                .collect();
            let bits: Vec<bool> = prob.iter().map(|&p| p > 0.3).collect();
            assert_eq!(regions(&prob, w, h, 0.3), brute_regions(&bits, w, h), "case {case} ({w}x{h})");
        }
    }

    fn map_with(w: usize, h: usize, rects: &[(usize, usize, usize, usize, f32)]) -> Vec<f32> {
        let mut prob = vec![0.0f32; w * h];
        for &(x0, y0, x1, y1, p) in rects {
            for y in y0..y1 {
                for x in x0..x1 {
                    prob[y * w + x] = p;
                }
            }
        }
        prob
    }

    #[test]
    fn boxes_grow_scale_and_come_out_in_reading_order() {
        // Map at half the original's size: a line below, then two words side by side above it.
        let (w, h) = (64, 32);
        let prob = map_with(w, h, &[(4, 20, 60, 26, 0.9), (30, 4, 50, 10, 0.8), (4, 5, 20, 11, 0.95)]);
        let boxes = find_boxes(&prob, w, h, 128, 64, &Params::default());
        assert_eq!(boxes.len(), 3);
        // Region x 4..=19 (after dilation 4..=20), y 5..=11: 16 x 6, dist = 96*1.6/44 = 3.49.
        let d = 16.0 * 6.0 * 1.6 / 44.0;
        let first = boxes[0];
        assert_eq!(first.x0, ((4.0 - d) / 64.0 * 128.0f64).round_ties_even() as usize);
        assert_eq!(first.x1, ((20.0 + d) / 64.0 * 128.0f64).round_ties_even() as usize);
        assert_eq!(first.y0, ((5.0 - d) / 32.0 * 64.0f64).round_ties_even() as usize);
        assert!(boxes[1].x0 > first.x1 && boxes[1].y0 < boxes[2].y0);
        assert!(boxes[2].y0 > first.y1 && boxes[2].x0 < boxes[1].x0);
        // The box's mean takes in the dilated border (probability 0), so it is a little under 0.95.
        assert!(first.score > 0.75 && first.score < 0.95, "{}", first.score);
    }

    #[test]
    fn faint_tiny_and_edge_regions() {
        let (w, h) = (64, 32);
        // A faint region (0.4 > thresh but a mean under box_thresh), a 2-pixel-tall sliver, and a region
        // touching the right and bottom edges, whose box is clamped to the image.
        let prob = map_with(w, h, &[(2, 2, 30, 10, 0.4), (40, 2, 60, 4, 0.9), (40, 20, 64, 32, 0.9)]);
        let boxes = find_boxes(&prob, w, h, 64, 32, &Params::default());
        assert_eq!(boxes.len(), 1);
        assert_eq!((boxes[0].x1, boxes[0].y1), (63, 31));
        assert!(find_boxes(&vec![0.0; w * h], w, h, 64, 32, &Params::default()).is_empty());
    }

    #[test]
    fn max_candidates_takes_the_first_regions_in_raster_order() {
        let (w, h) = (64, 32);
        let prob = map_with(w, h, &[(2, 20, 30, 28, 0.9), (2, 2, 30, 10, 0.9)]);
        let p = Params { max_candidates: 1, ..Params::default() };
        let boxes = find_boxes(&prob, w, h, 64, 32, &p);
        assert_eq!(boxes.len(), 1);
        assert!(boxes[0].y0 < 10);
    }

    #[test]
    fn json_lists_boxes_and_scores_in_order() {
        let b = |x0, score| TextBox { x0, y0: 2, x1: x0 + 10, y1: 12, score };
        assert_eq!(
            to_json(&[b(1, 0.91234), b(20, 0.5)], 640, 480),
            r#"{"boxes":[[1,2,11,12],[20,2,30,12]],"scores":[0.9123,0.5000],"width":640,"height":480}"#
        );
        assert_eq!(to_json(&[], 1, 1), r#"{"boxes":[],"scores":[],"width":1,"height":1}"#);
    }

    #[test]
    fn reading_order_groups_lines_by_top_edge() {
        let b = |x0, y0| TextBox { x0, y0, x1: x0 + 10, y1: y0 + 10, score: 1.0 };
        let mut boxes = vec![b(50, 105), b(0, 100), b(70, 30), b(10, 36), b(0, 200)];
        sort_reading_order(&mut boxes);
        let order: Vec<(usize, usize)> = boxes.iter().map(|b| (b.x0, b.y0)).collect();
        assert_eq!(order, [(10, 36), (70, 30), (0, 100), (50, 105), (0, 200)]);
    }
}
