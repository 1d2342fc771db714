//! Generation: the seed's scripted models through `/api/v1/chat/completions`, SmolLM2 through the real `openai`
//! client, continuous batching that changes nothing, a disconnecting client leaving the batch, bad input, and
//! DB-GPT's worker protocol field by field.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::common::*;
use crate::openai_client::python;

pub const LLM: &str = "SmolLM2-135M-Instruct";

fn llm_dir() -> std::path::PathBuf {
    let dir = root().join(".setup/models/smollm2-135m-instruct");
    assert!(dir.join("model.onnx").is_file(), "{} is missing: run `cargo xtask setup`", dir.display());
    dir
}

/// TOML serving SmolLM2 through the llm-chat adapter with a decoder of `max_sequences` rows.
pub fn llm_model(max_sequences: usize, queue: usize) -> String {
    llm_model_from("llm_chat.wasm", max_sequences, queue)
}

/// The same, with the adapter built as `component` (e.g. the fault-injection build).
fn llm_model_from(component: &str, max_sequences: usize, queue: usize) -> String {
    format!(
        r#"
[[plugins]]
name = "llm-chat"
component = "{component}"
world = "llm-adapter"
data_dir = "{dir}"
config = {{ tokenizer = "/data/tokenizer.json", model-config = "/data/config.json", model = "smollm2" }}
decoders = {{ smollm2 = {{ path = "{dir}/model.onnx", max_sequences = {max_sequences}, max_context = 1024, prefill_chunk = 64, queue_capacity = {queue} }} }}
limits = {{ pool_size = 2, max_concurrency = 4 }}

[[models]]
name = "{LLM}"
worker_type = "llm"
plugin = "llm-chat"
"#,
        component = crate::common::component(component).display(),
        dir = llm_dir().display(),
    )
}

/// TOML serving the seed's two scripted models.
fn scripted_models() -> String {
    let scripted = component("scripted_llm.wasm");
    let mut text = String::new();
    for (name, deltas) in [("scripted-en", r#"["Hello", " world."]"#), ("scripted-zh", r#"["你好，我是", "张三。"]"#)] {
        text.push_str(&format!(
            r#"
[[plugins]]
name = "{name}"
component = "{}"
config = {{ deltas = '{deltas}' }}

[[models]]
name = "{name}"
worker_type = "llm"
plugin = "{name}"
"#,
            scripted.display()
        ));
    }
    text
}

/// The `data:` payloads of an SSE body, until `[DONE]` (included as `Value::Null`) or the end.
pub async fn sse_events(response: reqwest::Response, limit: Option<usize>) -> Vec<Value> {
    let mut events = Vec::new();
    let mut buffer = String::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(120), body.next()).await.expect("stream stalled") {
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            for line in event.lines() {
                if let Some(data) = line.strip_prefix("data: ") {
                    events.push(if data == "[DONE]" { Value::Null } else { serde_json::from_str(data).unwrap() });
                }
            }
            if limit.is_some_and(|l| events.len() >= l) {
                return events;
            }
        }
    }
    events
}

fn delta_text(events: &[Value]) -> String {
    events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect()
}

async fn chat(client: &reqwest::Client, url: &str, key: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = client.post(format!("{url}/api/v1/chat/completions")).json(&body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_models_stream_their_deltas_and_honour_api_keys() {
    let server = start_with(&config_text("api_keys = [\"sk-right\"]", &scripted_models())).await;
    let url = server.url();
    let client = client();
    let listed = client.get(format!("{url}/api/v1/models")).bearer_auth("sk-right").send().await.unwrap();
    let listed: Value = listed.json().await.unwrap();
    let ids: Vec<&str> = listed["data"].as_array().unwrap().iter().filter_map(|m| m["id"].as_str()).collect();
    assert!(ids.contains(&"scripted-en") && ids.contains(&"scripted-zh"), "{listed}");

    for (model, expected) in [("scripted-en", "Hello world."), ("scripted-zh", "你好，我是张三。")] {
        let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": true});
        let response =
            client.post(format!("{url}/api/v1/chat/completions")).bearer_auth("sk-right").json(&body).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let events = sse_events(response, None).await;
        assert_eq!(events.last(), Some(&Value::Null), "the stream ends with [DONE]: {events:?}");
        let deltas: Vec<&str> = events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).filter(|d| !d.is_empty()).collect();
        assert_eq!(deltas.len(), 2, "one chunk per scripted delta: {deltas:?}");
        assert_eq!(deltas.concat(), expected);
        let finish: Vec<&str> = events.iter().filter_map(|e| e["choices"][0]["finish_reason"].as_str()).collect();
        assert_eq!(finish, ["stop"]);

        let (status, whole) = chat(&client, &url, Some("sk-right"), json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})).await;
        assert_eq!(status, 200, "{whole}");
        assert_eq!(whole["choices"][0]["message"]["content"], expected);
        assert_eq!(whole["object"], "chat.completion");
    }

    // The API-key matrix: missing and wrong keys are 401 with OpenAI's shape.
    let body = json!({"model": "scripted-en", "messages": [{"role": "user", "content": "hi"}]});
    let (status, error) = chat(&client, &url, None, body.clone()).await;
    assert_eq!((status, error["error"]["code"].as_str()), (401, Some("invalid_api_key")), "{error}");
    let (status, _) = chat(&client, &url, Some("sk-wrong"), body.clone()).await;
    assert_eq!(status, 401);
    server.stop().await.unwrap();

    // No keys configured: any request is served.
    let open = start(&scripted_models()).await;
    let (status, whole) = chat(&client, &open.url(), None, body).await;
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["choices"][0]["message"]["content"], "Hello world.");
    open.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smollm2_through_the_openai_client() {
    let server = start_with(&config_text("", &llm_model(4, 64))).await;
    let output = tokio::time::timeout(
        Duration::from_secs(600),
        tokio::process::Command::new(python()).arg(root().join("tests/python/openai_chat.py")).arg(server.url()).arg(LLM).output(),
    )
    .await
    .expect("the client script finished in time")
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "openai client script failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let r: Value = serde_json::from_str(stdout.trim()).unwrap();
    let greedy = r["greedy"].as_str().unwrap();
    assert!(greedy.contains("Paris"), "greedy answer: {greedy}");
    assert_eq!(r["greedy_streamed"], r["greedy"], "streamed text equals the whole answer");
    assert_eq!(r["greedy_finish"], "stop");
    assert_eq!(r["greedy_streamed_finish"], "stop");
    assert_eq!(r["streamed_usage"], r["greedy_usage"], "stream_options.include_usage gives the same usage");
    assert_eq!(r["seed_7_a"], r["seed_7_b"], "the same seed gives the same text");
    assert_ne!(r["seed_7_a"], r["seed_8"], "two seeds differ");
    let stopped = r["stopped"].as_str().unwrap();
    assert!(!stopped.contains("Paris") && greedy.starts_with(stopped), "stop string cut: {stopped:?} of {greedy:?}");
    assert_eq!(r["stopped_finish"], "stop");
    assert_eq!(r["stopped_streamed"], r["stopped"]);
    assert_eq!(r["stopped_streamed_finish"], "stop");
    assert_eq!(r["short_finish"], "length");
    assert_eq!(r["short_usage"]["completion_tokens"], 5);
    let usage = &r["short_usage"];
    assert_eq!(usage["total_tokens"].as_u64(), Some(usage["prompt_tokens"].as_u64().unwrap() + 5));
    assert_eq!(r["n2"].as_array().unwrap().len(), 2);
    assert_ne!(r["n2"][0], r["n2"][1], "choices of one request differ");
    assert_eq!(r["n2_usage"]["completion_tokens"], 24);
    let logprobs = r["logprobs"].as_array().unwrap();
    assert_eq!(logprobs.len(), 4);
    for lp in logprobs {
        assert!(lp["logprob"].as_f64().unwrap() <= 0.0);
        // Greedy: the chosen token is the most likely one.
        assert_eq!(lp["top"][0], lp["token"], "{lp}");
        assert_eq!(lp["top"].as_array().unwrap().len(), 3);
    }
    assert!(r["completion"].as_str().unwrap().contains("Paris"), "completion: {}", r["completion"]);
    server.stop().await.unwrap();
}

fn prompts() -> Vec<String> {
    let mut prompts: Vec<String> = [
        "What is the capital of France?",
        "Name three colours.",
        "Write a haiku about the sea.",
        "What is 2 + 2?",
        "Tell me a fact about elephants.",
        "Translate 'good morning' to Spanish.",
        "What do bees make?",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // One long prompt, so its chunked prefill runs while the others decode.
    prompts.push(format!("Summarise this text in one sentence: {}", "The quick brown fox jumps over the lazy dog. ".repeat(20)));
    prompts
}

async fn greedy_stream(client: &reqwest::Client, url: &str, prompt: &str, max_tokens: u32) -> String {
    let body = json!({"model": LLM, "messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": max_tokens, "stream": true});
    let response = client.post(format!("{url}/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let events = sse_events(response, None).await;
    assert_eq!(events.last(), Some(&Value::Null), "{events:?}");
    delta_text(&events)
}

fn health_generation(health: &Value) -> Value {
    health["models"].as_array().unwrap().iter().find(|m| m["model"] == LLM).unwrap()["generation"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batching_changes_nothing_and_a_gone_client_leaves_the_batch() {
    let server = start_with(&config_text("", &llm_model(8, 64))).await;
    let url = server.url();
    let client = client();
    let prompts = prompts();
    let lengths = [24, 40, 16, 32, 48, 20, 28, 36];
    let mut alone = Vec::new();
    for (prompt, &n) in prompts.iter().zip(&lengths) {
        alone.push(greedy_stream(&client, &url, prompt, n).await);
    }
    let together = futures::future::join_all(prompts.iter().zip(&lengths).map(|(p, &n)| greedy_stream(&client, &url, p, n))).await;
    for ((prompt, a), t) in prompts.iter().zip(&alone).zip(&together) {
        assert!(!a.is_empty(), "{prompt}");
        assert_eq!(a, t, "batched output differs for {prompt:?}");
    }

    // A client that goes away after a few deltas: its sequence leaves the batch at the next step.
    let health = || async { client.get(format!("{url}/health/ready")).send().await.unwrap().json::<Value>().await.unwrap() };
    let body = json!({"model": LLM, "messages": [{"role": "user", "content": "Write a long story about a dragon."}], "temperature": 0, "max_tokens": 900, "stream": true});
    let response = client.post(format!("{url}/v1/chat/completions")).json(&body).send().await.unwrap();
    let first = sse_events(response, Some(4)).await;
    assert_eq!(first.len(), 4);
    let during = health_generation(&health().await);
    assert_eq!(during["running"], 1, "{during}");
    let steps_at_drop = during["decode_steps"].as_u64().unwrap();
    // `first` consumed the response: the connection is closed here.
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let g = health_generation(&health().await);
        if g["running"] == 0 {
            break g;
        }
        assert!(Instant::now() < deadline, "the sequence never left the batch: {g}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let steps = after["decode_steps"].as_u64().unwrap() - steps_at_drop;
    assert!(steps <= 3, "the sequence left after {steps} more steps (of 900 asked)");
    assert_eq!(after["cancelled"], 1, "{after}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_generation_requests_are_400_naming_the_param() {
    let server = start_with(&config_text("", &llm_model(2, 8))).await;
    let url = server.url();
    let client = client();
    let user = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        (json!({"model": LLM, "messages": []}), "messages"),
        (json!({"model": LLM, "messages": [{"role": "wizard", "content": "hi"}]}), "messages"),
        (json!({"model": LLM, "messages": user, "max_tokens": 0}), "max_tokens"),
        (json!({"model": LLM, "messages": user, "n": 0}), "n"),
        (json!({"model": LLM, "messages": user, "temperature": 3}), "temperature"),
        (json!({"model": LLM, "messages": user, "top_p": 1.5}), "top_p"),
        (json!({"model": LLM, "messages": user, "stop": ["a", "b", "c", "d", "e"]}), "stop"),
        (json!({"model": LLM, "messages": user, "top_logprobs": 3}), "top_logprobs"),
        (json!({"model": LLM, "messages": [{"role": "user", "content": "word ".repeat(1500)}]}), "messages"),
    ];
    for (body, param) in cases {
        let (status, error) = chat(&client, &url, None, body.clone()).await;
        assert_eq!(status, 400, "{body} -> {error}");
        assert_eq!(error["error"]["param"], param, "{body} -> {error}");
        assert_eq!(error["error"]["type"], "invalid_request_error");
    }
    // Unknown OpenAI fields are ignored, and the server kept serving.
    let (status, ok) = chat(&client, &url, None, json!({"model": LLM, "messages": user, "max_tokens": 3, "user": "u1", "parallel_tool_calls": false})).await;
    assert_eq!(status, 200, "{ok}");
    assert_eq!(ok["usage"]["completion_tokens"], 3);
    let (status, _) = chat(&client, &url, None, json!({"model": "no-such-model", "messages": user})).await;
    assert_eq!(status, 404);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dbgpt_worker_protocol_shapes() {
    let server = start_with(&config_text("", &scripted_models())).await;
    let url = server.url();
    let client = client();
    // The body DB-GPT 0.8's RemoteModelWorker sends (ModelRequest.to_dict()).
    let body = json!({
        "model": "scripted-zh",
        "messages": [{"role": "system", "content": "You are X", "round_index": 0},
                     {"role": "human", "content": [{"object": {"data": "你是谁", "format": "text"}, "type": "text"}], "round_index": 0}],
        "temperature": 0.5, "max_new_tokens": 32, "echo": false, "span_id": "empty_span",
        "context": {"stream": true, "cache_enable": false, "user_name": null, "extra": {}, "request_id": null}
    });
    let response = client.post(format!("{url}/api/worker/generate_stream")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let raw = response.bytes().await.unwrap();
    assert_eq!(raw.last(), Some(&0u8), "every chunk ends with NUL");
    let chunks: Vec<Value> = raw.split(|b| *b == 0).filter(|c| !c.is_empty()).map(|c| serde_json::from_slice(c).unwrap()).collect();
    let texts: Vec<&str> = chunks.iter().map(|c| c["content"]["object"]["data"].as_str().unwrap()).collect();
    assert_eq!(texts.first(), Some(&"你好，我是"), "cumulative text: {texts:?}");
    assert_eq!(texts.last(), Some(&"你好，我是张三。"), "the last chunk carries the whole text: {texts:?}");
    for chunk in &chunks {
        let keys: Vec<&str> = chunk.as_object().unwrap().keys().map(String::as_str).collect();
        let mut keys = keys.clone();
        keys.sort();
        assert_eq!(keys, ["content", "error_code", "finish_reason", "incremental", "metrics", "model_context", "usage"]);
        assert_eq!(chunk["error_code"], 0);
        assert_eq!(chunk["incremental"], false);
        assert_eq!(chunk["content"]["type"], "text");
        assert_eq!(chunk["content"]["object"]["format"], "text");
    }
    let last = chunks.last().unwrap();
    assert_eq!(last["finish_reason"], "stop");
    assert_eq!(last["usage"]["completion_tokens"], 2);

    let whole: Value = client.post(format!("{url}/api/worker/generate")).json(&body).send().await.unwrap().json().await.unwrap();
    assert_eq!(whole["content"]["object"]["data"], "你好，我是张三。");
    assert_eq!(whole["error_code"], 0);
    assert_eq!(whole["finish_reason"], "stop");

    // An unknown model is reported in-band or as 404, never as a hang.
    let missing = client.post(format!("{url}/api/worker/generate")).json(&json!({"model": "nope", "messages": []})).send().await.unwrap();
    assert!(missing.status() == 404 || missing.status() == 400, "{}", missing.status());

    let count: Value = client
        .post(format!("{url}/api/worker/count_token"))
        .json(&json!({"model": "scripted-en", "prompt": "one two three"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(count, json!(3), "a bare integer");

    let meta: Value = client
        .post(format!("{url}/api/worker/model_metadata"))
        .json(&json!({"model": "scripted-en", "span_id": "empty_span"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut keys: Vec<&str> = meta.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["chat_model", "context_length", "description", "ext_metadata", "function_calling", "label", "link", "max_output_length", "metadata", "model"]
    );
    assert_eq!(meta["model"], "scripted-en");
    assert_eq!(meta["chat_model"], true);
    let mut ext: Vec<&str> = meta["ext_metadata"].as_object().unwrap().keys().map(String::as_str).collect();
    ext.sort();
    assert_eq!(ext, ["prompt_chat_template", "prompt_roles", "prompt_sep"]);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_batch_and_its_queue_requests_get_429() {
    // One row in the batch and one place in the queue.
    let server = start_with(&config_text("", &llm_model(1, 1))).await;
    let url = server.url();
    let client = client();
    let long = |n: u32| json!({"model": LLM, "messages": [{"role": "user", "content": format!("Write a long story number {n}.")}], "temperature": 0, "max_tokens": 400, "stream": true});
    let first = client.post(format!("{url}/v1/chat/completions")).json(&long(1)).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let mut first_body = first.bytes_stream();
    // The first delta arrives once the sequence holds the batch's only row.
    tokio::time::timeout(Duration::from_secs(60), first_body.next()).await.unwrap().unwrap().unwrap();
    let second = client.post(format!("{url}/v1/chat/completions")).json(&long(2)).send().await.unwrap();
    assert_eq!(second.status(), 200, "the second waits in the queue");
    let (status, error) = chat(&client, &url, None, long(3)).await;
    assert_eq!(status, 429, "{error}");
    assert_eq!(error["error"]["code"], "rate_limit_exceeded");
    assert!(error["error"]["message"].as_str().unwrap().contains(LLM), "{error}");
    drop(first_body);
    // Once the first client is gone, the queued request runs to the end.
    let events = sse_events(second, None).await;
    assert_eq!(events.last(), Some(&Value::Null), "the queued request completes");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_trap_mid_stream_fails_only_its_sequence() {
    let server = start_with(&config_text("", &llm_model_from("llm_chat_faulty.wasm", 4, 16))).await;
    let url = server.url();
    let client = client();
    let prompts = ["What is the capital of France?", "Name three colours."];
    let mut alone = Vec::new();
    for p in prompts {
        alone.push(greedy_stream(&client, &url, p, 24).await);
    }
    // The trigger stop string makes the fault-injection build trap at the sequence's third step, while the
    // other two sequences share its decode steps.
    let faulty = async {
        let body = json!({"model": LLM, "messages": [{"role": "user", "content": "Tell me about cats."}], "temperature": 0,
                          "max_tokens": 24, "stream": true, "stop": ["omnihost-fault:trap"]});
        let response = client.post(format!("{url}/v1/chat/completions")).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 200);
        sse_events(response, None).await
    };
    let (events, together) = futures::future::join(faulty, futures::future::join_all(prompts.iter().map(|p| greedy_stream(&client, &url, p, 24)))).await;
    let error = events.last().unwrap();
    assert_eq!(error["error"]["code"], "plugin_trap", "the stream ends with an error event: {events:?}");
    assert!(error["error"]["message"].as_str().unwrap().contains("llm-chat"), "{error}");
    assert!(!events.contains(&Value::Null), "no [DONE] after an error");
    assert_eq!(together, alone, "the sequences beside the trapping one are untouched");
    // The host and the plugin keep serving.
    assert_eq!(greedy_stream(&client, &url, prompts[0], 24).await, alone[0]);
    server.stop().await.unwrap();
}

/// Greedy text of a streamed request and the plugin version that prepared it.
async fn greedy_stream_versioned(client: &reqwest::Client, url: &str, prompt: &str, max_tokens: u32) -> (String, String) {
    let body = json!({"model": LLM, "messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": max_tokens, "stream": true});
    let response = client.post(format!("{url}/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let version = response.headers()["x-omnihost-plugin-version"].to_str().unwrap().to_string();
    let events = sse_events(response, None).await;
    assert_eq!(events.last(), Some(&Value::Null), "{events:?}");
    (delta_text(&events), version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_the_llm_adapter_mid_stream_drops_nothing() {
    let server = start_with(&config_text("", &llm_model(8, 64))).await;
    let url = server.url();
    let client = client();
    let prompts = ["What is the capital of France?", "Name three colours.", "What do bees make?", "What is 2 + 2?"];
    let tokens = 96;
    let mut alone = Vec::new();
    for p in prompts {
        alone.push(greedy_stream(&client, &url, p, tokens).await);
    }
    // Install the other build once and roll back, so the measured swap below is instant (a known build is not
    // compiled again) and lands while the first streams are still decoding.
    let swap_to = |path: &'static str| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let bytes = std::fs::read(component(path)).unwrap();
            let response = client.put(format!("{url}/admin/plugins/llm-chat")).body(bytes).send().await.unwrap();
            assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        }
    };
    swap_to("llm_chat_faulty.wasm").await;
    let rollback = client.post(format!("{url}/admin/plugins/llm-chat/rollback")).send().await.unwrap();
    assert_eq!(rollback.status(), 200);

    let timed = |p: &'static str| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let out = greedy_stream_versioned(&client, &url, p, tokens).await;
            (out, Instant::now())
        }
    };
    let before = futures::future::join_all(prompts.iter().map(|&p| timed(p)));
    let swap_then_more = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        swap_to("llm_chat_faulty.wasm").await;
        let swapped_at = Instant::now();
        let after = futures::future::join_all(prompts.iter().map(|&p| timed(p))).await;
        (swapped_at, after)
    };
    let (before, (swapped_at, after)) = futures::future::join(before, swap_then_more).await;
    assert!(before.iter().any(|(_, end)| *end > swapped_at), "the swap landed while streams of the old version were running");
    let old = &before[0].0.1;
    let new = &after[0].0.1;
    assert_ne!(old, new, "requests after the swap are served by the new build");
    for (i, (((b, _), (a, _)), expected)) in before.iter().zip(&after).zip(&alone).enumerate() {
        assert_eq!(&b.0, expected, "stream {i} started before the swap");
        assert_eq!(&b.1, old, "stream {i} started before the swap stays on the old version");
        assert_eq!(&a.0, expected, "stream {i} started after the swap");
        assert_eq!(&a.1, new);
    }
    server.stop().await.unwrap();
}

/// The KV-cached path (prompt in chunks, then one token per step, batched with another sequence) gives the
/// logits a full recompute of the whole sequence in one run gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_decoding_matches_a_full_recompute() {
    use omnihost::compute::{ComputeSettings, Decoder, DecoderLimits, Runtime, library};
    use omnihost::config::ComputeConfig;
    let lib = library::locate(None, &[root()]).unwrap();
    let runtime = Runtime::load(&lib).unwrap();
    // The default `[compute]` section (CPU), with a short queue and room for the full-recompute logits.
    let settings = ComputeSettings {
        queue_capacity: 8,
        tensor_limit: 1 << 30,
        ..ComputeSettings::new(&ComputeConfig::default(), root().join("target/omnihost-test-cache"))
    };
    let limits = DecoderLimits { max_sequences: 4, max_context: 256, prefill_chunk: 16, queue_capacity: 4 };
    let decoder = Decoder::load(&runtime, "smollm2", &llm_dir().join("model.onnx"), &settings, limits).unwrap();
    // "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\nThe capital of France is"
    let tokens: Vec<u32> = vec![1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198, 504, 3575, 282, 4649, 314];
    let vocab = decoder.vocab_size;
    let full = decoder.prefill(1, tokens.clone(), 0, true).await.unwrap();
    // Sequence 2: the first 9 tokens in chunks of 4, then the rest one step at a time beside sequence 1.
    let split = 9;
    for (i, chunk) in tokens[..split].chunks(4).enumerate() {
        let last = (i + 1) * 4 >= split;
        decoder.prefill(2, chunk.to_vec(), i * 4, last).await.unwrap();
    }
    let mut cached = Vec::new();
    for &token in &tokens[split..] {
        let mut both = decoder.decode(vec![(1, 0), (2, token)]).await.unwrap();
        assert_eq!(both.len(), 2);
        assert!(both.iter().all(|row| row.len() == vocab));
        cached = both.pop().unwrap();
    }
    let diff = full.iter().zip(&cached).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    eprintln!("max abs logit difference, cached vs full recompute: {diff}");
    assert!(diff < 1e-3, "cached decoding differs from the full recompute by {diff}");
    let argmax = |row: &[f32]| row.iter().enumerate().fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0;
    assert_eq!(argmax(&full), argmax(&cached));
    decoder.release(1);
    decoder.release(2);
}
