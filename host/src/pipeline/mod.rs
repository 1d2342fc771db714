//! Multi-stage pipelines, vllm-omni's `OmniLLM`: stages whose input logic is a WebAssembly processor and whose
//! engine is a served model or an ONNX model run in the host, connected by the outputs they produce.
//!
//! Each request runs every stage as its own task, joined by per-stage output channels: a stage starts when its
//! sources are done (or, with `stream_input`, on each chunk its source produces), and holds one of its stage's
//! `concurrency` permits only while it works. So the stages of different requests overlap (stage 1 of one
//! request runs while stage 0 of the next does), the wait for a busy stage is the queue between stages, and the
//! number of requests in flight bounds every queue. Tensors pass between stages as shared host buffers: a
//! processor pays for a copy only when it reads one.

pub mod config;
pub mod record;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::{Mutex, Semaphore, mpsc, watch};

use crate::compute::{ComputeError, ElementType, Model, Tensor};
use crate::config::WorkerType;
use crate::plugin::bindings::decoding;
use crate::plugin::{CallError, Plugin, StageItem, StageRequest, StageSource};
use crate::worker::generate::{Event, SequenceError};
use crate::worker::manager::WorkerManager;
use crate::worker::WorkerError;
pub use config::{OutputType, PipelineConfig, PipelineConfigError, SpeechConfig, StageConfig};
use config::{Chunking, EngineKinds, Kind};
use record::Recorder;

/// Why one stage failed a request.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Processor(#[from] CallError),
    #[error(transparent)]
    Compute(#[from] ComputeError),
    #[error(transparent)]
    Worker(#[from] WorkerError),
    #[error(transparent)]
    Generation(#[from] SequenceError),
    #[error("the stage took longer than its timeout of {0} ms")]
    Timeout(u64),
    #[error("model `{0}` is not being served on this host")]
    NotServed(String),
    #[error("the engine (model `{model}`) needs a text input and the item has none")]
    NoText { model: String },
    #[error("the stage's output is not valid JSON")]
    BadJson(#[source] serde_json::Error),
    #[error("sampling parameter `{key}` {expected}")]
    BadParam { key: String, expected: &'static str },
    #[error("the generation stream ended without a finish")]
    Truncated,
}

impl StageError {
    /// Whether the request, not the pipeline, is at fault (HTTP 400).
    pub fn is_client_error(&self) -> bool {
        use crate::plugin::GuestError;
        matches!(
            self,
            StageError::Processor(CallError::Guest(GuestError::InvalidInput(_)))
                | StageError::BadParam { .. }
                | StageError::NoText { .. }
                | StageError::Worker(WorkerError::ContextLength { .. })
        )
    }
}

/// Why a pipeline request failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("sampling_params_list has {actual} entries but pipeline `{pipeline}` has {expected} stages")]
    ParamsLength { pipeline: String, expected: usize, actual: usize },
    #[error("sampling_params_list[{index}] is {found}; give an object (`{{}}` keeps the stage's defaults)")]
    BadParams { index: usize, found: &'static str },
    #[error("a pipeline request needs at least one input")]
    NoInputs,
    #[error("pipeline `{pipeline}` is overloaded: {limit} requests are already in flight")]
    Overloaded { pipeline: String, limit: usize },
    #[error("pipeline `{pipeline}` stage {stage_id} failed: {source}")]
    Stage { pipeline: String, stage_id: u32, #[source] source: StageError },
    #[error("pipeline `{pipeline}` stage {stage_id}: its source stage {source_id} failed")]
    SourceFailed { pipeline: String, stage_id: u32, source_id: u32 },
    #[error("pipeline `{pipeline}` has no stage {stage_id}")]
    UnknownStage { pipeline: String, stage_id: u32 },
    #[error("pipeline `{pipeline}`: the request's run ended without a result")]
    Aborted { pipeline: String },
}

/// One input of a pipeline request: a text prompt, or named binary inputs (an encoded image as `image`).
#[derive(Clone, Debug)]
pub enum Input {
    Prompt(String),
    Binary(Vec<(String, Tensor)>),
    /// A conversation: an LLM engine of the first stage reads it whole; processors see the last user message
    /// as the prompt.
    Chat(Vec<decoding::ChatMessage>),
}

impl Input {
    /// An encoded image (PNG or JPEG file bytes) as the request's `image` input, `u8 [bytes]`.
    pub fn image(bytes: Vec<u8>) -> Result<Input, crate::compute::TensorError> {
        let tensor = Tensor::new(vec![bytes.len() as u32], ElementType::U8, bytes, usize::MAX)?;
        Ok(Input::Binary(vec![("image".into(), tensor)]))
    }
}

/// One `final_output` stage's results: `outputs[i]` is what the stage produced for input `i`, in order.
#[derive(Clone, Debug)]
pub struct FinalOutput {
    pub stage_id: u32,
    pub final_output_type: OutputType,
    pub outputs: Vec<Vec<StageItem>>,
}

/// What a streamed request reports, as it happens.
#[derive(Debug)]
pub enum StreamEvent {
    /// Text a final text stage's LLM just wrote, before it is cut into items (for clients that show it as it
    /// is written).
    Delta { stage_id: u32, text: String },
    /// An item of a `final_output` stage, as soon as the stage produced it.
    Item { stage_id: u32, item: StageItem },
    /// Every stage is done; nothing follows.
    Done,
    /// The request failed; nothing follows.
    Failed(PipelineError),
}

/// Outputs given in place of a stage's: the stage does not run, nor do the stages that only feed it, and the
/// stages it feeds start from these items (OpenAI's `/v1/audio/speech` speaks its `input` without the LLM).
#[derive(Clone, Debug)]
pub struct Given {
    pub stage_id: u32,
    pub items: Vec<StageItem>,
}

/// A request running in the background, streaming its events. Dropping it cancels the request: its stages
/// stop at their next await and an LLM stage frees its batch row.
pub struct RequestStream {
    events: mpsc::UnboundedReceiver<StreamEvent>,
    task: tokio::task::AbortHandle,
    pipeline: String,
    ended: bool,
}

impl RequestStream {
    /// The next event; after `Done` or `Failed`, `None`.
    pub async fn next(&mut self) -> Option<StreamEvent> {
        if self.ended {
            return None;
        }
        let event = match self.events.recv().await {
            Some(event) => event,
            // The run's task ended without saying how: it panicked.
            None => StreamEvent::Failed(PipelineError::Aborted { pipeline: self.pipeline.clone() }),
        };
        self.ended = matches!(event, StreamEvent::Done | StreamEvent::Failed(_));
        Some(event)
    }
}

impl Drop for RequestStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Tap = mpsc::UnboundedSender<StreamEvent>;

/// What runs a stage's inputs.
enum Engine {
    /// Logic only: the processor's items are the stage's outputs.
    None,
    Onnx(Arc<Model>),
    /// A served model; its type (fixed by its name) says whether it embeds or generates.
    Worker { model: String, worker_type: WorkerType, manager: Arc<WorkerManager> },
}

/// Counters of a stage since the pipeline loaded.
#[derive(Debug, Default)]
struct StageStats {
    runs: AtomicU64,
    failures: AtomicU64,
    processor_nanos: AtomicU64,
    engine_nanos: AtomicU64,
}

struct Stage {
    config: StageConfig,
    engine: Engine,
    processor: Option<Arc<Plugin>>,
    /// Indices (into `Pipeline::stages`) of the source stages, in `engine_input_source` order.
    sources: Vec<usize>,
    permits: Semaphore,
    defaults: Map<String, Value>,
    stats: StageStats,
}

/// What a stage has produced so far for one request.
#[derive(Clone, Default)]
struct Progress {
    items: Vec<StageItem>,
    state: State,
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum State {
    #[default]
    Running,
    Done,
    Failed,
}

/// A loaded pipeline.
pub struct Pipeline {
    pub name: String,
    pub config: PipelineConfig,
    stages: Vec<Stage>,
    order: Vec<usize>,
    admission: Arc<Semaphore>,
    /// Set when `overlap_requests = false`: one request at a time, every stage back to back.
    serial: Option<Mutex<()>>,
    recorder: Option<Recorder>,
    next_id: AtomicU64,
    /// Stages working right now (across requests), and the most there ever were: more than one means the
    /// stages of different requests overlapped.
    busy: AtomicUsize,
    peak_busy: AtomicUsize,
}

/// What `GET /v1/pipelines` shows of a stage.
#[derive(Debug, Serialize)]
pub struct StageInfo {
    pub stage_id: u32,
    pub engine: Value,
    pub input_processor: Option<String>,
    pub engine_input_source: Vec<u32>,
    pub final_output: bool,
    pub final_output_type: OutputType,
    pub stream_input: bool,
    pub runs: u64,
    pub failures: u64,
    pub processor_ms: f64,
    pub engine_ms: f64,
}

/// The parts a pipeline is built from, loaded by the server.
pub struct Parts<'a> {
    pub plugins: &'a crate::plugin::Plugins,
    pub models: BTreeMap<String, Arc<Model>>,
    pub manager: Option<Arc<WorkerManager>>,
    pub record: Option<std::path::PathBuf>,
}

fn worker_type(manager: Option<&Arc<WorkerManager>>, model: &str) -> Option<WorkerType> {
    let (spec, _) = manager?.workers().into_iter().find(|(spec, _)| spec.name == model)?;
    Some(spec.worker_type)
}

/// Checks a pipeline file offline, given the models a server config serves (name, type): the stage order.
pub fn check(config: &PipelineConfig, served: &[(String, WorkerType)]) -> Result<Vec<usize>, PipelineConfigError> {
    config.check(|model| {
        let (_, ty) = served.iter().find(|(name, _)| name == model)?;
        Some(kinds_of(*ty))
    })
}

fn kinds_of(ty: WorkerType) -> EngineKinds {
    match ty {
        WorkerType::Llm => EngineKinds { takes: Kind::Text, produces: Kind::Text },
        WorkerType::Text2vec => EngineKinds { takes: Kind::Text, produces: Kind::Tensors },
        WorkerType::Reranker | WorkerType::Pipeline => EngineKinds { takes: Kind::Any, produces: Kind::Any },
    }
}

/// Errors building a pipeline from a checked config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] PipelineConfigError),
    #[error("pipeline `{pipeline}` stage {stage_id}: engine worker `{model}` is not served by this host")]
    NoWorker { pipeline: String, stage_id: u32, model: String },
    #[error("pipeline `{pipeline}` stage {stage_id}: engine model `{model}` did not load")]
    NoModel { pipeline: String, stage_id: u32, model: String },
    #[error("pipeline `{pipeline}` stage {stage_id}: input_processor `{processor}` did not load")]
    NoProcessor { pipeline: String, stage_id: u32, processor: String },
    #[error("pipeline `{pipeline}`: recording to {path}")]
    Record { pipeline: String, path: std::path::PathBuf, #[source] source: std::io::Error },
}

impl Pipeline {
    /// Checks `config` and connects its stages to what the server loaded. `stages`, when given, replace the
    /// file's (vllm-omni's explicit `stage_configs`); otherwise the file's stages are used.
    pub fn build(mut config: PipelineConfig, stages: Option<Vec<StageConfig>>, parts: Parts<'_>) -> Result<Pipeline, BuildError> {
        let explicit = stages.is_some();
        if let Some(stages) = stages {
            config.stages = stages;
        }
        let order = config.check_with(|m| worker_type(parts.manager.as_ref(), m).map(kinds_of), !explicit)?;
        let name = config.name.clone();
        let index: BTreeMap<u32, usize> = config.stages.iter().enumerate().map(|(i, s)| (s.stage_id, i)).collect();
        let mut stages = Vec::with_capacity(config.stages.len());
        for s in &config.stages {
            let engine = match (&s.engine.worker, &s.engine.model) {
                (Some(model), _) => {
                    let no_worker =
                        || BuildError::NoWorker { pipeline: name.clone(), stage_id: s.stage_id, model: model.clone() };
                    let manager = parts.manager.clone().filter(|m| m.get(model, None).is_some()).ok_or_else(no_worker)?;
                    let worker_type = worker_type(Some(&manager), model).ok_or_else(no_worker)?;
                    Engine::Worker { model: model.clone(), worker_type, manager }
                }
                (None, Some(model)) => Engine::Onnx(parts.models.get(model).cloned().ok_or_else(|| BuildError::NoModel {
                    pipeline: name.clone(),
                    stage_id: s.stage_id,
                    model: model.clone(),
                })?),
                (None, None) => Engine::None,
            };
            let processor = match &s.input_processor {
                Some(p) => Some(parts.plugins.get(p).cloned().map_err(|_| BuildError::NoProcessor {
                    pipeline: name.clone(),
                    stage_id: s.stage_id,
                    processor: p.clone(),
                })?),
                None => None,
            };
            stages.push(Stage {
                sources: s.engine_input_source.iter().map(|id| index[id]).collect(),
                permits: Semaphore::new(s.engine_args.concurrency),
                defaults: PipelineConfig::default_params(s),
                config: s.clone(),
                engine,
                processor,
                stats: StageStats::default(),
            });
        }
        let recorder = match parts.record {
            Some(dir) => {
                let graph = stages.iter().map(|s| (s.config.engine_input_source.clone(), s.config.stream_input)).collect();
                let recorder = Recorder::new(dir.join(&name), graph)
                    .map_err(|(path, source)| BuildError::Record { pipeline: name.clone(), path, source })?;
                Some(recorder)
            }
            None => None,
        };
        Ok(Pipeline {
            admission: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            serial: (!config.overlap_requests).then(|| Mutex::new(())),
            name,
            config,
            stages,
            order,
            recorder,
            next_id: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            peak_busy: AtomicUsize::new(0),
        })
    }

    /// The most stages that ever worked at once, across requests.
    pub fn peak_busy_stages(&self) -> usize {
        self.peak_busy.load(Ordering::Relaxed)
    }

    /// Stage ids in config order.
    pub fn stage_ids(&self) -> Vec<u32> {
        self.stages.iter().map(|s| s.config.stage_id).collect()
    }

    pub fn stage_info(&self) -> Vec<StageInfo> {
        self.stages
            .iter()
            .map(|s| StageInfo {
                stage_id: s.config.stage_id,
                engine: match &s.engine {
                    Engine::None => Value::Null,
                    Engine::Onnx(m) => json!({"model": m.name}),
                    Engine::Worker { model, .. } => json!({"worker": model}),
                },
                input_processor: s.config.input_processor.clone(),
                engine_input_source: s.config.engine_input_source.clone(),
                final_output: s.config.final_output,
                final_output_type: s.config.final_output_type,
                stream_input: s.config.stream_input,
                runs: s.stats.runs.load(Ordering::Relaxed),
                failures: s.stats.failures.load(Ordering::Relaxed),
                processor_ms: s.stats.processor_nanos.load(Ordering::Relaxed) as f64 / 1e6,
                engine_ms: s.stats.engine_nanos.load(Ordering::Relaxed) as f64 / 1e6,
            })
            .collect()
    }

    /// The processors this pipeline uses (for hot swap they are plugins like any other).
    pub fn processors(&self) -> Vec<String> {
        let mut names: Vec<String> = self.stages.iter().filter_map(|s| s.config.input_processor.clone()).collect();
        names.dedup();
        names
    }

    /// vllm-omni's `generate(prompts, sampling_params_list)`: runs every input through the pipeline (inputs
    /// concurrently, stages overlapping) and returns one output per `final_output` stage, in stage-id order.
    /// `sampling_params_list` must have one object per stage, in config order.
    pub async fn generate(&self, inputs: Vec<Input>, sampling_params_list: Vec<Value>) -> Result<Vec<FinalOutput>, PipelineError> {
        let params = self.merged_params(sampling_params_list)?;
        if inputs.is_empty() {
            return Err(PipelineError::NoInputs);
        }
        let Ok(_admitted) = self.admission.clone().try_acquire_many_owned(inputs.len().min(u32::MAX as usize) as u32)
        else {
            return Err(PipelineError::Overloaded { pipeline: self.name.clone(), limit: self.config.max_in_flight });
        };
        let _serial = match &self.serial {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        let runs = inputs.into_iter().map(|input| self.run_request(input, params.clone(), None, None));
        let results = futures::future::join_all(runs).await;
        let mut per_input = Vec::with_capacity(results.len());
        for r in results {
            per_input.push(r?);
        }
        let mut finals: Vec<(u32, usize)> =
            self.stages.iter().enumerate().filter(|(_, s)| s.config.final_output).map(|(i, s)| (s.config.stage_id, i)).collect();
        finals.sort();
        Ok(finals
            .into_iter()
            .map(|(stage_id, i)| FinalOutput {
                stage_id,
                final_output_type: self.stages[i].config.final_output_type,
                outputs: per_input.iter_mut().map(|stages| std::mem::take(&mut stages[i])).collect(),
            })
            .collect())
    }

    /// Runs one input in the background and streams what its final stages produce as they produce it
    /// (`generate` for one input, as events). `given` stands in for a stage's outputs.
    pub fn stream(
        self: &Arc<Self>,
        input: Input,
        sampling_params_list: Vec<Value>,
        given: Option<Given>,
    ) -> Result<RequestStream, PipelineError> {
        let params = self.merged_params(sampling_params_list)?;
        let given = match given {
            Some(g) => {
                let index = self.stages.iter().position(|s| s.config.stage_id == g.stage_id).ok_or_else(|| {
                    PipelineError::UnknownStage { pipeline: self.name.clone(), stage_id: g.stage_id }
                })?;
                Some((index, g.items))
            }
            None => None,
        };
        let Ok(admitted) = self.admission.clone().try_acquire_owned() else {
            return Err(PipelineError::Overloaded { pipeline: self.name.clone(), limit: self.config.max_in_flight });
        };
        let (tx, events) = mpsc::unbounded_channel();
        let this = self.clone();
        let task = tokio::spawn(async move {
            let _admitted = admitted;
            let _serial = match &this.serial {
                Some(lock) => Some(lock.lock().await),
                None => None,
            };
            let result = this.run_request(input, params, Some(tx.clone()), given).await;
            let _ = tx.send(match result {
                Ok(_) => StreamEvent::Done,
                Err(e) => StreamEvent::Failed(e),
            });
        });
        Ok(RequestStream { events, task: task.abort_handle(), pipeline: self.name.clone(), ended: false })
    }

    /// Each stage's sampling parameters as JSON: its defaults with the request's entry on top, key by key.
    fn merged_params(&self, sampling_params_list: Vec<Value>) -> Result<Arc<Vec<String>>, PipelineError> {
        if sampling_params_list.len() != self.stages.len() {
            return Err(PipelineError::ParamsLength {
                pipeline: self.name.clone(),
                expected: self.stages.len(),
                actual: sampling_params_list.len(),
            });
        }
        let mut params = Vec::with_capacity(self.stages.len());
        for (index, (p, stage)) in sampling_params_list.into_iter().zip(&self.stages).enumerate() {
            let Value::Object(given) = p else {
                return Err(PipelineError::BadParams { index, found: json_kind(&p) });
            };
            let mut merged = stage.defaults.clone();
            merged.extend(given);
            params.push(Value::Object(merged).to_string());
        }
        Ok(Arc::new(params))
    }

    /// Which stages do not run when `given` stands in for a stage: that stage, and the stages that feed only
    /// stages that do not run.
    fn skipped(&self, given: usize) -> Vec<bool> {
        let mut skip = vec![false; self.stages.len()];
        skip[given] = true;
        // In reverse topological order a stage's consumers are decided before it.
        for &i in self.order.iter().rev() {
            let consumers: Vec<usize> =
                self.stages.iter().enumerate().filter(|(_, s)| s.sources.contains(&i)).map(|(j, _)| j).collect();
            if !consumers.is_empty() && consumers.iter().all(|&j| skip[j]) {
                skip[i] = true;
            }
        }
        skip
    }

    /// Runs one input through every stage; returns each stage's items, by stage index.
    async fn run_request(
        &self,
        input: Input,
        params: Arc<Vec<String>>,
        tap: Option<Tap>,
        given: Option<(usize, Vec<StageItem>)>,
    ) -> Result<Vec<Vec<StageItem>>, PipelineError> {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request_id = format!("{}-{:x}-{n}", self.name, std::process::id());
        let (prompt, inputs, messages) = match input {
            Input::Prompt(p) => (Some(p), Vec::new(), Vec::new()),
            Input::Binary(inputs) => (None, inputs, Vec::new()),
            Input::Chat(messages) => {
                let last = messages.iter().rev().find(|m| m.role == "user").map(|m| m.content.clone());
                (last, Vec::new(), messages)
            }
        };
        let request =
            RequestCtx { request_id, prompt, inputs, messages, params, tap, processed: std::sync::Mutex::new(Vec::new()) };
        let channels: Vec<(watch::Sender<Progress>, watch::Receiver<Progress>)> =
            self.stages.iter().map(|_| watch::channel(Progress::default())).collect();
        let mut skip = vec![false; self.stages.len()];
        if let Some((index, items)) = given {
            skip = self.skipped(index);
            let stage = &self.stages[index];
            if let (true, Some(tap)) = (stage.config.final_output, &request.tap) {
                for item in &items {
                    let _ = tap.send(StreamEvent::Item { stage_id: stage.config.stage_id, item: item.clone() });
                }
            }
            channels[index].0.send_modify(|p| p.items = items);
        }
        for (i, (tx, _)) in channels.iter().enumerate() {
            if skip[i] {
                tx.send_modify(|p| p.state = State::Done);
            }
        }
        let tasks = self.order.iter().filter(|&&i| !skip[i]).map(|&i| self.run_stage(i, &request, &channels));
        let results = futures::future::join_all(tasks).await;
        // The first stage that failed on its own says why; the stages after it only report their source.
        let mut first_error = None;
        for r in results {
            match r {
                Ok(()) => {}
                Err(e @ PipelineError::SourceFailed { .. }) => {
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    if !matches!(first_error, Some(PipelineError::Stage { .. })) {
                        first_error = Some(e);
                    }
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        let outputs: Vec<Vec<StageItem>> = channels.iter().map(|(_, rx)| rx.borrow().items.clone()).collect();
        if let Some(recorder) = &self.recorder {
            let stage_ids = self.stage_ids();
            let processed = std::mem::take(&mut *request.processed.lock().unwrap_or_else(|p| p.into_inner()));
            if let Err(e) = recorder.record(&request, &stage_ids, &processed, &outputs).await {
                tracing::warn!(pipeline = %self.name, error = %e, "recording the request failed");
            }
        }
        Ok(outputs)
    }

    async fn run_stage(
        &self,
        i: usize,
        request: &RequestCtx,
        channels: &[(watch::Sender<Progress>, watch::Receiver<Progress>)],
    ) -> Result<(), PipelineError> {
        let stage = &self.stages[i];
        let stage_id = stage.config.stage_id;
        let tx = &channels[i].0;
        let source_failed = |source: usize| PipelineError::SourceFailed {
            pipeline: self.name.clone(),
            stage_id,
            source_id: self.stages[source].config.stage_id,
        };
        let result = if stage.config.stream_input {
            let source = stage.sources[0];
            let mut rx = channels[source].1.clone();
            let mut chunk = 0u32;
            loop {
                let next = match next_item(&mut rx, chunk as usize).await {
                    Ok(next) => next,
                    Err(()) => break Err(source_failed(source)),
                };
                let Some(item) = next else { break Ok(()) };
                let sources = vec![StageSource { stage_id: self.stages[source].config.stage_id, outputs: vec![item] }];
                if let Err(e) = self.work(i, request, sources, chunk, tx).await {
                    break Err(self.stage_error(stage, e));
                }
                chunk += 1;
            }
        } else {
            let mut sources = Vec::with_capacity(stage.sources.len());
            let mut failed = None;
            for &s in &stage.sources {
                match all_items(channels[s].1.clone()).await {
                    Ok(outputs) => sources.push(StageSource { stage_id: self.stages[s].config.stage_id, outputs }),
                    Err(()) => {
                        failed = Some(s);
                        break;
                    }
                }
            }
            match failed {
                Some(s) => Err(source_failed(s)),
                None => self.work(i, request, sources, 0, tx).await.map_err(|e| self.stage_error(stage, e)),
            }
        };
        tx.send_modify(|p| p.state = if result.is_ok() { State::Done } else { State::Failed });
        result
    }

    fn stage_error(&self, stage: &Stage, source: StageError) -> PipelineError {
        stage.stats.failures.fetch_add(1, Ordering::Relaxed);
        PipelineError::Stage { pipeline: self.name.clone(), stage_id: stage.config.stage_id, source }
    }

    /// One processor call and the engine runs on what it returned, under the stage's permit and deadline.
    async fn work(
        &self,
        index: usize,
        request: &RequestCtx,
        sources: Vec<StageSource>,
        chunk: u32,
        tx: &watch::Sender<Progress>,
    ) -> Result<(), StageError> {
        let stage = &self.stages[index];
        let _permit = stage.permits.acquire().await;
        stage.stats.runs.fetch_add(1, Ordering::Relaxed);
        let now = self.busy.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_busy.fetch_max(now, Ordering::Relaxed);
        let _busy = Busy(&self.busy);
        let timeout_ms = stage.config.engine_args.timeout_ms;
        let params = &request.params[index];
        let run = async {
            let started = Instant::now();
            let inputs = match &stage.processor {
                Some(plugin) => {
                    let call = StageRequest {
                        request_id: request.request_id.clone(),
                        stage_id: stage.config.stage_id,
                        prompt: request.prompt.clone(),
                        inputs: request.inputs.clone(),
                        params: params.clone(),
                        chunk,
                    };
                    let items = plugin.current().process(call, sources).await?;
                    stage.stats.processor_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    items
                }
                None if stage.sources.is_empty() => vec![StageItem {
                    text: request.prompt.clone(),
                    tensors: request.inputs.clone(),
                    ..StageItem::default()
                }],
                // vllm-omni hands a stage without a processor its source's outputs (their token ids); here the
                // items carry their text, token ids and tensors alike, and the engine takes what it needs.
                None => sources.into_iter().flat_map(|s| s.outputs).collect(),
            };
            if self.recorder.is_some() {
                request.processed.lock().unwrap_or_else(|p| p.into_inner()).push((index, chunk, inputs.clone()));
            }
            let started = Instant::now();
            let result = self.run_engine(stage, inputs, request, params, tx).await;
            stage.stats.engine_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            result
        };
        match tokio::time::timeout(Duration::from_millis(timeout_ms), run).await {
            Ok(result) => result,
            Err(_) => Err(StageError::Timeout(timeout_ms)),
        }
    }

    async fn run_engine(
        &self,
        stage: &Stage,
        inputs: Vec<StageItem>,
        request: &RequestCtx,
        params: &str,
        tx: &watch::Sender<Progress>,
    ) -> Result<(), StageError> {
        let stage_id = stage.config.stage_id;
        let tap = request.tap.as_ref().filter(|_| stage.config.final_output);
        let publish = |item: StageItem| {
            if let Some(tap) = tap {
                let _ = tap.send(StreamEvent::Item { stage_id, item: item.clone() });
            }
            tx.send_modify(|p| p.items.push(item));
        };
        let on_delta = |text: &str| {
            if let Some(tap) = tap.filter(|_| stage.config.final_output_type == OutputType::Text) {
                let _ = tap.send(StreamEvent::Delta { stage_id, text: text.to_string() });
            }
        };
        match &stage.engine {
            Engine::None => {
                for item in inputs {
                    // A final JSON output that does not parse is the stage's bad output, not a client's problem.
                    if let (true, OutputType::Json, Some(text)) =
                        (stage.config.final_output, stage.config.final_output_type, &item.json)
                    {
                        serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(StageError::BadJson)?;
                    }
                    publish(item);
                }
            }
            Engine::Onnx(model) => {
                for item in inputs {
                    let (feed, keep): (Vec<_>, Vec<_>) =
                        item.tensors.into_iter().partition(|(name, _)| model.inputs.iter().any(|i| &i.name == name));
                    let mut tensors = model.run(feed).await?;
                    tensors.extend(keep);
                    publish(StageItem { tensors, ..item });
                }
            }
            Engine::Worker { model, worker_type, manager } => {
                let worker = manager.get(model, None).ok_or_else(|| StageError::NotServed(model.clone()))?;
                for item in inputs {
                    let text = item.text.clone().ok_or_else(|| StageError::NoText { model: model.clone() })?;
                    match worker_type {
                        WorkerType::Text2vec => {
                            let out = worker.embed(vec![text], true).await?;
                            let values = out.vectors.into_iter().next().map(|e| e.values).unwrap_or_default();
                            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                            let tensor = Tensor::new(vec![values.len() as u32], ElementType::Fp32, bytes, usize::MAX)
                                .map_err(|source| ComputeError::Tensor { model: model.clone(), source })?;
                            publish(StageItem { tensors: vec![("embedding".into(), tensor)], ..item });
                        }
                        _ => {
                            // A conversation reaches the first stage's LLM whole, system prompt and turns alike.
                            let messages = match (stage.sources.is_empty() && stage.processor.is_none(), request.messages.is_empty()) {
                                (true, false) => request.messages.clone(),
                                _ => vec![decoding::ChatMessage { role: "user".into(), content: text }],
                            };
                            let request = decoding::GenerationRequest {
                                messages,
                                prompt: String::new(),
                                sampling: sampling(params)?,
                                choice: 0,
                            };
                            let generation = worker.generate(request, 1).await?;
                            let Some(events) = generation.streams.into_iter().next() else {
                                return Err(StageError::Truncated);
                            };
                            generate_items(events, stage.config.output_chunks, &publish, &on_delta).await?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Counts a stage as working until dropped (also when its request is cancelled mid-work).
struct Busy<'a>(&'a AtomicUsize);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What every stage task of one request shares.
struct RequestCtx {
    request_id: String,
    prompt: Option<String>,
    inputs: Vec<(String, Tensor)>,
    /// The conversation of a chat request (empty otherwise).
    messages: Vec<decoding::ChatMessage>,
    /// Each stage's sampling parameters (JSON), by stage index.
    params: Arc<Vec<String>>,
    /// Where a streamed request's events go.
    tap: Option<Tap>,
    /// What each processor returned (stage index, chunk, items), kept only while recording.
    processed: std::sync::Mutex<Vec<(usize, u32, Vec<StageItem>)>>,
}

/// Turns a generation's events into items: one at the end, or one per sentence as it is written.
async fn generate_items(
    mut events: tokio::sync::mpsc::UnboundedReceiver<Event>,
    chunking: Chunking,
    publish: &impl Fn(StageItem),
    on_delta: &impl Fn(&str),
) -> Result<(), StageError> {
    let mut pending = String::new();
    let mut published = 0usize;
    while let Some(event) = events.recv().await {
        match event {
            Event::Delta { text, .. } => {
                on_delta(&text);
                pending.push_str(&text);
                if chunking != Chunking::Whole {
                    loop {
                        let end = match (chunking, published) {
                            (Chunking::Phrase, 0) => match (clause_end(&pending, FIRST_PHRASE_WORDS), sentence_end(&pending)) {
                                (Some(c), Some(s)) => Some(c.min(s)),
                                (c, s) => c.or(s),
                            },
                            _ => sentence_end(&pending),
                        };
                        let Some(end) = end else { break };
                        let rest = pending.split_off(end);
                        let chunk = std::mem::replace(&mut pending, rest);
                        publish(StageItem { text: Some(chunk), ..StageItem::default() });
                        published += 1;
                    }
                }
            }
            Event::Done { finish, prompt_tokens, completion_tokens } => {
                // The last item says how the generation ended and what it counted (the usage of an answer).
                // When the last sentence already went out, it is an empty text.
                publish(StageItem {
                    text: Some(pending),
                    finish_reason: Some(finish.as_str().to_string()),
                    json: Some(json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}).to_string()),
                    ..StageItem::default()
                });
                return Ok(());
            }
            Event::Failed(e) => return Err(e.into()),
        }
    }
    Err(StageError::Truncated)
}

/// Passes the closing quotes and brackets right after an end mark (`He said "no." Then`): they belong to the
/// piece the mark ends.
fn skip_closers(chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>) {
    while chars.next_if(|&(_, c)| matches!(c, '"' | '\'' | '”' | '’' | ')' | ']' | '»' | '」')).is_some() {}
}

/// Words a first phrase holds at least before a clause mark may end it (`output_chunks = "phrase"`).
const FIRST_PHRASE_WORDS: usize = 4;

/// The byte offset just past the first clause mark (`,` `;` `:` `—` `–`) that has at least `min_words` words
/// before it and white space after it, when the text after it has started.
fn clause_end(text: &str, min_words: usize) -> Option<usize> {
    let mut words = 0;
    let mut in_word = false;
    let mut chars = text.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if c.is_whitespace() {
            in_word = false;
            continue;
        }
        if !in_word {
            in_word = true;
            words += 1;
        }
        if matches!(c, ',' | ';' | ':' | '—' | '–') && words >= min_words {
            skip_closers(&mut chars);
            let mut end = None;
            while let Some(&(j, w)) = chars.peek() {
                if !w.is_whitespace() {
                    break;
                }
                chars.next();
                end = Some(j + w.len_utf8());
            }
            if let (Some(end), Some(_)) = (end, chars.peek()) {
                return Some(end);
            }
            in_word = false;
        }
    }
    None
}

/// A whole text cut into sentences the way an LLM stage with `output_chunks = "sentence"` cuts its output;
/// the pieces concatenate to the text.
pub fn sentences(text: &str) -> Vec<String> {
    let mut rest = text;
    let mut out = Vec::new();
    while let Some(end) = sentence_end(rest) {
        out.push(rest[..end].to_string());
        rest = &rest[end..];
    }
    if !rest.is_empty() {
        out.push(rest.to_string());
    }
    out
}

/// The byte offset just past the first complete sentence of `text` (its end mark and the white space after
/// it), when the text after it has started: a sentence is only known complete once the next one begins.
fn sentence_end(text: &str) -> Option<usize> {
    let mut chars = text.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if matches!(c, '.' | '!' | '?' | ';' | ':' | '\n' | '。' | '！' | '？') {
            skip_closers(&mut chars);
            let mut end = None;
            while let Some(&(j, w)) = chars.peek() {
                if w.is_whitespace() {
                    chars.next();
                    end = Some(j + w.len_utf8());
                } else {
                    break;
                }
            }
            if let (Some(end), Some(_)) = (end, chars.peek()) {
                return Some(end);
            }
        }
    }
    None
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null (missing)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An LLM stage's sampling parameters from its JSON object (the stage's defaults with the request's on top).
fn sampling(params: &str) -> Result<decoding::Sampling, StageError> {
    let map: Map<String, Value> = serde_json::from_str(params).unwrap_or_default();
    let bad = |key: &str, expected| StageError::BadParam { key: key.to_string(), expected };
    let float = |key: &str| -> Result<Option<f32>, StageError> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_f64().map(|f| Some(f as f32)).ok_or_else(|| bad(key, "must be a number")),
        }
    };
    let uint = |key: &str| -> Result<Option<u32>, StageError> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| bad(key, "must be a whole number")),
        }
    };
    let stop = match map.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| bad("stop", "must be a string or a list of strings")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("stop", "must be a string or a list of strings")),
    };
    Ok(decoding::Sampling {
        max_tokens: uint("max_tokens")?,
        temperature: float("temperature")?,
        top_p: float("top_p")?,
        top_k: uint("top_k")?.map(|k| k.min(i32::MAX as u32) as i32),
        seed: match map.get("seed") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| bad("seed", "must be a whole number"))?),
        },
        stop,
        presence_penalty: float("presence_penalty")?.unwrap_or(0.0),
        frequency_penalty: float("frequency_penalty")?.unwrap_or(0.0),
        top_logprobs: None,
    })
}

/// Waits for item `index` of a stage's outputs: `Ok(None)` when the stage finished with fewer, `Err` when it
/// failed.
async fn next_item(rx: &mut watch::Receiver<Progress>, index: usize) -> Result<Option<StageItem>, ()> {
    loop {
        {
            let progress = rx.borrow_and_update();
            if let Some(item) = progress.items.get(index) {
                return Ok(Some(item.clone()));
            }
            match progress.state {
                State::Done => return Ok(None),
                State::Failed => return Err(()),
                State::Running => {}
            }
        }
        if rx.changed().await.is_err() {
            return Err(());
        }
    }
}

/// Waits for a stage to finish and returns everything it produced.
async fn all_items(mut rx: watch::Receiver<Progress>) -> Result<Vec<StageItem>, ()> {
    let progress = rx.wait_for(|p| p.state != State::Running).await.map_err(|_| ())?;
    if progress.state == State::Failed {
        return Err(());
    }
    Ok(progress.items.clone())
}

/// Renders one stage item for the HTTP API and the CLI, as its stage's `final_output_type` says.
pub fn render(item: &StageItem, ty: OutputType) -> Value {
    match ty {
        OutputType::Text => json!(item.text.clone().unwrap_or_default()),
        OutputType::Tokens => json!(item.token_ids),
        OutputType::Json => match &item.json {
            Some(text) => serde_json::from_str(text).unwrap_or(Value::Null),
            None => Value::Null,
        },
        OutputType::Embedding => {
            let values: Vec<f32> = item
                .tensors
                .iter()
                .find(|(name, t)| name == "embedding" || t.ty == ElementType::Fp32)
                .map(|(_, t)| t.data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
                .unwrap_or_default();
            json!(values)
        }
        OutputType::Audio | OutputType::Image => {
            use base64::Engine as _;
            let tensors: Map<String, Value> = item
                .tensors
                .iter()
                .map(|(name, t)| {
                    let value = json!({
                        "dtype": t.ty.name(),
                        "shape": t.dims,
                        "data": base64::engine::general_purpose::STANDARD.encode(&t.data),
                    });
                    (name.clone(), value)
                })
                .collect();
            json!({"text": item.text, "tensors": tensors})
        }
    }
}

/// The `outputs` of a pipeline answer: one `{stage_id, final_output_type, outputs}` per final stage, where
/// `outputs` lists each input's rendered items, or, for a request of one binary input (an image), that input's
/// items themselves.
pub fn outputs_json(finals: Vec<FinalOutput>, single: bool) -> Value {
    let outputs: Vec<Value> = finals
        .into_iter()
        .map(|f| {
            let mut per_input: Vec<Value> = f
                .outputs
                .iter()
                .map(|items| Value::Array(items.iter().map(|i| render(i, f.final_output_type)).collect()))
                .collect();
            let outputs = if single { per_input.pop().unwrap_or(Value::Array(Vec::new())) } else { Value::Array(per_input) };
            json!({"stage_id": f.stage_id, "final_output_type": f.final_output_type, "outputs": outputs})
        })
        .collect();
    Value::Array(outputs)
}

/// Every pipeline of the server, by name.
#[derive(Default)]
pub struct Pipelines {
    by_name: BTreeMap<String, Arc<Pipeline>>,
}

impl Pipelines {
    pub fn insert(&mut self, pipeline: Pipeline) {
        self.by_name.insert(pipeline.name.clone(), Arc::new(pipeline));
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Pipeline>> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Pipeline>> {
        self.by_name.values()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_end_once_the_next_begins() {
        assert_eq!(sentence_end("Hello there. How"), Some(13));
        assert_eq!(sentence_end("Hello there. "), None);
        assert_eq!(sentence_end("Pi is 3.14 today"), None);
        assert_eq!(sentence_end("Wait! Go"), Some(6));
        assert_eq!(sentence_end("He said \"no.\" Then"), Some(14));
    }

    #[test]
    fn a_first_phrase_ends_at_a_clause_mark_after_four_words() {
        assert_eq!(clause_end("Bonjour, I am glad", 4), None);
        assert_eq!(clause_end("Bonjour, I am glad to see you, my friend", 4), Some(31));
        assert_eq!(clause_end("It costs 3,000 euros a year, they say", 4), Some(29));
        assert_eq!(clause_end("One two three four, ", 4), None);
        assert_eq!(clause_end("Bees make \"honey production,\" a process", 4), Some(30));
    }

    #[test]
    fn sentences_concatenate_to_the_text() {
        let text = "First one. Second one! Third, with a comma, and no end";
        let parts = sentences(text);
        assert_eq!(parts, vec!["First one. ", "Second one! ", "Third, with a comma, and no end"]);
        assert_eq!(parts.concat(), text);
    }

    #[test]
    fn sampling_params_are_typed() {
        let s = sampling(r#"{"max_tokens": 5, "temperature": 0, "stop": "x"}"#).unwrap();
        assert_eq!(s.max_tokens, Some(5));
        assert_eq!(s.stop, vec!["x".to_string()]);
        let err = sampling(r#"{"max_tokens": "many"}"#).unwrap_err();
        assert!(err.to_string().contains("`max_tokens` must be a whole number"), "{err}");
    }
}
