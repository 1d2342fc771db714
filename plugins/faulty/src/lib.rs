//! Test fixture for the sandbox: a worker adapter that misbehaves on request, so tests can prove that a faulty
//! plugin fails only its own request while the host and other requests carry on.
//!
//! `embed` looks at the first text: `trap` traps, `loop` never returns, `alloc` allocates until it hits the
//! host's memory cap, `reject` returns a typed `invalid-input` error. Any other text gets a one-element vector
//! holding the text's length in bytes, so tests can tell a good answer from this fixture apart.

use exports::omnihost::plugin::worker::{
    AdapterMetadata, Embedding, EmbedOptions, GenerateRequest, GenerateResult, Guest, PluginError, Sink,
};

// Built against the frozen 0.1.0 contract (wit/plugin.wit beside this crate), not the current one, so that
// every test using this fixture also checks that older worlds are still served.
wit_bindgen::generate!({
    path: "wit",
    world: "worker-adapter",
});

struct Component;

impl Guest for Component {
    fn metadata() -> AdapterMetadata {
        AdapterMetadata {
            name: "faulty".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            worker_types: vec!["text2vec".into()],
            embedding_dimensions: Some(1),
            max_input_tokens: None,
        }
    }

    fn embed(texts: Vec<String>, _options: EmbedOptions) -> Result<Vec<Embedding>, PluginError> {
        match texts.first().map(String::as_str) {
            Some("trap") => std::process::abort(),
            Some("loop") => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            Some("alloc") => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    // Touch every page so the growth is real, not just reserved.
                    hoard.push(vec![1u8; 8 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            Some("reject") => Err(PluginError::InvalidInput("the fixture rejects `reject`".into())),
            _ => Ok(texts.iter().map(|t| Embedding { values: vec![t.len() as f32], tokens: 1 }).collect()),
        }
    }

    fn rerank(_query: String, _documents: Vec<String>) -> Result<Vec<f32>, PluginError> {
        Err(PluginError::Unsupported("the fixture does not rerank".into()))
    }

    fn count_tokens(text: String) -> Result<u32, PluginError> {
        Ok(text.split_whitespace().count() as u32)
    }

    fn generate(_request: GenerateRequest, _sink: &Sink) -> Result<GenerateResult, PluginError> {
        Err(PluginError::Unsupported("the fixture does not generate".into()))
    }
}

export!(Component);
