//! OpenAI-shaped errors: `{"error": {"message", "type", "param", "code"}}`, and the one table mapping every
//! internal error to its HTTP status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::plugin::{CallError, GuestError, PluginError};
use crate::registry::RegistryError;
use crate::registry::wire::WireError;
use crate::worker::{SequenceError, WorkerError};
use crate::worker::manager::ManagerError;
use crate::worker::remote::RouteError;

/// An error as a client sees it. Internals are logged, not sent.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub param: Option<&'static str>,
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, kind: &'static str, code: Option<&'static str>, message: impl Into<String>) -> Self {
        Self { status, kind, code, param: None, message: message.into() }
    }

    pub fn invalid(param: Option<&'static str>, message: impl Into<String>) -> Self {
        Self { param, ..Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", None, message) }
    }

    pub fn model_not_found(model: &str) -> Self {
        Self {
            param: Some("model"),
            ..Self::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("model_not_found"),
                format!("The model `{model}` does not exist"),
            )
        }
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", Some(code), message)
    }

    pub fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_request_error", Some("invalid_api_key"), message)
    }

    pub fn forbidden(message: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, "invalid_request_error", Some("forbidden"), message)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            Some("request_too_large"),
            format!("The request body exceeds the limit of {limit} bytes"),
        )
    }

    pub fn not_ready(detail: &str) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", Some("not_ready"), detail)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "invalid_request_error", Some(code), message)
    }

    /// A required field is missing (FastAPI's status for it, which DB-GPT clients expect).
    pub fn missing(param: &'static str) -> Self {
        Self {
            param: Some(param),
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_error",
                Some("missing_field"),
                format!("field required: `{param}`"),
            )
        }
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", Some(code), message)
    }

    fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, message)
    }
}

impl From<WireError> for ApiError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Missing(field) => ApiError::missing(field),
            other => ApiError::invalid(other.field(), other.to_string()),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let message = chain(&e);
        match e {
            RegistryError::Invalid(invalid) => ApiError::from(WireError::Invalid(invalid)),
            _ => {
                tracing::error!(error = %message, "registry failure");
                ApiError::unavailable("registry_unavailable", message)
            }
        }
    }
}

impl From<ManagerError> for ApiError {
    fn from(e: ManagerError) -> Self {
        let message = chain(&e);
        match e {
            ManagerError::AlreadyRunning(_) => ApiError::conflict("model_already_running", message),
            ManagerError::NotFound(_) => ApiError::not_found("model_not_found", message),
            ManagerError::UnknownPlugin { .. } | ManagerError::Unsupported { .. } | ManagerError::BadName(_) => {
                ApiError::invalid(Some("params"), message)
            }
            ManagerError::BadParam { .. } => ApiError::invalid(Some("params"), message),
            ManagerError::Register { .. } | ManagerError::Deregister { .. } => {
                ApiError::unavailable("registry_unavailable", message)
            }
            ManagerError::Apply { .. } | ManagerError::Persist { .. } => ApiError::internal(message),
        }
    }
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::NotFound(model) => ApiError::model_not_found(&model),
            RouteError::NoHealthy { .. } => ApiError::unavailable("no_healthy_instance", e.to_string()),
            RouteError::Worker(w) => w.into(),
            RouteError::Registry(r) => r.into(),
            RouteError::Remote { status, body, address } => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                let error = &body["error"];
                let message = error["message"].as_str().map(str::to_string).unwrap_or_else(|| format!("worker at {address} failed"));
                let kind = if status.is_server_error() { "server_error" } else { "invalid_request_error" };
                ApiError { status, kind, code: Some("worker_error"), param: None, message }
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}
        });
        (self.status, Json(body)).into_response()
    }
}

/// The full cause chain, for logs and for admin responses (operators need the reason a swap failed).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

impl From<CallError> for ApiError {
    fn from(e: CallError) -> Self {
        use StatusCode as S;
        let (status, kind, code) = match &e {
            CallError::Guest(GuestError::InvalidInput(_)) => (S::BAD_REQUEST, "invalid_request_error", None),
            CallError::Guest(GuestError::Unsupported(_)) => (S::NOT_IMPLEMENTED, "invalid_request_error", Some("unsupported")),
            CallError::Guest(GuestError::Internal(_)) => (S::INTERNAL_SERVER_ERROR, "server_error", Some("plugin_error")),
            CallError::Trap { .. } => (S::INTERNAL_SERVER_ERROR, "server_error", Some("plugin_trap")),
            CallError::Timeout { .. } => (S::GATEWAY_TIMEOUT, "server_error", Some("plugin_timeout")),
            CallError::MemoryLimit { .. } => (S::INTERNAL_SERVER_ERROR, "server_error", Some("plugin_memory_limit")),
            CallError::OutOfFuel { .. } => (S::INTERNAL_SERVER_ERROR, "server_error", Some("plugin_out_of_fuel")),
            CallError::Instantiate { .. } => (S::SERVICE_UNAVAILABLE, "server_error", Some("plugin_unavailable")),
            CallError::Closed(_) => (S::SERVICE_UNAVAILABLE, "server_error", Some("plugin_unavailable")),
            CallError::NotAWorker { .. }
            | CallError::NotADecoder { .. }
            | CallError::NotAProcessor { .. }
            | CallError::StepCount { .. } => {
                (S::INTERNAL_SERVER_ERROR, "server_error", Some("plugin_error"))
            }
        };
        if status.is_server_error() {
            tracing::warn!(error = %chain(&e), "plugin call failed");
        }
        // A trap's source carries a guest backtrace: the first line says what happened, the rest is for logs.
        let message = match &e {
            CallError::Trap { plugin, source } => {
                let root = chain(source.as_ref());
                let first = root.lines().next().unwrap_or_default().to_string();
                format!("plugin `{plugin}` trapped: {first}")
            }
            other => other.to_string(),
        };
        ApiError::new(status, kind, code, message)
    }
}

impl From<WorkerError> for ApiError {
    fn from(e: WorkerError) -> Self {
        match e {
            WorkerError::Overloaded { .. } | WorkerError::ConcurrencyLimit { .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", Some("rate_limit_exceeded"), e.to_string())
            }
            WorkerError::Stopped(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", Some("model_unavailable"), e.to_string())
            }
            WorkerError::Unsupported { .. } => {
                ApiError::new(StatusCode::NOT_IMPLEMENTED, "invalid_request_error", Some("unsupported"), e.to_string())
            }
            WorkerError::ContextLength { .. } => ApiError {
                code: Some("context_length_exceeded"),
                ..ApiError::invalid(Some("messages"), e.to_string())
            },
            WorkerError::Call(call) => call.into(),
        }
    }
}

impl From<SequenceError> for ApiError {
    fn from(e: SequenceError) -> Self {
        match e {
            SequenceError::Plugin(call) => call.into(),
            SequenceError::Guest(guest) => CallError::Guest(guest).into(),
            SequenceError::Compute(_) | SequenceError::Step(_) => {
                tracing::error!(error = %chain(&e), "generation failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", Some("generation_failed"), e.to_string())
            }
        }
    }
}

impl From<PluginError> for ApiError {
    fn from(e: PluginError) -> Self {
        let message = chain(&e);
        match e {
            PluginError::Unknown(_) => ApiError::not_found("plugin_not_found", message),
            PluginError::UnknownVersion { .. } => ApiError::not_found("version_not_found", message),
            PluginError::NoPrevious(_) => ApiError::conflict("no_previous_version", message),
            PluginError::Compile(_)
            | PluginError::Link { .. }
            | PluginError::WrongWorld { .. }
            | PluginError::Smoke { .. }
            | PluginError::SmokeDimensions { .. } => ApiError {
                code: Some("invalid_component"),
                ..ApiError::invalid(None, message)
            },
            _ => {
                tracing::error!(error = %message, "plugin administration failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, message)
            }
        }
    }
}
