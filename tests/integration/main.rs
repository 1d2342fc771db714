//! Integration tests, one binary: servers on 127.0.0.1:0 running the real components from `plugins/dist`
//! and the real ONNX model from `.setup/models` (both made by `cargo xtask setup`).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

mod cluster;
mod embeddings;
mod errors;
mod faults;
mod generation;
mod hot_swap;
mod manager;
mod openapi;
mod openai_client;
mod pipelines;
mod registry;
mod sandbox;
mod speech;
