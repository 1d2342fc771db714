//! The `omnihost` binary.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use omnihost::config::{Config, Secret};
use omnihost_cli::{Cli, Command, PluginCommand, ServeArgs, Target};
use serde_json::Value;

#[path = "cli.rs"]
mod omnihost_cli;

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Plugin { target, command } => plugin(target, command).await,
        }
    })
}

async fn serve(args: ServeArgs) -> Result<()> {
    let mut config = Config::load(&args.config).with_context(|| format!("loading {}", args.config.display()))?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    config.server.api_keys.extend(args.api_keys.into_iter().filter(|k| !k.is_empty()).map(Secret::new));
    if let Some(token) = args.admin_token.filter(|t| !t.is_empty()) {
        config.server.admin_token = Some(Secret::new(token));
    }
    let listener = tokio::net::TcpListener::bind(&config.server.listen)
        .await
        .with_context(|| format!("listening on {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!("listening on http://{addr} (ready once models and plugins are loaded: GET /health/ready)");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    };
    omnihost::server::serve(config, listener, shutdown).await.map_err(|e| {
        anyhow::anyhow!("{}", omnihost::http::error::chain(&e))
    })
}

async fn plugin(target: Target, command: PluginCommand) -> Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(300)).build()?;
    let base = target.controller.trim_end_matches('/').to_string();
    let auth = |r: reqwest::RequestBuilder| match &target.admin_token {
        Some(t) => r.bearer_auth(t),
        None => r,
    };
    let response = match &command {
        PluginCommand::List => auth(client.get(format!("{base}/admin/plugins"))).send().await,
        PluginCommand::Swap { name, file } => {
            let bytes = tokio::fs::read(file).await.with_context(|| format!("reading {}", file.display()))?;
            auth(client.put(format!("{base}/admin/plugins/{name}")).body(bytes)).send().await
        }
        PluginCommand::History { name } => auth(client.get(format!("{base}/admin/plugins/{name}/history"))).send().await,
        PluginCommand::Rollback { name, to } => {
            let body = serde_json::json!({ "sha256": to });
            auth(client.post(format!("{base}/admin/plugins/{name}/rollback")).json(&body)).send().await
        }
    }
    .with_context(|| format!("contacting {base}"))?;
    let status = response.status();
    let body: Value = response.json().await.context("reading the server's answer")?;
    if !status.is_success() {
        let message = body["error"]["message"].as_str().unwrap_or("(no message)");
        bail!("{status}: {message}");
    }
    match command {
        PluginCommand::List => {
            println!("{:<20} {:<16} {:<14} {:<24} {:<10} ADAPTER", "PLUGIN", "WORLD", "SHA256", "LOADED", "SOURCE");
            for p in body["plugins"].as_array().into_iter().flatten() {
                let v = &p["current"];
                println!(
                    "{:<20} {:<16} {:<14} {:<24} {:<10} {}",
                    p["name"].as_str().unwrap_or(""),
                    p["world"].as_str().unwrap_or(""),
                    v["sha256"].as_str().unwrap_or("").get(..12).unwrap_or(""),
                    v["loaded_at"].as_str().unwrap_or(""),
                    v["source"].as_str().unwrap_or(""),
                    v["adapter"].as_str().unwrap_or("-"),
                );
            }
        }
        PluginCommand::History { .. } => {
            let current = body["current"].as_str().unwrap_or("");
            for v in body["history"].as_array().into_iter().flatten() {
                let sha = v["sha256"].as_str().unwrap_or("");
                let mark = if sha == current { "*" } else { " " };
                println!("{mark} {} {} {}", sha.get(..12).unwrap_or(""), v["loaded_at"].as_str().unwrap_or(""), v["source"].as_str().unwrap_or(""));
            }
        }
        PluginCommand::Swap { name, .. } | PluginCommand::Rollback { name, .. } => {
            let v = &body["version"];
            println!(
                "{name} now serves {} ({})",
                v["sha256"].as_str().unwrap_or("").get(..12).unwrap_or(""),
                v["adapter"].as_str().unwrap_or("-")
            );
        }
    }
    Ok(())
}
