//! The plugin runtime: wasmtime components with per-call limits, a warm instance pool per version, and hot
//! swap with version history and rollback.
//!
//! A [`Plugin`] is a named slot holding its current [`Version`] behind an `ArcSwap`. A request takes the current
//! version once and finishes on it; a swap compiles the new component beside the old one, type-checks it against
//! the world, smoke-calls it, then switches the slot atomically. A failed validation leaves the old version
//! serving.

pub mod bindings;
pub mod engine;
pub mod host;
pub mod instance;
pub mod output;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::{ArcSwap, ArcSwapOption};
use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use crate::compute::{ComputeError, Decoder, Model};
use crate::config::{Limits, PluginConfig, World};
use bindings::decoding;
use bindings::worker_exports as wit;
pub use engine::PluginEngine;
use host::PluginContext;
use instance::{Exports, Instances, Pre};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Errors loading, validating or swapping plugins.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("configuring the WebAssembly engine")]
    Engine(#[source] BoxError),
    #[error("starting the epoch ticker thread")]
    Ticker(#[source] std::io::Error),
    #[error("reading component {path}")]
    Read { path: PathBuf, #[source] source: std::io::Error },
    #[error("the component is not valid WebAssembly or cannot be compiled")]
    Compile(#[source] BoxError),
    #[error("plugin `{plugin}` needs imports this host does not provide")]
    Link { plugin: String, #[source] source: BoxError },
    #[error("plugin `{plugin}`: the component does not implement the world `omnihost:plugin/{expected}` (0.1.x)")]
    WrongWorld { plugin: String, expected: &'static str },
    #[error("plugin `{plugin}` failed its smoke call")]
    Smoke { plugin: String, #[source] source: CallError },
    #[error("plugin `{plugin}` embeds {got} dimensions in its smoke call but declares {declared:?}")]
    SmokeDimensions { plugin: String, declared: Option<u32>, got: usize },
    #[error("plugin `{plugin}` names decoder `{model}`, which is not granted to it (granted: {granted:?})")]
    UnknownDecoder { plugin: String, model: String, granted: Vec<String> },
    #[error("plugin `{plugin}` declares a vocabulary of {declared} but decoder `{model}` produces {actual} logits")]
    VocabMismatch { plugin: String, model: String, declared: u32, actual: usize },
    #[error("no plugin named `{0}`")]
    Unknown(String),
    #[error("plugin `{plugin}` has no version {sha}")]
    UnknownVersion { plugin: String, sha: String },
    #[error("plugin `{0}` has no earlier version to roll back to")]
    NoPrevious(String),
    #[error("plugin `{plugin}`: loading ONNX model `{model}`")]
    Model { plugin: String, model: String, #[source] source: Box<ComputeError> },
    #[error("plugin `{plugin}`: granting {path} as /data")]
    Grant { plugin: String, path: PathBuf, #[source] source: BoxError },
    #[error("starting a compile thread")]
    CompileThread(#[source] std::io::Error),
    #[error("the compile thread stopped without a result")]
    CompileStopped,
}

/// A typed error a plugin returned from an export (the WIT `plugin-error`).
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Internal(String),
}

impl From<bindings::types::PluginError> for GuestError {
    fn from(e: bindings::types::PluginError) -> Self {
        use bindings::types::PluginError as P;
        match e {
            P::InvalidInput(m) => Self::InvalidInput(m),
            P::Unsupported(m) => Self::Unsupported(m),
            P::Internal(m) => Self::Internal(m),
        }
    }
}

/// Why one call into a plugin failed. Each fails only the request that made the call.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("plugin `{plugin}` trapped: {source}")]
    Trap { plugin: String, #[source] source: BoxError },
    #[error("plugin `{plugin}` exceeded its time limit of {after_ms} ms")]
    Timeout { plugin: String, after_ms: u64 },
    #[error("plugin `{plugin}` exceeded its memory cap of {cap_mib} MiB")]
    MemoryLimit { plugin: String, cap_mib: u64 },
    #[error("plugin `{plugin}` ran out of fuel")]
    OutOfFuel { plugin: String },
    #[error("plugin `{plugin}` could not be instantiated: {source}")]
    Instantiate { plugin: String, #[source] source: BoxError },
    #[error("plugin `{0}` is shutting down")]
    Closed(String),
    #[error("plugin `{plugin}` is not a worker adapter")]
    NotAWorker { plugin: String },
    #[error("plugin `{plugin}` does not drive a decoder (it is not an llm-adapter)")]
    NotADecoder { plugin: String },
    #[error("plugin `{plugin}` is not a stage processor")]
    NotAProcessor { plugin: String },
    #[error("plugin `{plugin}` returned {got} step results for {expected} sequences")]
    StepCount { plugin: String, expected: usize, got: usize },
    #[error("plugin `{plugin}` returned an unusable answer: {problem}")]
    BadOutput { plugin: String, problem: OutputProblem },
    #[error(transparent)]
    Guest(#[from] GuestError),
}

/// What is wrong with a plugin's answer: the host checks it before anything is indexed or sent on, so a bad
/// plugin fails its request with this, never the host.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OutputProblem {
    #[error("{got} results for {expected} inputs")]
    Count { expected: usize, got: usize },
    #[error("vector {index} has {got} dimensions where the adapter declared {expected}")]
    Dimensions { index: usize, expected: usize, got: usize },
    #[error("vector {index} has {got} dimensions where vector 0 has {expected}")]
    Ragged { index: usize, expected: usize, got: usize },
    #[error("result {index} holds a value that is not a finite number")]
    NonFinite { index: usize },
}

/// Checks embeddings against the request and what the adapter declared: one per input, finite values, one size
/// for all.
fn check_embeddings(vectors: &[Embedded], inputs: usize, declared: Option<u32>) -> Result<(), OutputProblem> {
    if vectors.len() != inputs {
        return Err(OutputProblem::Count { expected: inputs, got: vectors.len() });
    }
    let expected = match (declared, vectors.first()) {
        (Some(d), _) => Some((d as usize, true)),
        (None, Some(first)) => Some((first.values.len(), false)),
        (None, None) => None,
    };
    for (index, v) in vectors.iter().enumerate() {
        match expected {
            Some((n, true)) if v.values.len() != n => return Err(OutputProblem::Dimensions { index, expected: n, got: v.values.len() }),
            Some((n, false)) if v.values.len() != n => return Err(OutputProblem::Ragged { index, expected: n, got: v.values.len() }),
            _ => {}
        }
        if !v.values.iter().all(|x| x.is_finite()) {
            return Err(OutputProblem::NonFinite { index });
        }
    }
    Ok(())
}

/// Read-only filesystem grant of a plugin: its data folder, visible as `/data`.
#[derive(Clone, Debug)]
pub struct WasiGrant {
    plugin: String,
    data_dir: Option<PathBuf>,
}

impl WasiGrant {
    fn build(&self) -> Result<WasiCtx, BoxError> {
        let mut builder = WasiCtxBuilder::new();
        builder.stdout(output::PluginOutput::new(&self.plugin, "stdout"));
        builder.stderr(output::PluginOutput::new(&self.plugin, "stderr"));
        if let Some(dir) = &self.data_dir {
            builder.preopened_dir(dir, "/data", FsPerms::ReadOnly).map_err(BoxError::from)?;
        }
        Ok(builder.build())
    }
}

/// What `GET /admin/plugins` shows of one version.
#[derive(Clone, Debug, Serialize)]
pub struct VersionInfo {
    pub sha256: String,
    pub loaded_at: String,
    /// Who installed it: `config`, `admin-api`, `rollback`.
    pub source: String,
    pub bytes: usize,
    /// True when nothing was compiled: the machine code came from the on-disk cache, or from a version this host
    /// already ran (a rollback, a re-deployed build).
    pub precompiled: bool,
    /// The adapter's own name and version string, from its metadata.
    pub adapter: Option<String>,
}

impl VersionInfo {
    /// How logs, metrics and API answers name this version: see [`short_sha`].
    pub fn short(&self) -> &str {
        short_sha(&self.sha256)
    }
}

/// The first 12 hex digits of a component's sha256.
fn short_sha(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

/// Facts a worker adapter reported in its smoke call.
#[derive(Clone, Debug, Serialize)]
pub struct AdapterInfo {
    pub name: String,
    pub version: String,
    pub worker_types: Vec<String>,
    pub embedding_dimensions: Option<u32>,
    pub max_input_tokens: Option<u32>,
}

/// What an llm-adapter reported about its decoder, with the decoder the host runs for it.
#[derive(Clone)]
pub struct DecoderBinding {
    pub info: decoding::DecoderInfo,
    pub decoder: Arc<Decoder>,
}

/// One compiled, validated version of a plugin with its instances.
pub struct Version {
    pub info: VersionInfo,
    pub adapter: Option<AdapterInfo>,
    /// Set for llm-adapter plugins: the host drives their decode loop.
    pub decoder: Option<DecoderBinding>,
    instances: Instances,
}

/// The embedding of one input.
#[derive(Clone, Debug)]
pub struct Embedded {
    pub values: Vec<f32>,
    pub tokens: u32,
}

impl Version {
    pub fn idle_instances(&self) -> usize {
        self.instances.idle()
    }

    fn plugin(&self) -> &str {
        &self.instances.context().plugin
    }

    async fn worker_call<R: Send + 'static>(
        &self,
        f: impl for<'a> FnOnce(
            &'a bindings::WorkerAdapter,
            &'a mut wasmtime::Store<host::PluginState>,
        ) -> instance::CallFuture<'a, Result<R, bindings::types::PluginError>>
        + Send,
    ) -> Result<R, CallError> {
        if self.adapter.is_none() {
            return Err(CallError::NotAWorker { plugin: self.plugin().to_string() });
        }
        let result = self
            .instances
            .call(move |exports, store| match exports {
                Exports::Worker(w) => f(w, store),
                Exports::Stage(_) | Exports::Llm(_) | Exports::Pipeline(_) => {
                    Box::pin(async { Err(wasmtime::format_err!("not a worker-adapter instance")) })
                }
            })
            .await?;
        result.map_err(|e| CallError::Guest(e.into()))
    }

    /// Embeds `texts` in one call: one checked vector per text.
    pub async fn embed(&self, texts: Vec<String>, truncate: bool) -> Result<Vec<Embedded>, CallError> {
        let inputs = texts.len();
        let options = wit::EmbedOptions { truncate };
        let out = self
            .worker_call(move |w, store| {
                Box::pin(async move { w.omnihost_plugin_worker().call_embed(store, &texts, options).await })
            })
            .await?;
        let vectors: Vec<Embedded> = out.into_iter().map(|e| Embedded { values: e.values, tokens: e.tokens }).collect();
        let declared = self.adapter.as_ref().and_then(|a| a.embedding_dimensions);
        check_embeddings(&vectors, inputs, declared).map_err(|problem| self.bad_output(problem))?;
        Ok(vectors)
    }

    /// Scores `documents` against `query`: one finite score per document.
    pub async fn rerank(&self, query: String, documents: Vec<String>) -> Result<Vec<f32>, CallError> {
        let expected = documents.len();
        let scores = self
            .worker_call(move |w, store| {
                Box::pin(async move { w.omnihost_plugin_worker().call_rerank(store, &query, &documents).await })
            })
            .await?;
        if scores.len() != expected {
            return Err(self.bad_output(OutputProblem::Count { expected, got: scores.len() }));
        }
        if let Some(index) = scores.iter().position(|s| !s.is_finite()) {
            return Err(self.bad_output(OutputProblem::NonFinite { index }));
        }
        Ok(scores)
    }

    pub fn bad_output(&self, problem: OutputProblem) -> CallError {
        CallError::BadOutput { plugin: self.plugin().to_string(), problem }
    }

    /// Counts the tokens of `text`.
    pub async fn count_tokens(&self, text: String) -> Result<u32, CallError> {
        if self.decoder.is_some() {
            let result = self
                .instances
                .call(move |exports, store| match exports {
                    Exports::Llm(l) => {
                        Box::pin(async move { l.omnihost_plugin_worker().call_count_tokens(store, &text).await })
                    }
                    _ => Box::pin(async { Err(wasmtime::format_err!("not an llm-adapter instance")) }),
                })
                .await?;
            return result.map_err(|e| CallError::Guest(e.into()));
        }
        self.worker_call(move |w, store| {
            Box::pin(async move { w.omnihost_plugin_worker().call_count_tokens(store, &text).await })
        })
        .await
    }

    fn not_a_decoder(&self) -> CallError {
        CallError::NotADecoder { plugin: self.plugin().to_string() }
    }

    /// Tokenises a generation request and builds the sequence's initial state (llm-adapter plugins).
    pub async fn prepare(&self, request: decoding::GenerationRequest) -> Result<decoding::Prepared, CallError> {
        if self.decoder.is_none() {
            return Err(self.not_a_decoder());
        }
        let result = self
            .instances
            .call(move |exports, store| match exports {
                Exports::Llm(l) => Box::pin(async move { l.omnihost_plugin_decoding().call_prepare(store, &request).await }),
                _ => Box::pin(async { Err(wasmtime::format_err!("not an llm-adapter instance")) }),
            })
            .await?;
        result.map_err(|e| CallError::Guest(e.into()))
    }

    /// One decode step for a batch of sequences: one result per input, in order. A guest error fails only its
    /// sequence; a trap, timeout or memory cap fails the whole call (the caller retries sequences one by one).
    ///
    /// The inputs are shared, not moved, so a caller that has to retry can do so without a copy of every row.
    pub async fn step(
        &self,
        inputs: Arc<[decoding::StepInput]>,
    ) -> Result<Vec<Result<decoding::StepOutput, GuestError>>, CallError> {
        if self.decoder.is_none() {
            return Err(self.not_a_decoder());
        }
        let expected = inputs.len();
        let outputs = self
            .instances
            .call(move |exports, store| match exports {
                Exports::Llm(l) => Box::pin(async move { l.omnihost_plugin_decoding().call_step(store, &inputs).await }),
                _ => Box::pin(async { Err(wasmtime::format_err!("not an llm-adapter instance")) }),
            })
            .await?;
        if outputs.len() != expected {
            return Err(CallError::StepCount { plugin: self.plugin().to_string(), expected, got: outputs.len() });
        }
        Ok(outputs.into_iter().map(|r| r.map_err(GuestError::from)).collect())
    }

    /// Runs a stage processor (`pipeline-processor`, or a 0.1.0 `stage-processor`) on one request's sources.
    pub async fn process(
        &self,
        request: StageRequest,
        sources: Vec<StageSource>,
    ) -> Result<Vec<StageItem>, CallError> {
        let plugin = self.plugin().to_string();
        let result = self
            .instances
            .call(move |exports, store| match exports {
                Exports::Pipeline(p) => Box::pin(async move { call_processor(p, store, request, sources).await }),
                Exports::Stage(p) => Box::pin(async move { call_stage_010(p, store, request, sources).await }),
                _ => Box::pin(async { Err(wasmtime::format_err!("not a stage processor instance")) }),
            })
            .await;
        match result {
            Ok(Ok(items)) => Ok(items),
            Ok(Err(e)) => Err(CallError::Guest(e.into())),
            Err(CallError::Trap { source, .. }) if source.to_string().contains(NOT_A_PROCESSOR) => {
                Err(CallError::NotAProcessor { plugin })
            }
            Err(e) => Err(e),
        }
    }

    /// Plugin-driven generation (worker adapters that export `generate`): the guest pushes deltas into `deltas`
    /// until it is done or the receiver is dropped.
    pub async fn generate(
        &self,
        request: wit::GenerateRequest,
        deltas: tokio::sync::mpsc::Sender<String>,
    ) -> Result<wit::GenerateResult, CallError> {
        self.worker_call(move |w, store| {
            Box::pin(async move {
                let sink = store.data_mut().push_sink(host::SinkHandle { tx: deltas })?;
                let borrowed = wasmtime::component::Resource::<host::SinkHandle>::new_borrow(sink.rep());
                let result = w.omnihost_plugin_worker().call_generate(&mut *store, &request, borrowed).await;
                store.data_mut().drop_sink(sink)?;
                result
            })
        })
        .await
    }
}

/// One unit of data between pipeline stages, on the host side of the `processor` interface.
#[derive(Clone, Debug, Default)]
pub struct StageItem {
    pub text: Option<String>,
    pub token_ids: Vec<u32>,
    pub tensors: Vec<(String, crate::compute::Tensor)>,
    pub json: Option<String>,
    pub finish_reason: Option<String>,
}

/// What one source stage produced for a request.
#[derive(Clone, Debug)]
pub struct StageSource {
    pub stage_id: u32,
    pub outputs: Vec<StageItem>,
}

/// A pipeline request as one stage's processor sees it.
#[derive(Clone, Debug)]
pub struct StageRequest {
    pub request_id: String,
    pub stage_id: u32,
    pub prompt: Option<String>,
    pub inputs: Vec<(String, crate::compute::Tensor)>,
    pub params: String,
    pub chunk: u32,
}

const NOT_A_PROCESSOR: &str = "not a stage processor instance";

type Store = wasmtime::Store<host::PluginState>;

fn to_guest(store: &mut Store, item: StageItem) -> wasmtime::Result<bindings::processor::Item> {
    let mut tensors = Vec::with_capacity(item.tensors.len());
    for (name, t) in item.tensors {
        tensors.push((name, store.data_mut().push_tensor(t)?));
    }
    Ok(bindings::processor::Item {
        text: item.text,
        token_ids: item.token_ids,
        tensors,
        json: item.json,
        finish_reason: item.finish_reason,
    })
}

fn tensors_from_guest(
    store: &mut Store,
    tensors: Vec<(String, wasmtime::component::Resource<crate::compute::Tensor>)>,
) -> wasmtime::Result<Vec<(String, crate::compute::Tensor)>> {
    tensors.into_iter().map(|(name, handle)| Ok((name, store.data_mut().take_tensor(handle)?))).collect()
}

async fn call_processor(
    p: &bindings::PipelineProcessor,
    store: &mut Store,
    request: StageRequest,
    sources: Vec<StageSource>,
) -> wasmtime::Result<Result<Vec<StageItem>, bindings::types::PluginError>> {
    let mut inputs = Vec::with_capacity(request.inputs.len());
    for (name, t) in request.inputs {
        inputs.push((name, store.data_mut().push_tensor(t)?));
    }
    let wit_request = bindings::processor::Request {
        request_id: request.request_id,
        stage_id: request.stage_id,
        prompt: request.prompt,
        inputs,
        params: request.params,
        chunk: request.chunk,
    };
    let mut wit_sources = Vec::with_capacity(sources.len());
    for s in sources {
        let outputs = s.outputs.into_iter().map(|i| to_guest(store, i)).collect::<wasmtime::Result<Vec<_>>>()?;
        wit_sources.push(bindings::processor::Source { stage_id: s.stage_id, outputs });
    }
    let result = p.omnihost_plugin_processor().call_process(&mut *store, &wit_request, &wit_sources).await?;
    // Handles the guest was given and did not return stay in the store's table until the instance is recycled;
    // they only hold shared bytes, so nothing is copied for them.
    let items = match result {
        Ok(items) => items,
        Err(e) => return Ok(Err(e)),
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        out.push(StageItem {
            text: item.text,
            token_ids: item.token_ids,
            tensors: tensors_from_guest(store, item.tensors)?,
            json: item.json,
            finish_reason: item.finish_reason,
        });
    }
    Ok(Ok(out))
}

/// A 0.1.0 `stage-processor` served in a pipeline: each source item is one `stage-output`, each `engine-input`
/// one item; the stage's parameters travel as the extra `params`.
async fn call_stage_010(
    p: &bindings::StageProcessor,
    store: &mut Store,
    request: StageRequest,
    sources: Vec<StageSource>,
) -> wasmtime::Result<Result<Vec<StageItem>, bindings::types::PluginError>> {
    use bindings::stage::exports::omnihost::plugin::stage as old;
    let mut outputs = Vec::new();
    for s in sources {
        for item in s.outputs {
            let mut tensors = Vec::with_capacity(item.tensors.len());
            for (name, t) in item.tensors {
                tensors.push((name, store.data_mut().push_tensor(t)?));
            }
            outputs.push(old::StageOutput {
                stage_id: s.stage_id,
                text: item.text,
                token_ids: item.token_ids,
                tensors,
                finish_reason: item.finish_reason,
            });
        }
    }
    let wit_request = old::Request {
        request_id: request.request_id,
        prompt: request.prompt.unwrap_or_default(),
        extras: vec![("params".into(), request.params)],
    };
    let result = p.omnihost_plugin_stage().call_process_inputs(&mut *store, &outputs, &wit_request).await?;
    let inputs = match result {
        Ok(inputs) => inputs,
        Err(e) => return Ok(Err(e)),
    };
    let mut out = Vec::with_capacity(inputs.len());
    for input in inputs {
        out.push(StageItem {
            text: input.prompt,
            token_ids: input.token_ids.unwrap_or_default(),
            tensors: tensors_from_guest(store, input.tensors)?,
            json: None,
            finish_reason: None,
        });
    }
    Ok(Ok(out))
}

/// The models and settings a plugin's versions share.
struct Grants {
    config: BTreeMap<String, String>,
    models: BTreeMap<String, Arc<Model>>,
    decoders: BTreeMap<String, Arc<Decoder>>,
    tensor_limit: usize,
    limits: Limits,
    wasi: WasiGrant,
}

/// Kept for rollback: a version as it was activated.
struct HistoryEntry {
    info: VersionInfo,
    component: Component,
}

/// Versions kept for rollback.
const HISTORY: usize = 20;

/// A named plugin slot: the version serving now, and the history it can roll back to.
pub struct Plugin {
    pub name: String,
    pub world: World,
    engine: Arc<PluginEngine>,
    grants: Grants,
    current: ArcSwap<Version>,
    /// The version before the current one, kept warm so that rolling back (or re-deploying it) is instant.
    previous: ArcSwapOption<Version>,
    history: Mutex<Vec<HistoryEntry>>,
    swap_lock: tokio::sync::Mutex<()>,
}

/// What `GET /admin/plugins` shows of a plugin.
#[derive(Clone, Debug, Serialize)]
pub struct PluginStatus {
    pub name: String,
    pub world: &'static str,
    pub current: VersionInfo,
    pub adapter: Option<AdapterInfo>,
    pub idle_instances: usize,
    pub history: Vec<VersionInfo>,
}

impl Plugin {
    /// Loads a plugin from its config: reads and compiles the component (or takes it from the cache), grants
    /// its models, validates it and warms one instance.
    pub async fn load(
        engine: Arc<PluginEngine>,
        config: &PluginConfig,
        resolve: impl Fn(&std::path::Path) -> PathBuf,
        models: BTreeMap<String, Arc<Model>>,
        decoders: BTreeMap<String, Arc<Decoder>>,
        tensor_limit: usize,
    ) -> Result<Plugin, PluginError> {
        let path = resolve(&config.component);
        let bytes = tokio::fs::read(&path).await.map_err(|source| PluginError::Read { path: path.clone(), source })?;
        let data_dir = config.data_dir.as_deref().map(&resolve);
        if let Some(dir) = data_dir.as_ref().filter(|d| !d.is_dir()) {
            return Err(PluginError::Grant { plugin: config.name.clone(), path: dir.clone(), source: "not a folder".into() });
        }
        let grants = Grants {
            config: config.config.clone(),
            models,
            decoders,
            tensor_limit,
            limits: config.limits.clone(),
            wasi: WasiGrant { plugin: config.name.clone(), data_dir },
        };
        let started = std::time::Instant::now();
        let size = bytes.len();
        let (component, sha, precompiled) = compile(&engine, bytes).await?;
        let candidate = Candidate { component: component.clone(), sha, source: "config", size, precompiled };
        let version = prepare(&engine, &config.name, config.world, &grants, candidate).await?;
        tracing::info!(
            plugin = %config.name,
            sha256 = %version.info.short(),
            precompiled,
            ms = started.elapsed().as_millis() as u64,
            "plugin ready"
        );
        let entry = HistoryEntry { info: version.info.clone(), component };
        Ok(Plugin {
            name: config.name.clone(),
            world: config.world,
            engine,
            grants,
            current: ArcSwap::from_pointee(version),
            previous: ArcSwapOption::empty(),
            history: Mutex::new(vec![entry]),
            swap_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The version serving now. A request should take it once and use it to the end.
    pub fn current(&self) -> Arc<Version> {
        self.current.load_full()
    }

    /// Replaces the component. Returns once new requests see the new version; requests in flight finish on
    /// the old one. On any validation failure the old version keeps serving.
    pub async fn swap(&self, bytes: Vec<u8>, source: &str) -> Result<VersionInfo, PluginError> {
        let _guard = self.swap_lock.lock().await;
        let sha = hex::encode(Sha256::digest(&bytes));
        let known = self.lock_history().iter().rev().find(|e| e.info.sha256 == sha).map(|e| e.component.clone());
        let size = bytes.len();
        let (component, sha, precompiled) = match known {
            Some(component) => (component, sha, true),
            None => compile(&self.engine, bytes).await?,
        };
        self.activate(Candidate { component, sha, source, size, precompiled }).await
    }

    /// Re-activates an earlier version: the one with the given sha256 (a prefix is enough), or the last one
    /// before the current version.
    pub async fn rollback(&self, to: Option<&str>) -> Result<VersionInfo, PluginError> {
        let _guard = self.swap_lock.lock().await;
        let current = self.current().info.sha256.clone();
        let target = {
            let history = self.lock_history();
            let found = match to {
                Some(prefix) => history.iter().rev().find(|e| e.info.sha256.starts_with(prefix)),
                None => history.iter().rev().find(|e| e.info.sha256 != current),
            };
            match (found, to) {
                (Some(e), _) => (e.component.clone(), e.info.sha256.clone(), e.info.bytes),
                (None, Some(prefix)) => {
                    return Err(PluginError::UnknownVersion { plugin: self.name.clone(), sha: prefix.to_string() });
                }
                (None, None) => return Err(PluginError::NoPrevious(self.name.clone())),
            }
        };
        let (component, sha, size) = target;
        self.activate(Candidate { component, sha, source: "rollback", size, precompiled: true }).await
    }

    async fn activate(&self, candidate: Candidate<'_>) -> Result<VersionInfo, PluginError> {
        let (source, component) = (candidate.source, candidate.component.clone());
        let version = match self.previous.load_full().filter(|p| p.info.sha256 == candidate.sha) {
            Some(warm) => warm,
            None => Arc::new(prepare(&self.engine, &self.name, self.world, &self.grants, candidate).await?),
        };
        let info = VersionInfo {
            loaded_at: crate::time::rfc3339(SystemTime::now()),
            source: source.to_string(),
            ..version.info.clone()
        };
        let replaced = self.current.swap(version);
        self.previous.store(Some(replaced));
        let mut history = self.lock_history();
        history.push(HistoryEntry { info: info.clone(), component });
        if history.len() > HISTORY {
            history.remove(0);
        }
        tracing::info!(plugin = %self.name, sha256 = %info.short(), source, "plugin swapped");
        Ok(info)
    }

    fn lock_history(&self) -> std::sync::MutexGuard<'_, Vec<HistoryEntry>> {
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Versions activated so far, oldest first.
    pub fn history(&self) -> Vec<VersionInfo> {
        self.lock_history().iter().map(|e| e.info.clone()).collect()
    }

    pub fn status(&self) -> PluginStatus {
        let version = self.current();
        let history = self.history();
        PluginStatus {
            name: self.name.clone(),
            world: self.world.name(),
            current: history.last().cloned().unwrap_or_else(|| version.info.clone()),
            adapter: version.adapter.clone(),
            idle_instances: version.idle_instances(),
            history,
        }
    }

    /// The per-call limits every version of this plugin runs under.
    pub fn limits(&self) -> &Limits {
        &self.grants.limits
    }

    /// The ONNX models granted to this plugin.
    pub fn models(&self) -> impl Iterator<Item = &Arc<Model>> {
        self.grants.models.values()
    }
}

/// Compiles the component at `path` and type-checks it against `world`, without running it (`pipeline
/// validate`).
pub async fn check_world(engine: &Arc<PluginEngine>, path: &std::path::Path, name: &str, world: World) -> Result<(), PluginError> {
    let bytes = tokio::fs::read(path).await.map_err(|source| PluginError::Read { path: path.to_path_buf(), source })?;
    let (component, _, _) = compile(engine, bytes).await?;
    let pre = engine
        .linker
        .instantiate_pre(&component)
        .map_err(|e| PluginError::Link { plugin: name.to_string(), source: e.into() })?;
    let wrong_world = |_| PluginError::WrongWorld { plugin: name.to_string(), expected: world.name() };
    match world {
        World::WorkerAdapter => drop(bindings::WorkerAdapterPre::new(pre).map_err(wrong_world)?),
        World::StageProcessor => drop(bindings::StageProcessorPre::new(pre).map_err(wrong_world)?),
        World::LlmAdapter => drop(bindings::LlmAdapterPre::new(pre).map_err(wrong_world)?),
        World::PipelineProcessor => drop(bindings::PipelineProcessorPre::new(pre).map_err(wrong_world)?),
    }
    Ok(())
}

/// How much lower than request work a compile runs (a `nice` increment).
const COMPILE_NICENESS: i32 = 10;

async fn compile(engine: &Arc<PluginEngine>, bytes: Vec<u8>) -> Result<(Component, String, bool), PluginError> {
    let engine = engine.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    // Cranelift is CPU-bound for seconds on a large component. It runs on a thread of its own at a lower
    // priority, so that a swap while serving takes idle CPU rather than the requests' (the engine compiles
    // on one thread for the same reason). The thread ends with the compile, so its priority dies with it.
    std::thread::Builder::new()
        .name("wasm-compile".into())
        .spawn(move || {
            let tid = rustix::thread::gettid();
            if let Err(e) = rustix::process::setpriority_process(Some(tid), COMPILE_NICENESS) {
                tracing::debug!(error = %e, "could not lower the compile thread's priority");
            }
            let _ = tx.send(engine.compile(&bytes));
        })
        .map_err(PluginError::CompileThread)?;
    rx.await.map_err(|_| PluginError::CompileStopped)?
}

/// An [`AdapterInfo`] from either world's `adapter-metadata` record (same fields, distinct generated types).
macro_rules! adapter_info {
    ($m:expr) => {{
        let m = $m;
        AdapterInfo {
            name: m.name,
            version: m.version,
            worker_types: m.worker_types,
            embedding_dimensions: m.embedding_dimensions,
            max_input_tokens: m.max_input_tokens,
        }
    }};
}

fn metadata<'a>(
    exports: &'a Exports,
    store: &'a mut wasmtime::Store<host::PluginState>,
) -> instance::CallFuture<'a, AdapterInfo> {
    match exports {
        // The llm-adapter world exports the same `worker` interface, but its bindings are types of their own.
        Exports::Worker(w) => Box::pin(async move {
            let m = w.omnihost_plugin_worker().call_metadata(store).await?;
            Ok(adapter_info!(m))
        }),
        Exports::Llm(l) => Box::pin(async move {
            let m = l.omnihost_plugin_worker().call_metadata(store).await?;
            Ok(adapter_info!(m))
        }),
        Exports::Stage(_) | Exports::Pipeline(_) => Box::pin(async { Err(wasmtime::format_err!("not a worker adapter")) }),
    }
}

fn decoder_info<'a>(
    exports: &'a Exports,
    store: &'a mut wasmtime::Store<host::PluginState>,
) -> instance::CallFuture<'a, decoding::DecoderInfo> {
    match exports {
        Exports::Llm(l) => Box::pin(async move { l.omnihost_plugin_decoding().call_decoder(store).await }),
        _ => Box::pin(async { Err(wasmtime::format_err!("not an llm-adapter")) }),
    }
}

/// A compiled component on its way to becoming a version, and the facts its [`VersionInfo`] will record.
struct Candidate<'a> {
    component: Component,
    sha: String,
    /// Who installs it: `config`, `admin-api`, `rollback`.
    source: &'a str,
    size: usize,
    precompiled: bool,
}

/// Type-checks a candidate component against the plugin's world, instantiates it and smoke-calls it.
async fn prepare(
    engine: &Arc<PluginEngine>,
    name: &str,
    world: World,
    grants: &Grants,
    Candidate { component, sha, source, size, precompiled }: Candidate<'_>,
) -> Result<Version, PluginError> {
    let pre = engine
        .linker
        .instantiate_pre(&component)
        .map_err(|e| PluginError::Link { plugin: name.to_string(), source: e.into() })?;
    let wrong_world = |_| PluginError::WrongWorld { plugin: name.to_string(), expected: world.name() };
    let pre = match world {
        World::WorkerAdapter => Pre::Worker(bindings::WorkerAdapterPre::new(pre).map_err(wrong_world)?),
        World::StageProcessor => Pre::Stage(bindings::StageProcessorPre::new(pre).map_err(wrong_world)?),
        World::LlmAdapter => Pre::Llm(bindings::LlmAdapterPre::new(pre).map_err(wrong_world)?),
        World::PipelineProcessor => Pre::Pipeline(bindings::PipelineProcessorPre::new(pre).map_err(wrong_world)?),
    };
    let ctx = Arc::new(PluginContext {
        plugin: name.to_string(),
        version: short_sha(&sha).to_string(),
        config: grants.config.clone(),
        models: grants.models.clone(),
        tensor_limit: grants.tensor_limit,
    });
    let instances = Instances::new(engine.clone(), pre, ctx, grants.limits.clone(), grants.wasi.clone());
    let smoke = |source| PluginError::Smoke { plugin: name.to_string(), source };
    let mut first = instances.warm().await.map_err(smoke)?;
    let adapter = match world {
        World::WorkerAdapter | World::LlmAdapter => Some(instances.call_on(&mut first, metadata).await.map_err(smoke)?),
        World::StageProcessor | World::PipelineProcessor => None,
    };
    let decoder = match world {
        World::LlmAdapter => {
            let info = instances.call_on(&mut first, decoder_info).await.map_err(smoke)?;
            let Some(decoder) = grants.decoders.get(&info.model) else {
                return Err(PluginError::UnknownDecoder {
                    plugin: name.to_string(),
                    model: info.model,
                    granted: grants.decoders.keys().cloned().collect(),
                });
            };
            if decoder.vocab_size != info.vocab_size as usize {
                return Err(PluginError::VocabMismatch {
                    plugin: name.to_string(),
                    model: info.model,
                    declared: info.vocab_size,
                    actual: decoder.vocab_size,
                });
            }
            Some(DecoderBinding { info, decoder: decoder.clone() })
        }
        _ => None,
    };
    instances.adopt(first);
    let version = Version {
        info: VersionInfo {
            sha256: sha,
            loaded_at: crate::time::rfc3339(SystemTime::now()),
            source: source.to_string(),
            bytes: size,
            precompiled,
            adapter: adapter.as_ref().map(|a| format!("{} {}", a.name, a.version)),
        },
        adapter,
        decoder,
        instances,
    };
    if version.decoder.is_some() {
        // Tokenising and templating a tiny chat proves the adapter's files load before it takes traffic.
        let request = decoding::GenerationRequest {
            messages: vec![decoding::ChatMessage { role: "user".into(), content: "omnihost smoke test".into() }],
            prompt: String::new(),
            sampling: decoding::Sampling {
                max_tokens: Some(1),
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
        };
        version.prepare(request).await.map_err(smoke)?;
    }
    if let Some(adapter) = version.adapter.as_ref().filter(|a| a.worker_types.iter().any(|t| t == "text2vec")) {
        let declared = adapter.embedding_dimensions;
        let out = version.embed(vec!["omnihost smoke test".into()], true).await.map_err(smoke)?;
        let got = out.first().map(|e| e.values.len()).unwrap_or(0);
        if declared != Some(got as u32) {
            return Err(PluginError::SmokeDimensions { plugin: name.to_string(), declared, got });
        }
    }
    // Fill the warm pool before the version takes traffic, so the switch does not make requests pay for
    // instantiation and the adapter's set-up (a tokenizer parse) at the moment load moves over.
    for _ in 1..version.instances.pool_size() {
        let mut instance = version.instances.warm().await.map_err(smoke)?;
        if world.serves_models() {
            version.instances.call_on(&mut instance, metadata).await.map_err(smoke)?;
        }
        version.instances.adopt(instance);
    }
    Ok(version)
}

/// Every plugin of the server, by name.
#[derive(Default)]
pub struct Plugins {
    by_name: BTreeMap<String, Arc<Plugin>>,
}

impl Plugins {
    pub fn insert(&mut self, plugin: Plugin) {
        self.by_name.insert(plugin.name.clone(), Arc::new(plugin));
    }

    pub fn get(&self, name: &str) -> Result<&Arc<Plugin>, PluginError> {
        self.by_name.get(name).ok_or_else(|| PluginError::Unknown(name.to_string()))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.by_name.values()
    }
}
