//! Integration tests, one binary: servers on 127.0.0.1:0 running the real components from `plugins/dist`
//! and the real ONNX model from `.setup/models` (both made by `cargo xtask setup`).

mod common;

mod embeddings;
mod errors;
mod hot_swap;
mod openai_client;
mod sandbox;
