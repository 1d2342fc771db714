//! Generation over HTTP: OpenAI's `POST /v1/chat/completions` and `POST /v1/completions` (streamed as SSE or
//! not), and DB-GPT's worker protocol (`/api/worker/generate_stream`, `generate`, `count_token`,
//! `model_metadata`) so DB-GPT's own `RemoteModelWorker` can use an omnihost worker.
//!
//! Parameters are checked before anything runs, each failure a 400 naming its `param` (ranges as OpenAI's:
//! temperature 0..2, top_p 0..1, top_k -1 or >= 1, penalties -2..2, at most 4 stop strings, n 1..16,
//! top_logprobs 0..20); unknown fields are ignored. A failure after a stream has started is sent as one SSE
//! `data: {"error": ...}` event, and the stream ends.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::AppState;
use super::error::ApiError;
use super::body::{json_object, required_string, with_version};
use crate::config::WorkerType;
use crate::plugin::bindings::decoding::{ChatMessage, GenerationRequest, LogprobInfo, Sampling, TokenLogprob};
use crate::plugin::{CallError, GuestError};
use crate::worker::{Event, Finish, Generation, Worker, WorkerError};

/// Most choices one request may ask for.
const MAX_N: u32 = 16;
/// Most alternatives per position (OpenAI's limit).
const MAX_TOP_LOGPROBS: u32 = 20;

/// Which OpenAI endpoint a request came through: the shapes differ, the generation does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

impl Kind {
    /// The request field the prompt lives in, for errors about it.
    fn prompt_param(self) -> &'static str {
        match self {
            Self::Chat => "messages",
            Self::Completion => "prompt",
        }
    }
}

/// A checked generation request.
pub(super) struct Params {
    pub(super) model: String,
    pub(super) request: GenerationRequest,
    pub(super) n: u32,
    pub(super) stream: bool,
    pub(super) include_usage: bool,
    pub(super) logprobs: bool,
}

fn number(body: &Map<String, Value>, field: &'static str) -> Result<Option<f64>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(_) => Err(ApiError::invalid(Some(field), format!("`{field}` must be a number"))),
    }
}

fn ranged(body: &Map<String, Value>, field: &'static str, min: f64, max: f64) -> Result<Option<f32>, ApiError> {
    match number(body, field)? {
        Some(v) if !(min..=max).contains(&v) => {
            Err(ApiError::invalid(Some(field), format!("`{field}` must be between {min} and {max}, got {v}")))
        }
        other => Ok(other.map(|v| v as f32)),
    }
}

fn integer(body: &Map<String, Value>, field: &'static str) -> Result<Option<i64>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) => Ok(Some(v)),
            None => Err(ApiError::invalid(Some(field), format!("`{field}` must be an integer"))),
        },
        Some(_) => Err(ApiError::invalid(Some(field), format!("`{field}` must be an integer"))),
    }
}

fn boolean(body: &Map<String, Value>, field: &'static str) -> Result<bool, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::invalid(Some(field), format!("`{field}` must be a boolean"))),
    }
}

fn stop_strings(body: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let stops = match body.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(ApiError::invalid(Some("stop"), "`stop` must be a string or a list of strings")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ApiError::invalid(Some("stop"), "`stop` must be a string or a list of strings")),
    };
    if stops.len() > 4 {
        return Err(ApiError::invalid(Some("stop"), format!("`stop` has {} strings; at most 4 are allowed", stops.len())));
    }
    if stops.iter().any(String::is_empty) {
        return Err(ApiError::invalid(Some("stop"), "`stop` strings must not be empty"));
    }
    Ok(stops)
}

/// Text of an OpenAI message `content`: a string, or a list of parts of which only text is supported.
fn content_text(content: &Value, index: usize) -> Result<String, ApiError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                match (part.get("type").and_then(Value::as_str), part.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    (kind, _) => {
                        return Err(ApiError::invalid(
                            Some("messages"),
                            format!("`messages[{index}].content`: only text parts are supported, got {kind:?}"),
                        ));
                    }
                }
            }
            Ok(text)
        }
        _ => Err(ApiError::invalid(Some("messages"), format!("`messages[{index}].content` must be a string or a list of parts"))),
    }
}

fn messages(body: &Map<String, Value>) -> Result<Vec<ChatMessage>, ApiError> {
    let list = match body.get("messages") {
        Some(Value::Array(list)) => list,
        None | Some(Value::Null) => return Err(ApiError::invalid(Some("messages"), "Missing required parameter: `messages`")),
        Some(_) => return Err(ApiError::invalid(Some("messages"), "`messages` must be a list of messages")),
    };
    if list.is_empty() {
        return Err(ApiError::invalid(Some("messages"), "`messages` must not be empty"));
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let role = m.get("role").and_then(Value::as_str).ok_or_else(|| {
                ApiError::invalid(Some("messages"), format!("`messages[{i}].role` is missing or not a string"))
            })?;
            let role = match role {
                // OpenAI's newer name for the system role.
                "developer" => "system",
                "system" | "user" | "assistant" | "tool" => role,
                other => {
                    return Err(ApiError::invalid(
                        Some("messages"),
                        format!("`messages[{i}].role` is `{other}`; expected system, developer, user, assistant or tool"),
                    ));
                }
            };
            let content = content_text(m.get("content").unwrap_or(&Value::Null), i)?;
            Ok(ChatMessage { role: role.to_string(), content })
        })
        .collect()
}

fn completion_prompt(body: &Map<String, Value>) -> Result<String, ApiError> {
    match body.get("prompt") {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Array(items)) if items.len() == 1 => match items.first() {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            _ => Err(ApiError::invalid(Some("prompt"), "`prompt` must be a non-empty string")),
        },
        Some(Value::Array(_)) => Err(ApiError::invalid(Some("prompt"), "`prompt` must be one string (send one request per prompt)")),
        None | Some(Value::Null) => Err(ApiError::invalid(Some("prompt"), "Missing required parameter: `prompt`")),
        Some(_) => Err(ApiError::invalid(Some("prompt"), "`prompt` must be a non-empty string")),
    }
}

fn parse(body: &Map<String, Value>, kind: Kind) -> Result<Params, ApiError> {
    let model = required_string(body, "model")?;
    let (messages, prompt) = match kind {
        Kind::Chat => (messages(body)?, String::new()),
        Kind::Completion => (Vec::new(), completion_prompt(body)?),
    };
    let max_tokens = match (integer(body, "max_completion_tokens")?, integer(body, "max_tokens")?) {
        (Some(v), _) => Some(("max_completion_tokens", v)),
        (None, Some(v)) => Some(("max_tokens", v)),
        (None, None) => None,
    };
    let max_tokens = match max_tokens {
        Some((field, v)) if v < 1 || v > i64::from(u32::MAX) => {
            return Err(ApiError::invalid(Some(field), format!("`{field}` must be at least 1, got {v}")));
        }
        Some((_, v)) => Some(v as u32),
        None => None,
    };
    let n = match integer(body, "n")? {
        Some(v) if !(1..=i64::from(MAX_N)).contains(&v) => {
            return Err(ApiError::invalid(Some("n"), format!("`n` must be between 1 and {MAX_N}, got {v}")));
        }
        Some(v) => v as u32,
        None => 1,
    };
    let temperature = ranged(body, "temperature", 0.0, 2.0)?;
    let top_p = ranged(body, "top_p", 0.0, 1.0)?;
    let top_k = match integer(body, "top_k")? {
        Some(v) if v == -1 || (1..=i64::from(i32::MAX)).contains(&v) => Some(v as i32),
        Some(0) | None => None,
        Some(v) => return Err(ApiError::invalid(Some("top_k"), format!("`top_k` must be -1 or at least 1, got {v}"))),
    };
    let presence_penalty = ranged(body, "presence_penalty", -2.0, 2.0)?.unwrap_or(0.0);
    let frequency_penalty = ranged(body, "frequency_penalty", -2.0, 2.0)?.unwrap_or(0.0);
    let seed = match body.get("seed") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Some(u),
            (None, Some(i)) => Some(i as u64),
            _ => return Err(ApiError::invalid(Some("seed"), "`seed` must be an integer")),
        },
        Some(_) => return Err(ApiError::invalid(Some("seed"), "`seed` must be an integer")),
    };
    // Chat asks for log-probabilities with `logprobs: true` (+ `top_logprobs`); completions with `logprobs: N`.
    let (logprobs, top_logprobs) = match kind {
        Kind::Chat => {
            let on = boolean(body, "logprobs")?;
            let top = match integer(body, "top_logprobs")? {
                Some(v) if !(0..=i64::from(MAX_TOP_LOGPROBS)).contains(&v) => {
                    return Err(ApiError::invalid(Some("top_logprobs"), format!("`top_logprobs` must be between 0 and {MAX_TOP_LOGPROBS}, got {v}")));
                }
                Some(_) if !on => {
                    return Err(ApiError::invalid(Some("top_logprobs"), "`top_logprobs` needs `logprobs: true`"));
                }
                Some(v) => v as u32,
                None => 0,
            };
            (on, top)
        }
        Kind::Completion => match integer(body, "logprobs")? {
            Some(v) if !(0..=i64::from(MAX_TOP_LOGPROBS)).contains(&v) => {
                return Err(ApiError::invalid(Some("logprobs"), format!("`logprobs` must be between 0 and {MAX_TOP_LOGPROBS}, got {v}")));
            }
            Some(v) => (true, v as u32),
            None => (false, 0),
        },
    };
    let stream = boolean(body, "stream")?;
    let include_usage = match body.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(o)) => match o.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(ApiError::invalid(Some("stream_options"), "`stream_options.include_usage` must be a boolean")),
        },
        Some(_) => return Err(ApiError::invalid(Some("stream_options"), "`stream_options` must be an object")),
    };
    let sampling = Sampling {
        max_tokens,
        temperature,
        top_p,
        top_k,
        seed,
        stop: stop_strings(body)?,
        presence_penalty,
        frequency_penalty,
        top_logprobs: logprobs.then_some(top_logprobs),
    };
    Ok(Params {
        model,
        request: GenerationRequest { messages, prompt, sampling, choice: 0 },
        n,
        stream,
        include_usage,
        logprobs,
    })
}

/// A request id in OpenAI's style.
pub(super) fn request_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}{:08x}", RandomState::new().hash_one(0u8), std::process::id())
}

pub(super) fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A plugin's refusal of the prompt names the prompt's field.
fn generation_error(e: WorkerError, kind: Kind) -> ApiError {
    match e {
        WorkerError::Call(CallError::Guest(GuestError::InvalidInput(message))) => ApiError::invalid(Some(kind.prompt_param()), message),
        other => other.into(),
    }
}

/// The local worker serving `model` as an LLM, if this host has one.
fn local_llm(state: &AppState, model: &str) -> Result<Option<Arc<Worker>>, ApiError> {
    let services = state.services()?;
    Ok(services.resolver.local().and_then(|m| m.get(model, Some(WorkerType::Llm)).or_else(|| m.get(model, None))))
}

pub async fn chat_completions(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    openai_generate(state, body, Kind::Chat).await
}

pub async fn completions(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    openai_generate(state, body, Kind::Completion).await
}

async fn openai_generate(state: AppState, body: Result<Bytes, BytesRejection>, kind: Kind) -> Result<Response, ApiError> {
    let bytes = super::body::body_bytes(body, state.settings().body_limit)?;
    let object = json_object(Ok(bytes.clone()), state.settings().body_limit)?;
    let mut params = parse(&object, kind)?;
    if let (Kind::Chat, Some((pipeline, speech))) = (kind, super::speech::speaking_pipeline(&state, &params.model)) {
        if super::speech::wants_audio(&object)? {
            return super::speech::chat(&object, params, pipeline, speech).await;
        }
        // Text only: the LLM that writes the pipeline's text answers by itself.
        if let Some(model) = super::speech::text_model(&pipeline, &speech) {
            params.model = model;
        }
    }
    let Some(worker) = local_llm(&state, &params.model)? else {
        // Not served here: a worker host that serves it answers the same request.
        let path = match kind {
            Kind::Chat => "/api/worker/chat/completions",
            Kind::Completion => "/api/worker/completions",
        };
        let services = state.services()?;
        let response = services.resolver.forward(&params.model, WorkerType::Llm, path, bytes).await?;
        return Ok(relay(response));
    };
    let generation = worker.generate(params.request.clone(), params.n).await.map_err(|e| generation_error(e, kind))?;
    let version = generation.plugin_version.clone();
    let response = if params.stream {
        sse(generation, params, kind)
    } else {
        Json(collect(generation, &params, kind).await?).into_response()
    };
    Ok(with_version(response, &version))
}

/// Passes a worker host's answer through unchanged, streaming its body.
fn relay(response: reqwest::Response) -> Response {
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut builder = Response::builder().status(status);
    for name in [header::CONTENT_TYPE.as_str(), super::body::VERSION_HEADER] {
        if let Some(value) = response.headers().get(name).and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok()) {
            builder = builder.header(name, value);
        }
    }
    builder
        .body(Body::from_stream(response.bytes_stream()))
        .unwrap_or_else(|_| ApiError::unavailable("worker_error", "the worker's answer could not be relayed").into_response())
}

/// Every choice's events, merged into one channel in arrival order. A forwarding task per choice ends as soon
/// as the merged receiver is dropped (the client went away), which drops the choice's receiver and so tells
/// the scheduler to free the sequence's place at its next step.
fn merge(mut generation: Generation) -> (mpsc::UnboundedReceiver<(usize, Event)>, Generation) {
    let (tx, rx) = mpsc::unbounded_channel();
    let streams = std::mem::take(&mut generation.streams);
    for (index, mut stream) in streams.into_iter().enumerate() {
        let tx = tx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    event = stream.recv() => match event {
                        Some(event) => {
                            let last = matches!(event, Event::Done { .. } | Event::Failed(_));
                            if tx.send((index, event)).is_err() || last {
                                break;
                            }
                        }
                        None => break,
                    },
                    _ = tx.closed() => break,
                }
            }
        });
    }
    (rx, generation)
}

/// One choice's result as it accumulates.
#[derive(Default)]
struct Choice {
    text: String,
    logprobs: Vec<LogprobInfo>,
    finish: Option<Finish>,
    prompt_tokens: u32,
    completion_tokens: u32,
}

fn token_json(t: &TokenLogprob) -> Value {
    json!({"token": t.token, "logprob": t.logprob, "bytes": t.bytes})
}

fn chat_logprobs(items: &[LogprobInfo]) -> Value {
    let content: Vec<Value> = items
        .iter()
        .map(|i| {
            let mut entry = token_json(&i.chosen);
            entry["top_logprobs"] = Value::Array(i.top.iter().map(token_json).collect());
            entry
        })
        .collect();
    json!({"content": content})
}

fn completion_logprobs(items: &[LogprobInfo], start_offset: usize) -> Value {
    let mut offset = start_offset;
    let mut offsets = Vec::with_capacity(items.len());
    for i in items {
        offsets.push(offset);
        offset += i.chosen.token.len();
    }
    json!({
        "tokens": items.iter().map(|i| i.chosen.token.clone()).collect::<Vec<_>>(),
        "token_logprobs": items.iter().map(|i| i.chosen.logprob).collect::<Vec<_>>(),
        "top_logprobs": items.iter().map(|i| {
            i.top.iter().map(|t| (t.token.clone(), json!(t.logprob))).collect::<Map<String, Value>>()
        }).collect::<Vec<_>>(),
        "text_offset": offsets,
    })
}

fn usage(prompt: u32, completion: u32) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// Waits for every choice to finish; the first failure fails the request.
async fn gather(generation: Generation) -> Result<Vec<Choice>, ApiError> {
    let n = generation.streams.len();
    let (mut rx, _held) = merge(generation);
    let mut choices: Vec<Choice> = (0..n).map(|_| Choice::default()).collect();
    let mut finished = 0;
    while finished < n {
        let Some((index, event)) = rx.recv().await else {
            return Err(ApiError::unavailable("model_unavailable", "the model stopped before the answer was complete"));
        };
        let Some(choice) = choices.get_mut(index) else { continue };
        match event {
            Event::Delta { text, logprobs } => {
                choice.text.push_str(&text);
                choice.logprobs.extend(logprobs);
            }
            Event::Done { finish, prompt_tokens, completion_tokens } => {
                choice.finish = Some(finish);
                choice.prompt_tokens = prompt_tokens;
                choice.completion_tokens = completion_tokens;
                finished += 1;
            }
            Event::Failed(e) => return Err(e.into()),
        }
    }
    Ok(choices)
}

async fn collect(generation: Generation, params: &Params, kind: Kind) -> Result<Value, ApiError> {
    let choices = gather(generation).await?;
    let prompt_tokens = choices.first().map_or(0, |c| c.prompt_tokens);
    let completion_tokens = choices.iter().map(|c| c.completion_tokens).sum();
    let (id, object) = match kind {
        Kind::Chat => (request_id("chatcmpl"), "chat.completion"),
        Kind::Completion => (request_id("cmpl"), "text_completion"),
    };
    let rendered: Vec<Value> = choices
        .into_iter()
        .enumerate()
        .map(|(index, c)| {
            let finish = c.finish.map(Finish::as_str);
            match kind {
                Kind::Chat => json!({
                    "index": index,
                    "message": {"role": "assistant", "content": c.text},
                    "logprobs": if params.logprobs { chat_logprobs(&c.logprobs) } else { Value::Null },
                    "finish_reason": finish,
                }),
                Kind::Completion => json!({
                    "index": index,
                    "text": c.text,
                    "logprobs": if params.logprobs { completion_logprobs(&c.logprobs, 0) } else { Value::Null },
                    "finish_reason": finish,
                }),
            }
        })
        .collect();
    Ok(json!({
        "id": id,
        "object": object,
        "created": now_unix(),
        "model": params.model,
        "choices": rendered,
        "usage": usage(prompt_tokens, completion_tokens),
    }))
}

pub(super) fn sse_line(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

fn sse(generation: Generation, params: Params, kind: Kind) -> Response {
    let n = generation.streams.len();
    let (rx, held) = merge(generation);
    let (id, object) = match kind {
        Kind::Chat => (request_id("chatcmpl"), "chat.completion.chunk"),
        Kind::Completion => (request_id("cmpl"), "text_completion"),
    };
    let created = now_unix();
    let chunk = move |choice: Value, usage: Option<Value>| {
        let mut value = json!({"id": id, "object": object, "created": created, "model": params.model, "choices": [choice]});
        if params.include_usage {
            value["usage"] = usage.unwrap_or(Value::Null);
        }
        value
    };
    struct Stream {
        rx: mpsc::UnboundedReceiver<(usize, Event)>,
        /// Per choice: the role chunk was sent; completion text offsets for log-probabilities.
        started: Vec<bool>,
        offsets: Vec<usize>,
        finished: usize,
        prompt_tokens: u32,
        completion_tokens: u32,
        done: bool,
        _held: Generation,
    }
    let state = Stream {
        rx,
        started: vec![false; n],
        offsets: vec![0; n],
        finished: 0,
        prompt_tokens: 0,
        completion_tokens: 0,
        done: false,
        _held: held,
    };
    let logprobs = params.logprobs;
    let include_usage = params.include_usage;
    let stream = futures::stream::unfold((state, chunk), move |(mut s, chunk)| async move {
        if s.done {
            return None;
        }
        let mut out: Vec<u8> = Vec::new();
        // One event per item of the body stream: a delta, a finish (with [DONE] after the last), or an error.
        'event: {
            let Some((index, event)) = s.rx.recv().await else {
                let error = json!({"error": {"message": "the model stopped before the answer was complete", "type": "server_error", "param": null, "code": "model_unavailable"}});
                out.extend_from_slice(&sse_line(&error));
                s.done = true;
                break 'event;
            };
            if kind == Kind::Chat && !s.started.get(index).copied().unwrap_or(true) {
                if let Some(flag) = s.started.get_mut(index) {
                    *flag = true;
                }
                let first = json!({"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null});
                out.extend_from_slice(&sse_line(&chunk(first, None)));
            }
            match event {
                Event::Delta { text, logprobs: lp } => {
                    let lp_value = match (logprobs, &lp) {
                        (true, Some(info)) => match kind {
                            Kind::Chat => chat_logprobs(std::slice::from_ref(info)),
                            Kind::Completion => {
                                let start = s.offsets.get(index).copied().unwrap_or(0);
                                completion_logprobs(std::slice::from_ref(info), start)
                            }
                        },
                        _ => Value::Null,
                    };
                    if let Some(offset) = s.offsets.get_mut(index) {
                        *offset += text.len();
                    }
                    let choice = match kind {
                        Kind::Chat => json!({"index": index, "delta": {"content": text}, "logprobs": lp_value, "finish_reason": null}),
                        Kind::Completion => json!({"index": index, "text": text, "logprobs": lp_value, "finish_reason": null}),
                    };
                    out.extend_from_slice(&sse_line(&chunk(choice, None)));
                    break 'event;
                }
                Event::Done { finish, prompt_tokens, completion_tokens } => {
                    s.prompt_tokens = prompt_tokens;
                    s.completion_tokens += completion_tokens;
                    s.finished += 1;
                    let choice = match kind {
                        Kind::Chat => json!({"index": index, "delta": {}, "logprobs": null, "finish_reason": finish.as_str()}),
                        Kind::Completion => json!({"index": index, "text": "", "logprobs": null, "finish_reason": finish.as_str()}),
                    };
                    out.extend_from_slice(&sse_line(&chunk(choice, None)));
                    if s.finished == s.started.len() {
                        if include_usage {
                            let mut last = chunk(Value::Null, Some(usage(s.prompt_tokens, s.completion_tokens)));
                            last["choices"] = json!([]);
                            out.extend_from_slice(&sse_line(&last));
                        }
                        out.extend_from_slice(b"data: [DONE]\n\n");
                        s.done = true;
                    }
                    break 'event;
                }
                Event::Failed(e) => {
                    let error = ApiError::from(e);
                    let body = json!({"error": {"message": error.message, "type": error.kind, "param": error.param, "code": error.code}});
                    out.extend_from_slice(&sse_line(&body));
                    s.done = true;
                    break 'event;
                }
            }
        }
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(out)), (s, chunk)))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| ApiError::unavailable("stream_failed", "the stream could not be started").into_response())
}

// ---------------------------------------------------------------------------------------------------------
// DB-GPT's worker protocol.

/// DB-GPT's message roles are `system`, `human`, `ai`; OpenAI's names are accepted as well.
fn dbgpt_messages(body: &Map<String, Value>) -> Result<Vec<ChatMessage>, ApiError> {
    let Some(Value::Array(list)) = body.get("messages") else { return Ok(Vec::new()) };
    list.iter()
        .enumerate()
        .filter_map(|(i, m)| {
            let role = match m.get("role").and_then(Value::as_str) {
                Some("system") => "system",
                Some("human" | "user") => "user",
                Some("ai" | "assistant") => "assistant",
                // DB-GPT never passes `view` messages to a model.
                Some("view") => return None,
                other => {
                    return Some(Err(ApiError::invalid(Some("messages"), format!("`messages[{i}].role` {other:?} is not system, human or ai"))));
                }
            };
            let content = match m.get("content") {
                Some(Value::String(s)) => s.clone(),
                // A list of MediaContent: the text parts, as DB-GPT's `last_text` reads them.
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter(|p| p.get("type").and_then(Value::as_str).unwrap_or("text") == "text")
                    .filter_map(|p| p.get("object").and_then(|o| o.get("data")).and_then(Value::as_str))
                    .next_back()
                    .unwrap_or_default()
                    .to_string(),
                _ => String::new(),
            };
            Some(Ok(ChatMessage { role: role.to_string(), content }))
        })
        .collect()
}

fn dbgpt_request(body: &Map<String, Value>) -> Result<(String, GenerationRequest), ApiError> {
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => m.clone(),
        _ => return Err(ApiError::missing("model")),
    };
    let messages = dbgpt_messages(body)?;
    let prompt = if messages.is_empty() { body.get("prompt").and_then(Value::as_str).unwrap_or_default().to_string() } else { String::new() };
    if messages.is_empty() && prompt.is_empty() {
        return Err(ApiError::invalid(Some("messages"), "`messages` (or `prompt`) must not be empty"));
    }
    let max_tokens = match integer(body, "max_new_tokens")? {
        Some(v) if v < 1 => return Err(ApiError::invalid(Some("max_new_tokens"), "`max_new_tokens` must be at least 1")),
        other => other.map(|v| v.min(i64::from(u32::MAX)) as u32),
    };
    let top_k = match integer(body, "top_k")? {
        Some(v) if v >= 1 => Some(v.min(i64::from(i32::MAX)) as i32),
        _ => None,
    };
    let sampling = Sampling {
        max_tokens,
        temperature: ranged(body, "temperature", 0.0, 2.0)?,
        top_p: ranged(body, "top_p", 0.0, 1.0)?,
        top_k,
        seed: None,
        stop: stop_strings(body)?,
        presence_penalty: ranged(body, "presence_penalty", -2.0, 2.0)?.unwrap_or(0.0),
        frequency_penalty: ranged(body, "frequency_penalty", -2.0, 2.0)?.unwrap_or(0.0),
        top_logprobs: None,
    };
    Ok((model, GenerationRequest { messages, prompt, sampling, choice: 0 }))
}

/// One DB-GPT `ModelOutput` as its worker manager serialises it (`dataclasses.asdict`): the *whole* text so
/// far in `content`, never a delta.
fn model_output(text: &str, error_code: i32, finish: Option<&str>, usage: Option<(u32, u32)>) -> Value {
    json!({
        "content": {"object": {"data": text, "format": "text"}, "type": "text"},
        "error_code": error_code,
        "incremental": false,
        "model_context": {"prompt_echo_len_char": -1, "has_format_prompt": false},
        "finish_reason": finish,
        "usage": usage.map(|(p, c)| json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})),
        "metrics": null,
    })
}

/// DB-GPT's in-band error: HTTP 200, `error_code` 1 and the message as the text.
fn dbgpt_error(e: &ApiError) -> Value {
    model_output(&format!("**LLMServer Generate Error, Please CheckErrorInfo.**: {}", e.message), 1, None, None)
}

async fn dbgpt_worker(state: &AppState, model: &str) -> Result<Arc<Worker>, ApiError> {
    local_llm(state, model)?.ok_or_else(|| ApiError::model_not_found(model))
}

pub async fn generate_stream(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = json_object(body, state.settings().body_limit)?;
    let (model, request) = dbgpt_request(&body)?;
    let worker = dbgpt_worker(&state, &model).await?;
    let nul = |value: Value| {
        let mut bytes = value.to_string().into_bytes();
        bytes.push(0);
        Bytes::from(bytes)
    };
    let generation = match worker.generate(request, 1).await {
        Ok(g) => g,
        Err(e) => {
            let error = generation_error(e, Kind::Chat);
            return Ok(nul_delimited(Body::from(nul(dbgpt_error(&error)))));
        }
    };
    let (rx, held) = merge(generation);
    let stream = futures::stream::unfold((rx, String::new(), false, held), move |(mut rx, mut text, done, held)| async move {
        if done {
            return None;
        }
        let (bytes, done) = match rx.recv().await {
            Some((_, Event::Delta { text: delta, .. })) => {
                text.push_str(&delta);
                (nul(model_output(&text, 0, None, None)), false)
            }
            Some((_, Event::Done { finish, prompt_tokens, completion_tokens })) => {
                (nul(model_output(&text, 0, Some(finish.as_str()), Some((prompt_tokens, completion_tokens)))), true)
            }
            Some((_, Event::Failed(e))) => (nul(dbgpt_error(&ApiError::from(e))), true),
            None => (nul(dbgpt_error(&ApiError::unavailable("model_unavailable", "the model stopped"))), true),
        };
        Some((Ok::<_, std::convert::Infallible>(bytes), (rx, text, done, held)))
    });
    Ok(nul_delimited(Body::from_stream(stream)))
}

/// DB-GPT's stream: JSON chunks each ended by a NUL byte. Its client reads raw bytes; the type is for others.
fn nul_delimited(body: Body) -> Response {
    let mut response = Response::new(body);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

pub async fn generate(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = json_object(body, state.settings().body_limit)?;
    let (model, request) = dbgpt_request(&body)?;
    let worker = dbgpt_worker(&state, &model).await?;
    let result = match worker.generate(request, 1).await {
        Ok(generation) => gather(generation).await,
        Err(e) => Err(generation_error(e, Kind::Chat)),
    };
    let output = match result.map(|choices| choices.into_iter().next()) {
        Ok(Some(c)) => model_output(&c.text, 0, c.finish.map(Finish::as_str), Some((c.prompt_tokens, c.completion_tokens))),
        Ok(None) => dbgpt_error(&ApiError::unavailable("model_unavailable", "the model gave no answer")),
        Err(e) => dbgpt_error(&e),
    };
    Ok(Json(output).into_response())
}

/// The model a DB-GPT body names, or this host's only LLM: DB-GPT 0.8's `RemoteModelWorker.count_token`
/// sends only the prompt.
fn named_or_only_llm(state: &AppState, body: &Map<String, Value>) -> Result<Arc<Worker>, ApiError> {
    if let Some(Value::String(model)) = body.get("model") {
        return local_llm(state, model)?.ok_or_else(|| ApiError::model_not_found(model));
    }
    let services = state.services()?;
    let llms: Vec<Arc<Worker>> =
        services.resolver.local().map(|m| m.running()).unwrap_or_default().into_iter().filter(|w| w.worker_type == WorkerType::Llm).collect();
    match llms.as_slice() {
        [only] => Ok(only.clone()),
        [] => Err(ApiError::not_found("model_not_found", "this host serves no LLM")),
        _ => Err(ApiError::missing("model")),
    }
}

pub async fn count_token(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = json_object(body, state.settings().body_limit)?;
    let prompt = match body.get("prompt") {
        Some(Value::String(p)) => p.clone(),
        _ => return Err(ApiError::missing("prompt")),
    };
    let worker = named_or_only_llm(&state, &body)?;
    let count = worker.plugin.current().count_tokens(prompt).await.map_err(|e| generation_error(e.into(), Kind::Completion))?;
    Ok(Json(json!(count)).into_response())
}

pub async fn model_metadata(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = json_object(body, state.settings().body_limit)?;
    let worker = named_or_only_llm(&state, &body)?;
    let version = worker.plugin.current();
    let context = version.decoder.as_ref().map(|d| d.info.context_length.min(d.decoder.limits.max_context as u32));
    let context = context.or_else(|| version.adapter.as_ref().and_then(|a| a.max_input_tokens));
    // Exactly ModelMetadata's keys: DB-GPT's client builds its dataclass from them and refuses unknown ones.
    Ok(Json(json!({
        "model": worker.model,
        "label": null,
        "context_length": context,
        "max_output_length": null,
        "description": version.adapter.as_ref().map(|a| format!("{} {}", a.name, a.version)),
        "link": null,
        "chat_model": true,
        "function_calling": false,
        "metadata": {},
        "ext_metadata": {"prompt_roles": ["system", "human", "ai"], "prompt_sep": "\n", "prompt_chat_template": null},
    }))
    .into_response())
}
