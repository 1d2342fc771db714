//! DB-GPT's worker parameters: applying `params` of a startup or `update_params` request to a model's spec, and
//! describing a worker's parameters (`/api/worker/parameter/descriptions`, `/api/worker/models/supports`).

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::error::ManagerError;
use crate::config::{ModelConfig, WorkerType};

/// One parameter of a worker, as DB-GPT's `ParameterDescription`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamDescription {
    pub param_class: &'static str,
    pub param_name: &'static str,
    pub param_type: &'static str,
    /// The worker's current value.
    pub default_value: Value,
    pub description: &'static str,
    pub required: bool,
    pub valid_values: Option<Vec<&'static str>>,
    pub ext_metadata: Map<String, Value>,
}

/// A model this host could start, as DB-GPT's `SupportedModel`: a worker-adapter plugin and one worker type.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SupportedModel {
    /// The adapter's name.
    pub model: String,
    /// The plugin serving it.
    pub path: String,
    pub worker_type: &'static str,
    pub path_exist: bool,
    pub proxy: bool,
    pub enabled: bool,
    pub params: Vec<ParamDescription>,
}

impl SupportedModel {
    pub fn new(model: &str, plugin: &str, worker_type: WorkerType) -> Self {
        Self {
            model: model.to_string(),
            path: plugin.to_string(),
            worker_type: worker_type.name(),
            path_exist: true,
            proxy: false,
            enabled: true,
            params: parameter_descriptions(&ModelConfig::new(model, worker_type, plugin)),
        }
    }
}

fn positive(params: &Map<String, Value>, name: &str) -> Result<Option<u64>, ManagerError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or(ManagerError::BadParam { param: name.to_string(), reason: "must be a positive integer" }),
    }
}

/// Applies DB-GPT-style `params` to a model's spec. Unknown parameters are refused, not ignored.
pub fn apply_params(spec: &mut ModelConfig, params: &Map<String, Value>) -> Result<(), ManagerError> {
    const KNOWN: [&str; 8] =
        ["plugin", "max_batch", "max_delay_ms", "queue_capacity", "max_in_flight", "concurrency_limit", "weight", "model_name"];
    if let Some(unknown) = params.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(ManagerError::BadParam { param: unknown.clone(), reason: "is not a parameter of this worker" });
    }
    if let Some(v) = params.get("plugin") {
        spec.plugin = v.as_str().ok_or(ManagerError::BadParam { param: "plugin".into(), reason: "must be a string" })?.to_string();
    }
    if let Some(n) = positive(params, "max_batch")? {
        spec.batch.max_batch = n as usize;
    }
    match params.get("max_delay_ms") {
        None | Some(Value::Null) => {}
        Some(v) => {
            spec.batch.max_delay_ms =
                v.as_u64().ok_or(ManagerError::BadParam { param: "max_delay_ms".into(), reason: "must be an integer >= 0" })?;
        }
    }
    if let Some(n) = positive(params, "queue_capacity")? {
        spec.batch.queue_capacity = n as usize;
    }
    if let Some(n) = positive(params, "max_in_flight")? {
        spec.batch.max_in_flight = n as usize;
    }
    if let Some(n) = positive(params, "concurrency_limit")? {
        spec.concurrency_limit = n as usize;
    }
    match params.get("weight") {
        None | Some(Value::Null) => {}
        Some(v) => {
            spec.weight = v
                .as_f64()
                .filter(|w| w.is_finite() && *w >= 0.0)
                .ok_or(ManagerError::BadParam { param: "weight".into(), reason: "must be a number >= 0" })?;
        }
    }
    Ok(())
}

/// A model spec from a startup request: `model`, `worker_type` and `params` (at least `plugin`).
pub fn spec_from_params(model: &str, worker_type: WorkerType, params: &Map<String, Value>) -> Result<ModelConfig, ManagerError> {
    let plugin = params
        .get("plugin")
        .and_then(Value::as_str)
        .ok_or(ManagerError::BadParam { param: "plugin".into(), reason: "is required: the worker-adapter plugin to serve the model" })?;
    let mut spec = ModelConfig::new(model.trim(), worker_type, plugin);
    apply_params(&mut spec, params)?;
    Ok(spec)
}

/// The parameters of a worker serving `spec`, its current values as defaults.
pub fn parameter_descriptions(spec: &ModelConfig) -> Vec<ParamDescription> {
    let p = |param_name, param_type, default_value: Value, required, description| ParamDescription {
        param_class: "omnihost.ModelConfig",
        param_name,
        param_type,
        default_value,
        description,
        required,
        valid_values: None,
        ext_metadata: Map::new(),
    };
    vec![
        p("model_name", "str", json!(spec.name), true, "The name clients use in requests"),
        ParamDescription {
            valid_values: Some(WorkerType::ALL.iter().map(|t| t.name()).collect()),
            ..p("worker_type", "str", json!(spec.worker_type.name()), true, "The kind of worker")
        },
        p("plugin", "str", json!(spec.plugin), true, "The worker-adapter plugin serving the model"),
        p("max_batch", "int", json!(spec.batch.max_batch), false, "Most inputs in one batched plugin call"),
        p("max_delay_ms", "int", json!(spec.batch.max_delay_ms), false, "Longest a request waits for others to join its batch"),
        p("queue_capacity", "int", json!(spec.batch.queue_capacity), false, "Requests that may wait for the plugin; more get 429"),
        p("max_in_flight", "int", json!(spec.batch.max_in_flight), false, "Batches handed to the plugin at once"),
        p("concurrency_limit", "int", json!(spec.concurrency_limit), false, "Requests in flight at once; more get 429"),
        p("weight", "float", json!(spec.weight), false, "Share of traffic relative to other instances of the model"),
    ]
}
