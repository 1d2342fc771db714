//! The WebAssembly side of the adapter: configuration, the host's `compute` session, and the worker exports
//! built on the tokenising, run planning and pooling in `lib.rs`.

use std::cell::OnceCell;

use exports::omnihost::plugin::worker::{
    AdapterMetadata, Embedding, EmbedOptions, GenerateRequest, GenerateResult, Guest, PluginError, Sink,
};
use omnihost::plugin::compute::{self, Session};
use omnihost::plugin::config;
use omnihost::plugin::log::{self, Level};
use omnihost::plugin::tensors::{Tensor, TensorType};
use tokenizers::TruncationParams;

use crate::{Encoded, Tokenizer};

wit_bindgen::generate!({
    path: "../../wit/plugin",
    world: "worker-adapter",
});

/// Loaded once per instance: parsing tokenizer.json costs milliseconds, so the host's warm instance pool lets
/// many requests share it.
struct State {
    tokenizer: Tokenizer,
    session: Session,
    max_tokens: usize,
    max_batch: usize,
    run_overhead: usize,
    dimensions: u32,
}

thread_local! {
    static STATE: OnceCell<State> = const { OnceCell::new() };
}

fn internal(what: &str, err: impl std::fmt::Display) -> PluginError {
    PluginError::Internal(format!("{what}: {err}"))
}

fn config_number(key: &str, default: usize) -> Result<usize, PluginError> {
    match config::get(key) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| PluginError::Internal(format!("config `{key}` must be a positive integer, got `{v}`"))),
    }
}

fn load() -> Result<State, PluginError> {
    let path = config::get("tokenizer")
        .ok_or_else(|| PluginError::Internal("config `tokenizer` (path of tokenizer.json) is not set".into()))?;
    let mut tokenizer =
        tokenizers::Tokenizer::from_file(&path).map_err(|e| internal(&format!("loading {path}"), e))?;
    let max_tokens = config_number("max-input-tokens", 256)?;
    let max_batch = config_number("max-batch", crate::MAX_BATCH)?.max(1);
    let run_overhead = config_number("run-overhead-tokens", crate::RUN_OVERHEAD_TOKENS)?;
    // The shipped tokenizer.json pads every input to 128; padding is done here to the batch's longest input,
    // and pooling relies on it being at the end of each row.
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams { max_length: max_tokens, ..Default::default() }))
        .map_err(|e| internal("setting truncation", e))?;
    let tokenizer = Tokenizer::new(tokenizer);
    let model = config::get("model").unwrap_or_else(|| "minilm".to_string());
    let session = compute::open(&model).map_err(|e| internal(&format!("opening model `{model}`"), e.message))?;
    let dimensions = session
        .outputs()
        .iter()
        .find(|o| o.name == "last_hidden_state")
        .and_then(|o| o.dimensions.last().copied())
        .filter(|d| *d > 0)
        .ok_or_else(|| PluginError::Internal(format!("model `{model}` has no last_hidden_state [b, s, d] output")))?;
    let path_kind = if tokenizer.direct() { "direct ASCII path" } else { "general pipeline only" };
    log::log(Level::Debug, &format!("loaded tokenizer {path} ({path_kind}) and model `{model}` ({dimensions} dimensions)"));
    Ok(State { tokenizer, session, max_tokens, max_batch, run_overhead, dimensions: dimensions as u32 })
}

fn with_state<T>(f: impl FnOnce(&State) -> Result<T, PluginError>) -> Result<T, PluginError> {
    STATE.with(|cell| {
        if cell.get().is_none() {
            let state = load()?;
            let _ = cell.set(state);
        }
        match cell.get() {
            Some(state) => f(state),
            None => Err(PluginError::Internal("state not initialised".into())),
        }
    })
}

fn i64_tensor(values: &[i64], rows: usize, width: usize) -> Result<Tensor, PluginError> {
    // Appending each value's bytes compiles to plain 8-byte stores; `flat_map(to_le_bytes).collect()` went byte
    // by byte and was most of the time spent building a batch's inputs.
    let mut bytes = Vec::with_capacity(values.len() * 8);
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    Tensor::create(&[rows as u32, width as u32], TensorType::I64, &bytes)
        .map_err(|e| internal("building an input tensor", e.message))
}

impl State {
    /// Runs one planned group of inputs and returns their vectors in the group's order.
    fn run(&self, encodings: &[Encoded], rows: &[usize]) -> Result<Vec<Vec<f32>>, PluginError> {
        let batch = crate::batch(encodings, rows);
        let (n, width) = (batch.rows, batch.width);
        let input_ids = i64_tensor(&batch.input_ids, n, width)?;
        let attention_mask = i64_tensor(&batch.attention_mask, n, width)?;
        let token_type_ids = i64_tensor(&batch.token_type_ids, n, width)?;
        let outputs = self
            .session
            .run(&[
                ("input_ids".to_string(), &input_ids),
                ("attention_mask".to_string(), &attention_mask),
                ("token_type_ids".to_string(), &token_type_ids),
            ])
            .map_err(|e| internal("running the model", e.message))?;
        let hidden = outputs
            .into_iter()
            .find(|(name, _)| name == "last_hidden_state")
            .map(|(_, t)| t)
            .ok_or_else(|| PluginError::Internal("the model returned no last_hidden_state".into()))?;
        // Pooling checks the element count against [rows, width, dimensions]; asking the host for the shape as
        // well would cost one more call per run after the model has evicted the caches, and protect nothing more.
        crate::pool(hidden.read().as_slice(), &batch, self.dimensions as usize).map_err(|e| internal("pooling", e))
    }

    fn embed(&self, texts: &[String], truncate: bool) -> Result<Vec<Embedding>, PluginError> {
        let encodings = crate::encode(&self.tokenizer, texts)
            .map_err(|e| PluginError::InvalidInput(format!("cannot tokenise input: {e}")))?;
        if let (false, Some(i)) = (truncate, crate::first_truncated(&encodings)) {
            return Err(PluginError::InvalidInput(format!(
                "input {i} is longer than the model's {} tokens and `truncate` is false",
                self.max_tokens
            )));
        }
        let lengths: Vec<usize> = encodings.iter().map(Encoded::len).collect();
        let sign = if cfg!(feature = "negate") { -1.0 } else { 1.0 };
        let mut out: Vec<Option<Embedding>> = (0..texts.len()).map(|_| None).collect();
        for rows in crate::plan(&lengths, self.run_overhead, self.max_batch) {
            let vectors = self.run(&encodings, &rows)?;
            for (&r, mut values) in rows.iter().zip(vectors) {
                if sign < 0.0 {
                    values.iter_mut().for_each(|v| *v = -*v);
                }
                out[r] = Some(Embedding { values, tokens: lengths[r] as u32 });
            }
        }
        out.into_iter()
            .map(|e| e.ok_or_else(|| PluginError::Internal("an input was left out of every model run".into())))
            .collect()
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

struct Component;

impl Guest for Component {
    fn metadata() -> AdapterMetadata {
        let loaded = with_state(|s| Ok((s.dimensions, s.max_tokens)));
        if let Err(e) = &loaded {
            log::log(Level::Error, &format!("adapter not ready: {e:?}"));
        }
        let (dims, max) = loaded.map(|(d, m)| (Some(d), Some(m as u32))).unwrap_or((None, None));
        AdapterMetadata {
            name: "embed-minilm".into(),
            version: if cfg!(feature = "negate") { "0.1.0+negate".into() } else { env!("CARGO_PKG_VERSION").into() },
            worker_types: vec!["text2vec".into(), "reranker".into()],
            embedding_dimensions: dims,
            max_input_tokens: max,
        }
    }

    fn embed(texts: Vec<String>, options: EmbedOptions) -> Result<Vec<Embedding>, PluginError> {
        with_state(|s| s.embed(&texts, options.truncate))
    }

    /// Scores by cosine similarity of embeddings: no cross-encoder ships with the model packages, so this is a
    /// bi-encoder rerank (documented as such in the API docs).
    fn rerank(query: String, documents: Vec<String>) -> Result<Vec<f32>, PluginError> {
        with_state(|s| {
            let mut texts = Vec::with_capacity(documents.len() + 1);
            texts.push(query);
            texts.extend(documents);
            let vectors = s.embed(&texts, true)?;
            let (q, docs) = vectors.split_first().ok_or_else(|| PluginError::InvalidInput("empty query".into()))?;
            Ok(docs.iter().map(|d| dot(&q.values, &d.values)).collect())
        })
    }

    fn count_tokens(text: String) -> Result<u32, PluginError> {
        with_state(|s| {
            let encoded = s
                .tokenizer
                .encode(&text)
                .map_err(|e| PluginError::InvalidInput(format!("cannot tokenise input: {e}")))?;
            Ok(encoded.untruncated as u32)
        })
    }

    fn generate(_request: GenerateRequest, _sink: &Sink) -> Result<GenerateResult, PluginError> {
        Err(PluginError::Unsupported("embed-minilm embeds text; it does not generate".into()))
    }
}

export!(Component);
