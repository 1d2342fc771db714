//! Plugin administration: list, hot swap, history and rollback.
//!
//! `PUT /admin/plugins/{name}` takes the component's bytes as the body and answers once new requests see the
//! new version; requests in flight finish on the old one. A component that fails validation is refused with
//! 400 `invalid_component` and the old version keeps serving.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::body::{body_bytes, json_object};

pub async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let services = state.services()?;
    let plugins: Vec<_> = services.plugins.iter().map(|p| p.status()).collect();
    Ok(Json(json!({"plugins": plugins})).into_response())
}

pub async fn swap(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let bytes = body_bytes(body, state.settings().plugin_body_limit)?;
    if bytes.is_empty() {
        return Err(ApiError::invalid(None, "The body must be the component's bytes (a .wasm file)"));
    }
    let services = state.services()?;
    let plugin = services.plugins.get(&name)?;
    let info = plugin.swap(bytes.to_vec(), "admin-api").await?;
    Ok(Json(json!({"plugin": name, "version": info})).into_response())
}

pub async fn history(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let services = state.services()?;
    let plugin = services.plugins.get(&name)?;
    Ok(Json(json!({"plugin": name, "current": plugin.current().info.sha256, "history": plugin.history()})).into_response())
}

pub async fn rollback(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let limit = state.settings().body_limit;
    let to = match body {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => None,
        other => match json_object(other, limit)?.get("sha256") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(_) => return Err(ApiError::invalid(Some("sha256"), "`sha256` must be a non-empty string")),
        },
    };
    let services = state.services()?;
    let plugin = services.plugins.get(&name)?;
    let info = plugin.rollback(to.as_deref()).await?;
    Ok(Json(json!({"plugin": name, "version": info})).into_response())
}
