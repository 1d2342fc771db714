//! Worker adapter for sentence-transformers MiniLM embedders (all-MiniLM-L6-v2 and its quantised builds).
//!
//! Tokenises with the model's own `tokenizer.json` (granted under `/data`), builds the three BERT inputs as host
//! tensors, runs the model through the host's `compute` interface and mean-pools `last_hidden_state` under the
//! attention mask before L2-normalising, as sentence-transformers does.
//!
//! Config keys: `tokenizer` (path of tokenizer.json), `model` (the compute model name, default `minilm`),
//! `max-input-tokens` (default 256, the length the model was trained with), `max-batch` (texts per compute run,
//! default 64).

use std::cell::OnceCell;

use exports::omnihost::plugin::worker::{
    AdapterMetadata, Embedding, EmbedOptions, GenerateRequest, GenerateResult, Guest, PluginError, Sink,
};
use omnihost::plugin::compute::{self, Session};
use omnihost::plugin::config;
use omnihost::plugin::log::{self, Level};
use omnihost::plugin::tensors::{Tensor, TensorType};
use tokenizers::{Tokenizer, TruncationParams};

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
    let mut tokenizer = Tokenizer::from_file(&path).map_err(|e| internal(&format!("loading {path}"), e))?;
    let max_tokens = config_number("max-input-tokens", 256)?;
    let max_batch = config_number("max-batch", 64)?.max(1);
    // The shipped tokenizer.json pads every input to 128; padding is done here to the batch's longest input.
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams { max_length: max_tokens, ..Default::default() }))
        .map_err(|e| internal("setting truncation", e))?;
    let model = config::get("model").unwrap_or_else(|| "minilm".to_string());
    let session = compute::open(&model).map_err(|e| internal(&format!("opening model `{model}`"), e.message))?;
    let dimensions = session
        .outputs()
        .iter()
        .find(|o| o.name == "last_hidden_state")
        .and_then(|o| o.dimensions.last().copied())
        .filter(|d| *d > 0)
        .ok_or_else(|| PluginError::Internal(format!("model `{model}` has no last_hidden_state [b, s, d] output")))?;
    log::log(Level::Debug, &format!("loaded tokenizer {path} and model `{model}` ({dimensions} dimensions)"));
    Ok(State { tokenizer, session, max_tokens, max_batch, dimensions: dimensions as u32 })
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

fn i64_tensor(rows: &[Vec<i64>], width: usize) -> Result<Tensor, PluginError> {
    let mut bytes = Vec::with_capacity(rows.len() * width * 8);
    for row in rows {
        for i in 0..width {
            bytes.extend_from_slice(&row.get(i).copied().unwrap_or(0).to_le_bytes());
        }
    }
    Tensor::create(&[rows.len() as u32, width as u32], TensorType::I64, &bytes)
        .map_err(|e| internal("building an input tensor", e.message))
}

impl State {
    fn embed_chunk(&self, texts: &[String], truncate: bool) -> Result<Vec<Embedding>, PluginError> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| PluginError::InvalidInput(format!("cannot tokenise input: {e}")))?;
        let overlong = encodings.iter().position(|e| !e.get_overflowing().is_empty());
        if let (false, Some(i)) = (truncate, overlong) {
            return Err(PluginError::InvalidInput(format!(
                "input {i} is longer than the model's {} tokens and `truncate` is false",
                self.max_tokens
            )));
        }
        let width = encodings.iter().map(|e| e.len()).max().unwrap_or(0).max(1);
        let ids: Vec<Vec<i64>> = encodings.iter().map(|e| e.get_ids().iter().map(|&t| i64::from(t)).collect()).collect();
        let mask: Vec<Vec<i64>> =
            encodings.iter().map(|e| e.get_attention_mask().iter().map(|&t| i64::from(t)).collect()).collect();
        let types: Vec<Vec<i64>> =
            encodings.iter().map(|e| e.get_type_ids().iter().map(|&t| i64::from(t)).collect()).collect();
        let input_ids = i64_tensor(&ids, width)?;
        let attention_mask = i64_tensor(&mask, width)?;
        let token_type_ids = i64_tensor(&types, width)?;
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
        let dims = hidden.dimensions();
        let d = self.dimensions as usize;
        if dims.len() != 3 || dims[0] as usize != texts.len() || dims[1] as usize != width || dims[2] as usize != d {
            return Err(PluginError::Internal(format!("unexpected last_hidden_state shape {dims:?}")));
        }
        let bytes = hidden.read();
        let mut out = Vec::with_capacity(texts.len());
        for (row, enc) in encodings.iter().enumerate() {
            let mut pooled = vec![0f32; d];
            let mut count = 0f32;
            for (pos, &m) in enc.get_attention_mask().iter().enumerate() {
                if m == 0 {
                    continue;
                }
                count += 1.0;
                let base = ((row * width + pos) * d) * 4;
                for (k, slot) in pooled.iter_mut().enumerate() {
                    let o = base + k * 4;
                    *slot += f32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
                }
            }
            let count = count.max(1e-9);
            pooled.iter_mut().for_each(|v| *v /= count);
            let norm = pooled.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            let sign = if cfg!(feature = "negate") { -1.0 } else { 1.0 };
            pooled.iter_mut().for_each(|v| *v = sign * *v / norm);
            out.push(Embedding { values: pooled, tokens: enc.get_attention_mask().iter().filter(|&&m| m != 0).count() as u32 });
        }
        Ok(out)
    }

    fn embed(&self, texts: &[String], truncate: bool) -> Result<Vec<Embedding>, PluginError> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(self.max_batch) {
            out.extend(self.embed_chunk(chunk, truncate)?);
        }
        Ok(out)
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
            let enc = s
                .tokenizer
                .encode(text, true)
                .map_err(|e| PluginError::InvalidInput(format!("cannot tokenise input: {e}")))?;
            let overflow: usize = enc.get_overflowing().iter().map(|o| o.len().saturating_sub(2)).sum();
            Ok((enc.len() + overflow) as u32)
        })
    }

    fn generate(_request: GenerateRequest, _sink: &Sink) -> Result<GenerateResult, PluginError> {
        Err(PluginError::Unsupported("embed-minilm embeds text; it does not generate".into()))
    }
}

export!(Component);
