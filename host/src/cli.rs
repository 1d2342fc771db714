//! Command-line interface: `omnihost serve`, and `omnihost plugin ...` against a running server.

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
    /// The config file.
    #[arg(long, env = "OMNIHOST_CONFIG", default_value = "examples/omnihost.toml")]
    pub config: PathBuf,
    /// Address to listen on (overrides `server.listen`).
    #[arg(long, env = "OMNIHOST_LISTEN")]
    pub listen: Option<String>,
    /// API keys accepted on /v1, comma-separated (added to `server.api_keys`).
    #[arg(long, env = "OMNIHOST_API_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub api_keys: Vec<String>,
    /// Token required on /admin (without one, /admin answers on loopback only).
    #[arg(long, env = "OMNIHOST_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
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
