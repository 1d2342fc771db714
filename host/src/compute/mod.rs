//! Native compute with ONNX Runtime: library loading, one session per model on dedicated threads fed by a
//! bounded channel, execution providers, host tensors.
//!
//! Blocking ONNX Runtime calls never run on the async runtime: each model owns threads that read jobs from a
//! bounded channel and answer on a oneshot, so a slow model applies backpressure to its callers only.

pub mod decoder;
pub mod library;
pub mod providers;
pub mod tensor;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::value::ValueType;
use tokio::sync::{mpsc, oneshot};

pub use decoder::{Decoder, DecoderLimits, SeqId};
pub use providers::Provider;
pub use tensor::{ElementType, Tensor, TensorError};

/// Errors of the compute layer.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    #[error(transparent)]
    LibraryNotFound(#[from] library::LibraryNotFound),
    #[error("loading ONNX Runtime from {path}")]
    LoadLibrary { path: PathBuf, #[source] source: ort::LoadDynamicError },
    #[error("ONNX Runtime was already loaded from {loaded}, cannot switch to {wanted}")]
    LibraryMismatch { loaded: PathBuf, wanted: PathBuf },
    #[error("creating the ONNX Runtime environment")]
    Environment(#[source] ort::Error),
    #[error("model file {0} does not exist")]
    ModelMissing(PathBuf),
    #[error("loading model `{model}` from {path}")]
    Session { model: String, path: PathBuf, #[source] source: ort::Error },
    #[error("starting the thread of model `{model}`")]
    Thread { model: String, #[source] source: std::io::Error },
    #[error("model `{model}`: missing input `{name}`")]
    MissingInput { model: String, name: String },
    #[error("model `{model}`: unknown or repeated input `{name}`")]
    UnknownInput { model: String, name: String },
    #[error("model `{model}`: input `{name}` must be {expected:?}, got {actual:?}")]
    InputType { model: String, name: String, expected: ElementType, actual: ElementType },
    #[error("model `{model}`: {source}")]
    Tensor { model: String, #[source] source: TensorError },
    #[error("model `{model}`: ONNX Runtime failed the run: {source}")]
    Run { model: String, #[source] source: ort::Error },
    #[error("model `{0}` has stopped")]
    Stopped(String),
    #[error("model `{model}` is not a decoder this host can drive: {problem}")]
    NotADecoder { model: String, problem: String },
    #[error("model `{model}`: a sequence needs {needed} positions but the KV cache holds {capacity}")]
    ContextFull { model: String, needed: usize, capacity: usize },
    #[error("model `{model}`: all {capacity} rows of the batch are in use")]
    BatchFull { model: String, capacity: usize },
    #[error("model `{model}`: unknown sequence {seq}")]
    UnknownSequence { model: String, seq: u64 },
    #[error("model `{0}`: an empty prompt cannot be decoded")]
    EmptyPrompt(String),
}

/// Settings shared by every model.
#[derive(Clone, Debug)]
pub struct ComputeSettings {
    pub providers: Vec<Provider>,
    /// Threads ONNX Runtime may use inside one run; 0 lets it choose.
    pub intra_threads: usize,
    /// Graph optimizers left out of every session.
    pub disabled_optimizers: Vec<String>,
    /// Jobs that may wait for a model before callers are made to wait.
    pub queue_capacity: usize,
    /// Largest tensor a plugin may create, in bytes.
    pub tensor_limit: usize,
    /// Where the TensorRT engine cache lives.
    pub cache_dir: PathBuf,
}

impl ComputeSettings {
    /// The settings of the `[compute]` config section; the TensorRT engine cache goes under `cache_dir`.
    pub fn new(config: &crate::config::ComputeConfig, cache_dir: PathBuf) -> Self {
        Self {
            providers: config.execution_providers.clone(),
            intra_threads: config.intra_threads,
            disabled_optimizers: config.disabled_optimizers.clone(),
            queue_capacity: config.queue_capacity,
            tensor_limit: config.tensor_limit,
            cache_dir,
        }
    }

    /// The graph options every session gets: full optimisation less the disabled optimizers, and the thread
    /// count. Programs that build sessions themselves (benchmarks) use this too, so they measure the same graph.
    pub fn graph_options(&self, builder: SessionBuilder) -> ort::Result<SessionBuilder> {
        let mut builder = builder.with_optimization_level(GraphOptimizationLevel::Level3)?;
        if !self.disabled_optimizers.is_empty() {
            builder = builder.with_disabled_optimizers(self.disabled_optimizers.join(";"))?;
        }
        if self.intra_threads > 0 {
            builder = builder.with_intra_threads(self.intra_threads)?;
        }
        Ok(builder)
    }
}

/// The process-wide ONNX Runtime environment. ORT can be loaded once per process, so this is a singleton.
#[derive(Clone)]
pub struct Runtime {
    env: ort::environment::Environment,
    pub library: PathBuf,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();
static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Runtime {
    /// Loads ONNX Runtime from `library`, once per process.
    pub fn load(library: &Path) -> Result<Runtime, ComputeError> {
        let _guard = INIT.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rt) = RUNTIME.get() {
            if rt.library != library {
                return Err(ComputeError::LibraryMismatch { loaded: rt.library.clone(), wanted: library.to_path_buf() });
            }
            return Ok(rt.clone());
        }
        let builder = ort::init_from(library)
            .map_err(|source| ComputeError::LoadLibrary { path: library.to_path_buf(), source })?;
        let env = builder.with_name("omnihost").build().map_err(ComputeError::Environment)?;
        let rt = Runtime { env, library: library.to_path_buf() };
        let _ = RUNTIME.set(rt.clone());
        Ok(rt)
    }

    /// A session builder on this environment, for programs that drive ONNX Runtime directly (benchmarks).
    pub fn session_builder(&self) -> Result<ort::session::builder::SessionBuilder, ort::Error> {
        Session::builder(&self.env)
    }

    /// Loads a model and starts its thread; returns once the session is built and warmed up.
    pub fn load_model(&self, name: &str, path: &Path, settings: &ComputeSettings) -> Result<Arc<Model>, ComputeError> {
        if !path.is_file() {
            return Err(ComputeError::ModelMissing(path.to_path_buf()));
        }
        let started = Instant::now();
        let session_err = |source| ComputeError::Session { model: name.to_string(), path: path.to_path_buf(), source };
        let mut builder = Session::builder(&self.env).map_err(session_err)?;
        let providers = providers::register(&mut builder, &settings.providers, name, &settings.cache_dir.join("tensorrt"));
        let mut builder = settings.graph_options(builder).map_err(session_err)?;
        let mut session = builder.commit_from_file(path).map_err(session_err)?;
        let metadata = custom_metadata(&session);
        let inputs = describe(session.inputs().iter().map(|o| (o.name(), o.dtype())));
        let outputs = describe(session.outputs().iter().map(|o| (o.name(), o.dtype())));
        if let Err(e) = warm_up(&mut session, &inputs) {
            tracing::warn!(model = name, error = %e, "warm-up run failed; the first request pays the set-up");
        }
        let (tx, rx) = mpsc::channel::<Job>(settings.queue_capacity.max(1));
        let thread_name = format!("ort-{name}");
        let model_name = name.to_string();
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || serve(session, rx, &model_name))
            .map_err(|source| ComputeError::Thread { model: name.to_string(), source })?;
        let model = Model {
            name: name.to_string(),
            path: path.to_path_buf(),
            inputs,
            outputs,
            metadata,
            providers,
            tensor_limit: settings.tensor_limit,
            tx,
            busy_nanos: AtomicU64::new(0),
        };
        tracing::info!(
            model = name,
            providers = ?model.providers.iter().map(|p| p.name()).collect::<Vec<_>>(),
            ms = started.elapsed().as_millis() as u64,
            "model loaded"
        );
        Ok(Arc::new(model))
    }
}

/// A declared input or output of a model.
#[derive(Clone, Debug)]
pub struct IoInfo {
    pub name: String,
    pub ty: Option<ElementType>,
    /// `-1` for dynamic dimensions.
    pub dims: Vec<i64>,
}

fn describe<'a>(items: impl Iterator<Item = (&'a str, &'a ValueType)>) -> Vec<IoInfo> {
    items
        .map(|(name, ty)| match ty {
            ValueType::Tensor { ty, shape, .. } => {
                IoInfo { name: name.to_string(), ty: ElementType::from_ort(*ty), dims: shape.to_vec() }
            }
            _ => IoInfo { name: name.to_string(), ty: None, dims: Vec::new() },
        })
        .collect()
}

/// The custom metadata map of a model file. A file without one (or one ONNX Runtime cannot read) has none.
fn custom_metadata(session: &Session) -> Vec<(String, String)> {
    let Ok(meta) = session.metadata() else { return Vec::new() };
    let keys = meta.custom_keys().unwrap_or_default();
    let mut pairs: Vec<(String, String)> = keys.into_iter().filter_map(|k| meta.custom(&k).map(|v| (k, v))).collect();
    pairs.sort();
    pairs
}

/// Runs the model once on zero-filled inputs (dynamic dimensions filled in), so kernels and arenas are set
/// up before the model reports ready.
fn warm_up(session: &mut Session, inputs: &[IoInfo]) -> Result<(), ComputeError> {
    let mut values = Vec::with_capacity(inputs.len());
    for input in inputs {
        let Some(ty) = input.ty else { return Ok(()) };
        // A dynamic batch is 1; other dynamic dimensions are 32, a size convolutional models (whose spatial
        // sides must be multiples of 32 and survive downsampling) and sequence models both accept.
        let dims: Vec<u32> = input
            .dims
            .iter()
            .enumerate()
            .map(|(i, &d)| match d {
                d if d > 0 => d as u32,
                _ if i == 0 => 1,
                _ => 32,
            })
            .collect();
        let elements = dims.iter().map(|&d| d as usize).product::<usize>();
        // Floats are 1, not 0: a float input may be a divisor (a speech model's `speed`), and zero there fails
        // the run; integer inputs are ids and masks, for which 0 is the safe value.
        let one: &[u8] = match ty {
            ElementType::Fp32 => &[0x00, 0x00, 0x80, 0x3f],
            ElementType::Fp64 => &[0, 0, 0, 0, 0, 0, 0xf0, 0x3f],
            ElementType::Fp16 => &[0x00, 0x3c],
            ElementType::Bf16 => &[0x80, 0x3f],
            _ => &[],
        };
        let data = if one.is_empty() { vec![0; elements * ty.size()] } else { one.repeat(elements) };
        let tensor = Tensor::new(dims, ty, data, usize::MAX)
            .map_err(|source| ComputeError::Tensor { model: "warm-up".into(), source })?;
        let value = tensor.to_ort().map_err(|source| ComputeError::Tensor { model: "warm-up".into(), source })?;
        values.push((input.name.clone(), value));
    }
    session.run(values).map(drop).map_err(|source| ComputeError::Run { model: "warm-up".into(), source })
}

struct Job {
    inputs: Vec<(String, Tensor)>,
    reply: oneshot::Sender<Result<Vec<(String, Tensor)>, ComputeError>>,
}

fn serve(mut session: Session, mut rx: mpsc::Receiver<Job>, model: &str) {
    while let Some(job) = rx.blocking_recv() {
        let result = run_once(&mut session, job.inputs, model);
        // The caller may have gone away (timeout, cancelled request); nothing to do then.
        let _ = job.reply.send(result);
    }
    tracing::debug!(model, "model thread stopped");
}

fn run_once(session: &mut Session, inputs: Vec<(String, Tensor)>, model: &str) -> Result<Vec<(String, Tensor)>, ComputeError> {
    let tensor_err = |source| ComputeError::Tensor { model: model.to_string(), source };
    let mut values = Vec::with_capacity(inputs.len());
    for (name, tensor) in inputs {
        values.push((name, tensor.to_ort().map_err(tensor_err)?));
    }
    let outputs = session.run(values).map_err(|source| ComputeError::Run { model: model.to_string(), source })?;
    let mut result = Vec::with_capacity(outputs.len());
    for (name, value) in outputs.iter() {
        result.push((name.to_string(), Tensor::from_ort(name, &value).map_err(tensor_err)?));
    }
    Ok(result)
}

/// A loaded model, shared by every plugin granted it.
#[derive(Debug)]
pub struct Model {
    pub name: String,
    pub path: PathBuf,
    pub inputs: Vec<IoInfo>,
    pub outputs: Vec<IoInfo>,
    /// The model file's custom metadata (key, value), read once at load.
    pub metadata: Vec<(String, String)>,
    /// The execution providers ONNX Runtime accepted for this model, in priority order.
    pub providers: Vec<Provider>,
    pub tensor_limit: usize,
    tx: mpsc::Sender<Job>,
    busy_nanos: AtomicU64,
}

/// Counters of a model since it was loaded.
#[derive(Clone, Copy, Debug, Default)]
pub struct ModelStats {
    /// Time callers spent waiting for runs (queue and run), summed.
    pub busy: std::time::Duration,
}

impl Model {
    /// Checks the inputs against the model's signature, then queues the run; waits while the queue is full.
    pub async fn run(&self, inputs: Vec<(String, Tensor)>) -> Result<Vec<(String, Tensor)>, ComputeError> {
        let mut seen = HashSet::new();
        for (name, tensor) in &inputs {
            let declared = self.inputs.iter().find(|i| &i.name == name);
            match declared {
                Some(info) if seen.insert(name.as_str()) => match info.ty {
                    Some(expected) if expected != tensor.ty => {
                        return Err(ComputeError::InputType {
                            model: self.name.clone(),
                            name: name.clone(),
                            expected,
                            actual: tensor.ty,
                        });
                    }
                    _ => {}
                },
                _ => return Err(ComputeError::UnknownInput { model: self.name.clone(), name: name.clone() }),
            }
        }
        if let Some(missing) = self.inputs.iter().find(|i| !seen.contains(i.name.as_str())) {
            return Err(ComputeError::MissingInput { model: self.name.clone(), name: missing.name.clone() });
        }
        let started = Instant::now();
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job { inputs, reply }).await.map_err(|_| ComputeError::Stopped(self.name.clone()))?;
        let result = rx.await.map_err(|_| ComputeError::Stopped(self.name.clone()))?;
        self.busy_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        result
    }

    pub fn stats(&self) -> ModelStats {
        ModelStats {
            busy: std::time::Duration::from_nanos(self.busy_nanos.load(Ordering::Relaxed)),
        }
    }
}
