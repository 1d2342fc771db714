//! The OpenAI-compatible API: `GET /v1/models`, `POST /v1/embeddings`, `POST /v1/rerank`.
//!
//! Embeddings: `input` is a string or a list of strings. Texts longer than the model's input limit (256 tokens
//! for all-MiniLM-L6-v2, the length it was trained with) are truncated by default, as sentence-transformers
//! does; send `"truncate": false` to get a 400 instead. `dimensions` is accepted only when it equals the
//! model's own. Rerank scores documents with the model's adapter; the shipped MiniLM adapter scores by
//! embedding cosine similarity (a bi-encoder), since no cross-encoder ships with the model packages.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

use super::AppState;
use super::body::{EmbedRequest, RerankRequest, json_object, with_version};
use super::error::ApiError;
use crate::plugin::{CallError, GuestError};

pub async fn models(State(state): State<AppState>) -> Result<Response, ApiError> {
    let services = state.services()?;
    let data: Vec<Value> = services
        .resolver
        .models()
        .await?
        .into_iter()
        .map(|(model, worker_type)| {
            json!({
                "id": model,
                "object": "model",
                "created": state.started_unix(),
                "owned_by": "omnihost",
                "worker_type": worker_type.name(),
            })
        })
        .collect();
    let mut data = data;
    // Pipelines are served by this host under their names, like models (vllm-omni serves its OmniLLM so).
    data.extend(services.pipelines.iter().map(|p| {
        json!({
            "id": p.name,
            "object": "model",
            "created": state.started_unix(),
            "owned_by": "omnihost",
            "worker_type": "pipeline",
        })
    }));
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

/// `/v1/embeddings`' answer, serialised from typed fields: an `f32` goes out in its shortest form
/// (`0.04247213`), where a `serde_json::Value` would widen it to an `f64` (`0.042472131550312042`), which made
/// answers ~1.7x larger and slower to write and to parse, for digits the model never computed.
#[derive(serde::Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<EmbeddingItem<'a>>,
    model: &'a str,
    usage: Usage,
}

#[derive(serde::Serialize)]
struct EmbeddingItem<'a> {
    object: &'static str,
    index: usize,
    embedding: Values<'a>,
}

#[derive(serde::Serialize)]
#[serde(untagged)]
enum Values<'a> {
    Floats(&'a [f32]),
    Base64(String),
}

#[derive(serde::Serialize)]
struct Usage {
    prompt_tokens: u64,
    total_tokens: u64,
}

pub async fn embeddings(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let settings = state.settings();
    let body = json_object(body, settings.body_limit)?;
    let EmbedRequest { model, texts, truncate } = EmbedRequest::parse(&body, settings.max_inputs_per_request)?;
    let base64 = match body.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(f)) if f == "float" => false,
        Some(Value::String(f)) if f == "base64" => true,
        Some(_) => {
            return Err(ApiError::invalid(Some("encoding_format"), "`encoding_format` must be `float` or `base64`"));
        }
    };
    let services = state.services()?;
    let local = services.resolver.local().and_then(|m| m.get(&model, None));
    let known_dims = local.as_ref().and_then(|w| w.adapter()).and_then(|a| a.embedding_dimensions);
    let dimensions = match body.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_u64().is_some_and(|d| d >= 1) => n.as_u64(),
        Some(_) => return Err(ApiError::invalid(Some("dimensions"), "`dimensions` must be a positive integer")),
    };
    let wrong_dims = |actual: u64| {
        ApiError::invalid(
            Some("dimensions"),
            format!(
                "`dimensions` {} is not supported: model `{model}` returns {actual} dimensions and cannot shorten them",
                dimensions.unwrap_or(0)
            ),
        )
    };
    // Refuse before computing when the model is local and says its size; a remote one is checked on return.
    if let (Some(d), Some(k)) = (dimensions, known_dims)
        && d != u64::from(k)
    {
        return Err(wrong_dims(u64::from(k)));
    }
    let output = services.resolver.embed(&model, texts, truncate).await?;
    if let (Some(d), Some(first)) = (dimensions, output.vectors.first())
        && first.values.len() as u64 != d
    {
        return Err(wrong_dims(first.values.len() as u64));
    }
    let tokens: u64 = output.vectors.iter().map(|e| u64::from(e.tokens)).sum();
    let data = output
        .vectors
        .iter()
        .enumerate()
        .map(|(index, e)| {
            let embedding = if base64 {
                let mut bytes = Vec::with_capacity(e.values.len() * 4);
                for v in &e.values {
                    bytes.extend_from_slice(&v.to_le_bytes());
                }
                Values::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Values::Floats(&e.values)
            };
            EmbeddingItem { object: "embedding", index, embedding }
        })
        .collect();
    let body = EmbeddingList { object: "list", data, model: &model, usage: Usage { prompt_tokens: tokens, total_tokens: tokens } };
    Ok(with_version(Json(body).into_response(), &output.plugin_version))
}

pub async fn rerank(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let settings = state.settings();
    let body = json_object(body, settings.body_limit)?;
    let RerankRequest { model, query, documents } = RerankRequest::parse(&body, settings.max_inputs_per_request)?;
    let top_n = match body.get("top_n") {
        None | Some(Value::Null) => documents.len(),
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n >= 1) => n.as_u64().unwrap_or(1) as usize,
        Some(_) => return Err(ApiError::invalid(Some("top_n"), "`top_n` must be a positive integer")),
    };
    let return_documents = matches!(body.get("return_documents"), Some(Value::Bool(true)));
    let services = state.services()?;
    let (scores, version) = services.resolver.rerank(&model, query, documents.clone()).await?;
    // A remote worker of another build might still answer with the wrong count; never index past the documents.
    if scores.len() != documents.len() {
        return Err(CallError::Guest(GuestError::Internal(format!(
            "the model returned {} scores for {} documents",
            scores.len(),
            documents.len()
        )))
        .into());
    }
    let mut ranked: Vec<(usize, f32)> = scores.into_iter().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let results: Vec<Value> = ranked
        .into_iter()
        .take(top_n)
        .map(|(index, score)| {
            let mut r = json!({"index": index, "relevance_score": score});
            if return_documents {
                r["document"] = json!({"text": documents.get(index)});
            }
            r
        })
        .collect();
    Ok(with_version(Json(json!({"object": "list", "model": model, "results": results})).into_response(), &version))
}
