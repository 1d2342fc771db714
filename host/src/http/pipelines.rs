//! Pipelines over HTTP: `GET /v1/pipelines` lists them with their stages, `POST /v1/pipelines/{name}/generate`
//! runs one request (`{"prompts": [...]}` or `{"image": "<base64 or data URL>"}`, optional
//! `sampling_params_list`) and answers `{"outputs": [{stage_id, final_output_type, outputs}]}`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::body::json_object;
use crate::pipeline::{Input, PipelineError, outputs_json};

pub async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let services = state.services()?;
    let data: Vec<Value> = services
        .pipelines
        .iter()
        .map(|p| {
            json!({
                "id": p.name,
                "object": "pipeline",
                "description": p.config.description,
                "processors": p.processors(),
                "max_in_flight": p.config.max_in_flight,
                "peak_busy_stages": p.peak_busy_stages(),
                "stages": p.stage_info(),
            })
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

/// The bytes of an image given as base64 or as a `data:` URL.
fn image_bytes(value: &Value) -> Result<Vec<u8>, ApiError> {
    let Some(text) = value.as_str() else {
        return Err(ApiError::invalid(Some("image"), "`image` must be a string: base64 PNG or JPEG bytes, or a data URL"));
    };
    let payload = match text.strip_prefix("data:") {
        Some(url) => match url.split_once(',') {
            Some((meta, data)) if meta.ends_with(";base64") => data,
            _ => return Err(ApiError::invalid(Some("image"), "`image` data URLs must be base64 (`data:image/png;base64,...`)")),
        },
        None => text,
    };
    let payload: String = payload.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload.as_bytes())
        .map_err(|e| ApiError::invalid(Some("image"), format!("`image` is not valid base64: {e}")))?;
    if bytes.is_empty() {
        return Err(ApiError::invalid(Some("image"), "`image` is empty"));
    }
    Ok(bytes)
}

fn inputs(body: &serde_json::Map<String, Value>, max: usize) -> Result<(Vec<Input>, bool), ApiError> {
    match (body.get("prompts"), body.get("image")) {
        (Some(_), Some(_)) => Err(ApiError::invalid(Some("prompts"), "Give either `prompts` or `image`, not both")),
        (Some(Value::Array(items)), None) => {
            if items.is_empty() || items.len() > max {
                return Err(ApiError::invalid(Some("prompts"), format!("`prompts` must hold 1 to {max} strings")));
            }
            let prompts = items
                .iter()
                .map(|p| p.as_str().map(|s| Input::Prompt(s.to_string())))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| ApiError::invalid(Some("prompts"), "`prompts` must be a list of strings"))?;
            Ok((prompts, false))
        }
        (Some(Value::String(p)), None) => Ok((vec![Input::Prompt(p.clone())], false)),
        (Some(_), None) => Err(ApiError::invalid(Some("prompts"), "`prompts` must be a list of strings")),
        (None, Some(image)) => {
            let input = Input::image(image_bytes(image)?).map_err(|e| ApiError::invalid(Some("image"), e.to_string()))?;
            Ok((vec![input], true))
        }
        (None, None) => Err(ApiError::invalid(Some("prompts"), "Missing required parameter: `prompts` (or `image`)")),
    }
}

pub async fn generate(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let settings = state.settings();
    let body = json_object(body, settings.body_limit)?;
    let services = state.services()?;
    let Some(pipeline) = services.pipelines.get(&name) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("pipeline_not_found"),
            format!("The pipeline `{name}` does not exist"),
        ));
    };
    let (inputs, single) = inputs(&body, settings.max_inputs_per_request)?;
    let stages = pipeline.stage_ids().len();
    let params = match body.get("sampling_params_list") {
        None | Some(Value::Null) => vec![json!({}); stages],
        Some(Value::Array(list)) => list.clone(),
        Some(_) => return Err(ApiError::invalid(Some("sampling_params_list"), "`sampling_params_list` must be a list of objects, one per stage")),
    };
    let started = std::time::Instant::now();
    let finals = pipeline.generate(inputs, params).await.map_err(pipeline_error)?;
    let outputs = outputs_json(finals, single);
    Ok(Json(json!({
        "object": "pipeline.generation",
        "pipeline": name,
        "created": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "elapsed_ms": (started.elapsed().as_secs_f64() * 1e4).round() / 10.0,
        "outputs": outputs,
    }))
    .into_response())
}

/// A stage failure names the stage; the client's fault (bad image, bad parameter) is a 400.
pub fn pipeline_error(e: PipelineError) -> ApiError {
    match &e {
        PipelineError::ParamsLength { .. } | PipelineError::BadParams { .. } => {
            ApiError::invalid(Some("sampling_params_list"), e.to_string())
        }
        PipelineError::NoInputs => ApiError::invalid(Some("prompts"), e.to_string()),
        PipelineError::Overloaded { .. } => {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", Some("rate_limit_exceeded"), e.to_string())
        }
        PipelineError::Stage { source, .. } if source.is_client_error() => {
            ApiError::invalid(None, super::error::chain(&e))
        }
        PipelineError::Stage {
            source: crate::pipeline::StageError::Timeout(_) | crate::pipeline::StageError::Processor(crate::plugin::CallError::Timeout { .. }),
            ..
        } => {
            ApiError::new(StatusCode::GATEWAY_TIMEOUT, "server_error", Some("stage_timeout"), e.to_string())
        }
        PipelineError::Stage { source, .. } => {
            tracing::warn!(error = %super::error::chain(&e), "pipeline stage failed");
            // The stage is named; a trap's guest backtrace stays in the log and the client gets its root cause.
            let first = match source {
                crate::pipeline::StageError::Processor(crate::plugin::CallError::Trap { plugin, source }) => {
                    let mut root: &dyn std::error::Error = source.as_ref();
                    while let Some(next) = root.source() {
                        root = next;
                    }
                    format!("plugin `{plugin}` trapped: {}", root.to_string().lines().next().unwrap_or_default())
                }
                other => super::error::chain(other).lines().next().unwrap_or_default().to_string(),
            };
            let message = match &e {
                PipelineError::Stage { pipeline, stage_id, .. } => format!("pipeline `{pipeline}` stage {stage_id} failed: {first}"),
                _ => first,
            };
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", Some("stage_failed"), message)
        }
        PipelineError::UnknownStage { .. } => ApiError::invalid(None, e.to_string()),
        PipelineError::SourceFailed { .. } | PipelineError::Aborted { .. } => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", Some("stage_failed"), e.to_string())
        }
    }
}
