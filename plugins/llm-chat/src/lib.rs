//! LLM adapter for byte-level-BPE chat models (SmolLM2-Instruct and its kin): the host runs the ONNX decoder,
//! keeps the KV cache and drives the loop; this plugin renders the chat template, tokenises, samples each token
//! and turns tokens into streamed text, keeping each sequence's memory in the opaque state the host carries.
//!
//! Tour: `engine` is the logic behind both exports; `template` renders the model's Jinja chat template; `vocab`
//! maps token ids to bytes; `sampler` picks tokens (penalties, temperature, top-k, top-p, log-probabilities);
//! `text` turns bytes into whole-character deltas and enforces stop strings; `state` is the per-sequence state
//! and its codec; `rng` the seeded generator. Only this file touches the host.
//!
//! Config keys: `tokenizer` (path of tokenizer.json under `/data`), `model-config` (path of the converter's
//! config.json: `context_length`, `vocab_size`, `eos_token_ids`, `bos_token_id`, `chat_template`,
//! `model_name`), `model` (the granted ONNX decoder's name, returned in `decoder-info`).

mod engine;
mod model_config;
mod rng;
mod sampler;
mod state;
mod template;
mod text;
mod vocab;

use std::cell::OnceCell;

use engine::Model;
use exports::omnihost::plugin::decoding::{self, DecoderInfo, GenerationRequest, Prepared, StepInput, StepOutput};
use exports::omnihost::plugin::worker::{
    self, AdapterMetadata, EmbedOptions, Embedding, GenerateRequest, GenerateResult, PluginError, Sink,
};
use omnihost::plugin::config;
use omnihost::plugin::log::{self, Level};

wit_bindgen::generate!({
    path: "../../wit/plugin",
    world: "llm-adapter",
});

thread_local! {
    /// Parsed once per instance: tokenizer.json takes milliseconds to load and the vocabulary table and the
    /// compiled template are reused by every call the pooled instance serves. Nothing about a sequence is kept
    /// here; that lives in the state bytes.
    static MODEL: OnceCell<Model> = const { OnceCell::new() };
}

fn required(key: &str, what: &str) -> Result<String, PluginError> {
    config::get(key).ok_or_else(|| PluginError::Internal(format!("config `{key}` ({what}) is not set")))
}

fn load() -> Result<Model, PluginError> {
    let tokenizer = required("tokenizer", "path of tokenizer.json")?;
    let model_config = required("model-config", "path of the model's config.json")?;
    let model = Model::load(&tokenizer, &model_config)?;
    if !model.byte_level() {
        log::log(Level::Warn, "the tokenizer's decoder is not ByteLevel: streamed text may differ from its decode");
    }
    log::log(
        Level::Debug,
        &format!(
            "loaded `{}` from {tokenizer} and {model_config}: context {}, vocabulary {}",
            model.config.model_name, model.config.context_length, model.config.vocab_size
        ),
    );
    Ok(model)
}

fn with_model<T>(f: impl FnOnce(&Model) -> Result<T, PluginError>) -> Result<T, PluginError> {
    MODEL.with(|cell| {
        if cell.get().is_none() {
            let model = load()?;
            let _ = cell.set(model);
        }
        match cell.get() {
            Some(model) => f(model),
            None => Err(PluginError::Internal("model not initialised".into())),
        }
    })
}

/// Metadata and `decoder` cannot return errors; a missing file is logged and shows as absent facts, which the
/// host rejects at load.
fn loaded_or_logged<T>(f: impl FnOnce(&Model) -> T) -> Option<T> {
    match with_model(|m| Ok(f(m))) {
        Ok(v) => Some(v),
        Err(e) => {
            log::log(Level::Error, &format!("adapter not ready: {e:?}"));
            None
        }
    }
}

struct Component;

impl worker::Guest for Component {
    fn metadata() -> AdapterMetadata {
        let context = loaded_or_logged(|m| m.config.context_length);
        AdapterMetadata {
            name: "llm-chat".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            worker_types: vec!["llm".into()],
            embedding_dimensions: None,
            max_input_tokens: context,
        }
    }

    fn embed(_texts: Vec<String>, _options: EmbedOptions) -> Result<Vec<Embedding>, PluginError> {
        Err(PluginError::Unsupported("llm-chat generates text; it does not embed".into()))
    }

    fn rerank(_query: String, _documents: Vec<String>) -> Result<Vec<f32>, PluginError> {
        Err(PluginError::Unsupported("llm-chat generates text; it does not rerank".into()))
    }

    fn count_tokens(text: String) -> Result<u32, PluginError> {
        with_model(|m| m.count_tokens(&text))
    }

    /// Generation is host-driven through `decoding`; the plugin-driven path has no decoder to call.
    fn generate(_request: GenerateRequest, _sink: &Sink) -> Result<GenerateResult, PluginError> {
        Err(PluginError::Unsupported("llm-chat generates through the host-driven `decoding` interface".into()))
    }
}

impl decoding::Guest for Component {
    fn decoder() -> DecoderInfo {
        let model = config::get("model").unwrap_or_else(|| {
            log::log(Level::Error, "config `model` (the granted ONNX decoder) is not set");
            String::new()
        });
        let (context_length, vocab_size) =
            loaded_or_logged(|m| (m.config.context_length, m.config.vocab_size)).unwrap_or((0, 0));
        DecoderInfo { model, context_length, vocab_size }
    }

    fn prepare(request: GenerationRequest) -> Result<Prepared, PluginError> {
        with_model(|m| m.prepare(&request, rng::Rng::from_entropy))
    }

    fn step(inputs: Vec<StepInput>) -> Vec<Result<StepOutput, PluginError>> {
        let n = inputs.len();
        // Only loading can fail the whole batch; each sequence's own errors stay in its own slot.
        match with_model(|m| Ok(inputs.into_iter().map(|input| m.step(input)).collect())) {
            Ok(outputs) => outputs,
            Err(e) => vec![Err(e); n],
        }
    }
}

export!(Component);
