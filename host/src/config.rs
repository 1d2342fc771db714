//! The server's configuration: one TOML file, overridden by command-line flags and environment variables.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::compute::Provider;

/// Errors reading or checking a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config {path}")]
    Read { path: PathBuf, #[source] source: std::io::Error },
    #[error("parsing config {path}")]
    Parse { path: PathBuf, #[source] source: Box<toml::de::Error> },
    #[error("config {path}: {problem}")]
    Invalid { path: PathBuf, problem: Problem },
}

/// What is wrong in an otherwise well-formed config.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("plugin `{0}` is defined twice")]
    DuplicatePlugin(String),
    #[error("model `{0}` is defined twice")]
    DuplicateModel(String),
    #[error("model `{model}` uses plugin `{plugin}`, which is not defined")]
    UnknownPlugin { model: String, plugin: String },
    #[error("model `{model}` uses plugin `{plugin}`, which is a {world} plugin, not a worker adapter")]
    NotAWorker { model: String, plugin: String, world: &'static str },
    #[error("model name `{0}` must be non-empty and must not contain `@`")]
    BadModelName(String),
}

/// A secret string (API key, admin token): never printed by `Debug`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub compute: ComputeConfig,
    #[serde(default)]
    pub plugins: Vec<PluginConfig>,
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    /// Multi-stage pipelines, each in its own file.
    #[serde(default)]
    pub pipelines: Vec<PipelineRef>,
    #[serde(default)]
    pub registry: RegistryConfig,
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// The folder relative paths are resolved against (the config file's folder).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on; `--listen` and `OMNIHOST_LISTEN` override it.
    pub listen: String,
    /// Where precompiled plugins and engine caches are kept.
    pub data_dir: PathBuf,
    /// Largest request body accepted, in bytes (413 beyond it). Plugin uploads get `plugin_body_limit`.
    pub body_limit: usize,
    pub plugin_body_limit: usize,
    /// Most inputs in one embeddings request (OpenAI's limit is 2048).
    pub max_inputs_per_request: usize,
    /// Keys accepted on `/v1`; empty means open. `--api-keys` and `OMNIHOST_API_KEYS` add to them.
    pub api_keys: Vec<Secret>,
    /// Token for `/admin`; without one, `/admin` answers on loopback only.
    pub admin_token: Option<Secret>,
    /// On SIGTERM or Ctrl-C, how long requests and streams already running may take to finish (new connections
    /// are refused at once); past it they are cut off and the process exits anyway.
    pub shutdown_grace_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from(".omnihost"),
            body_limit: 4 << 20,
            plugin_body_limit: 64 << 20,
            max_inputs_per_request: 2048,
            api_keys: Vec::new(),
            admin_token: None,
            shutdown_grace_ms: 30_000,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ComputeConfig {
    /// Path of `libonnxruntime.so`; otherwise `ORT_DYLIB_PATH`, then the setup folder.
    pub library: Option<PathBuf>,
    /// Execution providers in priority order; unavailable ones fall back with a warning.
    pub execution_providers: Vec<Provider>,
    /// Threads per run; 0 lets ONNX Runtime choose.
    pub intra_threads: usize,
    /// ONNX Runtime graph optimizers to leave out of every session (e.g. `SkipLayerNormFusion`), for a fused
    /// kernel that is slower on this hardware than what it replaces. ONNX Runtime ignores names it does not know.
    pub disabled_optimizers: Vec<String>,
    /// Runs that may wait per model before callers wait.
    pub queue_capacity: usize,
    /// Largest tensor a plugin may create, in bytes.
    pub tensor_limit: usize,
}

impl Default for ComputeConfig {
    fn default() -> Self {
        Self {
            library: None,
            execution_providers: vec![Provider::Cpu],
            intra_threads: 0,
            disabled_optimizers: Vec::new(),
            queue_capacity: 64,
            tensor_limit: 256 << 20,
        }
    }
}

/// Where the controller keeps its registry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Forgets everything when the process ends.
    Memory,
    /// A file under the data dir (the default): survives restarts.
    #[default]
    Sqlite,
    /// A PostgreSQL database shared by several controllers.
    Postgres,
}

/// The registry a controller keeps, and how it judges health.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    pub store: StoreKind,
    /// SQLite file; default `<data_dir>/registry.sqlite3`.
    pub path: Option<PathBuf>,
    /// PostgreSQL URL (`postgres://user:password@host:port/db`); `--registry-url` / `OMNIHOST_REGISTRY_URL`.
    pub url: Option<Secret>,
    pub max_connections: u32,
    /// How often the sweeper looks for silent instances.
    pub sweep_interval_ms: u64,
    /// Silence after which an instance is marked unhealthy.
    pub heartbeat_timeout_ms: u64,
    /// Silence after which an unhealthy instance is removed from the registry.
    pub evict_after_ms: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            store: StoreKind::Sqlite,
            path: None,
            url: None,
            max_connections: 16,
            sweep_interval_ms: 5_000,
            heartbeat_timeout_ms: 15_000,
            evict_after_ms: 24 * 3600 * 1000,
        }
    }
}

/// How this process takes part in a cluster.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The controller to register with (worker role) or resolve models through (API role); `--controller`.
    pub controller: Option<String>,
    /// `host:port` other processes reach this worker host at; default the listen address. `--advertise`.
    pub advertise: Option<String>,
    /// How often each worker heartbeats.
    pub heartbeat_interval_ms: u64,
    /// How long the API server reuses an instance lookup before asking the registry again.
    pub lookup_cache_ms: u64,
    /// Timeout of a request forwarded to a remote worker.
    pub forward_timeout_ms: u64,
    /// Where the worker manager remembers models started or shut down at run time; default
    /// `<data_dir>/started-models.json`. Give each worker host sharing a data dir its own.
    pub state_file: Option<PathBuf>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self { controller: None, advertise: None, heartbeat_interval_ms: 5_000, lookup_cache_ms: 1_000, forward_timeout_ms: 60_000, state_file: None }
    }
}

/// Which WIT world a plugin implements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum World {
    #[default]
    WorkerAdapter,
    StageProcessor,
    /// A language model whose decode loop the host drives (`decoding` export, since WIT 0.1.1).
    LlmAdapter,
    /// A pipeline stage's processor (`processor` export, since WIT 0.1.2).
    PipelineProcessor,
}

impl World {
    pub fn name(self) -> &'static str {
        match self {
            Self::WorkerAdapter => "worker-adapter",
            Self::StageProcessor => "stage-processor",
            Self::LlmAdapter => "llm-adapter",
            Self::PipelineProcessor => "pipeline-processor",
        }
    }

    /// Worlds whose components export the `worker` interface, so they can serve a model.
    pub fn serves_models(self) -> bool {
        matches!(self, Self::WorkerAdapter | Self::LlmAdapter)
    }

    /// Whether a pipeline stage can use it as its `input_processor`.
    pub fn processes_stages(self) -> bool {
        matches!(self, Self::StageProcessor | Self::PipelineProcessor)
    }
}

/// A pipeline the server serves: its file (vllm-omni's stage configs, see `pipeline::config`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineRef {
    pub file: PathBuf,
    /// Keep every request's stage inputs and outputs under this folder (`--record` sets it for all).
    pub record: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    pub name: String,
    /// The component file (`.wasm`).
    pub component: PathBuf,
    #[serde(default)]
    pub world: World,
    /// A folder granted read-only to the plugin, visible to it as `/data`.
    pub data_dir: Option<PathBuf>,
    /// ONNX models the plugin may open through `compute.open`, by name.
    #[serde(default)]
    pub onnx: BTreeMap<String, PathBuf>,
    /// Decoders with a KV cache whose generation loop the host drives for an `llm-adapter` plugin, by name.
    #[serde(default)]
    pub decoders: BTreeMap<String, DecoderConfig>,
    /// Values the plugin reads through its `config` import.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    #[serde(default)]
    pub limits: Limits,
}

/// A decoder ONNX model and the limits of its continuous batch. Memory is bounded by these: the KV cache holds
/// at most `max_sequences` rows of `max_context` positions.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecoderConfig {
    pub path: PathBuf,
    /// Sequences decoded together in one batch; more wait in the queue.
    #[serde(default = "default_max_sequences")]
    pub max_sequences: usize,
    /// Positions (prompt and completion) of one sequence's KV cache; longer prompts are refused.
    #[serde(default = "default_max_context")]
    pub max_context: usize,
    /// Prompt tokens run in one step; a long prompt's prefill is cut into chunks of this many, with decode steps
    /// of running sequences between them, so it never stalls them for longer than one chunk.
    #[serde(default = "default_prefill_chunk")]
    pub prefill_chunk: usize,
    /// Sequences that may wait for a place in the batch; more are refused with 429.
    #[serde(default = "default_decoder_queue")]
    pub queue_capacity: usize,
}

fn default_max_sequences() -> usize {
    16
}

fn default_max_context() -> usize {
    2048
}

fn default_prefill_chunk() -> usize {
    128
}

fn default_decoder_queue() -> usize {
    256
}

/// Per-call limits and instance reuse for one plugin.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wall-clock budget of one call, host compute included.
    pub timeout_ms: u64,
    /// Cap on the plugin's linear memory.
    pub memory_mib: u64,
    /// Optional fuel (instruction budget) per call.
    pub fuel: Option<u64>,
    /// An instance serves this many calls, then is recycled.
    pub max_calls_per_instance: u32,
    /// Idle instances kept warm.
    pub pool_size: usize,
    /// Calls that may run at once; more wait.
    pub max_concurrency: usize,
    /// A fresh instance for every call (no state survives between calls).
    pub fresh_instance_per_call: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout_ms: 30_000,
            memory_mib: 256,
            fuel: None,
            max_calls_per_instance: 10_000,
            pool_size: 4,
            max_concurrency: 8,
            fresh_instance_per_call: false,
        }
    }
}

/// The worker types DB-GPT's cluster knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerType {
    Llm,
    Text2vec,
    Reranker,
    Pipeline,
}

impl WorkerType {
    pub fn name(self) -> &'static str {
        match self {
            Self::Llm => "llm",
            Self::Text2vec => "text2vec",
            Self::Reranker => "reranker",
            Self::Pipeline => "pipeline",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == text)
    }

    pub const ALL: [WorkerType; 4] = [Self::Llm, Self::Text2vec, Self::Reranker, Self::Pipeline];
}

#[derive(Clone, Debug, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The name clients use (`model` in requests).
    pub name: String,
    pub worker_type: WorkerType,
    /// The worker-adapter plugin serving it.
    pub plugin: String,
    #[serde(default)]
    pub batch: BatchConfig,
    /// Requests in flight at once (queued or running); more are refused with 429 (DB-GPT's
    /// `limit_model_concurrency`).
    #[serde(default = "default_concurrency_limit")]
    pub concurrency_limit: usize,
    /// Share of traffic this host's instance gets relative to other instances of the model.
    #[serde(default = "default_weight")]
    pub weight: f64,
}

impl ModelConfig {
    /// A model served by `plugin` with every other setting at its default.
    pub fn new(name: &str, worker_type: WorkerType, plugin: &str) -> Self {
        Self {
            name: name.to_string(),
            worker_type,
            plugin: plugin.to_string(),
            batch: BatchConfig::default(),
            concurrency_limit: default_concurrency_limit(),
            weight: default_weight(),
        }
    }
}

fn default_concurrency_limit() -> usize {
    1024
}

fn default_weight() -> f64 {
    1.0
}

/// Dynamic batching of embedding requests.
#[derive(Clone, Debug, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Most texts in one batch.
    pub max_batch: usize,
    /// Longest a request waits for others to join its batch.
    pub max_delay_ms: u64,
    /// Requests that may wait; more are refused with 429.
    pub queue_capacity: usize,
    /// Batches handed to the plugin at once (never more than its `max_concurrency`). One by default: requests
    /// that arrive while a batch runs all join the next one, and a CPU model runs one big batch faster than
    /// several small ones (each run has a fixed cost, and the plugin can sort a big batch by length to pad
    /// less). Two overlap the next batch's tokenising with the current run, which pays where pre-processing is
    /// slow next to the model.
    pub max_in_flight: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self { max_batch: 32, max_delay_ms: 2, queue_capacity: 1024, max_in_flight: 1 }
    }
}

impl Config {
    /// Reads, parses and checks a config file; relative paths in it are relative to its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, &base).map_err(|e| match e {
            ParseError::Toml(source) => ConfigError::Parse { path: path.into(), source },
            ParseError::Invalid(problem) => ConfigError::Invalid { path: path.into(), problem },
        })
    }

    /// Parses config text; relative paths resolve against `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Config, ParseError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ParseError::Toml(Box::new(e)))?;
        config.base_dir = base_dir.to_path_buf();
        config.validate().map_err(ParseError::Invalid)?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), Problem> {
        let mut names = std::collections::HashSet::new();
        for p in &self.plugins {
            if !names.insert(&p.name) {
                return Err(Problem::DuplicatePlugin(p.name.clone()));
            }
        }
        let mut models = std::collections::HashSet::new();
        for m in &self.models {
            if m.name.trim().is_empty() || m.name.contains('@') {
                return Err(Problem::BadModelName(m.name.clone()));
            }
            if !models.insert(&m.name) {
                return Err(Problem::DuplicateModel(m.name.clone()));
            }
            let plugin = self.plugins.iter().find(|p| p.name == m.plugin).ok_or_else(|| Problem::UnknownPlugin {
                model: m.name.clone(),
                plugin: m.plugin.clone(),
            })?;
            if !plugin.world.serves_models() {
                return Err(Problem::NotAWorker { model: m.name.clone(), plugin: m.plugin.clone(), world: plugin.world.name() });
            }
        }
        Ok(())
    }

    /// Resolves a path from the config against the config file's folder.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() { path.to_path_buf() } else { self.base_dir.join(path) }
    }
}

/// Errors of [`Config::parse`], before a file path is attached.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error(transparent)]
    Toml(Box<toml::de::Error>),
    #[error(transparent)]
    Invalid(Problem),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_rejected() {
        let err = Config::parse("[server]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n", Path::new(".")).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn models_must_name_a_worker_plugin() {
        let text = r#"
            [[plugins]]
            name = "stage"
            component = "x.wasm"
            world = "stage-processor"
            [[models]]
            name = "m"
            worker_type = "text2vec"
            plugin = "stage"
        "#;
        let err = Config::parse(text, Path::new(".")).unwrap_err();
        assert!(matches!(err, ParseError::Invalid(Problem::NotAWorker { .. })), "{err}");
        let missing = text.replace("plugin = \"stage\"", "plugin = \"nope\"");
        let err = Config::parse(&missing, Path::new(".")).unwrap_err();
        assert!(matches!(err, ParseError::Invalid(Problem::UnknownPlugin { .. })), "{err}");
    }

    #[test]
    fn the_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/omnihost.toml");
        let config = Config::load(&path).unwrap();
        assert_eq!(config.models[0].name, "all-MiniLM-L6-v2");
        assert_eq!(config.models[0].worker_type, WorkerType::Text2vec);
        assert_eq!(config.compute.execution_providers, vec![Provider::Cpu]);
        assert!(config.resolve(&config.plugins[0].component).ends_with("plugins/dist/embed_minilm.wasm"));
    }

    #[test]
    fn secrets_do_not_print() {
        let s = ServerConfig { api_keys: vec![Secret::new("sk-very-secret")], ..Default::default() };
        assert!(!format!("{s:?}").contains("sk-very-secret"));
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let c = Config::parse("", Path::new("/etc/omnihost")).unwrap();
        assert_eq!(c.resolve(Path::new("a.wasm")), PathBuf::from("/etc/omnihost/a.wasm"));
        assert_eq!(c.resolve(Path::new("/abs.wasm")), PathBuf::from("/abs.wasm"));
    }
}
