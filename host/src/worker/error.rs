//! The worker manager's errors, in a module of their own so the manager's parts (parameters, the started-models
//! file) and the HTTP layer can name them without importing the manager.

use std::path::PathBuf;

use crate::registry::RegistryError;

/// Errors of the worker manager.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("model `{0}` is already running on this host")]
    AlreadyRunning(String),
    #[error("no worker for model `{0}` on this host")]
    NotFound(String),
    #[error("model `{model}` names plugin `{plugin}`, which this host has not loaded")]
    UnknownPlugin { model: String, plugin: String },
    #[error("plugin `{plugin}` cannot serve `{model}` as {worker_type}: it supports {supported}")]
    Unsupported { model: String, plugin: String, worker_type: &'static str, supported: String },
    #[error("model name `{0}` must be non-empty and must not contain `@`")]
    BadName(String),
    #[error("invalid parameter `{param}`: {reason}")]
    BadParam { param: String, reason: &'static str },
    #[error("registering `{model}` with the registry")]
    Register { model: String, #[source] source: RegistryError },
    #[error("deregistering `{model}` from the registry")]
    Deregister { model: String, #[source] source: RegistryError },
    #[error("{action} failed: {message}")]
    Apply { action: &'static str, message: String },
    #[error("saving the started models to {path}")]
    Persist { path: PathBuf, #[source] source: std::io::Error },
}

