//! `GET /openapi.json`: the OpenAPI 3.0 description of every route the router serves, kept beside the router
//! (a unit test checks that each documented operation is routed, and each route is documented).
//!
//! The handlers parse their bodies field by field (so each error can name its `param`), so there are no
//! request structs to derive schemas from; the schemas here state what those parsers accept: the same fields,
//! types and ranges. Every operation also lists `default` as the OpenAI-shaped error, which is what any
//! status other than the documented success carries.

use std::sync::OnceLock;

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// The example config's models, named in the documented examples.
const EMBEDDER: &str = "all-MiniLM-L6-v2";
const CHAT: &str = "SmolLM2-135M-Instruct";

/// One documented operation.
struct Op {
    method: &'static str,
    path: String,
    tag: &'static str,
    summary: &'static str,
    parameters: Vec<Value>,
    body: Option<Value>,
    /// `(media type, schema)` of the success answers (200).
    ok: Vec<(&'static str, Value)>,
}

fn op(method: &'static str, path: impl Into<String>, tag: &'static str, summary: &'static str) -> Op {
    Op { method, path: path.into(), tag, summary, parameters: Vec::new(), body: None, ok: Vec::new() }
}

impl Op {
    fn json_body(mut self, schema: Value) -> Self {
        self.body = Some(json!({"required": true, "content": {"application/json": {"schema": schema}}}));
        self
    }

    /// A request that works against the example config (`examples/omnihost.toml`).
    fn example(mut self, example: Value) -> Self {
        if let Some(media) = self.body.as_mut().and_then(|b| b["content"].as_object_mut()).and_then(|c| c.values_mut().next()) {
            media["example"] = example;
        }
        self
    }

    fn raw_body(mut self, media: &str, schema: Value, required: bool) -> Self {
        self.body = Some(json!({"required": required, "content": {media: {"schema": schema}}}));
        self
    }

    fn query(mut self, name: &str, schema: Value, required: bool) -> Self {
        self.parameters.push(json!({"name": name, "in": "query", "required": required, "schema": schema}));
        self
    }

    fn path_param(mut self, name: &str) -> Self {
        self.parameters.push(json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}));
        self
    }

    fn answers(mut self, media: &'static str, schema: Value) -> Self {
        self.ok.push((media, schema));
        self
    }

    fn json(self, schema: Value) -> Self {
        self.answers("application/json", schema)
    }
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn string() -> Value {
    json!({"type": "string"})
}

fn object(required: &[&str], properties: Value) -> Value {
    json!({"type": "object", "required": required, "properties": properties})
}

fn list_of(items: Value) -> Value {
    json!({"type": "array", "items": items})
}

/// A string or a non-empty list of strings (`input`, `documents`).
fn texts() -> Value {
    json!({"oneOf": [{"type": "string", "minLength": 1}, {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}}]})
}

/// The parameters shared by chat and completions, with the ranges `chat.rs` enforces.
fn sampling_properties() -> Map<String, Value> {
    let number = |min: f64, max: f64| json!({"type": "number", "minimum": min, "maximum": max, "nullable": true});
    let integer = |min: i64, max: i64| json!({"type": "integer", "minimum": min, "maximum": max, "nullable": true});
    let Value::Object(map) = json!({
        "model": {"type": "string", "minLength": 1},
        "max_tokens": integer(1, i64::from(u32::MAX)),
        "max_completion_tokens": integer(1, i64::from(u32::MAX)),
        "n": integer(1, 16),
        "temperature": number(0.0, 2.0),
        "top_p": number(0.0, 1.0),
        "top_k": {"type": "integer", "nullable": true, "description": "-1 (off) or at least 1; 0 is off"},
        "presence_penalty": number(-2.0, 2.0),
        "frequency_penalty": number(-2.0, 2.0),
        "seed": {"type": "integer", "nullable": true},
        "stop": {"nullable": true, "oneOf": [{"type": "string"}, {"type": "array", "maxItems": 4, "items": {"type": "string"}}]},
        "stream": {"type": "boolean", "nullable": true},
        "stream_options": {"type": "object", "nullable": true, "properties": {"include_usage": {"type": "boolean", "nullable": true}}},
    }) else {
        return Map::new();
    };
    map
}

fn chat_request() -> Value {
    let mut properties = sampling_properties();
    properties.insert(
        "messages".into(),
        json!({"type": "array", "minItems": 1, "items": reference("ChatMessage")}),
    );
    properties.insert("logprobs".into(), json!({"type": "boolean", "nullable": true}));
    properties.insert("top_logprobs".into(), json!({"type": "integer", "minimum": 0, "maximum": 20, "nullable": true}));
    properties.insert("modalities".into(), json!({"type": "array", "items": {"type": "string", "enum": ["text", "audio"]}}));
    properties.insert(
        "audio".into(),
        object(&["voice", "format"], json!({"voice": string(), "format": {"type": "string", "enum": ["wav", "pcm16"]}})),
    );
    json!({"type": "object", "required": ["model", "messages"], "properties": properties})
}

fn completion_request() -> Value {
    let mut properties = sampling_properties();
    properties.insert(
        "prompt".into(),
        json!({"oneOf": [{"type": "string", "minLength": 1}, {"type": "array", "minItems": 1, "maxItems": 1, "items": {"type": "string", "minLength": 1}}]}),
    );
    properties.insert("logprobs".into(), json!({"type": "integer", "minimum": 0, "maximum": 20, "nullable": true}));
    json!({"type": "object", "required": ["model", "prompt"], "properties": properties})
}

/// A whole (not streamed) chat or completion answer; streamed ones are `text/event-stream` of chunks.
fn completion_answer() -> Value {
    object(
        &["id", "object", "created", "model", "choices"],
        json!({
            "id": string(),
            "object": {"type": "string", "enum": ["chat.completion", "text_completion"]},
            "created": {"type": "integer"},
            "model": string(),
            "choices": list_of(json!({"type": "object", "required": ["index", "finish_reason"], "properties": {
                "index": {"type": "integer"},
                "finish_reason": {"type": "string", "nullable": true},
            }})),
            "usage": reference("Usage"),
        }),
    )
}

fn worker_type() -> Value {
    json!({"type": "string", "enum": ["llm", "text2vec", "reranker", "pipeline"]})
}

fn instance_body() -> Value {
    object(
        &["model_name", "host", "port"],
        json!({
            "model_name": {"type": "string", "description": "`name@type`, or a bare name with `worker_type`"},
            "worker_type": worker_type(),
            "host": {"type": "string", "minLength": 1},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "weight": {"type": "number", "minimum": 0},
            "check_healthy": {"type": "boolean"},
            "healthy": {"type": "boolean"},
            "enabled": {"type": "boolean"},
            "prompt_template": {"type": "string", "nullable": true},
            "last_heartbeat": {"type": "string", "nullable": true},
        }),
    )
}

fn generate_params() -> Value {
    object(
        &["model"],
        json!({
            "model": {"type": "string", "minLength": 1},
            "prompt": string(),
            "messages": {"type": "array", "items": {"type": "object"}},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "max_new_tokens": {"type": "integer", "minimum": 1},
            "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
        }),
    )
}

fn model_body() -> Value {
    object(&["model", "worker_type"], json!({"model": {"type": "string", "minLength": 1}, "worker_type": worker_type(), "params": {"type": "object"}}))
}

fn version_answer() -> Value {
    object(&["plugin", "version"], json!({"plugin": string(), "version": reference("PluginVersion")}))
}

/// Every operation of the OpenAI API, under `prefix` (`/v1`, and `/api/v1` for DB-GPT clients).
fn openai_ops(prefix: &'static str) -> Vec<Op> {
    let p = |rest: &str| format!("{prefix}{rest}");
    let tag = if prefix == "/v1" { "openai" } else { "openai (DB-GPT path)" };
    vec![
        op("get", p("/models"), tag, "The models and pipelines served").json(object(
            &["object", "data"],
            json!({"object": {"type": "string", "enum": ["list"]}, "data": list_of(object(&["id", "object", "created", "owned_by"], json!({
                "id": string(), "object": {"type": "string", "enum": ["model"]}, "created": {"type": "integer"},
                "owned_by": string(), "worker_type": worker_type(),
            })))}),
        )),
        op("post", p("/embeddings"), tag, "Embed one text or a list of texts")
            .json_body(object(
                &["model", "input"],
                json!({
                    "model": {"type": "string", "minLength": 1},
                    "input": texts(),
                    "encoding_format": {"type": "string", "enum": ["float", "base64"], "nullable": true},
                    "dimensions": {"type": "integer", "minimum": 1, "nullable": true},
                    "truncate": {"type": "boolean", "nullable": true, "description": "false: a text over the model's limit is a 400"},
                    "user": string(),
                }),
            ))
            .example(json!({"model": EMBEDDER, "input": ["A man is eating food.", "A man is eating a piece of bread."]}))
            .json(object(
                &["object", "data", "model", "usage"],
                json!({
                    "object": {"type": "string", "enum": ["list"]},
                    "data": list_of(object(&["object", "index", "embedding"], json!({
                        "object": {"type": "string", "enum": ["embedding"]}, "index": {"type": "integer"},
                        "embedding": {"oneOf": [list_of(json!({"type": "number"})), {"type": "string", "format": "byte"}]},
                    }))),
                    "model": string(),
                    "usage": reference("Usage"),
                }),
            )),
        op("post", p("/rerank"), tag, "Rank documents against a query")
            .json_body(object(
                &["model", "query", "documents"],
                json!({
                    "model": {"type": "string", "minLength": 1}, "query": {"type": "string", "minLength": 1},
                    "documents": texts(), "top_n": {"type": "integer", "minimum": 1, "nullable": true},
                    "return_documents": {"type": "boolean", "nullable": true},
                }),
            ))
            .example(json!({"model": EMBEDDER, "query": "What do people eat?", "documents": ["A man is eating food.", "The sky is blue."], "top_n": 1, "return_documents": true}))
            .json(object(
                &["object", "model", "results"],
                json!({"object": string(), "model": string(), "results": list_of(object(&["index", "relevance_score"], json!({
                    "index": {"type": "integer"}, "relevance_score": {"type": "number"},
                    "document": {"type": "object", "properties": {"text": string()}},
                })))}),
            )),
        op("post", p("/chat/completions"), tag, "Chat (streamed as server-sent events when `stream` is true)")
            .json_body(chat_request())
            .example(json!({"model": CHAT, "messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 16, "temperature": 0}))
            .json(completion_answer())
            .answers("text/event-stream", string()),
        op("post", p("/completions"), tag, "Text completion (streamed when `stream` is true)")
            .json_body(completion_request())
            .example(json!({"model": CHAT, "prompt": "The capital of France is", "max_tokens": 8}))
            .json(completion_answer())
            .answers("text/event-stream", string()),
        op("get", p("/pipelines"), tag, "The pipelines served, their stages and counters")
            .json(object(&["object", "data"], json!({"object": string(), "data": list_of(json!({"type": "object"}))}))),
        op("post", p("/pipelines/{name}/generate"), tag, "Run one request through a pipeline")
            .path_param("name")
            .json_body(json!({"type": "object", "properties": {
                "prompts": {"type": "array", "minItems": 1, "items": string()},
                "image": {"type": "string", "description": "base64 PNG or JPEG, or a data URL"},
                "sampling_params_list": {"type": "array", "items": {"type": "object", "nullable": true}},
            }}))
            .json(object(&["object", "pipeline", "outputs"], json!({
                "object": string(), "pipeline": string(), "created": {"type": "integer"}, "elapsed_ms": {"type": "number"},
                "outputs": list_of(object(&["stage_id", "final_output_type", "outputs"], json!({
                    "stage_id": {"type": "integer"}, "final_output_type": string(), "outputs": {"type": "array"},
                }))),
            }))),
        op("post", p("/audio/speech"), tag, "Speak a text with a speech pipeline")
            .json_body(object(
                &["model", "input"],
                json!({
                    "model": {"type": "string", "minLength": 1}, "input": {"type": "string", "minLength": 1, "maxLength": 4096},
                    "voice": {"oneOf": [string(), object(&["id"], json!({"id": string()}))]},
                    "response_format": {"type": "string", "enum": ["wav", "pcm"]},
                    "speed": {"type": "number", "minimum": 0.25, "maximum": 4.0},
                    "stream_format": {"type": "string", "enum": ["audio", "sse"]},
                    "instructions": string(),
                }),
            ))
            .answers("audio/wav", json!({"type": "string", "format": "binary"}))
            .answers("audio/pcm", json!({"type": "string", "format": "binary"}))
            .answers("text/event-stream", string()),
    ]
}

fn operations() -> Vec<Op> {
    let mut ops = openai_ops("/v1");
    ops.extend(openai_ops("/api/v1"));
    let yes = json!({"type": "boolean"});
    ops.extend([
        op("get", "/api/health", "controller", "The controller is up").json(object(&["status"], json!({"status": string()}))),
        op("get", "/api/controller/models", "controller", "List instances")
            .query("model_name", string(), false)
            .query("healthy_only", json!({"type": "boolean"}), false)
            .json(list_of(reference("Instance"))),
        op("post", "/api/controller/models", "controller", "Register an instance").json_body(instance_body()).json(yes.clone()),
        op("delete", "/api/controller/models", "controller", "Mark an instance down, or remove it")
            .query("model_name", string(), true)
            .query("host", string(), true)
            .query("port", json!({"type": "integer", "minimum": 1, "maximum": 65535}), true)
            .query("worker_type", worker_type(), false)
            .query("remove_from_registry", json!({"type": "boolean"}), false)
            .json(yes.clone()),
        op("post", "/api/controller/heartbeat", "controller", "Heartbeat (registers an unknown instance)")
            .json_body(instance_body())
            .example(json!({"model_name": format!("{EMBEDDER}@text2vec"), "host": "10.0.0.2", "port": 8001}))
            .json(yes.clone()),
        op("post", "/api/worker/embeddings", "worker", "Embed texts on this worker host (DB-GPT's answer: a list of vectors)")
            .json_body(object(&["model", "input"], json!({"model": {"type": "string", "minLength": 1}, "input": texts(), "truncate": {"type": "boolean"}})))
            .example(json!({"model": EMBEDDER, "input": ["A man is eating food."]}))
            .json(list_of(list_of(json!({"type": "number"})))),
        op("post", "/api/worker/rerank", "worker", "Score documents on this worker host: one score per document")
            .json_body(object(&["model", "query", "documents"], json!({"model": {"type": "string", "minLength": 1}, "query": {"type": "string", "minLength": 1}, "documents": texts()})))
            .json(list_of(json!({"type": "number"}))),
        op("post", "/api/worker/generate_stream", "worker", "DB-GPT's streamed generation (NUL-separated JSON chunks)")
            .json_body(generate_params())
            .answers("text/plain", string()),
        op("post", "/api/worker/generate", "worker", "DB-GPT's whole generation").json_body(generate_params()).json(json!({"type": "object"})),
        op("post", "/api/worker/count_token", "worker", "Count a prompt's tokens")
            .json_body(object(&["model", "prompt"], json!({"model": string(), "prompt": string()})))
            .json(json!({"type": "integer", "minimum": 0})),
        op("post", "/api/worker/model_metadata", "worker", "A model's metadata")
            .json_body(object(&["model"], json!({"model": string()})))
            .json(json!({"type": "object"})),
        op("post", "/api/worker/chat/completions", "worker", "Chat on this worker host (what API servers forward)")
            .json_body(chat_request())
            .json(completion_answer())
            .answers("text/event-stream", string()),
        op("post", "/api/worker/completions", "worker", "Completion on this worker host")
            .json_body(completion_request())
            .json(completion_answer())
            .answers("text/event-stream", string()),
        op("post", "/api/worker/apply", "worker", "Start, stop, restart or reconfigure workers")
            .json_body(object(&["apply_type"], json!({
                "apply_type": {"type": "string", "enum": ["start", "stop", "restart", "update_params"]},
                "model": {"type": "string", "nullable": true}, "worker_type": worker_type(), "params": {"type": "object"},
            })))
            .json(object(&["success", "message", "timecost"], json!({"success": {"type": "boolean"}, "message": string(), "timecost": {"type": "number"}}))),
        op("get", "/api/worker/parameter/descriptions", "worker", "A worker's parameters")
            .query("model", string(), true)
            .query("worker_type", worker_type(), false)
            .json(list_of(json!({"type": "object"}))),
        op("get", "/api/worker/models/supports", "worker", "What this worker host can serve")
            .json(list_of(object(&["host", "port", "models"], json!({"host": string(), "port": {"type": "integer"}, "models": {"type": "array"}})))),
        op("post", "/api/worker/models/startup", "worker", "Start a model on this worker host").json_body(model_body()).json(yes.clone()),
        op("post", "/api/worker/models/shutdown", "worker", "Stop a model on this worker host").json_body(model_body()).json(yes),
        op("get", "/admin/plugins", "admin", "Plugins and their current versions")
            .json(object(&["plugins"], json!({"plugins": list_of(json!({"type": "object"}))}))),
        op("put", "/admin/plugins/{name}", "admin", "Hot swap a plugin: the body is the component")
            .path_param("name")
            .raw_body("application/octet-stream", json!({"type": "string", "format": "binary"}), true)
            .json(version_answer()),
        op("get", "/admin/plugins/{name}/history", "admin", "A plugin's versions")
            .path_param("name")
            .json(object(&["plugin", "current", "history"], json!({"plugin": string(), "current": string(), "history": list_of(json!({"type": "object"}))}))),
        op("post", "/admin/plugins/{name}/rollback", "admin", "Serve the previous (or a named) version again")
            .path_param("name")
            .raw_body("application/json", json!({"type": "object", "properties": {"sha256": {"type": "string", "minLength": 1}}}), false)
            .json(version_answer()),
        op("get", "/health/live", "health", "The process is up").json(object(&["status"], json!({"status": string()}))),
        op("get", "/health/ready", "health", "Models and plugins are loaded (503 until then)").json(object(
            &["status"],
            json!({"status": {"type": "string", "enum": ["ready"]}, "roles": list_of(string()), "models": {"type": "array"}, "plugins": {"type": "array"}}),
        )),
        op("get", "/metrics", "health", "Prometheus metrics").answers("text/plain", string()),
        op("get", "/openapi.json", "health", "This document").json(json!({"type": "object"})),
    ]);
    ops
}

fn components() -> Value {
    json!({
        "schemas": {
            "Error": object(&["error"], json!({"error": object(&["message", "type"], json!({
                "message": string(),
                "type": string(),
                "param": {"type": "string", "nullable": true},
                "code": {"type": "string", "nullable": true},
            }))})),
            "Usage": object(&["prompt_tokens", "total_tokens"], json!({
                "prompt_tokens": {"type": "integer", "minimum": 0},
                "completion_tokens": {"type": "integer", "minimum": 0},
                "total_tokens": {"type": "integer", "minimum": 0},
            })),
            "ChatMessage": object(&["role"], json!({
                "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
                "content": {"nullable": true, "oneOf": [string(), list_of(object(&["type"], json!({"type": string(), "text": string()})))]},
                "name": string(),
            })),
            "Instance": object(&["model_name", "host", "port", "healthy"], json!({
                "model_name": string(), "host": string(), "port": {"type": "integer"}, "weight": {"type": "number"},
                "check_healthy": {"type": "boolean"}, "healthy": {"type": "boolean"}, "enabled": {"type": "boolean"},
                "prompt_template": {"type": "string", "nullable": true}, "last_heartbeat": {"type": "string", "nullable": true},
            })),
            "PluginVersion": object(&["sha256"], json!({"sha256": string()})),
        },
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    })
}

/// The whole document, built once.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut paths = Map::new();
        for o in operations() {
            let mut responses = Map::new();
            let mut content = Map::new();
            for (media, schema) in &o.ok {
                content.insert((*media).to_string(), json!({"schema": schema}));
            }
            responses.insert("200".into(), json!({"description": "Success", "content": content}));
            responses.insert(
                "default".into(),
                json!({"description": "An error, OpenAI-shaped", "content": {"application/json": {"schema": reference("Error")}}}),
            );
            let mut operation = json!({
                "tags": [o.tag],
                "summary": o.summary,
                "operationId": format!("{}{}", o.method, o.path.replace(['/', '{', '}', '.'], "_")),
                "responses": responses,
            });
            if !o.parameters.is_empty() {
                operation["parameters"] = Value::Array(o.parameters);
            }
            if let Some(body) = o.body {
                operation["requestBody"] = body;
            }
            let entry = paths.entry(o.path.clone()).or_insert_with(|| json!({}));
            entry[o.method] = operation;
        }
        json!({
            "openapi": "3.0.3",
            "info": {
                "title": "omnihost",
                "version": env!("CARGO_PKG_VERSION"),
                "description": "OpenAI-compatible API, DB-GPT controller and worker routes, plugin administration and health. \
                    `/v1` takes API keys (Bearer) when configured; controller, worker, admin and metrics routes take the admin token.",
            },
            "paths": paths,
            "components": components(),
            "security": [{}, {"bearer": []}],
        })
    })
}

pub async fn openapi() -> Response {
    Json(document()).into_response()
}

/// The `(method, path)` of every documented operation, for the test that holds the router to this document.
pub fn documented() -> Vec<(&'static str, String)> {
    operations().into_iter().map(|o| (o.method, o.path)).collect()
}
