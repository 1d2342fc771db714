//! OCR pipeline, stage 0 processor: turns the uploaded image into the PP-OCR text detector's input.
//!
//! `process(request, [])` reads the request's `image` input (the PNG or JPEG file as `u8 [bytes]`) and returns
//! one item: tensors `x` (`f32 [1, 3, H, W]`, the detector's input) and `rgb` (`u8 [H0, W0, 3]`, the decoded
//! pixels, which the ONNX engine passes through to the crop stage), and json
//! `{"width": W0, "height": H0, "resized_width": W, "resized_height": H}`.
//!
//! Config: `max-side-len` (default 2000), `max-image-side` (8192), `max-image-pixels` (40000000).

pub mod decode;
pub mod prep;

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

fn tensor(dims: &[usize], ty: TensorType, bytes: &[u8]) -> Result<Tensor, PluginError> {
    let dims: Vec<u32> = dims.iter().map(|&d| d as u32).collect();
    Tensor::create(&dims, ty, bytes)
        .map_err(|e| PluginError::Internal(format!("creating a {dims:?} tensor: {}", e.message)))
}

struct Component;

impl Guest for Component {
    fn process(request: Request, _sources: Vec<Source>) -> Result<Vec<Item>, PluginError> {
        let max_side = config_number("max-side-len", prep::MAX_SIDE_LEN)?.max(32);
        let limits = decode::Limits {
            max_side: config_number("max-image-side", decode::Limits::default().max_side)?,
            max_pixels: config_number("max-image-pixels", decode::Limits::default().max_pixels)?,
        };
        let (_, image) =
            request.inputs.iter().find(|(name, _)| name == "image").ok_or_else(|| {
                PluginError::InvalidInput("the request has no `image` input (a PNG or JPEG file)".into())
            })?;
        let img = decode::decode(&image.read(), limits).map_err(PluginError::InvalidInput)?;
        let x = prep::det_input(&img, max_side);
        let json = format!(
            r#"{{"width":{},"height":{},"resized_width":{},"resized_height":{}}}"#,
            img.width, img.height, x.width, x.height
        );
        let tensors = vec![
            ("x".to_string(), tensor(&[1, 3, x.height, x.width], TensorType::Fp32, &x.bytes)?),
            ("rgb".to_string(), tensor(&[img.height, img.width, 3], TensorType::U8, &img.pixels)?),
        ];
        Ok(vec![Item { text: None, token_ids: Vec::new(), tensors, json: Some(json), finish_reason: None }])
    }
}

export!(Component);
