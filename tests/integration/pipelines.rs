//! Pipelines: the seed's `OmniLLM` cases on scripted stages, streaming between stages, requests overlapping
//! across stages, a stage failure that fails only its request (naming the stage), processors swapped under
//! load, record and replay, and the `omnihost pipeline` commands.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

/// TOML serving scripted LLMs: (name, deltas JSON, delay between deltas in ms).
pub fn scripted(models: &[(&str, &str, u64)]) -> String {
    let mut text = String::new();
    for (name, deltas, delay) in models {
        text.push_str(&format!(
            r#"
[[plugins]]
name = "{name}"
component = "{}"
config = {{ deltas = '{deltas}', delay-ms = "{delay}" }}

[[models]]
name = "{name}"
worker_type = "llm"
plugin = "{name}"
"#,
            component("scripted_llm.wasm").display()
        ));
    }
    text
}

/// A folder of its own for one test's pipeline files and recordings.
fn scratch(name: &str) -> PathBuf {
    let dir = root().join("target/omnihost-test-pipelines").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a pipeline file whose `[[processors]]` are the echo-stage builds (`echo`, `mark` with prefix "[1] ",
/// `faulty`), followed by `stages`; returns the `[[pipelines]]` entry serving it.
fn pipeline_file(dir: &Path, name: &str, head: &str, stages: &str) -> (PathBuf, String) {
    let text = format!(
        r#"
name = "{name}"
{head}

[[processors]]
name = "{name}-echo"
component = "{echo}"

[[processors]]
name = "{name}-mark"
component = "{echo}"
config = {{ prefix = "[1] " }}

[[processors]]
name = "{name}-faulty"
component = "{faulty}"
limits = {{ timeout_ms = 1500 }}

{stages}
"#,
        echo = component("echo_stage.wasm").display(),
        faulty = component("echo_stage_faulty.wasm").display(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    let entry = format!("[[pipelines]]\nfile = \"{}\"\n", path.display());
    (path, entry)
}

async fn generate(client: &reqwest::Client, url: &str, name: &str, body: Value) -> (u16, Value) {
    let response = client.post(format!("{url}/v1/pipelines/{name}/generate")).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The seed pipeline: stage 0 an LLM on the prompt, stage 1 a processor over it, stage 2 an LLM fed stage 1's
/// items without a processor, stage 3 logic only.
const SEED_STAGES: &str = r#"
[[stages]]
stage_id = 0
engine = { worker = "scripted-en" }
final_output = true
final_output_type = "text"

[[stages]]
stage_id = 1
engine_input_source = [0]
input_processor = "seed-mark"
final_output = true
final_output_type = "text"

[[stages]]
stage_id = 2
engine = { worker = "scripted-zh" }
engine_input_source = [1]
default_sampling_params = { max_tokens = 1 }

[[stages]]
stage_id = 3
engine_input_source = [2]
input_processor = "seed-echo"
final_output = true
final_output_type = "text"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_cases_of_omnillm() {
    let dir = scratch("seed");
    let (_, entry) = pipeline_file(&dir, "seed", "", SEED_STAGES);
    let models = scripted(&[("scripted-en", r#"["Hello", " world."]"#, 0), ("scripted-zh", r#"["你好，", "我是", "张三。"]"#, 0)]);
    let server = start(&format!("{models}\n{entry}")).await;
    let (url, client) = (server.url(), client());

    // 1. Without an explicit stage list the stages come from the pipeline's file, each with its engine.
    let listed: Value = client.get(format!("{url}/v1/pipelines")).send().await.unwrap().json().await.unwrap();
    let stages = listed["data"][0]["stages"].as_array().unwrap();
    let ids: Vec<u64> = stages.iter().map(|s| s["stage_id"].as_u64().unwrap()).collect();
    assert_eq!(ids, vec![0, 1, 2, 3], "{listed}");
    assert_eq!(stages[0]["engine"], json!({"worker": "scripted-en"}));
    assert_eq!(stages[3]["engine"], Value::Null, "stage 3 is logic only");
    let models: Value = client.get(format!("{url}/v1/models")).send().await.unwrap().json().await.unwrap();
    assert!(models["data"].as_array().unwrap().iter().any(|m| m["id"] == "seed" && m["worker_type"] == "pipeline"), "{models}");

    // 2. A sampling_params_list of the wrong length names expected and actual; a missing entry is an error.
    let (status, body) = generate(&client, &url, "seed", json!({"prompts": ["hi"], "sampling_params_list": [{}, {}]})).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("has 2 entries") && message.contains("has 4 stages"), "{message}");
    assert_eq!(body["error"]["param"], "sampling_params_list");
    let (status, body) =
        generate(&client, &url, "seed", json!({"prompts": ["hi"], "sampling_params_list": [{}, null, {}, {}]})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("sampling_params_list[1] is null (missing)"), "{body}");

    // 3-5. Stage 0 consumes the prompts; stage 1 its processor's output; stage 2 (no processor) stage 1's items;
    // every final stage adds one output in stage order, each the in-order collection of what its engine made.
    let (status, body) = generate(&client, &url, "seed", json!({"prompts": ["first", "second"]})).await;
    assert_eq!(status, 200, "{body}");
    let outputs = body["outputs"].as_array().unwrap();
    let finals: Vec<u64> = outputs.iter().map(|o| o["stage_id"].as_u64().unwrap()).collect();
    assert_eq!(finals, vec![0, 1, 3], "stage 2 is not a final output: {body}");
    assert_eq!(outputs[0]["final_output_type"], "text");
    assert_eq!(outputs[0]["outputs"], json!([["Hello world."], ["Hello world."]]), "{body}");
    assert_eq!(outputs[1]["outputs"], json!([["[1] Hello world."], ["[1] Hello world."]]), "{body}");
    // Stage 2's default max_tokens = 1 stops the scripted model after its first delta.
    assert_eq!(outputs[2]["outputs"], json!([["你好，"], ["你好，"]]), "{body}");

    // A request's sampling parameters override the stage's defaults key by key.
    let params = json!([{}, {}, {"max_tokens": 2}, {}]);
    let (status, body) = generate(&client, &url, "seed", json!({"prompts": ["x"], "sampling_params_list": params})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][2]["outputs"], json!([["你好，我是"]]), "{body}");
    let (status, body) =
        generate(&client, &url, "seed", json!({"prompts": ["x"], "sampling_params_list": [{}, {}, {"max_tokens": "two"}, {}]})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("stage 2"), "{body}");

    // An explicit stage list replaces the file's (vllm-omni's stage_configs); none final gives an empty list.
    let services = server.wait_ready(Duration::from_secs(10)).await.unwrap();
    let file = omnihost::pipeline::PipelineConfig::load(&dir.join("seed.toml")).unwrap();
    let mut only_first = file.stages[..1].to_vec();
    only_first[0].final_output = false;
    let parts = omnihost::pipeline::Parts {
        plugins: &services.plugins,
        models: Default::default(),
        manager: services.resolver.local().cloned(),
        record: None,
    };
    let explicit = omnihost::pipeline::Pipeline::build(file, Some(only_first), parts).unwrap();
    assert_eq!(explicit.stage_ids(), vec![0]);
    let none = explicit.generate(vec![omnihost::pipeline::Input::Prompt("hi".into())], vec![json!({})]).await.unwrap();
    assert!(none.is_empty(), "no final stage: no outputs");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_consumes_its_source_sentence_by_sentence_while_it_is_generated() {
    let dir = scratch("stream");
    let stages = r#"
[[stages]]
stage_id = 0
engine = { worker = "slow-talker" }
output_chunks = "sentence"
final_output = true

[[stages]]
stage_id = 1
engine_input_source = [0]
input_processor = "stream-mark"
stream_input = true
final_output = true
"#;
    let (_, entry) = pipeline_file(&dir, "stream", "", stages);
    let deltas = r#"["One ", "fish. ", "Two ", "fish. ", "Red ", "fish."]"#;
    let server = start(&format!("{}\n{entry}", scripted(&[("slow-talker", deltas, 250)]))).await;
    let (url, client) = (server.url(), client());
    let started = Instant::now();
    let request = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move { generate(&client, &url, "stream", json!({"prompts": ["go"]})).await }
    });
    // Stage 1 works on the first sentence while stage 0 is still writing the rest.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed: Value = client.get(format!("{url}/v1/pipelines")).send().await.unwrap().json().await.unwrap();
        if listed["data"][0]["stages"][1]["runs"].as_u64().unwrap() >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "stage 1 never started: {listed}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!request.is_finished(), "stage 1 started only after the whole reply ({:?})", started.elapsed());
    let (status, body) = request.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][0]["outputs"], json!([["One fish. ", "Two fish. ", "Red fish."]]), "{body}");
    assert_eq!(body["outputs"][1]["outputs"], json!([["[1] One fish. ", "[1] Two fish. ", "[1] Red fish."]]), "{body}");
    let listed: Value = client.get(format!("{url}/v1/pipelines")).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["data"][0]["stages"][1]["runs"], 3, "one processor call per chunk: {listed}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_of_different_requests_overlap_unless_told_otherwise() {
    let dir = scratch("overlap");
    let stages = r#"
[[stages]]
stage_id = 0
engine = { worker = "slow-a" }

[[stages]]
stage_id = 1
engine = { worker = "slow-b" }
engine_input_source = [0]
final_output = true
"#;
    let models = scripted(&[("slow-a", r#"["a", "a"]"#, 150), ("slow-b", r#"["b", "b"]"#, 150)]);
    let (_, overlapped) = pipeline_file(&dir, "overlapped", "", stages);
    let (_, serial) = pipeline_file(&dir, "serial", "overlap_requests = false", stages);
    let server = start(&format!("{models}\n{overlapped}\n{serial}")).await;
    let (url, client) = (server.url(), client());
    for name in ["overlapped", "serial"] {
        let runs = (0..4).map(|i| generate(&client, &url, name, json!({"prompts": [format!("request {i}")]})));
        for (status, body) in futures::future::join_all(runs).await {
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["outputs"][0]["outputs"], json!([["bb"]]));
        }
    }
    let listed: Value = client.get(format!("{url}/v1/pipelines")).send().await.unwrap().json().await.unwrap();
    let peak = |name: &str| {
        listed["data"].as_array().unwrap().iter().find(|p| p["id"] == name).unwrap()["peak_busy_stages"].as_u64().unwrap()
    };
    assert_eq!(peak("overlapped"), 2, "stage 1 of one request ran while stage 0 of another did: {listed}");
    assert_eq!(peak("serial"), 1, "back to back, one stage at a time: {listed}");
    server.stop().await.unwrap();
}

/// A server with pipeline `name`: stage 0 the scripted LLM `talker` answering `deltas` (a pause of `delay_ms`
/// between them), stage 1 the processor `{name}-{processor}` over it, up to 4 requests at once, final.
async fn talker_then(name: &str, processor: &str, deltas: &str, delay_ms: u64) -> omnihost::server::Running {
    let dir = scratch(name);
    let stages = format!(
        r#"
[[stages]]
stage_id = 0
engine = {{ worker = "talker" }}

[[stages]]
stage_id = 1
engine_input_source = [0]
input_processor = "{name}-{processor}"
engine_args = {{ concurrency = 4 }}
final_output = true
"#
    );
    let (_, entry) = pipeline_file(&dir, name, "", &stages);
    start(&format!("{}\n{entry}", scripted(&[("talker", deltas, delay_ms)]))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_stage_fails_only_its_request_and_names_the_stage() {
    let server = talker_then("faults", "faulty", r#"["fine"]"#, 0).await;
    let (url, client) = (server.url(), client());
    let prompts = ["ok 1", "omnihost-fault:trap", "ok 2", "omnihost-fault:sleep", "ok 3"];
    let runs = prompts.iter().map(|p| generate(&client, &url, "faults", json!({"prompts": [p]})));
    let results = futures::future::join_all(runs).await;
    for (prompt, (status, body)) in prompts.iter().zip(&results) {
        match *prompt {
            "omnihost-fault:trap" => {
                assert_eq!(*status, 500, "{body}");
                let message = body["error"]["message"].as_str().unwrap();
                assert!(message.contains("pipeline `faults` stage 1 failed") && message.contains("trapped"), "{message}");
                assert!(!message.contains("wasm backtrace"), "the guest backtrace stays in the log: {message}");
            }
            "omnihost-fault:sleep" => {
                assert_eq!(*status, 504, "{body}");
                assert!(body["error"]["message"].as_str().unwrap().contains("stage 1"), "{body}");
            }
            _ => assert_eq!(body["outputs"][0]["outputs"], json!([["fine"]]), "{body}"),
        }
    }
    // Bad requests are 400s that say what is wrong.
    for (body, param) in [
        (json!({}), "prompts"),
        (json!({"prompts": []}), "prompts"),
        (json!({"prompts": [1]}), "prompts"),
        (json!({"image": "not base64!"}), "image"),
        (json!({"prompts": ["a"], "image": "AAAA"}), "prompts"),
    ] {
        let (status, answer) = generate(&client, &url, "faults", body.clone()).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_eq!(answer["error"]["param"], param, "{answer}");
    }
    let (status, _) = generate(&client, &url, "nope", json!({"prompts": ["a"]})).await;
    assert_eq!(status, 404);
    // The host is still serving.
    let (status, body) = generate(&client, &url, "faults", json!({"prompts": ["after"]})).await;
    assert_eq!(status, 200, "{body}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processors_swap_under_load_without_a_failed_request() {
    let server = talker_then("swap", "echo", r#"["steady"]"#, 5).await;
    let (url, client) = (server.url(), client());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..3 {
        let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, body) = generate(&client, &url, "swap", json!({"prompts": ["go"]})).await;
                if status == 200 && body["outputs"][0]["outputs"] == json!([["steady"]]) {
                    ok += 1;
                } else {
                    failed.push(body);
                }
            }
            (ok, failed)
        }));
    }
    // The same processor in each language, swapped in turn while requests flow.
    for file in ["echo_stage_js.wasm", "echo_stage_py.wasm", "echo_stage_faulty.wasm", "echo_stage.wasm"] {
        let bytes = std::fs::read(component(file)).unwrap();
        // Compiling a JavaScript or Python component takes most of a minute, longer on a loaded machine.
        let response = client.put(format!("{url}/admin/plugins/swap-echo")).body(bytes).timeout(Duration::from_secs(600)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{file}: {}", response.text().await.unwrap());
    }
    // A component of the wrong world is refused and the old processor keeps serving.
    let wrong = std::fs::read(component("scripted_llm.wasm")).unwrap();
    let response = client.put(format!("{url}/admin/plugins/swap-echo")).body(wrong).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let refusal: Value = response.json().await.unwrap();
    assert!(refusal["error"]["message"].as_str().unwrap().contains("pipeline-processor"), "{refusal}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for task in load {
        let (o, f) = task.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    assert!(failed.is_empty(), "failed during swaps: {failed:?}");
    assert!(ok >= 4, "only {ok} requests completed during the swaps");
    server.stop().await.unwrap();
}

/// Runs a command to its end, killed and failed if it takes longer than five minutes.
async fn finish(cmd: &mut tokio::process::Command) -> std::process::Output {
    let run = cmd.kill_on_drop(true).output();
    tokio::time::timeout(Duration::from_secs(300), run).await.expect("the command finished within 5 minutes").unwrap()
}

async fn omnihost(args: &[&str]) -> (bool, String) {
    let out = finish(tokio::process::Command::new(crate::common::bin()).args(args).current_dir(root()).env("RUST_LOG", "warn")).await;
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_validates_runs_records_and_replays_a_pipeline() {
    let dir = scratch("cli");
    let stages = r#"
[[stages]]
stage_id = 0
input_processor = "cli-echo"

[[stages]]
stage_id = 1
engine_input_source = [0]
input_processor = "cli-mark"
final_output = true
"#;
    let (file, _) = pipeline_file(&dir, "cli", "", stages);
    let file = file.to_str().unwrap();
    let (ok, out) = omnihost(&["pipeline", "validate", file]).await;
    assert!(ok, "{out}");
    assert!(out.contains("pipeline `cli` is valid: stages run in the order 0 -> 1"), "{out}");

    // A processor that does not implement the world, and a graph problem, each fail naming what is wrong.
    let broken = std::fs::read_to_string(file).unwrap().replace("echo_stage_faulty.wasm", "scripted_llm.wasm");
    let broken_path = dir.join("broken.toml");
    std::fs::write(&broken_path, broken).unwrap();
    let (ok, out) = omnihost(&["pipeline", "validate", broken_path.to_str().unwrap()]).await;
    assert!(!ok && out.contains("cli-faulty") && out.contains("pipeline-processor"), "{out}");
    let cyclic = std::fs::read_to_string(file).unwrap().replace("stage_id = 0\n", "stage_id = 0\nengine_input_source = [1]\n");
    std::fs::write(&broken_path, cyclic).unwrap();
    let (ok, out) = omnihost(&["pipeline", "validate", broken_path.to_str().unwrap()]).await;
    assert!(!ok && out.contains("stage 0"), "{out}");

    // Run offline with recording, then replay stage 1 with the same and with another processor.
    let record = dir.join("recorded");
    let (ok, out) = omnihost(&["pipeline", "run", file, "--prompt", "alpha", "--prompt", "beta", "--record", record.to_str().unwrap()]).await;
    assert!(ok, "{out}");
    let json_start = out.find('{').unwrap();
    let printed: Value = serde_json::from_str(out[json_start..].trim()).unwrap();
    assert_eq!(printed["outputs"][0]["outputs"], json!([["[1] alpha"], ["[1] beta"]]), "{out}");
    let same = component("echo_stage.wasm");
    let (ok, out) = omnihost(&[
        "pipeline", "replay", record.to_str().unwrap(), "--pipeline", file, "--stage", "1", "--processor", same.to_str().unwrap(),
    ]).await;
    assert!(ok, "{out}");
    assert!(out.contains("2 calls replayed on stage 1: 2 same, 0 changed"), "{out}");
    // The 0.1.0 passthrough processor adds no prefix: replay shows exactly what would change.
    let other = component("passthrough_stage.wasm");
    let (ok, out) = omnihost(&[
        "pipeline", "replay", record.to_str().unwrap(), "--pipeline", file, "--stage", "1", "--processor", other.to_str().unwrap(),
    ]).await;
    assert!(ok, "{out}");
    assert!(out.contains("0 same, 2 changed") && out.contains(r#"text Some("[1] alpha") -> Some("alpha")"#), "{out}");
}

fn python() -> PathBuf {
    std::env::var_os("OMNIHOST_TEST_PYTHON").map(PathBuf::from).unwrap_or_else(|| root().join(".setup/venv/bin/python"))
}

/// Draws `lines` with DejaVu Sans into a PNG; returns its bytes and each line's true ink box.
async fn render(dir: &Path, lines: &[&str]) -> (Vec<u8>, Vec<[f64; 4]>) {
    let path = dir.join("lines.png");
    let out = finish(tokio::process::Command::new(python()).arg(root().join("tests/python/render_lines.py")).arg(&path).args(lines)).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let boxes: Vec<[f64; 4]> = serde_json::from_slice(&out.stdout).unwrap();
    (std::fs::read(&path).unwrap(), boxes)
}

/// The OCR example pipeline, as `cargo xtask serve` serves it.
fn ocr_entry() -> String {
    let file = root().join("examples/pipelines/ocr.toml");
    assert!(root().join(".setup/models/pp-ocrv6/det.onnx").is_file(), "run `cargo xtask setup` for the OCR models");
    format!("[[pipelines]]\nfile = \"{}\"\n", file.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ocr_pipeline_reads_rendered_lines_back_with_their_boxes() {
    use base64::Engine as _;
    let dir = scratch("ocr");
    let lines = ["Hello ONNX Runtime 2026", "The quick brown fox", "omnihost pipelines 42"];
    let (png, truth) = render(&dir, &lines).await;
    let server = start(&ocr_entry()).await;
    let (url, client) = (server.url(), client());
    let encoded = base64::engine::general_purpose::STANDARD.encode(&png);
    for image in [encoded.clone(), format!("data:image/png;base64,{encoded}")] {
        let (status, body) = generate(&client, &url, "ocr", json!({"image": image})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["outputs"][0]["stage_id"], 3);
        assert_eq!(body["outputs"][0]["final_output_type"], "json");
        let found = body["outputs"][0]["outputs"].as_array().unwrap();
        let texts: Vec<&str> = found.iter().map(|l| l["text"].as_str().unwrap()).collect();
        assert_eq!(texts, lines, "{body}");
        for (line, want) in found.iter().zip(&truth) {
            let got: Vec<f64> = line["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            // The box covers the line's ink (a pixel of slack for anti-aliasing) and is not much larger.
            assert!(got[0] <= want[0] + 1.0 && got[1] <= want[1] + 1.0, "{got:?} does not cover {want:?}");
            assert!(got[2] >= want[2] - 1.0 && got[3] >= want[3] - 1.0, "{got:?} does not cover {want:?}");
            let (area, ink) = ((got[2] - got[0]) * (got[3] - got[1]), (want[2] - want[0]) * (want[3] - want[1]));
            assert!(area < ink * 3.0, "{got:?} is far larger than {want:?}");
        }
    }
    // Not an image: a 400 that names the stage that refused it; the server keeps serving.
    let garbage = base64::engine::general_purpose::STANDARD.encode(b"this is not a PNG or a JPEG at all");
    let (status, body) = generate(&client, &url, "ocr", json!({"image": garbage})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("stage 0"), "{body}");
    let truncated = base64::engine::general_purpose::STANDARD.encode(&png[..png.len() / 2]);
    let (status, body) = generate(&client, &url, "ocr", json!({"image": truncated})).await;
    assert_eq!(status, 400, "{body}");
    // A page longer than one recogniser batch (8 lines) reads back whole and in order.
    let many: Vec<String> = (1..=11).map(|i| format!("Line {i} of the page")).collect();
    let many_refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let (page, _) = render(&dir, &many_refs).await;
    let (status, body) = generate(&client, &url, "ocr", json!({"image": base64::engine::general_purpose::STANDARD.encode(&page)})).await;
    assert_eq!(status, 200, "{body}");
    let texts: Vec<&str> = body["outputs"][0]["outputs"].as_array().unwrap().iter().map(|l| l["text"].as_str().unwrap()).collect();
    assert_eq!(texts, many_refs, "{body}");
    // A blank image has no lines.
    let (blank, _) = render(&dir, &[" "]).await;
    let (status, body) = generate(&client, &url, "ocr", json!({"image": base64::engine::general_purpose::STANDARD.encode(&blank)})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][0]["outputs"], json!([]), "{body}");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_ocr_request_replays_to_the_same_tensors_and_lines() {
    let dir = scratch("ocr-replay");
    let (png, _) = render(&dir, &["Recorded once", "replayed offline"]).await;
    std::fs::write(dir.join("page.png"), png).unwrap();
    // The offline run shares the test servers' cache of compiled components.
    let config = dir.join("server.toml");
    std::fs::write(&config, format!("[server]\ndata_dir = \"{}\"\n", root().join("target/omnihost-test-cache").display())).unwrap();
    let (file, record, config) = (
        root().join("examples/pipelines/ocr.toml").display().to_string(),
        dir.join("recorded").display().to_string(),
        config.display().to_string(),
    );
    let image = dir.join("page.png").display().to_string();
    let (ok, out) = omnihost(&["pipeline", "run", &file, "--image", &image, "--record", &record, "--config", &config]).await;
    assert!(ok, "{out}");
    assert!(out.contains("\"Recorded once\"") && out.contains("\"replayed offline\""), "{out}");
    // Stage 1 returns tensors (the recogniser batch, compared as .npy), stage 2 JSON from the Python processor.
    for (stage, file_name) in [("1", "ocr_crop.wasm"), ("2", "ocr_ctc.wasm")] {
        let processor = component(file_name).display().to_string();
        let (ok, out) =
            omnihost(&["pipeline", "replay", &record, "--pipeline", &file, "--stage", stage, "--processor", &processor]).await;
        assert!(ok, "{out}");
        assert!(out.contains(&format!("1 calls replayed on stage {stage}: 1 same, 0 changed")), "{out}");
    }
    let recorded_batch = std::fs::read_dir(dir.join("recorded/ocr")).unwrap().next().unwrap().unwrap().path();
    assert!(recorded_batch.join("stage-1/processed/0/0/t0.npy").is_file(), "the batch is kept as .npy");
}
