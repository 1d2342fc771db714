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
use crate::worker::error::ManagerError;
use crate::worker::router::RouteError;

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

    /// A server-side failure whose cause (database errors, paths, library text) stays in the log: the client
    /// gets what failed and an id to find the log line by.
    fn hidden(status: StatusCode, code: &'static str, what: &str, e: &dyn std::error::Error) -> Self {
        use std::hash::BuildHasher;
        let id = format!("{:016x}", std::collections::hash_map::RandomState::new().hash_one(what));
        tracing::error!(error_id = %id, error = %chain(e), "{what} failed");
        Self::new(status, "server_error", Some(code), format!("{what} failed (error id {id}; the server log has the cause)"))
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
        match e {
            RegistryError::Invalid(invalid) => ApiError::from(WireError::Invalid(invalid)),
            other => ApiError::hidden(StatusCode::SERVICE_UNAVAILABLE, "registry_unavailable", "the registry", &other),
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
                ApiError::hidden(StatusCode::SERVICE_UNAVAILABLE, "registry_unavailable", "registering with the registry", &e)
            }
            ManagerError::Apply { .. } | ManagerError::Persist { .. } => {
                ApiError::hidden(StatusCode::INTERNAL_SERVER_ERROR, "worker_manager_error", "the worker manager", &e)
            }
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

pub use crate::error::chain;

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
            CallError::BadOutput { .. } => (S::INTERNAL_SERVER_ERROR, "server_error", Some("plugin_bad_output")),
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
            // The client picked a model of another kind (chat with an embedder): its mistake, as OpenAI says.
            WorkerError::Unsupported { .. } => ApiError {
                param: Some("model"),
                ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", Some("unsupported"), e.to_string())
            },
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
                ApiError::hidden(StatusCode::INTERNAL_SERVER_ERROR, "generation_failed", "generation", &e)
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
            other => ApiError::hidden(StatusCode::INTERNAL_SERVER_ERROR, "plugin_admin_error", "plugin administration", &other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_code(e: impl Into<ApiError>) -> (u16, Option<&'static str>, Option<&'static str>) {
        let e = e.into();
        (e.status.as_u16(), e.code, e.param)
    }

    #[test]
    fn plugin_failures_map_to_their_statuses() {
        let plugin = || "p".to_string();
        assert_eq!(status_code(CallError::Guest(GuestError::InvalidInput("empty".into()))), (400, None, None));
        assert_eq!(status_code(CallError::Guest(GuestError::Unsupported("rerank".into()))), (501, Some("unsupported"), None));
        assert_eq!(status_code(CallError::Guest(GuestError::Internal("bug".into()))), (500, Some("plugin_error"), None));
        assert_eq!(status_code(CallError::Timeout { plugin: plugin(), after_ms: 5 }), (504, Some("plugin_timeout"), None));
        assert_eq!(status_code(CallError::MemoryLimit { plugin: plugin(), cap_mib: 64 }), (500, Some("plugin_memory_limit"), None));
        assert_eq!(status_code(CallError::OutOfFuel { plugin: plugin() }), (500, Some("plugin_out_of_fuel"), None));
        assert_eq!(status_code(CallError::Closed(plugin())), (503, Some("plugin_unavailable"), None));
        let nan = CallError::BadOutput { plugin: plugin(), problem: crate::plugin::OutputProblem::NonFinite { index: 2 } };
        assert_eq!(status_code(nan), (500, Some("plugin_bad_output"), None));
        let trap = CallError::Trap { plugin: plugin(), source: "unreachable executed\nwasm backtrace: ...".into() };
        let e = ApiError::from(trap);
        assert_eq!(e.message, "plugin `p` trapped: unreachable executed", "the guest backtrace stays in the log");
    }

    #[test]
    fn worker_and_routing_failures_map_to_their_statuses() {
        let model = || "m".to_string();
        assert_eq!(status_code(WorkerError::Overloaded { model: model(), capacity: 4 }), (429, Some("rate_limit_exceeded"), None));
        assert_eq!(status_code(WorkerError::ConcurrencyLimit { model: model(), limit: 4 }), (429, Some("rate_limit_exceeded"), None));
        assert_eq!(status_code(WorkerError::Stopped(model())), (503, Some("model_unavailable"), None));
        assert_eq!(status_code(WorkerError::Unsupported { model: model(), operation: "rerank" }), (400, Some("unsupported"), Some("model")));
        let long = WorkerError::ContextLength { model: model(), prompt_tokens: 9000, capacity: 2048 };
        assert_eq!(status_code(long), (400, Some("context_length_exceeded"), Some("messages")));
        assert_eq!(status_code(RouteError::NotFound(model())), (404, Some("model_not_found"), Some("model")));
        assert_eq!(status_code(RouteError::NoHealthy { model: model(), worker_type: "llm" }), (503, Some("no_healthy_instance"), None));
        let remote = RouteError::Remote {
            address: "10.0.0.2:8080".into(),
            status: 400,
            body: json!({"error": {"message": "`temperature` must be between 0 and 2"}}),
        };
        let e = ApiError::from(remote);
        assert_eq!((e.status.as_u16(), e.kind, e.message.as_str()), (400, "invalid_request_error", "`temperature` must be between 0 and 2"));
    }

    #[test]
    fn server_side_causes_stay_out_of_the_body() {
        let e = ApiError::from(RegistryError::Refused {
            url: "http://10.1.2.3:8000".into(),
            status: 500,
            message: "password authentication failed for user omnihost".into(),
        });
        assert_eq!((e.status.as_u16(), e.code), (503, Some("registry_unavailable")));
        assert!(!e.message.contains("password") && !e.message.contains("10.1.2.3"), "{}", e.message);
        assert!(e.message.contains("error id"), "{}", e.message);
        let invalid = ApiError::from(RegistryError::Invalid(crate::registry::InvalidInstance::EmptyHost));
        assert_eq!(invalid.status.as_u16(), 400);
    }
}
