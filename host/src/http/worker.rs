//! A worker host's routes, `/api/worker/*` (DB-GPT's worker-manager API): embeddings and rerank for API servers
//! routing here, and lifecycle for operators: apply, startup, shutdown, parameter descriptions, supported models.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query as UrlQuery, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::AppState;
use super::error::ApiError;
use super::body::{EmbedRequest, RerankRequest, json_object, required, with_version};
use crate::config::WorkerType;
use crate::worker::manager::{ApplyType, WorkerManager};
use crate::worker::params::spec_from_params;
use crate::worker::router::TOKENS_HEADER;

fn manager(state: &AppState) -> Result<Arc<WorkerManager>, ApiError> {
    state
        .services()?
        .resolver
        .local()
        .cloned()
        .ok_or_else(|| ApiError::not_found("not_a_worker_host", "This process runs no workers"))
}

fn worker_type(body: &Map<String, Value>, field: &'static str) -> Result<Option<WorkerType>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(t)) if t.is_empty() => Ok(None),
        Some(Value::String(t)) => WorkerType::parse(t)
            .map(Some)
            .ok_or_else(|| ApiError::invalid(Some(field), format!("unknown worker type `{t}` (llm, text2vec, reranker, pipeline)"))),
        Some(_) => Err(ApiError::invalid(Some(field), format!("`{field}` must be a string"))),
    }
}

fn params(body: &Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    match body.get("params") {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err(ApiError::invalid(Some("params"), "`params` must be an object")),
    }
}

/// `POST /api/worker/embeddings`: `{"model", "input": [..]}` -> a list of vectors (DB-GPT's answer shape);
/// token counts and the plugin version travel in headers.
pub async fn embeddings(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let settings = state.settings();
    let body = json_object(body, settings.body_limit)?;
    let EmbedRequest { model, texts, truncate } = EmbedRequest::parse(&body, settings.max_inputs_per_request)?;
    let manager = manager(&state)?;
    let worker = manager.get(&model, None).ok_or_else(|| ApiError::model_not_found(&model))?;
    let output = worker.embed(texts, truncate).await?;
    let tokens: Vec<String> = output.vectors.iter().map(|e| e.tokens.to_string()).collect();
    let vectors: Vec<&Vec<f32>> = output.vectors.iter().map(|e| &e.values).collect();
    let mut response = with_version(Json(vectors).into_response(), &output.plugin_version);
    if let Ok(v) = HeaderValue::from_str(&tokens.join(",")) {
        response.headers_mut().insert(TOKENS_HEADER, v);
    }
    Ok(response)
}

/// `POST /api/worker/rerank`: `{"model", "query", "documents"}` -> a list of scores, one per document.
pub async fn rerank(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let settings = state.settings();
    let body = json_object(body, settings.body_limit)?;
    let RerankRequest { model, query, documents } = RerankRequest::parse(&body, settings.max_inputs_per_request)?;
    let manager = manager(&state)?;
    let worker = manager.get(&model, None).ok_or_else(|| ApiError::model_not_found(&model))?;
    let (scores, version) = worker.rerank(query, documents).await?;
    Ok(with_version(Json(scores).into_response(), &version))
}

/// `POST /api/worker/apply`: `{"model"?, "worker_type"?, "apply_type", "params"?}` -> `{message, success, timecost}`.
pub async fn apply(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = json_object(body, state.settings().body_limit)?;
    let action = match required(&body, "apply_type")? {
        Value::String(s) => serde_json::from_value::<ApplyType>(Value::String(s.to_ascii_lowercase())).map_err(|_| {
            ApiError::invalid(Some("apply_type"), format!("unknown apply_type `{s}` (start, stop, restart, update_params)"))
        })?,
        _ => return Err(ApiError::invalid(Some("apply_type"), "`apply_type` must be a string")),
    };
    let model = match body.get("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(m)) if m.trim().is_empty() => None,
        Some(Value::String(m)) => Some(m.trim().to_string()),
        Some(_) => return Err(ApiError::invalid(Some("model"), "`model` must be a string")),
    };
    let worker_type = worker_type(&body, "worker_type")?;
    let params = params(&body)?;
    let manager = manager(&state)?;
    let out = manager.apply(model.as_deref(), worker_type, action, Some(&params)).await;
    Ok(Json(out).into_response())
}

/// `POST /api/worker/models/startup`: `{"model", "worker_type", "params": {"plugin", ...}}` -> `true`.
pub async fn startup(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = json_object(body, state.settings().body_limit)?;
    let model = body.get("model").and_then(Value::as_str).ok_or_else(|| ApiError::missing("model"))?;
    let worker_type = worker_type(&body, "worker_type")?.ok_or_else(|| ApiError::missing("worker_type"))?;
    let spec = spec_from_params(model, worker_type, &params(&body)?)?;
    manager(&state)?.model_startup(spec).await?;
    Ok(Json(true).into_response())
}

/// `POST /api/worker/models/shutdown`: `{"model", "worker_type"}` -> `true`.
pub async fn shutdown(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = json_object(body, state.settings().body_limit)?;
    let model = body.get("model").and_then(Value::as_str).ok_or_else(|| ApiError::missing("model"))?;
    let worker_type = worker_type(&body, "worker_type")?.ok_or_else(|| ApiError::missing("worker_type"))?;
    manager(&state)?.model_shutdown(worker_type, model.trim()).await?;
    Ok(Json(true).into_response())
}

/// `GET /api/worker/parameter/descriptions?model=&worker_type=`.
pub async fn parameter_descriptions(
    State(state): State<AppState>,
    UrlQuery(query): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let model = query.get("model").ok_or_else(|| ApiError::missing("model"))?;
    let mut body = Map::new();
    if let Some(t) = query.get("worker_type") {
        body.insert("worker_type".into(), Value::String(t.clone()));
    }
    let worker_type = worker_type(&body, "worker_type")?.unwrap_or(WorkerType::Llm);
    let manager = manager(&state)?;
    let params = manager
        .parameter_descriptions(worker_type, model)
        .ok_or_else(|| ApiError::not_found("model_not_found", format!("no worker for `{model}@{}` on this host", worker_type.name())))?;
    Ok(Json(params).into_response())
}

/// `GET /api/worker/models/supports`: what this host can start, as DB-GPT's list of `SupportedModel` per host.
pub async fn supports(State(state): State<AppState>) -> Result<Response, ApiError> {
    let manager = manager(&state)?;
    let (host, port) = state.services()?.advertised.clone();
    Ok(Json(json!([{"host": host, "port": port, "models": manager.supported_models()}])).into_response())
}
