//! `cargo xtask bench providers [LIST ...]`: the embedding model under each execution-provider list (default
//! `cuda,cpu` and `tensorrt,cuda,cpu`), loaded as the server loads it, fallback included, against the CPU alone in
//! the same run. For each list: the providers ONNX Runtime accepted, the load time (a TensorRT engine is built
//! then), sentences per second through the model's queue at batch 1 and 32 (tokenised natively) as a ratio to the
//! CPU, and the largest gap between its vectors and the CPU's. Each list runs with the config's graph options and again with every
//! optimizer on: one left out because it is slower on the CPU may be faster on a GPU.
//!
//! Point `ORT_DYLIB_PATH` at a GPU build of ONNX Runtime (the `onnxruntime-gpu` wheel's
//! `onnxruntime/capi/libonnxruntime.so.*`) to measure a GPU; with the CPU build every GPU list falls back, and the
//! warnings say why.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use omnihost::compute::{ComputeSettings, ElementType, Model, Provider, Runtime, Tensor, library};
use omnihost::config::{ComputeConfig, Config};

use crate::{BATCHES, SECONDS, minilm_tokenizer, root, sentences, throughput};

/// One model run's inputs, and what pooling its output needs.
struct Prepared {
    batch: embed_minilm::Batch,
    inputs: Vec<(String, Tensor)>,
}

struct Figures {
    accepted: Vec<Provider>,
    load_ms: f64,
    /// Sentences per second at each of `BATCHES`.
    rates: Vec<f64>,
    /// Every sentence's vector, in order.
    vectors: Vec<Vec<f32>>,
}

fn parse(list: &str) -> Result<Vec<Provider>> {
    list.split(',')
        .map(|name| {
            [Provider::Tensorrt, Provider::Cuda, Provider::Cpu]
                .into_iter()
                .find(|p| p.name() == name.trim())
                .ok_or_else(|| anyhow!("unknown execution provider `{name}` (known: tensorrt, cuda, cpu)"))
        })
        .collect()
}

fn prepare(tokenizer: &embed_minilm::Tokenizer, texts: &[String]) -> Result<Prepared> {
    let encodings = embed_minilm::encode(tokenizer, texts).map_err(|e| anyhow!("{e}"))?;
    let rows: Vec<usize> = (0..encodings.len()).collect();
    let batch = embed_minilm::batch(&encodings, &rows);
    let dims = vec![batch.rows as u32, batch.width as u32];
    let tensor = |values: &[i64]| {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::new(dims.clone(), ElementType::I64, bytes, usize::MAX)
    };
    let inputs = vec![
        ("input_ids".to_string(), tensor(&batch.input_ids)?),
        ("attention_mask".to_string(), tensor(&batch.attention_mask)?),
        ("token_type_ids".to_string(), tensor(&batch.token_type_ids)?),
    ];
    Ok(Prepared { batch, inputs })
}

async fn pooled(model: &Model, prepared: &Prepared) -> Result<Vec<Vec<f32>>> {
    let outputs = model.run(prepared.inputs.clone()).await?;
    let hidden = outputs
        .into_iter()
        .find(|(name, _)| name == "last_hidden_state")
        .map(|(_, t)| t)
        .context("the model returned no last_hidden_state")?;
    let dims = *hidden.dims.last().context("last_hidden_state has no dimensions")? as usize;
    embed_minilm::pool(&hidden.data[..], &prepared.batch, dims).map_err(|e| anyhow!("{e}"))
}

async fn measure(
    runtime: &Runtime,
    model_path: &Path,
    settings: &ComputeSettings,
    tokenizer: &embed_minilm::Tokenizer,
    sentences: &[String],
) -> Result<Figures> {
    let started = Instant::now();
    let model = runtime.load_model("minilm", model_path, settings)?;
    let load_ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut vectors = Vec::with_capacity(sentences.len());
    for texts in sentences.chunks(BATCHES[BATCHES.len() - 1]) {
        vectors.extend(pooled(&model, &prepare(tokenizer, texts)?).await?);
    }
    let mut rates = Vec::with_capacity(BATCHES.len());
    for size in BATCHES {
        let (rate, _) = throughput(sentences, size, |texts| {
            let (model, prepared) = (model.clone(), prepare(tokenizer, &texts));
            async move {
                model.run(prepared?.inputs).await?;
                Ok(())
            }
        })
        .await?;
        rates.push(rate);
    }
    Ok(Figures { accepted: model.providers.clone(), load_ms, rates, vectors })
}

fn names(providers: &[Provider]) -> String {
    providers.iter().map(|p| p.name()).collect::<Vec<_>>().join(",")
}

pub async fn providers_bench(lists: &[String]) -> Result<()> {
    let root = root();
    let models = root.join(".setup/models/all-minilm-l6-v2");
    let model_path = models.join("model.onnx");
    let text = std::fs::read_to_string(root.join("examples/omnihost.toml"))?;
    let config = Config::parse(&text, &root.join("examples"))?;
    let lib = library::locate(None, std::slice::from_ref(&root))?;
    let runtime = Runtime::load(&lib)?;
    let tokenizer = embed_minilm::Tokenizer::new(minilm_tokenizer(&models)?);
    let sentences = sentences();

    let mut wanted = vec![vec![Provider::Cpu]];
    let asked: Vec<String> = if lists.is_empty() { vec!["cuda,cpu".into(), "tensorrt,cuda,cpu".into()] } else { lists.to_vec() };
    for list in &asked {
        let providers = parse(list)?;
        if !wanted.contains(&providers) {
            wanted.push(providers);
        }
    }
    let cache = std::env::temp_dir().join("omnihost-bench-providers");
    std::fs::create_dir_all(&cache)?;
    let variants: [(&str, Vec<String>); 2] = [("configured", config.compute.disabled_optimizers.clone()), ("every optimizer", Vec::new())];

    println!("execution providers: {} with ONNX Runtime {}, {SECONDS} s per figure", crate::MODEL, lib.display());
    println!(
        "{:<20} {:<16} {:<20} {:>9} {:>11} {:>11} {:>8} {:>8} {:>11}",
        "asked", "graph options", "accepted", "load ms", "batch 1/s", "batch 32/s", "×cpu 1", "×cpu 32", "max |Δ|"
    );
    // The first session of a process runs slower for a while (library and page-cache warm-up); a discarded run
    // keeps that out of the baseline every ratio is taken against.
    measure(&runtime, &model_path, &ComputeSettings::new(&config.compute, cache.clone()), &tokenizer, &sentences).await?;
    let mut baseline: Option<Figures> = None;
    for providers in &wanted {
        for (label, disabled) in &variants {
            let compute = ComputeConfig {
                execution_providers: providers.clone(),
                disabled_optimizers: disabled.clone(),
                ..config.compute.clone()
            };
            let figures =
                measure(&runtime, &model_path, &ComputeSettings::new(&compute, cache.clone()), &tokenizer, &sentences).await?;
            let reference = baseline.as_ref().unwrap_or(&figures);
            if figures.vectors.len() != reference.vectors.len() {
                bail!("{} vectors under {}, {} on the CPU", figures.vectors.len(), names(providers), reference.vectors.len());
            }
            let gap = figures
                .vectors
                .iter()
                .zip(&reference.vectors)
                .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
                .fold(0f32, f32::max);
            println!(
                "{:<20} {:<16} {:<20} {:>9.0} {:>11.1} {:>11.1} {:>8.3} {:>8.3} {:>11.2e}",
                names(providers),
                label,
                names(&figures.accepted),
                figures.load_ms,
                figures.rates[0],
                figures.rates[1],
                figures.rates[0] / reference.rates[0],
                figures.rates[1] / reference.rates[1],
                gap
            );
            if baseline.is_none() {
                baseline = Some(figures);
            }
        }
    }
    println!("×cpu and max |Δ| are against the first row (the CPU alone, the config's graph options); a list whose");
    println!("accepted providers are only `cpu` fell back, and the warnings above say why");
    Ok(())
}
