//! DB-GPT's wire shape of a model instance, so DB-GPT's registry client works against our controller.
//!
//! `model_name` carries the key `name@type`; answers carry exactly DB-GPT's `ModelInstance` fields (its client
//! builds a dataclass from them and would reject extra keys). A bare name without `@type` is accepted as
//! DB-GPT's default type, `llm`, unless a `worker_type` field names another.

use serde_json::{Map, Value, json};

use super::{Instance, InstanceId, InvalidInstance};
use crate::config::WorkerType;
use crate::time::rfc3339_ms;

/// Why a wire instance was refused. `Missing` is a 422 (a required field is absent), the rest are 400s.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WireError {
    #[error("field required: `{0}`")]
    Missing(&'static str),
    #[error("`{field}` must be {expected}")]
    Type { field: &'static str, expected: &'static str },
    #[error("unknown worker type `{0}` (one of llm, text2vec, reranker, pipeline)")]
    WorkerType(String),
    #[error(transparent)]
    Invalid(#[from] InvalidInstance),
}

impl WireError {
    /// The field the error is about, for the `param` of an error answer.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::Missing(f) | Self::Type { field: f, .. } => Some(f),
            Self::WorkerType(_) => Some("model_name"),
            Self::Invalid(InvalidInstance::Name(_)) => Some("model_name"),
            Self::Invalid(InvalidInstance::EmptyHost) => Some("host"),
            Self::Invalid(InvalidInstance::Port(_)) => Some("port"),
            Self::Invalid(InvalidInstance::Weight(_)) => Some("weight"),
        }
    }
}

/// Splits a key `name@type` (or a bare name with an optional explicit type) into its parts.
pub fn parse_key(key: &str, explicit_type: Option<&str>) -> Result<(String, WorkerType), WireError> {
    let key = key.trim();
    let (name, type_text) = match key.rsplit_once('@') {
        Some((name, t)) => (name, Some(t)),
        None => (key, explicit_type),
    };
    let worker_type = match type_text {
        Some(t) => WorkerType::parse(t.trim()).ok_or_else(|| WireError::WorkerType(t.to_string()))?,
        None => WorkerType::Llm,
    };
    if name.trim().is_empty() || name.contains('@') {
        return Err(InvalidInstance::Name(name.to_string()).into());
    }
    Ok((name.trim().to_string(), worker_type))
}

fn string<'a>(body: &'a Map<String, Value>, field: &'static str) -> Result<Option<&'a str>, WireError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(WireError::Type { field, expected: "a string" }),
    }
}

fn boolean(body: &Map<String, Value>, field: &'static str) -> Result<Option<bool>, WireError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(WireError::Type { field, expected: "a boolean" }),
    }
}

/// The identity named by a wire body (`model_name`, `host`, `port`).
pub fn id_from_json(body: &Map<String, Value>) -> Result<InstanceId, WireError> {
    let key = string(body, "model_name")?.ok_or(WireError::Missing("model_name"))?;
    let host = string(body, "host")?.ok_or(WireError::Missing("host"))?;
    let port = match body.get("port") {
        None | Some(Value::Null) => return Err(WireError::Missing("port")),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_u64()) {
            (Some(p), _) => p,
            (None, Some(_)) => i64::MAX,
            _ => return Err(WireError::Type { field: "port", expected: "an integer" }),
        },
        Some(Value::String(s)) => s.trim().parse().map_err(|_| WireError::Type { field: "port", expected: "an integer" })?,
        Some(_) => return Err(WireError::Type { field: "port", expected: "an integer" }),
    };
    let (name, worker_type) = parse_key(key, string(body, "worker_type")?)?;
    Ok(InstanceId::new(&name, worker_type, host, port)?)
}

/// An instance from a wire body. `healthy` and `last_heartbeat` are the registry's to set and are ignored.
pub fn instance_from_json(body: &Map<String, Value>) -> Result<Instance, WireError> {
    let mut instance = Instance::new(id_from_json(body)?);
    match body.get("weight") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) => instance.weight = n.as_f64().unwrap_or(f64::NAN),
        Some(_) => return Err(WireError::Type { field: "weight", expected: "a number" }),
    }
    instance.check_healthy = boolean(body, "check_healthy")?.unwrap_or(true);
    instance.enabled = boolean(body, "enabled")?.unwrap_or(true);
    instance.prompt_template = string(body, "prompt_template")?.map(str::to_string);
    match body.get("metadata") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => instance.metadata = m.clone(),
        Some(_) => return Err(WireError::Type { field: "metadata", expected: "an object" }),
    }
    instance.validate()?;
    Ok(instance)
}

/// An instance as DB-GPT's `ModelInstance` (exactly its fields).
pub fn instance_to_json(instance: &Instance) -> Value {
    json!({
        "model_name": instance.id.key(),
        "host": instance.id.host,
        "port": instance.id.port,
        "weight": instance.weight,
        "check_healthy": instance.check_healthy,
        "healthy": instance.healthy,
        "enabled": instance.enabled,
        "prompt_template": instance.prompt_template,
        "last_heartbeat": rfc3339_ms(instance.last_heartbeat_ms),
        "remove_from_registry": false,
    })
}

/// The body our own clients send: DB-GPT's fields plus `metadata` (accepted, never echoed).
pub fn instance_to_request(instance: &Instance) -> Value {
    let mut value = instance_to_json(instance);
    value["metadata"] = Value::Object(instance.metadata.clone());
    value
}

/// Reads an answer's instance back; `last_heartbeat` is parsed from the RFC 3339 text.
pub fn instance_from_answer(value: &Value) -> Result<Instance, WireError> {
    let body = value.as_object().ok_or(WireError::Type { field: "instance", expected: "an object" })?;
    let mut instance = instance_from_json(body)?;
    instance.healthy = boolean(body, "healthy")?.unwrap_or(false);
    instance.last_heartbeat_ms = string(body, "last_heartbeat")?.and_then(crate::time::parse_rfc3339_ms).unwrap_or(0);
    Ok(instance)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn keys_split_into_name_and_type() {
        assert_eq!(parse_key("m@text2vec", None).unwrap(), ("m".into(), WorkerType::Text2vec));
        assert_eq!(parse_key("m", None).unwrap(), ("m".into(), WorkerType::Llm));
        assert_eq!(parse_key("m", Some("reranker")).unwrap(), ("m".into(), WorkerType::Reranker));
        assert!(matches!(parse_key("a@b@llm", None), Err(WireError::Invalid(InvalidInstance::Name(_)))));
        assert!(matches!(parse_key("m@gpu", None), Err(WireError::WorkerType(_))));
    }

    #[test]
    fn bodies_are_checked_field_by_field() {
        let ok = instance_from_json(&body(json!({"model_name": "m@llm", "host": "h", "port": 80, "weight": 2.5}))).unwrap();
        assert_eq!((ok.id.port, ok.weight), (80, 2.5));
        let e = instance_from_json(&body(json!({"model_name": "m@llm", "port": 80}))).unwrap_err();
        assert_eq!(e, WireError::Missing("host"));
        let e = instance_from_json(&body(json!({"model_name": "m@llm", "host": "h", "port": 65536}))).unwrap_err();
        assert_eq!(e.field(), Some("port"));
        let e = instance_from_json(&body(json!({"model_name": "m@llm", "host": "h", "port": 1, "weight": -1}))).unwrap_err();
        assert_eq!(e.field(), Some("weight"));
    }

    #[test]
    fn answers_round_trip() {
        let mut i = Instance::new(InstanceId::new("m", WorkerType::Text2vec, "h", 9).unwrap());
        i.last_heartbeat_ms = 1_709_210_096_123;
        let wire = instance_to_json(&i);
        assert_eq!(wire["model_name"], "m@text2vec");
        assert_eq!(wire["last_heartbeat"], "2024-02-29T12:34:56.123Z");
        assert_eq!(instance_from_answer(&wire).unwrap(), i);
    }
}
