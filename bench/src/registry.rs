//! `cargo xtask bench registry`: 10,000 instances heartbeating once a second through the controller's HTTP API,
//! against the in-memory store (the baseline), SQLite and PostgreSQL. Reports the sustained heartbeat rate, the
//! latency of a lookup while that load runs, twice: the registry's own answer (`Registry::list` for one model's
//! healthy instances, what the controller's handler and an API server's resolver wait on), timed on a thread of
//! its own; and the whole HTTP round trip of `GET /api/controller/models?model_name=...&healthy_only=true`,
//! which on a small machine mostly measures the wait behind the heartbeat load's HTTP work for a core. Also the
//! sweeper's cost per pass. Targets: keep up with 10k heartbeats/s, registry lookup p99 <= 1 ms.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use omnihost::config::Config;
use omnihost::server::{Role, Running};
use serde_json::{Value, json};

const INSTANCES: usize = 10_000;
const MODELS: usize = 1_000;
const CLIENTS: usize = 64;
const SECONDS: u64 = 10;

struct Figures {
    store: &'static str,
    rate: f64,
    failed: u64,
    p50: Duration,
    p99: Duration,
    lookups: usize,
    /// The registry's own lookup latency, p50 and p99.
    direct: (Duration, Duration),
    sweep_us: u64,
}

async fn run(store: &'static str, registry_toml: &str) -> Result<Figures> {
    let dir = super::root().join(format!("target/bench-registry-{store}"));
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "[server]\ndata_dir = \"{}\"\n[registry]\n{registry_toml}\nsweep_interval_ms = 1000\nheartbeat_timeout_ms = 5000\n",
        dir.display()
    );
    let config = Config::parse(&text, &dir)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = Running::start_role(config, Role::Controller, listener)?;
    server.wait_ready(Duration::from_secs(60)).await?;
    let url = server.url();
    let body = |i: usize| json!({"model_name": format!("m{}@text2vec", i % MODELS), "host": format!("10.{}.{}.1", i / 250, i % 250), "port": 8000 + (i % 7)});

    let registry = server.wait_ready(Duration::from_secs(1)).await?.registry.clone().context("the controller keeps a registry")?;
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (url, stop, sent, failed) = (url.clone(), stop.clone(), sent.clone(), failed.clone());
        let mine: Vec<Value> = (c..INSTANCES).step_by(CLIENTS).map(body).collect();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            // Each instance heartbeats once a second: spread this client's instances over each second.
            let gap = Duration::from_secs(1) / mine.len() as u32;
            let mut next = Instant::now();
            'outer: loop {
                for b in &mine {
                    if stop.load(Ordering::Relaxed) {
                        break 'outer;
                    }
                    next += gap;
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        tokio::time::sleep(wait).await;
                    }
                    let ok = client.post(format!("{url}/api/controller/heartbeat")).json(b).send().await.is_ok_and(|r| r.status().is_success());
                    if ok { sent.fetch_add(1, Ordering::Relaxed) } else { failed.fetch_add(1, Ordering::Relaxed) };
                }
            }
        }));
    }
    let lookup = {
        let (url, stop) = (url.clone(), stop.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut latencies = Vec::new();
            let mut k = 0usize;
            tokio::time::sleep(Duration::from_secs(2)).await;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = client.get(format!("{url}/api/controller/models?model_name=m{}@text2vec&healthy_only=true", k % MODELS)).send().await;
                if let Ok(r) = r {
                    let _ = r.bytes().await;
                    latencies.push(t.elapsed());
                }
                k += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            latencies
        })
    };
    // On a thread and runtime of its own, so it times the registry, not a wait for the server's runtime.
    let direct = {
        let (registry, stop) = (registry.clone(), stop.clone());
        std::thread::spawn(move || -> Result<Vec<Duration>> {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async move {
                let mut latencies = Vec::new();
                let mut k = 0usize;
                tokio::time::sleep(Duration::from_secs(2)).await;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("m{}", k % MODELS);
                    let t = Instant::now();
                    let found = registry.list(&omnihost::registry::Query::model(&name, omnihost::config::WorkerType::Text2vec)).await;
                    latencies.push(t.elapsed());
                    if let Err(e) = found {
                        anyhow::bail!("lookup failed: {e}");
                    }
                    k += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Ok(latencies)
            })
        })
    };
    tokio::time::sleep(Duration::from_secs(SECONDS)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for t in tasks {
        t.await?;
    }
    let mut latencies = lookup.await?;
    latencies.sort();
    let mut direct = direct.join().map_err(|_| anyhow::anyhow!("the lookup thread panicked"))??;
    direct.sort();
    drop(registry);
    let services = server.wait_ready(Duration::from_secs(1)).await?;
    let sweep_us = services.sweeper.as_ref().map(|s| s.stats().last_pass_us.load(Ordering::Relaxed)).unwrap_or(0);
    drop(services);
    server.stop().await?;
    Ok(Figures {
        store,
        rate: sent.load(Ordering::Relaxed) as f64 / elapsed,
        failed: failed.load(Ordering::Relaxed),
        p50: super::percentile(&latencies, 0.5),
        p99: super::percentile(&latencies, 0.99),
        lookups: latencies.len(),
        direct: (super::percentile(&direct, 0.5), super::percentile(&direct, 0.99)),
        sweep_us,
    })
}

pub async fn registry_bench() -> Result<()> {
    let mut runs = vec![("memory", "store = \"memory\"".to_string()), ("sqlite", "store = \"sqlite\"".to_string())];
    match std::env::var("OMNIHOST_BENCH_POSTGRES") {
        Ok(url) => runs.push(("postgres", format!("store = \"postgres\"\nurl = \"{url}\"\nmax_connections = 16"))),
        Err(_) => println!("(no OMNIHOST_BENCH_POSTGRES: PostgreSQL skipped; `cargo xtask bench registry` starts one)"),
    }
    println!(
        "registry benchmark: {INSTANCES} instances of {MODELS} models heartbeating once a second over HTTP ({CLIENTS} clients), {SECONDS} s per store, {} cores",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    println!(
        "{:<9} {:>12} {:>8} {:>11} {:>11} {:>9} {:>9} {:>9} {:>10} {:>12}",
        "store", "heartbeat/s", "failed", "lookup p50", "lookup p99", "HTTP p50", "HTTP p99", "lookups", "sweep", "rate/memory"
    );
    let mut baseline = None;
    for (store, toml) in runs {
        let f = run(store, &toml).await.with_context(|| format!("benchmarking the {store} store"))?;
        let base = *baseline.get_or_insert(f.rate);
        println!(
            "{:<9} {:>12.0} {:>8} {:>9.1}us {:>9.1}us {:>7.0}us {:>7.0}us {:>9} {:>8}us {:>12.2}",
            f.store,
            f.rate,
            f.failed,
            f.direct.0.as_secs_f64() * 1e6,
            f.direct.1.as_secs_f64() * 1e6,
            f.p50.as_secs_f64() * 1e6,
            f.p99.as_secs_f64() * 1e6,
            f.lookups,
            f.sweep_us,
            f.rate / base
        );
    }
    println!("targets: heartbeat/s >= 10000 (the offered load), registry lookup p99 <= 1000us (HTTP shown for reference)");
    Ok(())
}
