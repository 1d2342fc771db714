//! Speech over HTTP, on pipelines that declare `[speech]`: OpenAI's `POST /v1/audio/speech` (the body streamed
//! as WAV or raw PCM, or as SSE events, a sentence at a time) and `POST /v1/chat/completions` with
//! `modalities: ["text", "audio"]` (the reply's text and `message.audio`; streamed, text deltas and audio chunks
//! as they are made).
//!
//! Audio is 16-bit signed little-endian mono PCM at the pipeline's sample rate. A WAV that is streamed has its
//! size fields set to 0xFFFFFFFF, since they are unknown when the header goes out (the convention of streaming
//! servers: readers take the data to the end of the file). A request waits for its first audio before the
//! response starts, so anything that fails before then (the phonemiser refusing the text, an overloaded
//! pipeline) is an ordinary OpenAI-style error with its status.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::AppState;
use super::chat::{Params, now_unix, request_id, sse_line};
use super::error::ApiError;
use super::body::{json_object, required_string};
use super::pipelines::pipeline_error;
use crate::compute::ElementType;
use crate::pipeline::{Given, Input, Pipeline, RequestStream, SpeechConfig, StreamEvent, sentences};
use crate::plugin::StageItem;
use crate::plugin::bindings::decoding::Sampling;

/// OpenAI's limit on `input`.
const MAX_INPUT_CHARS: usize = 4096;
/// How long OpenAI says an audio reply stays referable; nothing is stored here, the field is for clients.
const AUDIO_TTL_SECS: u64 = 3600;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Wav,
    Pcm,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Self::Wav => "audio/wav",
            Self::Pcm => "audio/pcm",
        }
    }
}

/// The pipeline serving `model` and its speech section: 404 when there is no such model, 400 when it does not
/// speak.
fn speech_pipeline(state: &AppState, model: &str) -> Result<(Arc<Pipeline>, SpeechConfig), ApiError> {
    let services = state.services()?;
    let Some(pipeline) = services.pipelines.get(model) else {
        return Err(ApiError::model_not_found(model));
    };
    match &pipeline.config.speech {
        Some(speech) => Ok((pipeline.clone(), speech.clone())),
        None => Err(ApiError::invalid(Some("model"), format!("The model `{model}` is a pipeline without speech output"))),
    }
}

/// The pipeline named `model`, when it speaks (for routing chat requests).
pub fn speaking_pipeline(state: &AppState, model: &str) -> Option<(Arc<Pipeline>, SpeechConfig)> {
    speech_pipeline(state, model).ok()
}

fn voice(speech: &SpeechConfig, value: Option<&Value>, param: &'static str) -> Result<String, ApiError> {
    let name = match value {
        None | Some(Value::Null) => return Ok(speech.default_voice.clone()),
        Some(Value::String(s)) => s.as_str(),
        // OpenAI also takes `{"id": "voice_..."}` for custom voices.
        Some(Value::Object(o)) => o.get("id").and_then(Value::as_str).unwrap_or_default(),
        Some(_) => return Err(ApiError::invalid(Some(param), format!("`{param}` must be a string"))),
    };
    speech.voice(name).map(str::to_string).ok_or_else(|| {
        ApiError::invalid(Some(param), format!("`{param}` `{name}` is not a voice of this model; use one of {}", speech.voice_names().join(", ")))
    })
}

fn speed(body: &Map<String, Value>) -> Result<f64, ApiError> {
    match body.get("speed") {
        None | Some(Value::Null) => Ok(1.0),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) if (0.25..=4.0).contains(&v) => Ok(v),
            _ => Err(ApiError::invalid(Some("speed"), format!("`speed` must be between 0.25 and 4.0, got {n}"))),
        },
        Some(_) => Err(ApiError::invalid(Some("speed"), "`speed` must be a number")),
    }
}

/// One object per stage: `text` for the text stage, the voice and speed for the audio stage.
fn params_list(pipeline: &Pipeline, speech: &SpeechConfig, text: Value, voice: &str, speed: f64) -> Vec<Value> {
    pipeline
        .stage_ids()
        .into_iter()
        .map(|id| match id {
            id if id == speech.audio_stage => json!({"voice": voice, "speed": speed}),
            id if id == speech.text_stage => text.clone(),
            _ => json!({}),
        })
        .collect()
}

/// The 16-bit PCM of an audio item's f32 samples (clipped to [-1, 1]); an item without audio is silent text.
fn pcm16(item: &StageItem, speech: &SpeechConfig) -> Result<Vec<u8>, ApiError> {
    let Some((_, tensor)) = item.tensors.iter().find(|(name, _)| *name == speech.audio_tensor) else {
        return Ok(Vec::new());
    };
    if tensor.ty != ElementType::Fp32 {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            Some("bad_audio"),
            format!("the audio stage's `{}` is {}, not fp32 samples", speech.audio_tensor, tensor.ty.name()),
        ));
    }
    let mut out = Vec::with_capacity(tensor.data.len() / 2);
    for c in tensor.data.chunks_exact(4) {
        let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        // NaN becomes silence rather than a full-scale click.
        let s = if v.is_nan() { 0.0 } else { (v.clamp(-1.0, 1.0) * 32767.0).round() };
        out.extend_from_slice(&(s as i16).to_le_bytes());
    }
    Ok(out)
}

/// A 44-byte RIFF/WAVE header for 16-bit mono PCM; `data_len` unknown (streamed) writes 0xFFFFFFFF sizes.
fn wav_header(sample_rate: u32, data_len: Option<u32>) -> Vec<u8> {
    let (riff, data) = match data_len {
        Some(n) => (n.saturating_add(36), n),
        None => (u32::MAX, u32::MAX),
    };
    let mut h = Vec::with_capacity(44);
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&riff.to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes()); // PCM
    h.extend_from_slice(&1u16.to_le_bytes()); // mono
    h.extend_from_slice(&sample_rate.to_le_bytes());
    h.extend_from_slice(&(sample_rate * 2).to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&16u16.to_le_bytes());
    h.extend_from_slice(b"data");
    h.extend_from_slice(&data.to_le_bytes());
    h
}

/// What a speech request's stream delivers to the HTTP layer.
enum Next {
    /// PCM of one audio item, with the text it says.
    Audio { pcm: Vec<u8>, transcript: String },
    /// Text the LLM just wrote.
    Text(String),
    /// The text stage's last item: how the reply ended and its token counts.
    Finished { reason: String, usage: Option<Value> },
    Done,
}

/// The next event of a speech request that the HTTP layer cares about; a failure becomes its API error.
async fn next(stream: &mut RequestStream, speech: &SpeechConfig) -> Result<Next, ApiError> {
    loop {
        match stream.next().await {
            Some(StreamEvent::Item { stage_id, item }) if stage_id == speech.audio_stage => {
                return Ok(Next::Audio { pcm: pcm16(&item, speech)?, transcript: item.text.unwrap_or_default() });
            }
            Some(StreamEvent::Item { stage_id, item }) if stage_id == speech.text_stage => {
                if let Some(reason) = item.finish_reason {
                    let usage = item.json.as_deref().and_then(|j| serde_json::from_str::<Value>(j).ok());
                    return Ok(Next::Finished { reason, usage });
                }
            }
            Some(StreamEvent::Delta { stage_id, text }) if stage_id == speech.text_stage => return Ok(Next::Text(text)),
            Some(StreamEvent::Failed(e)) => return Err(pipeline_error(e)),
            Some(StreamEvent::Done) | None => return Ok(Next::Done),
            Some(_) => {}
        }
    }
}

/// Waits for the first audio of a speech-only request (or its end), so that an early failure is a status.
async fn first_audio(stream: &mut RequestStream, speech: &SpeechConfig) -> Result<Option<Vec<u8>>, ApiError> {
    loop {
        match next(stream, speech).await? {
            Next::Audio { pcm, .. } => return Ok(Some(pcm)),
            Next::Done => return Ok(None),
            Next::Text(_) | Next::Finished { .. } => {}
        }
    }
}

fn error_event(e: &ApiError) -> Value {
    json!({"error": {"message": e.message, "type": e.kind, "param": e.param, "code": e.code}})
}

fn streamed(content_type: &str, stream: impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| ApiError::unavailable("stream_failed", "the stream could not be started").into_response())
}

/// `POST /v1/audio/speech`: `input` spoken by the pipeline's audio stage, without its LLM.
pub async fn speech(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = json_object(body, state.settings().body_limit)?;
    let model = required_string(&body, "model")?;
    let (pipeline, speech) = speech_pipeline(&state, &model)?;
    let input = match body.get("input") {
        Some(Value::String(s)) if s.trim().is_empty() => return Err(ApiError::invalid(Some("input"), "`input` must not be empty")),
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => return Err(ApiError::invalid(Some("input"), "Missing required parameter: `input`")),
        Some(_) => return Err(ApiError::invalid(Some("input"), "`input` must be a string")),
    };
    let chars = input.chars().count();
    if chars > MAX_INPUT_CHARS {
        return Err(ApiError::invalid(Some("input"), format!("`input` has {chars} characters; at most {MAX_INPUT_CHARS} are allowed")));
    }
    let voice = voice(&speech, body.get("voice"), "voice")?;
    let format = match body.get("response_format") {
        None | Some(Value::Null) => Format::Wav,
        Some(Value::String(f)) if f == "wav" => Format::Wav,
        Some(Value::String(f)) if f == "pcm" => Format::Pcm,
        Some(Value::String(f)) => {
            return Err(ApiError::invalid(Some("response_format"), format!("`response_format` `{f}` is not supported; use wav or pcm")));
        }
        Some(_) => return Err(ApiError::invalid(Some("response_format"), "`response_format` must be a string")),
    };
    let speed = speed(&body)?;
    let sse = match body.get("stream_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(f)) if f == "audio" => false,
        Some(Value::String(f)) if f == "sse" => true,
        Some(_) => return Err(ApiError::invalid(Some("stream_format"), "`stream_format` must be `audio` or `sse`")),
    };
    let mut items: Vec<StageItem> =
        sentences(&input).into_iter().map(|s| StageItem { text: Some(s), ..StageItem::default() }).collect();
    if let Some(last) = items.last_mut() {
        last.finish_reason = Some("stop".into());
    }
    let params = params_list(&pipeline, &speech, json!({}), &voice, speed);
    let given = Given { stage_id: speech.text_stage, items };
    let mut stream = pipeline.stream(Input::Prompt(input), params, Some(given)).map_err(pipeline_error)?;
    let first = first_audio(&mut stream, &speech).await?.unwrap_or_default();
    let first = match format {
        Format::Wav => [wav_header(speech.sample_rate, None), first].concat(),
        Format::Pcm => first,
    };

    struct Body {
        stream: RequestStream,
        speech: SpeechConfig,
        first: Option<Vec<u8>>,
        sse: bool,
        done: bool,
    }
    let state = Body { stream, speech, first: Some(first), sse, done: false };
    let chunks = futures::stream::unfold(state, |mut s| async move {
        let encode = |pcm: Vec<u8>, sse: bool| {
            if sse {
                let event = json!({"type": "speech.audio.delta", "audio": base64::engine::general_purpose::STANDARD.encode(pcm)});
                sse_line(&event)
            } else {
                Bytes::from(pcm)
            }
        };
        if let Some(first) = s.first.take() {
            let sse = s.sse;
            return Some((Ok(encode(first, sse)), s));
        }
        if s.done {
            return None;
        }
        loop {
            match next(&mut s.stream, &s.speech).await {
                Ok(Next::Audio { pcm, .. }) if pcm.is_empty() => {}
                Ok(Next::Audio { pcm, .. }) => {
                    let sse = s.sse;
                    return Some((Ok(encode(pcm, sse)), s));
                }
                Ok(Next::Text(_) | Next::Finished { .. }) => {}
                Ok(Next::Done) => {
                    s.done = true;
                    if s.sse {
                        return Some((Ok(sse_line(&json!({"type": "speech.audio.done"}))), s));
                    }
                    return None;
                }
                Err(e) => {
                    s.done = true;
                    tracing::warn!(error = %e.message, "speech failed after its first audio");
                    if s.sse {
                        return Some((Ok(sse_line(&error_event(&e))), s));
                    }
                    // The status has gone out: cutting the body short is how the client learns of it.
                    return Some((Err(std::io::Error::other(e.message)), s));
                }
            }
        }
    });
    let content_type = if sse { "text/event-stream" } else { format.content_type() };
    Ok(streamed(content_type, chunks))
}

/// Whether a chat request asks for audio: `modalities` holds "audio". Checked: only "text" and "audio".
pub fn wants_audio(body: &Map<String, Value>) -> Result<bool, ApiError> {
    let list = match body.get("modalities") {
        None | Some(Value::Null) => return Ok(false),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(ApiError::invalid(Some("modalities"), "`modalities` must be a list such as [\"text\", \"audio\"]")),
    };
    let mut audio = false;
    for m in list {
        match m.as_str() {
            Some("text") => {}
            Some("audio") => audio = true,
            _ => return Err(ApiError::invalid(Some("modalities"), format!("`modalities` may hold \"text\" and \"audio\", not {m}"))),
        }
    }
    Ok(audio)
}

/// The served LLM that writes a speaking pipeline's text (a chat without audio goes straight to it).
pub fn text_model(pipeline: &Pipeline, speech: &SpeechConfig) -> Option<String> {
    pipeline.config.stages.iter().find(|s| s.stage_id == speech.text_stage).and_then(|s| s.engine.worker.clone())
}

/// The text stage's sampling parameters as a pipeline stage reads them.
fn sampling_json(s: &Sampling) -> Value {
    let mut map = Map::new();
    let mut put = |k: &str, v: Value| {
        if !v.is_null() {
            map.insert(k.to_string(), v);
        }
    };
    put("max_tokens", json!(s.max_tokens));
    put("temperature", json!(s.temperature));
    put("top_p", json!(s.top_p));
    put("top_k", json!(s.top_k));
    put("seed", json!(s.seed));
    if !s.stop.is_empty() {
        put("stop", json!(s.stop));
    }
    if s.presence_penalty != 0.0 {
        put("presence_penalty", json!(s.presence_penalty));
    }
    if s.frequency_penalty != 0.0 {
        put("frequency_penalty", json!(s.frequency_penalty));
    }
    Value::Object(map)
}

/// `POST /v1/chat/completions` with `modalities: ["text", "audio"]` on a speaking pipeline.
pub(super) async fn chat(
    body: &Map<String, Value>,
    request: Params,
    pipeline: Arc<Pipeline>,
    speech: SpeechConfig,
) -> Result<Response, ApiError> {
    if request.n != 1 {
        return Err(ApiError::invalid(Some("n"), "`n` must be 1 when the answer has audio"));
    }
    if request.logprobs {
        return Err(ApiError::invalid(Some("logprobs"), "`logprobs` is not available when the answer has audio"));
    }
    let (voice, format) = match body.get("audio") {
        None | Some(Value::Null) => (speech.default_voice.clone(), Format::Wav),
        Some(Value::Object(audio)) => {
            let voice = voice(&speech, audio.get("voice"), "audio.voice")?;
            let format = match audio.get("format").and_then(Value::as_str) {
                None | Some("wav") => Format::Wav,
                Some("pcm16") => Format::Pcm,
                Some(other) => {
                    return Err(ApiError::invalid(Some("audio.format"), format!("`audio.format` `{other}` is not supported; use wav or pcm16")));
                }
            };
            (voice, format)
        }
        Some(_) => return Err(ApiError::invalid(Some("audio"), "`audio` must be an object such as {\"voice\": \"alloy\", \"format\": \"wav\"}")),
    };
    let params = params_list(&pipeline, &speech, sampling_json(&request.request.sampling), &voice, 1.0);
    let stream = pipeline.stream(Input::Chat(request.request.messages), params, None).map_err(pipeline_error)?;
    let reply = Reply {
        id: request_id("chatcmpl"),
        audio_id: request_id("audio"),
        created: now_unix(),
        model: request.model.clone(),
        sample_rate: speech.sample_rate,
        format,
    };
    if request.stream {
        Ok(chat_sse(stream, speech, reply, request.include_usage))
    } else {
        chat_whole(stream, speech, reply).await
    }
}

/// Ids for one reply, in OpenAI's shapes.
struct Reply {
    id: String,
    audio_id: String,
    created: u64,
    model: String,
    sample_rate: u32,
    format: Format,
}

fn usage_json(usage: Option<&Value>) -> Value {
    let count = |k: &str| usage.and_then(|u| u.get(k)).and_then(Value::as_u64).unwrap_or(0);
    let (p, c) = (count("prompt_tokens"), count("completion_tokens"));
    json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
}

async fn chat_whole(mut stream: RequestStream, speech: SpeechConfig, reply: Reply) -> Result<Response, ApiError> {
    let (mut text, mut pcm, mut transcript) = (String::new(), Vec::new(), String::new());
    let (mut finish, mut usage) = ("stop".to_string(), None);
    loop {
        match next(&mut stream, &speech).await? {
            Next::Text(t) => text.push_str(&t),
            Next::Audio { pcm: p, transcript: t } => {
                pcm.extend_from_slice(&p);
                transcript.push_str(&t);
            }
            Next::Finished { reason, usage: u } => {
                finish = reason;
                usage = u;
            }
            Next::Done => break,
        }
    }
    let data = match reply.format {
        Format::Wav => [wav_header(reply.sample_rate, u32::try_from(pcm.len()).ok()), pcm].concat(),
        Format::Pcm => pcm,
    };
    let audio = json!({
        "id": reply.audio_id,
        "data": base64::engine::general_purpose::STANDARD.encode(data),
        "expires_at": reply.created + AUDIO_TTL_SECS,
        "transcript": transcript,
    });
    Ok(Json(json!({
        "id": reply.id,
        "object": "chat.completion",
        "created": reply.created,
        "model": reply.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": null, "audio": audio},
            "logprobs": null,
            "finish_reason": finish,
        }],
        "usage": usage_json(usage.as_ref()),
    }))
    .into_response())
}

fn chat_sse(stream: RequestStream, speech: SpeechConfig, reply: Reply, include_usage: bool) -> Response {
    struct Sse {
        stream: RequestStream,
        speech: SpeechConfig,
        reply: Reply,
        started: bool,
        audio_started: bool,
        finish: String,
        usage: Option<Value>,
        done: bool,
    }
    let chunk = |r: &Reply, choice: Value| {
        json!({"id": r.id, "object": "chat.completion.chunk", "created": r.created, "model": r.model, "choices": [choice]})
    };
    let state = Sse { stream, speech, reply, started: false, audio_started: false, finish: "stop".into(), usage: None, done: false };
    let events = futures::stream::unfold(state, move |mut s| async move {
        if s.done {
            return None;
        }
        let mut out: Vec<u8> = Vec::new();
        if !s.started {
            s.started = true;
            let first = json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null});
            out.extend_from_slice(&sse_line(&chunk(&s.reply, first)));
        }
        loop {
            match next(&mut s.stream, &s.speech).await {
                Ok(Next::Text(text)) => {
                    let delta = json!({"index": 0, "delta": {"content": text}, "logprobs": null, "finish_reason": null});
                    out.extend_from_slice(&sse_line(&chunk(&s.reply, delta)));
                    break;
                }
                Ok(Next::Audio { pcm, transcript }) => {
                    let mut data = pcm;
                    if !s.audio_started && s.reply.format == Format::Wav {
                        data = [wav_header(s.reply.sample_rate, None), data].concat();
                    }
                    s.audio_started = true;
                    let audio = json!({
                        "id": s.reply.audio_id,
                        "data": base64::engine::general_purpose::STANDARD.encode(data),
                        "transcript": transcript,
                        "expires_at": s.reply.created + AUDIO_TTL_SECS,
                    });
                    let delta = json!({"index": 0, "delta": {"audio": audio}, "logprobs": null, "finish_reason": null});
                    out.extend_from_slice(&sse_line(&chunk(&s.reply, delta)));
                    break;
                }
                Ok(Next::Finished { reason, usage }) => {
                    s.finish = reason;
                    s.usage = usage;
                }
                Ok(Next::Done) => {
                    let last = json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": s.finish});
                    out.extend_from_slice(&sse_line(&chunk(&s.reply, last)));
                    if include_usage {
                        let mut usage = chunk(&s.reply, Value::Null);
                        usage["choices"] = json!([]);
                        usage["usage"] = usage_json(s.usage.as_ref());
                        out.extend_from_slice(&sse_line(&usage));
                    }
                    out.extend_from_slice(b"data: [DONE]\n\n");
                    s.done = true;
                    break;
                }
                Err(e) => {
                    out.extend_from_slice(&sse_line(&error_event(&e)));
                    s.done = true;
                    break;
                }
            }
        }
        Some((Ok::<_, std::io::Error>(Bytes::from(out)), s))
    });
    streamed("text/event-stream", events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_wav_header_counts_its_data_and_a_streamed_one_says_unknown() {
        let h = wav_header(24_000, Some(480));
        assert_eq!(h.len(), 44);
        assert_eq!(&h[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes([h[4], h[5], h[6], h[7]]), 516);
        assert_eq!(u32::from_le_bytes([h[24], h[25], h[26], h[27]]), 24_000);
        assert_eq!(u32::from_le_bytes([h[28], h[29], h[30], h[31]]), 48_000);
        assert_eq!(u32::from_le_bytes([h[40], h[41], h[42], h[43]]), 480);
        let s = wav_header(24_000, None);
        assert_eq!(u32::from_le_bytes([s[40], s[41], s[42], s[43]]), u32::MAX);
    }

    #[test]
    fn samples_are_clipped_and_nan_is_silence() {
        let speech: SpeechConfig = toml::from_str(
            "text_stage = 0\naudio_stage = 1\nsample_rate = 24000\nvoices = [\"a\"]\ndefault_voice = \"a\"\n",
        )
        .unwrap();
        let samples = [0.5f32, 2.0, -3.0, f32::NAN];
        let data: Vec<u8> = samples.iter().flat_map(|v| v.to_le_bytes()).collect();
        let tensor = crate::compute::Tensor::new(vec![4], ElementType::Fp32, data, usize::MAX).unwrap();
        let item = StageItem { tensors: vec![("audio".into(), tensor)], ..StageItem::default() };
        let pcm = pcm16(&item, &speech).unwrap();
        let values: Vec<i16> = pcm.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect();
        assert_eq!(values, vec![16384, 32767, -32767, 0]);
    }
}
