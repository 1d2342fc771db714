//! Command-line interface: the roles (`serve`, `controller`, `worker`, `api`) and the clients of a running
//! cluster (`model ...`, `plugin ...`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "omnihost", version, about = "Serve model pipelines: WebAssembly plugins for logic, ONNX Runtime for compute")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the models and plugins of a config file (controller, workers and API in one process).
    Serve(ServeArgs),
    /// Run the registry service only (scale-out).
    Controller(ServeArgs),
    /// Run a worker host: serve the config's models, register them with `--controller`, heartbeat.
    Worker(ServeArgs),
    /// Run the OpenAI-compatible API, routing to workers found through `--controller`.
    Api(ServeArgs),
    /// Manage the models of a running cluster.
    Model {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Check, run and replay multi-stage pipelines offline (no server needed).
    Pipeline {
        #[command(subcommand)]
        command: PipelineCommand,
    },
    /// Manage the plugins of a running server.
    Plugin {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The config file. Without one, `controller` and `api` run on defaults (an SQLite registry under
    /// ./.omnihost, loopback), and `serve` uses ./examples/omnihost.toml when run from a checkout.
    #[arg(long, env = "OMNIHOST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (overrides `server.listen`).
    #[arg(long, env = "OMNIHOST_LISTEN")]
    pub listen: Option<String>,
    /// API keys accepted on /v1, comma-separated (added to `server.api_keys`).
    #[arg(long, env = "OMNIHOST_API_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub api_keys: Vec<String>,
    /// Token required on /admin and the controller and worker routes (without one, the process listens on
    /// loopback only).
    #[arg(long, env = "OMNIHOST_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// The controller's URL (worker and api roles; overrides `cluster.controller`).
    #[arg(long, env = "OMNIHOST_CONTROLLER")]
    pub controller: Option<String>,
    /// `host:port` other processes reach this worker host at (overrides `cluster.advertise`).
    #[arg(long, env = "OMNIHOST_ADVERTISE")]
    pub advertise: Option<String>,
    /// PostgreSQL URL for a shared registry (selects the `postgres` store; overrides `registry.url`).
    #[arg(long, env = "OMNIHOST_REGISTRY_URL", hide_env_values = true)]
    pub registry_url: Option<String>,
    /// Keep every pipeline request's stage inputs and outputs under this folder, for `pipeline replay`.
    #[arg(long)]
    pub record: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// Check a pipeline file: its stage graph, edge types and final outputs, and that every processor
    /// component implements the pipeline-processor world. Exits non-zero naming the stage at fault.
    Validate {
        file: PathBuf,
        /// The server config whose served models the pipeline's `worker` engines name.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run a pipeline on prompts or an image and print its final outputs as JSON (vllm-omni's
    /// `OmniLLM.generate`).
    Run {
        file: PathBuf,
        /// A prompt (repeat for several).
        #[arg(long, conflicts_with = "image")]
        prompt: Vec<String>,
        /// An image file (PNG or JPEG).
        #[arg(long)]
        image: Option<PathBuf>,
        /// A JSON list with one object of sampling parameters per stage.
        #[arg(long)]
        sampling_params_list: Option<String>,
        /// The server config whose models the pipeline's `worker` engines name.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Keep the stages' inputs and outputs under this folder, for `pipeline replay`.
        #[arg(long)]
        record: Option<PathBuf>,
    },
    /// Run a new processor on recorded requests of one stage and print what it returns differently.
    Replay {
        /// The folder given to `--record`.
        dir: PathBuf,
        /// The pipeline file the recording was made with (for the processor's grants and config).
        #[arg(long)]
        pipeline: PathBuf,
        #[arg(long)]
        stage: u32,
        /// The new component.
        #[arg(long)]
        processor: PathBuf,
    },
}

/// Which running server a client command talks to.
#[derive(Debug, Args)]
pub struct Target {
    /// Base URL of the server.
    #[arg(long, env = "OMNIHOST_CONTROLLER", default_value = "http://127.0.0.1:8080", global = true)]
    pub controller: String,
    /// Admin token, when the server requires one.
    #[arg(long, env = "OMNIHOST_ADMIN_TOKEN", hide_env_values = true, global = true)]
    pub admin_token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// List plugins with their current version.
    List,
    /// Replace a plugin's component while the server runs.
    Swap {
        /// The plugin's name.
        name: String,
        /// The new component (`.wasm`).
        file: PathBuf,
    },
    /// Show the versions a plugin has had.
    History { name: String },
    /// Go back to the previous version, or to the one whose sha256 starts with `--to`.
    Rollback {
        name: String,
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// List registered model instances.
    List {
        /// Only this model (a name or `name@type`).
        #[arg(long)]
        model: Option<String>,
        /// Include unhealthy instances.
        #[arg(long)]
        all: bool,
    },
    /// Start a model on a worker host.
    Start {
        model: String,
        #[arg(long, default_value = "text2vec")]
        worker_type: String,
        /// The worker-adapter plugin (loaded on that host) to serve it with.
        #[arg(long)]
        plugin: String,
        /// The worker host's URL (default: the controller's, which is the worker host under `serve`).
        #[arg(long)]
        worker: Option<String>,
        /// Extra parameters, `name=value` (max_batch, max_delay_ms, queue_capacity, max_in_flight, concurrency_limit, weight).
        #[arg(long = "param", value_parser = parse_param)]
        params: Vec<(String, String)>,
    },
    /// Stop a model on every host serving it.
    Stop {
        model: String,
        #[arg(long, default_value = "text2vec")]
        worker_type: String,
    },
    /// Restart a model on every host serving it.
    Restart {
        model: String,
        #[arg(long, default_value = "text2vec")]
        worker_type: String,
    },
}

fn parse_param(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("`{text}` is not name=value"))
}
