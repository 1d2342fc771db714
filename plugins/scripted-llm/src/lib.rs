//! Test fixture and the smallest example of a generating plugin: a worker adapter whose `generate` streams
//! configured deltas through the sink, with no model, so generation can be tested without weights.
//!
//! Config keys: `deltas` (a JSON array of strings, one delta each, e.g. `["Hello", " world."]`), `delay-ms`
//! (optional pause between deltas, to test streaming and cancellation). Each delta counts as one completion
//! token; a prompt's tokens are its whitespace-separated words.

mod script;

use std::time::Duration;

use exports::omnihost::plugin::worker::{
    AdapterMetadata, EmbedOptions, Embedding, GenerateRequest, GenerateResult, Guest, PluginError, Sink,
};
use omnihost::plugin::config;

wit_bindgen::generate!({
    path: "../../wit/plugin",
    world: "worker-adapter",
});

fn deltas() -> Result<Vec<String>, PluginError> {
    let json = config::get("deltas")
        .ok_or_else(|| PluginError::Internal("config `deltas` (a JSON array of strings) is not set".into()))?;
    script::parse_deltas(&json).map_err(PluginError::Internal)
}

fn delay() -> Result<Duration, PluginError> {
    match config::get("delay-ms") {
        None => Ok(Duration::ZERO),
        Some(v) => v
            .parse()
            .map(Duration::from_millis)
            .map_err(|_| PluginError::Internal(format!("config `delay-ms` must be a whole number, got `{v}`"))),
    }
}

struct Component;

impl Guest for Component {
    fn metadata() -> AdapterMetadata {
        AdapterMetadata {
            name: "scripted-llm".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            worker_types: vec!["llm".into()],
            embedding_dimensions: None,
            max_input_tokens: None,
        }
    }

    fn embed(_texts: Vec<String>, _options: EmbedOptions) -> Result<Vec<Embedding>, PluginError> {
        Err(PluginError::Unsupported("scripted-llm generates text; it does not embed".into()))
    }

    fn rerank(_query: String, _documents: Vec<String>) -> Result<Vec<f32>, PluginError> {
        Err(PluginError::Unsupported("scripted-llm generates text; it does not rerank".into()))
    }

    fn count_tokens(text: String) -> Result<u32, PluginError> {
        Ok(script::words(&text))
    }

    fn generate(request: GenerateRequest, sink: &Sink) -> Result<GenerateResult, PluginError> {
        let prompt_tokens =
            request.messages.iter().map(|m| script::words(&m.content)).sum::<u32>() + script::words(&request.prompt);
        let (deltas, pause) = (deltas()?, delay()?);
        let plan = script::plan(&deltas, request.sampling.max_tokens, &request.sampling.stop);
        let mut completion_tokens = 0;
        for (i, delta) in plan.deltas.iter().enumerate() {
            if i > 0 && !pause.is_zero() {
                // wasi's monotonic clock backs std's sleep on wasm32-wasip2; the host's deadline still applies.
                std::thread::sleep(pause);
            }
            if !sink.push(delta) {
                return Ok(GenerateResult { prompt_tokens, completion_tokens, finish_reason: "cancelled".into() });
            }
            completion_tokens += 1;
        }
        Ok(GenerateResult { prompt_tokens, completion_tokens, finish_reason: plan.finish.as_str().into() })
    }
}

export!(Component);
