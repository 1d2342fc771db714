//! Request bodies shared by the HTTP routes: reading a JSON object within the size limit, required fields, lists
//! of strings, and the embeddings and rerank requests that the OpenAI routes and the worker routes both take.
//! Every failure is a 400 (or 413) naming the field that was wrong.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value};

use super::error::ApiError;
pub use crate::worker::router::VERSION_HEADER;

/// The body, or a 413 past `limit` / a 400 when it could not be read.
pub fn body_bytes(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(limit)
        } else {
            ApiError::invalid(None, format!("Could not read the request body: {rejection}"))
        }
    })
}

/// Parses a JSON object body, turning every failure into a 400 or 413 that says what was wrong.
pub fn json_object(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Map<String, Value>, ApiError> {
    let bytes = body_bytes(body, limit)?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid(None, format!("The request body is not valid JSON: {e}")))?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::invalid(None, "The request body must be a JSON object")),
    }
}

pub fn required<'a>(body: &'a Map<String, Value>, field: &'static str) -> Result<&'a Value, ApiError> {
    body.get(field).ok_or_else(|| ApiError::invalid(Some(field), format!("Missing required parameter: `{field}`")))
}

pub fn required_string(body: &Map<String, Value>, field: &'static str) -> Result<String, ApiError> {
    match required(body, field)? {
        Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
        Value::String(_) => Err(ApiError::invalid(Some(field), format!("`{field}` must not be empty"))),
        _ => Err(ApiError::invalid(Some(field), format!("`{field}` must be a string"))),
    }
}

/// Names the plugin version that computed `response` in [`VERSION_HEADER`].
pub fn with_version(mut response: Response, version: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(version) {
        response.headers_mut().insert(VERSION_HEADER, v);
    }
    response
}

pub fn string_list(value: &Value, field: &'static str, max: usize) -> Result<Vec<String>, ApiError> {
    let items = match value {
        Value::String(s) => vec![Value::String(s.clone())],
        Value::Array(items) => items.clone(),
        _ => return Err(ApiError::invalid(Some(field), format!("`{field}` must be a string or a list of strings"))),
    };
    if items.is_empty() {
        return Err(ApiError::invalid(Some(field), format!("`{field}` must not be empty")));
    }
    if items.len() > max {
        return Err(ApiError::invalid(
            Some(field),
            format!("`{field}` has {} items; at most {max} are allowed per request", items.len()),
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) if s.is_empty() => {
                Err(ApiError::invalid(Some(field), format!("`{field}[{i}]` is an empty string")))
            }
            Value::String(s) => Ok(s),
            Value::Number(_) | Value::Array(_) => Err(ApiError::invalid(
                Some(field),
                format!("`{field}[{i}]` is not a string: token-id input is not supported, send text"),
            )),
            _ => Err(ApiError::invalid(Some(field), format!("`{field}[{i}]` must be a string"))),
        })
        .collect()
}

/// An embeddings request: `model`, `input` (a string or a list of strings) and `truncate` (default true).
pub struct EmbedRequest {
    pub model: String,
    pub texts: Vec<String>,
    pub truncate: bool,
}

impl EmbedRequest {
    pub fn parse(body: &Map<String, Value>, max_inputs: usize) -> Result<Self, ApiError> {
        let model = required_string(body, "model")?;
        let texts = string_list(required(body, "input")?, "input", max_inputs)?;
        let truncate = match body.get("truncate") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(ApiError::invalid(Some("truncate"), "`truncate` must be a boolean")),
        };
        Ok(Self { model, texts, truncate })
    }
}

/// The fields every rerank request has: `model`, `query` and `documents`.
pub struct RerankRequest {
    pub model: String,
    pub query: String,
    pub documents: Vec<String>,
}

impl RerankRequest {
    pub fn parse(body: &Map<String, Value>, max_documents: usize) -> Result<Self, ApiError> {
        let model = required_string(body, "model")?;
        let query = required_string(body, "query")?;
        let documents = string_list(required(body, "documents")?, "documents", max_documents)?;
        Ok(Self { model, query, documents })
    }
}
