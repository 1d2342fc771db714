//! Test fixture for the sandbox: a worker adapter that misbehaves on request, so tests can prove that a faulty
//! plugin fails only its own request while the host and other requests carry on.
//!
//! `embed` looks at the first text: `trap` traps, `loop` never returns, `alloc` allocates until it hits the
//! host's memory cap, `reject` returns a typed `invalid-input` error, `sleep` waits on the host's clock for 30 s.
//! Wrong answers the host must catch: `too-many` and `too-few` results, `wrong-size` vectors, `nan`, `huge` (a
//! 2-million-dimension vector), `bad-utf8` (an error message that is not UTF-8). Any other text gets a
//! one-element vector holding the text's length in bytes, so tests can tell a good answer from this fixture apart.

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

fn good(texts: &[String]) -> Vec<Embedding> {
    texts.iter().map(|t| Embedding { values: vec![t.len() as f32], tokens: 1 }).collect()
}

/// A `String` whose bytes are not UTF-8: what a buggy guest in a language without checked strings can hand the
/// canonical ABI. The host must refuse it when lifting, failing only this call.
#[allow(unsafe_code, reason = "the fixture breaks String's invariant on purpose, and only passes it to the ABI")]
fn not_utf8() -> String {
    // SAFETY: the value is only lowered to the host, which validates strings; no Rust code reads it as text.
    unsafe { String::from_utf8_unchecked(vec![b'b', b'a', b'd', 0xff, 0xfe]) }
}

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
            Some("sleep") => {
                std::thread::sleep(std::time::Duration::from_secs(30));
                Ok(good(&texts))
            }
            Some("too-many") => Ok(good(&[texts.clone(), texts].concat())),
            Some("too-few") => Ok(Vec::new()),
            Some("wrong-size") => Ok(texts.iter().map(|_| Embedding { values: vec![1.0, 2.0, 3.0], tokens: 1 }).collect()),
            Some("nan") => Ok(texts.iter().map(|_| Embedding { values: vec![f32::NAN], tokens: 1 }).collect()),
            Some("huge") => Ok(texts.iter().map(|_| Embedding { values: vec![0.5; 2 << 20], tokens: 1 }).collect()),
            Some("bad-utf8") => Err(PluginError::Internal(not_utf8())),
            _ => Ok(good(&texts)),
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
