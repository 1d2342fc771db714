//! omnihost against Hugging Face text-embeddings-inference (TEI) over HTTP, run by
//! `cargo xtask bench embed --tei <dir>` where `<dir>` holds a TEI build and its `run.sh` (TEI's own
//! ONNX Runtime CPU backend serving the same all-MiniLM-L6-v2 int8 model files).
//!
//! One sentence per request through `/v1/embeddings` on both servers, 1 and 8 concurrent clients. The two
//! servers take turns, several rounds each, in alternating order, so neither gets the quieter half of the run;
//! figures are the totals over all rounds. Before timing, both servers embed the same sentences and their
//! vectors are compared, so a faster but wrong server cannot win.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{AwaitAfter, MODEL, load, percentile, sentences};

const ROUNDS: usize = 5;
const ROUND_SECONDS: f64 = 4.0;
const CLIENTS: [usize; 2] = [1, 8];

/// A running TEI router, killed when dropped.
struct Tei {
    child: Child,
    url: String,
}

impl Drop for Tei {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Tei {
    async fn start(dir: &Path) -> Result<Tei> {
        let run = dir.join("run.sh");
        if !run.is_file() {
            bail!("{} has no run.sh: build TEI with its build script first", dir.display());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log_path = std::env::temp_dir().join("omnihost-bench-tei.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(&run)
            .env("PORT", port.to_string())
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", run.display()))?;
        let tei = Tei { child, url: format!("http://127.0.0.1:{port}") };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if client.get(format!("{}/health", tei.url)).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(tei);
            }
            if Instant::now() > deadline {
                bail!("TEI did not become healthy in 120 s (log: {})", log_path.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn sha256_hex(path: &Path) -> Result<String> {
    let out = Command::new("sha256sum").arg(path).output().context("running sha256sum")?;
    Ok(String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string())
}

async fn embed_one(client: &reqwest::Client, url: &str, text: &str) -> Result<Vec<f32>> {
    let body: Value = client
        .post(format!("{url}/v1/embeddings"))
        .json(&json!({"model": MODEL, "input": [text]}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let values = body["data"][0]["embedding"].as_array().context("no embedding in the answer")?;
    Ok(values.iter().filter_map(Value::as_f64).map(|v| v as f32).collect())
}

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    failed: usize,
    seconds: f64,
}

impl Tally {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.seconds
    }
    fn p(&self, q: f64) -> f64 {
        percentile(&self.latencies, q).as_secs_f64() * 1e3
    }
}

/// Runs the comparison against the omnihost server at `omnihost`.
pub(crate) async fn versus_tei(omnihost: &str, tei_dir: &Path, model_file: &Path) -> Result<()> {
    let tei_model: PathBuf = tei_dir.join("model/all-MiniLM-L6-v2-int8/onnx/model.onnx");
    let (ours, theirs) = (sha256_hex(model_file)?, sha256_hex(&tei_model)?);
    let tei = Tei::start(tei_dir).await?;
    let client = reqwest::Client::new();
    let mut worst = 1.0f32;
    for text in sentences().iter().take(12) {
        let (a, b) = (embed_one(&client, omnihost, text).await?, embed_one(&client, &tei.url, text).await?);
        if a.len() != b.len() {
            bail!("omnihost answers {} dimensions, TEI {}", a.len(), b.len());
        }
        worst = worst.min(a.iter().zip(&b).map(|(x, y)| x * y).sum());
    }
    println!(
        "\nomnihost vs TEI over HTTP (one sentence per request, {ROUNDS} alternating rounds of {ROUND_SECONDS} s each); \
         model files {} ({}), lowest cosine between the two servers' vectors {worst:.4}",
        if ours == theirs { "identical" } else { "DIFFERENT" },
        &ours[..12.min(ours.len())]
    );
    if worst < 0.99 {
        bail!("omnihost and TEI disagree (cosine {worst:.4}): the comparison would not be like for like");
    }
    println!("{:<8} {:>14} {:>10} {:>10} {:>14} {:>10} {:>10} {:>9} {:>9}", "clients", "omnihost req/s", "p50 ms", "p99 ms", "TEI req/s", "p50 ms", "p99 ms", "rate ×", "p99 ×");
    for clients in CLIENTS {
        let mut tallies = [Tally::default(), Tally::default()];
        let urls = [omnihost.to_string(), tei.url.clone()];
        for round in 0..=ROUNDS {
            for k in 0..2 {
                // Round 0 warms both up and is not counted.
                let who = (round + k) % 2;
                let secs = if round == 0 { 1.0 } else { ROUND_SECONDS };
                let stop = Arc::new(AtomicBool::new(false));
                let t = Instant::now();
                let (latencies, failed) = load(urls[who].clone(), clients, 1, stop.clone()).await_after(Duration::from_secs_f64(secs), stop).await?;
                if round > 0 {
                    let tally = &mut tallies[who];
                    tally.seconds += t.elapsed().as_secs_f64();
                    tally.latencies.extend(latencies);
                    tally.failed += failed;
                }
            }
        }
        for t in &mut tallies {
            t.latencies.sort();
        }
        let [o, t] = &tallies;
        if o.failed + t.failed > 0 {
            bail!("failed requests: omnihost {}, TEI {}", o.failed, t.failed);
        }
        println!(
            "{clients:<8} {:>14.1} {:>10.2} {:>10.2} {:>14.1} {:>10.2} {:>10.2} {:>9.3} {:>9.3}",
            o.rate(), o.p(0.5), o.p(0.99), t.rate(), t.p(0.5), t.p(0.99), o.rate() / t.rate(), o.p(0.99) / t.p(0.99)
        );
    }
    println!("rate × is omnihost's requests per second over TEI's (above 1: omnihost is faster); p99 × is omnihost's p99 over TEI's (below 1: omnihost is faster)");
    drop(tei);
    Ok(())
}
