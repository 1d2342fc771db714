//! The controller's routes, in DB-GPT's wire shapes so DB-GPT's registry client works unchanged:
//! `GET /api/health`, `GET|POST|DELETE /api/controller/models`, `POST /api/controller/heartbeat`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query as UrlQuery, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::body::json_object;
use crate::registry::wire;
use crate::registry::{Query, Registry};

fn registry(state: &AppState) -> Result<Arc<dyn Registry>, ApiError> {
    state
        .services()?
        .registry
        .clone()
        .ok_or_else(|| ApiError::not_found("not_a_controller", "This process is not a controller (it keeps no registry)"))
}

fn flag(params: &HashMap<String, String>, name: &'static str) -> Result<bool, ApiError> {
    match params.get(name).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(false),
        Some(v) if v == "true" || v == "1" => Ok(true),
        Some(v) if v == "false" || v == "0" || v.is_empty() => Ok(false),
        Some(_) => Err(ApiError::invalid(Some(name), format!("`{name}` must be true or false"))),
    }
}

pub async fn health() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// `POST /api/controller/models`: registers an instance.
pub async fn register(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = json_object(body, state.settings().body_limit)?;
    let instance = wire::instance_from_json(&body)?;
    let registry = registry(&state)?;
    Ok(Json(registry.register(&instance).await?).into_response())
}

/// `POST /api/controller/heartbeat`: stamps an instance's heartbeat (registering it when unknown).
pub async fn heartbeat(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = json_object(body, state.settings().body_limit)?;
    let instance = wire::instance_from_json(&body)?;
    let registry = registry(&state)?;
    let answer = registry.heartbeat(&instance).await?;
    crate::metrics::heartbeats(1);
    Ok(Json(answer).into_response())
}

/// `DELETE /api/controller/models?model_name=&host=&port=&remove_from_registry=`.
pub async fn deregister(
    State(state): State<AppState>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let mut body = serde_json::Map::new();
    for field in ["model_name", "host", "port", "worker_type"] {
        if let Some(v) = params.get(field) {
            body.insert(field.to_string(), Value::String(v.clone()));
        }
    }
    let id = wire::id_from_json(&body)?;
    let remove = flag(&params, "remove_from_registry")?;
    let registry = registry(&state)?;
    Ok(Json(registry.deregister(&id, remove).await?).into_response())
}

/// `GET /api/controller/models?model_name=&healthy_only=`: `model_name` is a key `name@type` or a bare name
/// (every type); without it, every instance.
pub async fn list(
    State(state): State<AppState>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let healthy_only = flag(&params, "healthy_only")?;
    let mut query = Query { healthy_only, ..Query::default() };
    if let Some(key) = params.get("model_name").map(|k| k.trim()).filter(|k| !k.is_empty()) {
        if key.contains('@') {
            let (name, worker_type) = wire::parse_key(key, None)?;
            query.model_name = Some(name);
            query.worker_type = Some(worker_type);
        } else {
            query.model_name = Some(key.to_string());
        }
    }
    let registry = registry(&state)?;
    let instances = registry.list(&query).await?;
    Ok(Json(instances.iter().map(wire::instance_to_json).collect::<Vec<_>>()).into_response())
}
