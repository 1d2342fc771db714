//! Speech: the example `speech` pipeline (SmolLM2 -> the phonemiser plugin -> Kokoro) through the real `openai`
//! client, listened to with Silero VAD; and the phonemiser swapped between its Python and Rust builds while
//! speech requests flow.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;
use crate::generation::llm_model;
use crate::openai_client::python;

/// Kokoro takes both cores for seconds at a time: the speech tests take turns, so that one's timing (first
/// audio before the last text) is not decided by the other's load.
static KOKORO: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A server serving SmolLM2 and the example speech pipeline, as `cargo xtask serve` does.
async fn speech_server() -> omnihost::server::Running {
    assert!(
        root().join(".setup/models/kokoro/kokoro-v1.0.int8.onnx").is_file(),
        "the Kokoro model is missing: run `cargo xtask setup`"
    );
    let file = root().join("examples/pipelines/speech.toml");
    start(&format!("{}\n[[pipelines]]\nfile = \"{}\"\n", llm_model(4, 16), file.display())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_and_chat_with_audio_through_the_openai_client() {
    let _turn = KOKORO.lock().await;
    let server = speech_server().await;
    let vad = root().join(".setup/models/silero-vad/silero_vad.onnx");
    let mut script = tokio::process::Command::new(python());
    script.arg(root().join("tests/python/openai_speech.py")).arg(server.url()).arg(&vad).kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(600), script.output()).await.expect("the speech script finished").unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "openai speech script failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());

    // /v1/audio/speech: a 24 kHz mono 16-bit WAV, as long as the text takes to say, and speech, not noise.
    let speech = &report["speech"];
    assert_eq!((speech["rate"].as_u64(), speech["channels"].as_u64(), speech["width"].as_u64()), (Some(24000), Some(1), Some(2)), "{speech}");
    let (seconds, words) = (speech["seconds"].as_f64().unwrap(), speech["words"].as_f64().unwrap());
    assert!((words / 6.0..=words / 1.2).contains(&seconds), "{seconds} s for {words} words");
    assert!(speech["rms"].as_f64().unwrap() > 0.02, "too quiet: {speech}");
    assert!(speech["vad"].as_f64().unwrap() > 0.5, "Silero VAD hears speech in too little of it: {speech}");
    assert_eq!(report["speech_pcm_is_the_wav_data"], true);
    assert!(report["speech_streamed_pieces"].as_u64().unwrap() >= 2, "the body came in one piece: {report}");
    for (param, refusal) in report["speech_refusals"].as_object().unwrap() {
        let status = refusal["status"].as_u64().unwrap();
        if param == "model" {
            assert_eq!(status, 404, "{refusal}");
        } else {
            assert_eq!((status, refusal["param"].as_str()), (400, Some(param.as_str())), "{refusal}");
        }
    }

    // Chat with audio: the text answers the question, the audio is speech, and it says exactly the text.
    let chat = &report["chat"];
    let content = chat["content"].as_str().unwrap();
    assert!(content.contains("Paris"), "{chat}");
    assert_eq!(chat["transcript"].as_str(), Some(content), "{chat}");
    assert_eq!((chat["rate"].as_u64(), chat["channels"].as_u64()), (Some(24000), Some(1)));
    assert!(chat["vad"].as_f64().unwrap() > 0.5, "{chat}");
    assert!(chat["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{chat}");
    for (param, refusal) in report["chat_refusals"].as_object().unwrap() {
        assert_eq!((refusal["status"].as_u64(), refusal["param"].as_str()), (Some(400), Some(param.as_str())), "{refusal}");
    }

    // Streamed: audio of the first sentence arrives while the reply is still being written, and the chunks
    // make the same audio as the reply unstreamed.
    let stream = &report["stream"];
    assert!(stream["audio_chunks"].as_u64().unwrap() >= 2, "{stream}");
    let (first_audio, last_text) = (stream["first_audio_at"].as_f64().unwrap(), stream["last_text_at"].as_f64().unwrap());
    assert!(first_audio < last_text, "first audio at {first_audio} s, last text delta at {last_text} s");
    assert_eq!(stream["text"], stream["whole_text"]);
    assert_eq!(stream["text"], stream["transcript"]);
    assert_eq!(stream["same_length"], true, "{stream}");
    assert!(stream["max_sample_difference"].as_u64().unwrap() <= 2, "{stream}");
    assert!(stream["vad"].as_f64().unwrap() > 0.5, "{stream}");
    server.stop().await.unwrap();
}

async fn speak(client: &reqwest::Client, url: &str, input: &str) -> Result<Vec<u8>, String> {
    let response = client
        .post(format!("{url}/v1/audio/speech"))
        .json(&json!({"model": "speech", "voice": "nova", "input": input, "response_format": "pcm"}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
    }
    Ok(bytes.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_phonemiser_swaps_between_python_and_rust_while_speech_requests_flow() {
    let _turn = KOKORO.lock().await;
    let server = speech_server().await;
    let (url, client) = (server.url(), client());
    let input = "Swapping the phonemiser drops nothing. It is 2026, and 42 voices say hello.";
    let before = speak(&client, &url, input).await.unwrap();
    assert!(before.len() > 24_000 * 2, "{} bytes of audio", before.len());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..2 {
        let (client, url, stop, input) = (client.clone(), url.clone(), stop.clone(), input.to_string());
        load.push(tokio::spawn(async move {
            let mut results = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                results.push(speak(&client, &url, &input).await);
            }
            results
        }));
    }
    // Python -> Rust -> Python, each swap taking effect while requests are in flight.
    for file in ["phonemizer.wasm", "phonemizer_py.wasm"] {
        let started = std::time::Instant::now();
        let bytes = std::fs::read(component(file)).unwrap();
        let response = client.put(format!("{url}/admin/plugins/phonemizer")).body(bytes).send().await.unwrap();
        assert_eq!(response.status(), 200, "{file}: {}", response.text().await.unwrap());
        // Let requests run on the new build before the next swap.
        let served = speak(&client, &url, input).await.unwrap();
        assert_eq!(served, before, "{file} speaks the text differently");
        eprintln!("swapped to {file}; a request on it took {:?}", started.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut results = Vec::new();
    for task in load {
        results.extend(task.await.unwrap());
    }
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "failed during swaps: {failed:?}");
    assert!(results.len() >= 2, "only {} requests completed during the swaps", results.len());
    assert!(results.iter().all(|r| r.as_ref().is_ok_and(|a| *a == before)), "a request heard different audio");
    server.stop().await.unwrap();
}
