//! OCR pipeline, stage 1 processor: finds the text boxes in the detector's output and builds the PP-OCR
//! recogniser's batch from them.
//!
//! `process(request, [stage 0])` reads the one item the detector stage produced: its probability map (the
//! model's output, `fetch_name_0`, `f32 [1, 1, H, W]`) and the `rgb` pixels (`u8 [H0, W0, 3]`) passed through
//! from stage 0. It returns one item per batch of up to `batch-rows` lines, each with tensor `x`
//! (`f32 [n, 3, 48, Wmax]`) and json `{"boxes": [[x0, y0, x1, y1], ...], "scores": [...], "width": W0,
//! "height": H0}`: boxes in original pixels (crop = columns x0..x1, rows y0..y1), in reading order, one per
//! batch row. No box: no item, so the recogniser does not run.
//!
//! Config: `thresh` (0.3), `box-thresh` (0.5), `unclip-ratio` (1.6), `max-candidates` (1000), `batch-rows` (8),
//! and `prob-output` (the detector output's name, default `fetch_name_0`).

pub mod batch;
pub mod boxes;

use exports::omnihost::plugin::processor::{Guest, Item, PluginError, Request, Source};
use omnihost::plugin::config;
use omnihost::plugin::tensors::{Tensor, TensorType};

wit_bindgen::generate!({
    path: "../../wit/plugin",
    world: "pipeline-processor",
});

fn config_number<T: std::str::FromStr>(key: &str, default: T) -> Result<T, PluginError> {
    match config::get(key) {
        None => Ok(default),
        Some(v) => {
            v.trim().parse().map_err(|_| PluginError::Internal(format!("config `{key}` must be a number, got `{v}`")))
        }
    }
}

fn params() -> Result<boxes::Params, PluginError> {
    let d = boxes::Params::default();
    Ok(boxes::Params {
        thresh: config_number("thresh", d.thresh)?,
        box_thresh: config_number("box-thresh", d.box_thresh)?,
        unclip_ratio: config_number("unclip-ratio", d.unclip_ratio)?,
        max_candidates: config_number("max-candidates", d.max_candidates)?,
    })
}

/// The detector's map: the tensor under the configured name or, failing that, the one `f32 [1, 1, H, W]`.
fn prob_tensor(tensors: &[(String, Tensor)]) -> Result<&Tensor, PluginError> {
    let name = config::get("prob-output").unwrap_or_else(|| "fetch_name_0".into());
    if let Some((_, t)) = tensors.iter().find(|(n, _)| *n == name) {
        return Ok(t);
    }
    let mut maps = tensors.iter().filter(|(n, t)| {
        let d = t.dimensions();
        n != "rgb" && t.ty() == TensorType::Fp32 && d.len() == 4 && d[0] == 1 && d[1] == 1
    });
    match (maps.next(), maps.next()) {
        (Some((_, t)), None) => Ok(t),
        _ => {
            let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
            Err(PluginError::Internal(format!(
                "the detector stage's output has no `{name}` and not exactly one f32 [1, 1, H, W] tensor (has {names:?})"
            )))
        }
    }
}

struct Component;

impl Guest for Component {
    fn process(_request: Request, sources: Vec<Source>) -> Result<Vec<Item>, PluginError> {
        let params = params()?;
        let item = sources
            .iter()
            .find_map(|s| s.outputs.first())
            .ok_or_else(|| PluginError::Internal("the detector stage produced no output".into()))?;
        let prob = prob_tensor(&item.tensors)?;
        let rgb = item
            .tensors
            .iter()
            .find(|(n, _)| n == "rgb")
            .map(|(_, t)| t)
            .ok_or_else(|| PluginError::Internal("the detector stage's output has no `rgb` tensor".into()))?;
        let (pd, rd) = (prob.dimensions(), rgb.dimensions());
        let [_, _, map_h, map_w] = pd[..] else {
            return Err(PluginError::Internal(format!("the detector's map is {pd:?}, not [1, 1, height, width]")));
        };
        let (map_h, map_w) = (map_h as usize, map_w as usize);
        let [h0, w0, 3] = rd[..] else {
            return Err(PluginError::Internal(format!("`rgb` is {rd:?}, not [height, width, 3]")));
        };
        let (h0, w0) = (h0 as usize, w0 as usize);
        let map = ocr_imaging::f32s(&prob.read());
        let pixels = rgb.read();
        if map.len() != map_w * map_h || pixels.len() != w0 * h0 * 3 || rgb.ty() != TensorType::U8 {
            return Err(PluginError::Internal("the detector stage's tensors do not match their shapes".into()));
        }
        let found = boxes::find_boxes(&map, map_w, map_h, w0, h0, &params);
        if found.is_empty() {
            return Ok(Vec::new());
        }
        // Batches of at most `batch-rows` lines, one item each: the recogniser's output is ~5 MB a line and the
        // next stage copies what it reads, so one batch of every line would grow its memory with the page.
        let rows = config_number("batch-rows", 8usize)?.max(1);
        let mut items = Vec::with_capacity(found.len().div_ceil(rows));
        for group in found.chunks(rows) {
            let batch = batch::rec_batch(&pixels, w0, h0, group);
            let dims = [batch.n as u32, 3, batch::REC_HEIGHT as u32, batch.width as u32];
            let x = Tensor::create(&dims, TensorType::Fp32, &batch.bytes)
                .map_err(|e| PluginError::Internal(format!("creating the recogniser batch {dims:?}: {}", e.message)))?;
            items.push(Item {
                text: None,
                token_ids: Vec::new(),
                tensors: vec![("x".into(), x)],
                json: Some(boxes::to_json(group, w0, h0)),
                finish_reason: None,
            });
        }
        Ok(items)
    }
}

export!(Component);

#[cfg(test)]
mod parity {
    /// Compares with arrays the Python baseline dumped: `OCR_PARITY_DIRS=dir1:dir2 cargo test ... -- --nocapture`
    /// where each dir holds `meta.txt` (`W0 H0 W H n Wmax`, then `x0 y0 x1 y1 score` per box), `rgb.bin`, the
    /// detector's `prob.bin` and the recogniser batch `rec.bin`.
    #[test]
    fn matches_the_python_baseline_when_given_its_dumps() {
        let Ok(dirs) = std::env::var("OCR_PARITY_DIRS") else { return };
        for dir in dirs.split(':') {
            let read = |name: &str| std::fs::read(format!("{dir}/{name}")).unwrap();
            let meta = String::from_utf8(read("meta.txt")).unwrap();
            let mut lines = meta.lines();
            let m: Vec<usize> = lines.next().unwrap().split_whitespace().map(|v| v.parse().unwrap()).collect();
            let want: Vec<Vec<f64>> =
                lines.map(|l| l.split_whitespace().map(|v| v.parse().unwrap()).collect()).collect();
            let (w0, h0, w, h) = (m[0], m[1], m[2], m[3]);
            let prob = ocr_imaging::f32s(&read("prob.bin"));
            let rgb = read("rgb.bin");
            let found = crate::boxes::find_boxes(&prob, w, h, w0, h0, &crate::boxes::Params::default());
            let got: Vec<[usize; 4]> = found.iter().map(|b| [b.x0, b.y0, b.x1, b.y1]).collect();
            let expected: Vec<[usize; 4]> =
                want.iter().map(|v| [v[0] as usize, v[1] as usize, v[2] as usize, v[3] as usize]).collect();
            assert_eq!(got, expected, "{dir}");
            let score_diff = found.iter().zip(&want).map(|(b, v)| (b.score - v[4]).abs()).fold(0.0, f64::max);
            let start = std::time::Instant::now();
            for _ in 0..9 {
                let found = crate::boxes::find_boxes(&prob, w, h, w0, h0, &crate::boxes::Params::default());
                std::hint::black_box(crate::batch::rec_batch(&rgb, w0, h0, &found));
            }
            let ms = start.elapsed().as_secs_f64() * 1000.0 / 9.0;
            let batch = crate::batch::rec_batch(&rgb, w0, h0, &found);
            assert_eq!((batch.n, batch.width), (m[4], m[5]), "{dir}");
            let (ours, theirs) = (ocr_imaging::f32s(&batch.bytes), ocr_imaging::f32s(&read("rec.bin")));
            assert_eq!(ours.len(), theirs.len());
            let diff = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            let same = ours.iter().zip(&theirs).filter(|(a, b)| a.to_bits() == b.to_bits()).count();
            println!(
                "{dir}: boxes {got:?} identical (score max |diff| {score_diff:e}); rec [{}, 3, 48, {}]: {same}/{} \
                 identical, max |diff| {diff:e}; find_boxes + rec_batch {ms:.2} ms",
                batch.n,
                batch.width,
                ours.len()
            );
            assert!(diff < 1e-5, "{dir}");
        }
    }
}
