//! `cargo xtask bench generate`: SmolLM2 greedy decoding, 128 new tokens, side by side in one run.
//!
//! (a) the same ONNX decoder driven by a plain Rust loop over `ort` (one sequence, the KV cache bound in place,
//!     argmax in Rust): the limit;
//! (b) omnihost in process (the WebAssembly adapter sampling, the host's continuous-batching loop);
//! (c) omnihost over HTTP with 1, 4 and 16 concurrent streams;
//! (d) the same decoder driven by hand from Python `onnxruntime`.
//! Prompts: a short one (~37 tokens) and a long one (~240 tokens). The stop rules are off (`max_tokens` 128 and
//! a prompt that asks for a long answer; a sequence that meets EOS earlier is measured over what it made).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use omnihost::compute::{ComputeSettings, Runtime, library};
use omnihost::config::Config;
use omnihost::plugin::bindings::decoding::{ChatMessage, GenerationRequest, Sampling};
use omnihost::server::Running;
use omnihost::worker::Event;
use ort::memory::Allocator;
use ort::value::Tensor;
use serde_json::{Value, json};

use crate::root;

const LLM: &str = "SmolLM2-135M-Instruct";
const NEW_TOKENS: u32 = 128;

fn prompts() -> [(&'static str, String); 2] {
    [
        ("short", "Write a long story about a lighthouse keeper who finds a message in a bottle.".to_string()),
        (
            "long",
            format!(
                "Read these notes and then write a long story that uses all of them. {}",
                "The lighthouse stood on a rock at the edge of the grey northern sea, and every night its keeper climbed the \
                 hundred and twelve steps to light the lamp. "
                    .repeat(6)
            ),
        ),
    ]
}

fn request(prompt: &str) -> GenerationRequest {
    GenerationRequest {
        messages: vec![ChatMessage { role: "user".into(), content: prompt.into() }],
        prompt: String::new(),
        sampling: Sampling {
            max_tokens: Some(NEW_TOKENS),
            temperature: Some(0.0),
            top_p: None,
            top_k: None,
            seed: Some(0),
            stop: Vec::new(),
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            top_logprobs: None,
        },
        choice: 0,
    }
}

/// Time to first token and decode tokens/s of one sequence.
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    ttft: Duration,
    tokens: u32,
    decode: Duration,
}

impl Run {
    fn decode_rate(&self) -> f64 {
        if self.tokens <= 1 { 0.0 } else { f64::from(self.tokens - 1) / self.decode.as_secs_f64() }
    }
}

/// (a) The decoder alone: prefill in one run, then one run per token, the cache bound in place.
fn plain_ort(runtime: &Runtime, model: &std::path::Path, prompt: &[u32], settings: &ComputeSettings) -> Result<Run> {
    let mut session = settings.graph_options(runtime.session_builder()?)?.commit_from_file(model)?;
    let layers = session.inputs().iter().filter(|i| i.name().starts_with("past_key_values.") && i.name().ends_with(".key")).count();
    let context = 1024;
    let allocator = Allocator::default();
    let mut binding = session.create_binding()?;
    let mut buffers = Vec::new();
    for layer in 0..layers {
        for kind in ["key", "value"] {
            let mut buffer = Tensor::<f32>::new(&allocator, [1usize, 3, context, 64])?;
            buffer.extract_tensor_mut().1.fill(0.0);
            binding.bind_input(format!("past_key_values.{layer}.{kind}"), &buffer)?;
            binding.bind_output(format!("present.{layer}.{kind}"), &mut buffer)?;
            buffers.push(buffer);
        }
    }
    let mut logits = Tensor::<f32>::new(&allocator, [1usize, 49152])?;
    binding.bind_output("logits", &mut logits)?;
    let no_dims: [usize; 0] = [];
    let mut step = |tokens: &[u32], start: usize| -> Result<u32> {
        let n = tokens.len();
        binding.bind_input("input_ids", &Tensor::from_array(([1, n], tokens.iter().map(|&t| i64::from(t)).collect::<Vec<_>>()))?)?;
        binding.bind_input("position_ids", &Tensor::from_array(([1, n], (start as i64..(start + n) as i64).collect::<Vec<_>>()))?)?;
        binding.bind_input("seqlens_k", &Tensor::from_array(([1usize], vec![(start + n) as i32 - 1]))?)?;
        binding.bind_input("total_sequence_length", &Tensor::from_array((no_dims, vec![(start + n) as i32]))?)?;
        drop(session.run_binding(&binding)?);
        let row = logits.extract_tensor().1;
        let best = row.iter().enumerate().fold((0usize, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
        Ok(best.0 as u32)
    };
    let started = Instant::now();
    let mut token = step(prompt, 0)?;
    let ttft = started.elapsed();
    for position in prompt.len()..prompt.len() + NEW_TOKENS as usize - 1 {
        token = step(&[token], position)?;
    }
    Ok(Run { ttft, tokens: NEW_TOKENS, decode: started.elapsed() - ttft })
}

/// (b) One sequence through the worker in process.
async fn in_process(worker: &omnihost::worker::Worker, prompt: &str) -> Result<Run> {
    let started = Instant::now();
    let mut generation = worker.generate(request(prompt), 1).await?;
    let mut stream = generation.streams.pop().context("no stream")?;
    let mut first = None;
    loop {
        match stream.recv().await {
            Some(Event::Delta { .. }) => {
                first.get_or_insert_with(|| started.elapsed());
            }
            Some(Event::Done { completion_tokens, .. }) => {
                let ttft = first.unwrap_or_else(|| started.elapsed());
                return Ok(Run { ttft, tokens: completion_tokens, decode: started.elapsed() - ttft });
            }
            Some(Event::Failed(e)) => bail!("generation failed: {e}"),
            None => bail!("the stream ended without an answer"),
        }
    }
}

/// (c) One streamed request over HTTP.
async fn over_http(client: &reqwest::Client, url: &str, prompt: &str) -> Result<Run> {
    use futures::StreamExt;
    let body = json!({"model": LLM, "messages": [{"role": "user", "content": prompt}], "temperature": 0,
                      "max_tokens": NEW_TOKENS, "stream": true, "stream_options": {"include_usage": true}});
    let started = Instant::now();
    let response = client.post(format!("{url}/v1/chat/completions")).json(&body).send().await?;
    if !response.status().is_success() {
        bail!("HTTP {}", response.status());
    }
    let mut first = None;
    let mut tokens = 0;
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    while let Some(chunk) = body.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            let Some(data) = event.trim().strip_prefix("data: ") else { continue };
            if data == "[DONE]" {
                continue;
            }
            let value: Value = serde_json::from_str(data)?;
            if value["choices"][0]["delta"]["content"].as_str().is_some_and(|c| !c.is_empty()) {
                first.get_or_insert_with(|| started.elapsed());
            }
            if let Some(n) = value["usage"]["completion_tokens"].as_u64() {
                tokens = n as u32;
            }
        }
    }
    let ttft = first.unwrap_or_else(|| started.elapsed());
    Ok(Run { ttft, tokens, decode: started.elapsed() - ttft })
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map_or(0.0, |kib| kib / 1024.0)
}

pub async fn generate_bench() -> Result<()> {
    let root = root();
    let model = root.join(".setup/models/smollm2-135m-instruct/model.onnx");
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let text = std::fs::read_to_string(root.join("examples/omnihost.toml"))?;
    let config = Config::parse(&text, &root.join("examples"))?;
    // The baseline's session gets the served decoder's graph options, with the thread count stated below.
    let settings = ComputeSettings { intra_threads: threads, ..ComputeSettings::new(&config.compute, std::env::temp_dir()) };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = Running::start(config, listener)?;
    let services = server.wait_ready(Duration::from_secs(600)).await?;
    let url = server.url();
    let worker = services.resolver.local().and_then(|m| m.get(LLM, None)).context("the example serves no LLM")?;
    let version = worker.plugin.current();
    let lib = library::locate(None, std::slice::from_ref(&root))?;
    let runtime = Runtime::load(&lib)?;
    let python = std::env::var_os("OMNIHOST_BENCH_PYTHON").map(PathBuf::from).unwrap_or_else(|| root.join(".setup/venv/bin/python"));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(600)).build()?;

    println!("SmolLM2-135M-Instruct, greedy, {NEW_TOKENS} new tokens, {threads} threads, CPU");
    println!("{:<6} {:>7} {:<34} {:>10} {:>12}", "prompt", "tokens", "contender", "TTFT ms", "decode tok/s");
    for (label, prompt) in prompts() {
        let ids = version.prepare(request(&prompt)).await?.prompt_token_ids;
        // Warm each path once so first-run set-up is not measured.
        let _ = in_process(&worker, &prompt).await?;
        let a = plain_ort(&runtime, &model, &ids, &settings)?;
        let b = in_process(&worker, &prompt).await?;
        let c1 = over_http(&client, &url, &prompt).await?;
        let ids_text = ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let out = std::process::Command::new(&python)
            .arg(root.join("bench/python/generate_ort.py"))
            .args(["--model", &root.join(".setup/models/smollm2-135m-instruct").display().to_string()])
            .args(["--prompt-ids", &ids_text, "--max-new", &NEW_TOKENS.to_string(), "--threads", &threads.to_string()])
            .output()
            .context("running the Python baseline")?;
        if !out.status.success() {
            bail!("python baseline failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let py: Value = serde_json::from_slice(out.stdout.trim_ascii())?;
        let d = Run {
            ttft: Duration::from_secs_f64(py["ttft_ms"].as_f64().unwrap_or(0.0) / 1000.0),
            tokens: NEW_TOKENS,
            decode: Duration::from_secs_f64(f64::from(NEW_TOKENS - 1) / py["decode_tok_s"].as_f64().unwrap_or(1.0).max(1e-9)),
        };
        for (name, run) in [("(a) plain Rust loop over ort", a), ("(b) omnihost in process", b), ("(c) omnihost HTTP, 1 stream", c1), ("(d) Python onnxruntime loop", d)] {
            println!("{label:<6} {:>7} {name:<34} {:>10.1} {:>12.1}", ids.len(), run.ttft.as_secs_f64() * 1000.0, run.decode_rate());
        }
        println!("{label:<6} b/a decode {:.3}   TTFT b/a {:.3}   c/d decode {:.3}", b.decode_rate() / a.decode_rate(), b.ttft.as_secs_f64() / a.ttft.as_secs_f64(), c1.decode_rate() / d.decode_rate());
    }

    let (short_prompt, long_prompt) = {
        let [(_, s), (_, l)] = prompts();
        (s, l)
    };
    for streams in [1usize, 4, 16] {
        let started = Instant::now();
        let runs = futures::future::join_all((0..streams).map(|i| {
            let prompt = if i % 4 == 3 { long_prompt.clone() } else { format!("{short_prompt} Story number {i}.") };
            let client = client.clone();
            let url = url.clone();
            async move { over_http(&client, &url, &prompt).await }
        }))
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
        let wall = started.elapsed().as_secs_f64();
        let tokens: u32 = runs.iter().map(|r| r.tokens).sum();
        let per_stream = runs.iter().map(Run::decode_rate).sum::<f64>() / runs.len() as f64;
        let ttft = runs.iter().map(|r| r.ttft.as_secs_f64()).sum::<f64>() / runs.len() as f64 * 1000.0;
        println!("(c) HTTP {streams:>2} streams: aggregate {:.1} tok/s, per stream {per_stream:.1} tok/s, mean TTFT {ttft:.0} ms", f64::from(tokens) / wall);
    }

    let (steps, decode_ns, plugin_ns) = worker.schedulers().iter().fold((0u64, 0u64, 0u64), |acc, s| {
        use std::sync::atomic::Ordering::Relaxed;
        (acc.0 + s.stats.steps.load(Relaxed), acc.1 + s.stats.decode_nanos.load(Relaxed), acc.2 + s.stats.plugin_nanos.load(Relaxed))
    });
    if steps > 0 {
        println!(
            "plugin share of a decode step: {:.1} us of {:.1} us ({:.2} %), over {steps} steps of every batch size above",
            plugin_ns as f64 / steps as f64 / 1000.0,
            (plugin_ns + decode_ns) as f64 / steps as f64 / 1000.0,
            100.0 * plugin_ns as f64 / (plugin_ns + decode_ns) as f64
        );
    }
    println!("peak RSS of this process (server + plain loop): {:.0} MiB", peak_rss_mib());
    server.stop().await?;
    Ok(())
}
