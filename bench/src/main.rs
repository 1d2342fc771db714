//! Side-by-side benchmarks, run by `cargo xtask bench embed`, `cargo xtask bench registry` (see `registry.rs`),
//! `cargo xtask bench generate` (see `generate.rs`), `cargo xtask bench pipeline` (see `pipeline.rs`),
//! `cargo xtask bench speech` (see `speech.rs`) and `cargo xtask bench providers` (see `providers.rs`). Every figure
//! is printed as a ratio against a baseline measured in the same run, on the same machine, on the same sentences.
//!
//! (a) the adapter's own logic (the `embed-minilm` crate) built natively around raw ONNX Runtime: the limit;
//! (b) omnihost in process: the WebAssembly adapter tokenising and pooling, the host running the model;
//! (c) omnihost over HTTP with 8 concurrent clients;
//! (d) the same model driven by hand from Python;
//! (e) with `--tei <dir>`: omnihost against text-embeddings-inference over HTTP (see `tei.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use omnihost::compute::{ComputeSettings, Runtime, library};
use omnihost::config::Config;
use omnihost::server::Running;
use ort::session::Session;
use ort::value::Tensor;
use serde_json::{Value, json};

mod generate;
mod pipeline;
mod providers;
mod registry;
mod speech;
mod tei;

const MODEL: &str = "all-MiniLM-L6-v2";
pub(crate) const BATCHES: [usize; 2] = [1, 32];
pub(crate) const SECONDS: f64 = 3.0;

pub(crate) fn root() -> PathBuf {
    // `cargo run` names the package it runs at run time; the compile-time path would be another checkout's when
    // several checkouts share one CARGO_TARGET_DIR (cargo reuses the identical binary built for the other one).
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// 64 sentences of varied length, the same for every contender.
pub(crate) fn sentences() -> Vec<String> {
    let subjects = ["A man", "The committee", "Our small team", "A very old lighthouse keeper", "She", "The model"];
    let verbs = ["is eating", "reviewed", "quietly rebuilt", "argued about", "measured", "wrote down"];
    let objects = [
        "food.",
        "a piece of bread.",
        "the quarterly report before the deadline.",
        "the stock market, which fell sharply today after weeks of speculation about interest rates.",
        "every embedding in the index, one batch at a time, to make sure nothing drifted.",
        "a note.",
    ];
    (0..64)
        .map(|i| format!("{} {} {}", subjects[i % 6], verbs[(i / 6) % 6], objects[(i * 7 + i / 6) % 6]))
        .collect()
}

struct Native {
    tokenizer: embed_minilm::Tokenizer,
    /// The `tokenizers` crate's general pipeline on its own, as servers built on it (TEI) tokenise.
    general: tokenizers::Tokenizer,
    session: Session,
}

#[derive(Default, Clone)]
struct Split {
    tokenize: Duration,
    run: Duration,
    pool: Duration,
    /// Each call's time outside the model runs.
    outside: Vec<Duration>,
}

impl Native {
    /// The plugin's own logic (the `embed-minilm` crate built natively: tokenising, run planning, pooling)
    /// around direct ONNX Runtime runs.
    fn embed(&mut self, texts: &[String], split: &mut Split) -> Result<Vec<Vec<f32>>> {
        let t0 = Instant::now();
        let run_before = split.run;
        let encodings = embed_minilm::encode(&self.tokenizer, texts).map_err(|e| anyhow::anyhow!("{e}"))?;
        let lengths: Vec<usize> = encodings.iter().map(embed_minilm::Encoded::len).collect();
        let mut out = vec![Vec::new(); texts.len()];
        let mut t = Instant::now();
        split.tokenize += t - t0;
        for rows in embed_minilm::plan(&lengths, embed_minilm::RUN_OVERHEAD_TOKENS, embed_minilm::MAX_BATCH) {
            let mut batch = embed_minilm::batch(&encodings, &rows);
            let shape = vec![batch.rows as i64, batch.width as i64];
            let inputs = vec![
                ("input_ids", Tensor::from_array((shape.clone(), std::mem::take(&mut batch.input_ids)))?.into_dyn()),
                ("attention_mask", Tensor::from_array((shape.clone(), std::mem::take(&mut batch.attention_mask)))?.into_dyn()),
                ("token_type_ids", Tensor::from_array((shape, std::mem::take(&mut batch.token_type_ids)))?.into_dyn()),
            ];
            let t1 = Instant::now();
            let outputs = self.session.run(inputs)?;
            let (dims, hidden) = outputs["last_hidden_state"].try_extract_tensor::<f32>()?;
            let t2 = Instant::now();
            let vectors = embed_minilm::pool(hidden, &batch, dims[2] as usize).map_err(|e| anyhow::anyhow!("{e}"))?;
            for (&r, v) in rows.iter().zip(vectors) {
                out[r] = v;
            }
            let t3 = Instant::now();
            split.tokenize += t1 - t;
            split.run += t2 - t1;
            split.pool += t3 - t2;
            t = t3;
        }
        split.outside.push(t.duration_since(t0).saturating_sub(split.run - run_before));
        Ok(out)
    }
}

/// The MiniLM package's tokenizer as the adapter configures it: no padding, truncation at the model's 256 tokens.
pub(crate) fn minilm_tokenizer(models: &Path) -> Result<tokenizers::Tokenizer> {
    let mut t = tokenizers::Tokenizer::from_file(models.join("tokenizer.json")).map_err(|e| anyhow::anyhow!("{e}"))?;
    t.with_padding(None);
    t.with_truncation(Some(tokenizers::TruncationParams { max_length: 256, ..Default::default() }))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(t)
}

/// Runs `f` on rotating batches for `SECONDS`; returns sentences per second and iterations.
pub(crate) async fn throughput<F, Fut>(sentences: &[String], batch: usize, mut f: F) -> Result<(f64, usize)>
where
    F: FnMut(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let batches: Vec<Vec<String>> = sentences.chunks(batch).filter(|c| c.len() == batch).map(<[String]>::to_vec).collect();
    f(batches[0].clone()).await?;
    let start = Instant::now();
    let (mut done, mut i) = (0usize, 0usize);
    while start.elapsed().as_secs_f64() < SECONDS {
        f(batches[i % batches.len()].clone()).await?;
        done += batch;
        i += 1;
    }
    Ok((done as f64 / start.elapsed().as_secs_f64(), i))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// HTTP load from `clients` concurrent clients until `stop`; returns latencies and failures.
async fn load(url: String, clients: usize, batch: usize, stop: Arc<AtomicBool>) -> Result<(Vec<Duration>, usize)> {
    let sentences = Arc::new(sentences());
    let client = reqwest::Client::new();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (client, url, stop, sentences) = (client.clone(), url.clone(), stop.clone(), sentences.clone());
            tokio::spawn(async move {
                let (mut latencies, mut failures, mut i) = (Vec::new(), 0usize, c * 7);
                while !stop.load(Ordering::Relaxed) {
                    let input: Vec<&String> = (0..batch).map(|k| &sentences[(i + k) % sentences.len()]).collect();
                    i += batch;
                    let t = Instant::now();
                    let ok = match client.post(format!("{url}/v1/embeddings")).json(&json!({"model": MODEL, "input": input})).send().await {
                        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    if ok { latencies.push(t.elapsed()) } else { failures += 1 }
                }
                (latencies, failures)
            })
        })
        .collect();
    let (mut all, mut failed) = (Vec::new(), 0);
    for t in tasks {
        let (l, f) = t.await?;
        all.extend(l);
        failed += f;
    }
    all.sort();
    Ok((all, failed))
}

async fn embed_bench(tei: Option<PathBuf>) -> Result<()> {
    let root = root();
    let models = root.join(".setup/models/all-minilm-l6-v2");
    let sentences = sentences();
    let lib = library::locate(None, std::slice::from_ref(&root))?;
    let runtime = Runtime::load(&lib)?;
    let general = minilm_tokenizer(&models)?;
    let text = std::fs::read_to_string(root.join("examples/omnihost.toml"))?;
    let mut config = Config::parse(&text, &root.join("examples"))?;
    // The baseline's session gets the served model's graph options, so both run the same graph.
    let settings = ComputeSettings::new(&config.compute, std::env::temp_dir());
    let mut native = Native {
        tokenizer: embed_minilm::Tokenizer::new(general.clone()),
        general,
        session: settings.graph_options(runtime.session_builder()?)?.commit_from_file(models.join("model.onnx"))?,
    };
    config.plugins.push(Config::parse(
        &format!("[[plugins]]\nname = \"faulty\"\ncomponent = \"{}\"\n", root.join("plugins/dist/faulty.wasm").display()),
        &root,
    )?.plugins.remove(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = Running::start(config, listener)?;
    let services = server.wait_ready(Duration::from_secs(600)).await?;
    let plugin = services.plugins.get("embed-minilm")?.clone();
    let python = std::env::var_os("OMNIHOST_BENCH_PYTHON").map(PathBuf::from).unwrap_or_else(|| root.join(".setup/venv/bin/python"));

    println!("embedding benchmark: {} sentences, {SECONDS} s per figure, {} cores", sentences.len(), std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    println!("{:<7} {:>12} {:>12} {:>12} {:>12} {:>7} {:>7} {:>7}", "batch", "a native/s", "b plugin/s", "c http/s", "d python/s", "b/a", "c/a", "d/b");
    for batch in BATCHES {
        let mut split = Split::default();
        let (a, a_iters) = throughput(&sentences, batch, |texts| {
            let r = native.embed(&texts, &mut split).map(drop);
            async move { r }
        })
        .await?;
        let version = plugin.current();
        let model = plugin.models().next().context("the plugin has no model")?.clone();
        // Each call's wall time minus the time it waited on the model (its runs, queueing and hand-over): the
        // plugin's own time. Taken per call, so the run-to-run variation of the model cancels out.
        let outside = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (b, _) = throughput(&sentences, batch, |texts| {
            let (version, model, outside) = (version.clone(), model.clone(), outside.clone());
            async move {
                let (started, busy) = (Instant::now(), model.stats().busy);
                version.embed(texts, true).await.context("plugin embed")?;
                let own = started.elapsed().saturating_sub(model.stats().busy - busy);
                outside.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.push(own);
                Ok(())
            }
        })
        .await?;
        let stop = Arc::new(AtomicBool::new(false));
        let handle = tokio::spawn(load(server.url(), 8, batch, stop.clone()).await_after(Duration::from_secs_f64(SECONDS), stop.clone()));
        let (latencies, failed) = handle.await??;
        let c = latencies.len() as f64 * batch as f64 / SECONDS;
        if failed > 0 {
            bail!("{failed} HTTP requests failed");
        }
        let out = {
            use std::io::Write;
            let mut child = std::process::Command::new(&python)
                .arg(root.join("bench/python/embed.py"))
                .arg(&models)
                .arg(batch.to_string())
                .arg(SECONDS.to_string())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .context("starting the Python benchmark")?;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(sentences.join("\n").as_bytes())?;
            }
            child.wait_with_output()?
        };
        let d = serde_json::from_slice::<Value>(&out.stdout).ok().and_then(|v| v["sentences_per_s"].as_f64()).context("python benchmark output")?;
        println!("{batch:<7} {a:>12.1} {b:>12.1} {c:>12.1} {d:>12.1} {:>7.3} {:>7.3} {:>7.3}", b / a, c / a, d / b);
        // Pre/post-processing: the plugin's time outside the model runs vs the same logic's natively, medians of
        // per-call figures.
        let per_a = |d: Duration| d.as_secs_f64() / a_iters as f64 * 1e6;
        let median = |v: &mut Vec<Duration>| {
            v.sort();
            percentile(v, 0.5).as_secs_f64() * 1e6
        };
        let native_prepost = median(&mut split.outside);
        let plugin_prepost = median(&mut std::mem::take(&mut *outside.lock().map_err(|_| anyhow::anyhow!("poisoned"))?));
        println!(
            "        per batch: native tokenise {:.0} µs + run {:.0} µs + pool {:.0} µs; outside the model runs (median): plugin {plugin_prepost:.0} µs, native {native_prepost:.0} µs: {:.2}×",
            per_a(split.tokenize), per_a(split.run), per_a(split.pool), plugin_prepost / native_prepost
        );
    }

    if let Some(dir) = &tei {
        tei::versus_tei(&server.url(), dir, &models.join("model.onnx")).await?;
    } else {
        println!("\n(no TEI comparison: give a TEI build with `cargo xtask bench embed --tei <dir>`)");
    }

    // Tokenising alone: `count-tokens` in the plugin vs the adapter's tokenising natively, and the `tokenizers`
    // crate's general pipeline natively (how TEI tokenises), per sentence.
    let version = plugin.current();
    let n = 2000;
    let t = Instant::now();
    for i in 0..n {
        version.count_tokens(sentences[i % sentences.len()].clone()).await?;
    }
    let wasm_tok = t.elapsed().as_secs_f64() / n as f64 * 1e6;
    let t = Instant::now();
    for i in 0..n {
        std::hint::black_box(native.tokenizer.encode(&sentences[i % sentences.len()]).map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    let native_tok = t.elapsed().as_secs_f64() / n as f64 * 1e6;
    let t = Instant::now();
    for i in 0..n {
        std::hint::black_box(native.general.encode(sentences[i % sentences.len()].as_str(), true).map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    let general_tok = t.elapsed().as_secs_f64() / n as f64 * 1e6;
    let faulty = services.plugins.get("faulty")?.current();
    let n = 20_000;
    for _ in 0..1000 {
        faulty.count_tokens("x".into()).await?;
    }
    let t = Instant::now();
    for _ in 0..n {
        faulty.count_tokens("x".into()).await?;
    }
    let overhead = t.elapsed().as_secs_f64() / n as f64 * 1e6;
    println!("tokenising one sentence: wasm {wasm_tok:.1} µs (call included), native {native_tok:.1} µs: {:.2}×", wasm_tok / native_tok);
    println!(
        "  the tokenizers crate's general pipeline natively (as TEI tokenises): {general_tok:.1} µs; the plugin takes {:.2}× that",
        wasm_tok / general_tok
    );
    println!("per-call plugin overhead (pooled instance, trivial export): {overhead:.1} µs");

    // Hot swap under load: 8 clients at batch 1; steady p99, then p99 while swapping 10 times each way.
    let negate = std::fs::read(root.join("plugins/dist/embed_minilm_negate.wasm"))?;
    let original = std::fs::read(root.join("plugins/dist/embed_minilm.wasm"))?;
    // Compile both once so the measured swaps are what an operator sees when re-deploying a known build.
    let embed = services.plugins.get("embed-minilm")?.clone();
    embed.swap(negate.clone(), "bench").await?;
    embed.swap(original.clone(), "bench").await?;
    let stop = Arc::new(AtomicBool::new(false));
    let steady = tokio::spawn(load(server.url(), 8, 1, stop.clone()).await_after(Duration::from_secs(4), stop.clone()));
    let (steady, steady_failed) = steady.await??;
    let p_steady = percentile(&steady, 0.99);
    println!("hot swap under load (8 clients, batch 1): steady p99 {:.2} ms over {} requests, {steady_failed} failed", p_steady.as_secs_f64() * 1e3, steady.len());
    // Re-deploying known builds (roll back and forward): the previous version is kept warm.
    let known = [negate.clone(), original.clone()];
    // New builds: a custom section makes each a never-seen component, so it is compiled, validated and
    // pre-warmed while traffic flows.
    let run_id = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let fresh: Vec<Vec<u8>> = (0..4u8)
        .map(|i| {
            let mut bytes = if i % 2 == 0 { negate.clone() } else { original.clone() };
            let name = b"omnihost-bench";
            let payload = (run_id + u64::from(i)).to_le_bytes();
            bytes.push(0);
            bytes.push((1 + name.len() + payload.len()) as u8);
            bytes.push(name.len() as u8);
            bytes.extend_from_slice(name);
            bytes.extend_from_slice(&payload);
            bytes
        })
        .collect();
    for (label, builds, rounds) in [("known builds", &known[..], 10usize), ("new builds", &fresh[..], 1)] {
        let stop = Arc::new(AtomicBool::new(false));
        let during = tokio::spawn(load(server.url(), 8, 1, stop.clone()));
        let t = Instant::now();
        let mut swaps = 0;
        for _ in 0..rounds {
            for build in builds {
                tokio::time::sleep(Duration::from_millis(150)).await;
                embed.swap(build.clone(), "bench").await?;
                swaps += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        let window = t.elapsed();
        stop.store(true, Ordering::Relaxed);
        let (during, during_failed) = during.await??;
        let p_during = percentile(&during, 0.99);
        println!(
            "  {label}: {swaps} swaps in {:.2} s, {} requests, {during_failed} failed; p99 {:.2} ms: {:.2}× steady",
            window.as_secs_f64(),
            during.len(),
            p_during.as_secs_f64() * 1e3,
            p_during.as_secs_f64() / p_steady.as_secs_f64()
        );
    }
    server.stop().await?;
    Ok(())
}

/// Sets `stop` after `after`, then yields the future's output.
trait AwaitAfter: std::future::Future + Sized {
    async fn await_after(self, after: Duration, stop: Arc<AtomicBool>) -> Self::Output {
        let stopper = async {
            tokio::time::sleep(after).await;
            stop.store(true, Ordering::Relaxed);
        };
        let (out, ()) = tokio::join!(self, stopper);
        out
    }
}
impl<F: std::future::Future> AwaitAfter for F {}

#[tokio::main]
async fn main() -> Result<()> {
    // Warnings (a provider that fell back, a plugin that complained) reach stderr; RUST_LOG widens it.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let what = args.first().cloned().unwrap_or_else(|| "embed".into());
    match what.as_str() {
        "embed" => {
            let tei = match args.iter().position(|a| a == "--tei") {
                Some(i) => Some(PathBuf::from(args.get(i + 1).context("--tei needs the folder of a TEI build")?)),
                None => std::env::var_os("OMNIHOST_BENCH_TEI").map(PathBuf::from),
            };
            embed_bench(tei).await
        }
        "registry" => registry::registry_bench().await,
        "generate" => generate::generate_bench().await,
        "pipeline" => pipeline::pipeline_bench().await,
        "speech" => speech::speech_bench().await,
        "providers" => providers::providers_bench(&args[1..]).await,
        other => bail!("unknown benchmark `{other}` (known: embed, registry, generate, pipeline, speech, providers)"),
    }
}
