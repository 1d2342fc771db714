//! `cargo xtask bench pipeline`: the OCR pipeline and the cost of a processor hop, side by side in one run.
//!
//! (a) OCR throughput with 4 requests in flight, stages overlapping across requests, against the same pipeline
//!     with `overlap_requests = false` (every request's stages back to back, one request at a time);
//! (b) per-hop processor overhead: a chain of logic-only stages running the same trivial processor (pass the
//!     items on) in Rust, JavaScript and Python; a hop's cost is the time a 9-stage chain adds over a 1-stage one,
//!     divided by 8;
//! (c) the OCR pipeline one image at a time against the same models and logic driven from Python
//!     (`bench/python/ocr_ort.py`: onnxruntime + numpy + Pillow), runs alternated.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use omnihost::config::Config;
use omnihost::pipeline::{Input, Pipeline};
use omnihost::server::Running;
use serde_json::{Value, json};

use crate::root;

const IN_FLIGHT: usize = 4;

fn python() -> PathBuf {
    std::env::var_os("OMNIHOST_BENCH_PYTHON").map(PathBuf::from).unwrap_or_else(|| root().join(".setup/venv/bin/python"))
}

/// Renders the benchmark image (the OCR test's three lines) and returns its path.
fn image(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("lines.png");
    let status = std::process::Command::new(python())
        .arg(root().join("tests/python/render_lines.py"))
        .arg(&path)
        .args(["Hello ONNX Runtime 2026", "The quick brown fox", "omnihost pipelines 42"])
        .stdout(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        bail!("render_lines.py failed");
    }
    Ok(path)
}

/// A server config serving only the pipeline files given, with `intra_threads` ONNX Runtime threads per model.
async fn serve(files: &[PathBuf], intra_threads: usize) -> Result<Running> {
    let mut text = format!(
        "[server]\ndata_dir = \"{}\"\n[compute]\nintra_threads = {intra_threads}\n[registry]\nstore = \"memory\"\n",
        root().join(".omnihost").display()
    );
    for f in files {
        text.push_str(&format!("[[pipelines]]\nfile = \"{}\"\n", f.display()));
    }
    let config = Config::parse(&text, &root())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = Running::start(config, listener)?;
    server.wait_ready(Duration::from_secs(900)).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(server)
}

async fn pipeline(server: &Running, name: &str) -> Result<Arc<Pipeline>> {
    let services = server.wait_ready(Duration::from_secs(5)).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    services.pipelines.get(name).cloned().with_context(|| format!("pipeline {name} did not load"))
}

async fn ocr_once(pipeline: &Pipeline, bytes: &[u8]) -> Result<usize> {
    let finals = pipeline
        .generate(vec![Input::image(bytes.to_vec())?], vec![json!({}); pipeline.stage_ids().len()])
        .await
        .map_err(|e| anyhow::anyhow!("{}", omnihost::http::error::chain(&e)))?;
    Ok(finals.first().map(|f| f.outputs.first().map_or(0, Vec::len)).unwrap_or(0))
}

/// Images per second with `clients` requests in flight for `seconds`.
async fn throughput(pipeline: Arc<Pipeline>, bytes: Arc<Vec<u8>>, clients: usize, seconds: f64) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (pipeline, bytes) = (pipeline.clone(), bytes.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = 0usize;
            while Instant::now() < deadline {
                let lines = ocr_once(&pipeline, &bytes).await?;
                if lines != 3 {
                    bail!("read {lines} lines instead of 3");
                }
                done += 1;
            }
            Ok::<_, anyhow::Error>(done)
        }));
    }
    let mut done = 0;
    for t in tasks {
        done += t.await??;
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

/// The OCR example with `overlap_requests = false`, its paths made absolute.
fn serial_copy(dir: &Path) -> Result<PathBuf> {
    let original = root().join("examples/pipelines/ocr.toml");
    let text = std::fs::read_to_string(&original)?.replace("../../", &format!("{}/", root().display()));
    let text = text.replacen("max_in_flight = 32", "max_in_flight = 32\noverlap_requests = false", 1);
    let path = dir.join("ocr-serial.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// A chain of `stages` logic-only stages running `component` (the echo processor in one language).
fn hop_chain(dir: &Path, name: &str, component: &str, stages: usize) -> Result<PathBuf> {
    let mut text = format!(
        "name = \"{name}\"\n[[processors]]\nname = \"{name}-p\"\ncomponent = \"{}\"\nlimits = {{ pool_size = 2 }}\n",
        root().join("plugins/dist").join(component).display()
    );
    for i in 0..stages {
        let source = if i == 0 { String::new() } else { format!("{}", i - 1) };
        let last = i + 1 == stages;
        text.push_str(&format!(
            "[[stages]]\nstage_id = {i}\ninput_processor = \"{name}-p\"\nengine_input_source = [{source}]\nfinal_output = {last}\n"
        ));
    }
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text)?;
    Ok(path)
}

async fn mean_latency(pipeline: &Pipeline, iterations: usize) -> Result<Duration> {
    let params = vec![json!({}); pipeline.stage_ids().len()];
    for _ in 0..20 {
        pipeline.generate(vec![Input::Prompt("hop".into())], params.clone()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let started = Instant::now();
    for _ in 0..iterations {
        pipeline.generate(vec![Input::Prompt("hop".into())], params.clone()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(started.elapsed() / iterations as u32)
}

fn python_ocr(image: &Path, repeat: usize, threads: usize) -> Result<f64> {
    let models = root().join(".setup/models/pp-ocrv6");
    let out = std::process::Command::new(python())
        .arg(root().join("bench/python/ocr_ort.py"))
        .arg("--det")
        .arg(models.join("det.onnx"))
        .arg("--rec")
        .arg(models.join("rec.onnx"))
        .arg("--image")
        .arg(image)
        .args(["--repeat", &repeat.to_string(), "--threads", &threads.to_string()])
        .output()?;
    if !out.status.success() {
        bail!("ocr_ort.py failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let answer: Value = serde_json::from_slice(&out.stdout)?;
    if answer["lines"].as_array().map(Vec::len) != Some(3) {
        bail!("the Python baseline read {} instead of 3 lines", answer["lines"]);
    }
    answer["ms_per_image"].as_f64().context("no ms_per_image")
}

pub async fn pipeline_bench() -> Result<()> {
    let dir = root().join("target/bench-pipeline");
    std::fs::create_dir_all(&dir)?;
    let image_path = image(&dir)?;
    let bytes = Arc::new(std::fs::read(&image_path)?);
    println!("omnihost pipeline benchmark: {} cores, image {} (3 lines)", std::thread::available_parallelism().map_or(0, |n| n.get()), image_path.display());

    println!("\n(a) OCR throughput, {IN_FLIGHT} requests in flight, 10 s each");
    println!("{:<34} {:>12} {:>12} {:>8}", "ONNX Runtime threads per model", "overlapped", "back to back", "ratio");
    let ocr = root().join("examples/pipelines/ocr.toml");
    let serial = serial_copy(&dir)?;
    for threads in [0usize, 1] {
        let mut rates = Vec::new();
        for file in [&ocr, &serial] {
            let server = serve(std::slice::from_ref(file), threads).await?;
            let p = pipeline(&server, "ocr").await?;
            throughput(p.clone(), bytes.clone(), IN_FLIGHT, 2.0).await?;
            rates.push(throughput(p, bytes.clone(), IN_FLIGHT, 10.0).await?);
            server.stop().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let label = if threads == 0 { "default (all cores)".to_string() } else { threads.to_string() };
        println!("{label:<34} {:>9.2}/s {:>9.2}/s {:>7.2}x", rates[0], rates[1], rates[0] / rates[1]);
    }

    println!("\n(b) processor hop overhead (logic-only stages, the echo processor), 1 request at a time");
    let languages = [("rust", "echo_stage.wasm"), ("javascript", "echo_stage_js.wasm"), ("python", "echo_stage_py.wasm")];
    let mut files = Vec::new();
    for (lang, component) in languages {
        files.push(hop_chain(&dir, &format!("hop1-{lang}"), component, 1)?);
        files.push(hop_chain(&dir, &format!("hop9-{lang}"), component, 9)?);
    }
    let server = serve(&files, 0).await?;
    println!("{:<12} {:>14} {:>14} {:>12}", "language", "1 stage", "9 stages", "per hop");
    for (lang, _) in languages {
        let one = mean_latency(&*pipeline(&server, &format!("hop1-{lang}")).await?, 300).await?;
        let nine = mean_latency(&*pipeline(&server, &format!("hop9-{lang}")).await?, 300).await?;
        let hop = nine.saturating_sub(one) / 8;
        println!("{lang:<12} {:>11.1} µs {:>11.1} µs {:>9.1} µs", one.as_secs_f64() * 1e6, nine.as_secs_f64() * 1e6, hop.as_secs_f64() * 1e6);
    }
    server.stop().await.map_err(|e| anyhow::anyhow!("{e}"))?;

    println!("\n(c) one image at a time: omnihost vs Python onnxruntime + numpy, alternated, 3 rounds of 10 images");
    let server = serve(std::slice::from_ref(&ocr), 0).await?;
    let p = pipeline(&server, "ocr").await?;
    ocr_once(&p, &bytes).await?;
    python_ocr(&image_path, 2, 0)?;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let started = Instant::now();
        for _ in 0..10 {
            ocr_once(&p, &bytes).await?;
        }
        ours.push(started.elapsed().as_secs_f64() * 1e3 / 10.0);
        theirs.push(python_ocr(&image_path, 10, 0)?);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (ours, theirs) = (median(&mut ours), median(&mut theirs));
    println!("{:<24} {:>10.1} ms/image", "omnihost (in process)", ours);
    println!("{:<24} {:>10.1} ms/image", "Python onnxruntime", theirs);
    println!("{:<24} {:>10.2}x (>1 means omnihost is faster)", "ratio", theirs / ours);
    for s in p.stage_info() {
        println!("    stage {}: processor {:.1} ms, engine {:.1} ms over {} runs", s.stage_id, s.processor_ms, s.engine_ms, s.runs);
    }
    server.stop().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
