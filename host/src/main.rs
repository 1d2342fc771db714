//! The `omnihost` binary.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use omnihost::config::{Config, Secret, StoreKind, WorkerType};
use omnihost::registry::remote::RemoteRegistry;
use omnihost::registry::{Query, Registry};
use omnihost::server::Role;
use serde_json::{Value, json};

use cli::{Cli, Command, ModelCommand, PipelineCommand, PluginCommand, ServeArgs, Target};

mod cli;

/// The example a checkout serves when `serve` is given no config.
const EXAMPLE_CONFIG: &str = "examples/omnihost.toml";

/// Prints a failure as one line of causes; a backtrace only when asked for with `RUST_LIB_BACKTRACE=1`
/// (`RUST_BACKTRACE` is often set for panics, and an operator's error is not a panic).
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if std::env::var_os("RUST_LIB_BACKTRACE").is_some_and(|v| v == "1") {
                eprintln!("\n{}", e.backtrace());
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
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
            Command::Serve(args) => serve(args, Role::Serve).await,
            Command::Controller(args) => serve(args, Role::Controller).await,
            Command::Worker(args) => serve(args, Role::Worker).await,
            Command::Api(args) => serve(args, Role::Api).await,
            Command::Plugin { target, command } => plugin(target, command).await,
            Command::Model { target, command } => model(target, command).await,
            Command::Pipeline { command } => pipeline(command).await,
        }
    })
}

/// The config a role runs with: the one given, the checkout's example for `serve`, or (for the roles that serve
/// no models of their own) the defaults.
fn role_config(path: Option<&std::path::Path>, role: Role) -> Result<Config> {
    let example = std::path::Path::new(EXAMPLE_CONFIG);
    let path = match (path, role) {
        (Some(path), _) => path,
        (None, Role::Serve) if example.is_file() => example,
        (None, Role::Controller | Role::Api) => {
            return Ok(Config { base_dir: std::env::current_dir()?, ..Config::default() });
        }
        (None, _) => bail!(
            "no config file: `omnihost {}` serves the models a config lists. Pass --config FILE (or set \
             OMNIHOST_CONFIG); examples/omnihost.toml in the omnihost repository is one to start from, and \
             `cargo xtask serve` in a checkout sets up its models and serves it",
            if role == Role::Worker { "worker" } else { "serve" }
        ),
    };
    Config::load(path).with_context(|| format!("loading {}", path.display()))
}

async fn serve(args: ServeArgs, role: Role) -> Result<()> {
    let mut config = role_config(args.config.as_deref(), role)?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    config.server.api_keys.extend(args.api_keys.into_iter().filter(|k| !k.is_empty()).map(Secret::new));
    if let Some(token) = args.admin_token.filter(|t| !t.is_empty()) {
        config.server.admin_token = Some(Secret::new(token));
    }
    if let Some(controller) = args.controller.filter(|c| !c.is_empty()) {
        config.cluster.controller = Some(controller);
    }
    if let Some(advertise) = args.advertise.filter(|a| !a.is_empty()) {
        config.cluster.advertise = Some(advertise);
    }
    if let Some(url) = args.registry_url.filter(|u| !u.is_empty()) {
        config.registry.store = StoreKind::Postgres;
        config.registry.url = Some(Secret::new(url));
    }
    if matches!(role, Role::Controller | Role::Api) {
        // These roles serve no models of their own; the config's models are for worker hosts.
        config.models.clear();
        config.plugins.clear();
    }
    let listener = tokio::net::TcpListener::bind(&config.server.listen)
        .await
        .with_context(|| format!("listening on {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    omnihost::server::check_listen(addr, &config, role)?;
    tracing::info!(role = ?role, "listening on http://{addr} (ready once models and plugins are loaded: GET /health/ready)");
    let shutdown = async {
        // SIGTERM is how service managers and `docker stop` ask; Ctrl-C is how a person does.
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C: shutting down"),
                    _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = tokio::signal::ctrl_c().await;
                tracing::info!("Ctrl-C: shutting down");
            }
        }
    };
    omnihost::server::serve(config, role, listener, shutdown).await.map_err(|e| {
        anyhow::anyhow!("{}", omnihost::error::chain(&e))
    })
}

/// A server config for offline pipeline work: the given one (for the models `worker` engines name) or an
/// empty one, with a registry in memory so that nothing outside the process is touched.
fn offline_config(config: Option<&std::path::Path>) -> Result<Config> {
    let mut config = match config {
        Some(path) => Config::load(path).with_context(|| format!("loading {}", path.display()))?,
        None => Config { base_dir: std::env::current_dir()?, ..Config::default() },
    };
    config.registry.store = StoreKind::Memory;
    config.pipelines.clear();
    Ok(config)
}

async fn load_offline(config: &Config) -> Result<std::sync::Arc<omnihost::http::Services>> {
    let addr: std::net::SocketAddr = "127.0.0.1:9".parse()?;
    let services = omnihost::server::load(config, Role::Serve, addr)
        .await
        .map_err(|e| anyhow::anyhow!("{}", omnihost::error::chain(&e)))?;
    Ok(std::sync::Arc::new(services))
}

fn absolute(path: &std::path::Path) -> Result<std::path::PathBuf> {
    Ok(if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir()?.join(path) })
}

async fn pipeline(command: PipelineCommand) -> Result<()> {
    use omnihost::pipeline::{Input, PipelineConfig};
    match command {
        PipelineCommand::Validate { file, config } => {
            let pipeline = PipelineConfig::load(&file).map_err(|e| anyhow::anyhow!("{}", omnihost::error::chain(&e)))?;
            let served: Vec<(String, omnihost::config::WorkerType)> = match &config {
                Some(path) => Config::load(path)
                    .with_context(|| format!("loading {}", path.display()))?
                    .models
                    .into_iter()
                    .map(|m| (m.name, m.worker_type))
                    .collect(),
                None => Vec::new(),
            };
            let order = omnihost::pipeline::check(&pipeline, &served).map_err(|e| anyhow::anyhow!("{}", omnihost::error::chain(&e)))?;
            let data_dir = std::env::temp_dir().join("omnihost-validate");
            let engine = std::sync::Arc::new(omnihost::plugin::PluginEngine::new(&data_dir, 256 << 20, false)?);
            for p in &pipeline.processors {
                let path = pipeline.resolve(&p.component);
                omnihost::plugin::check_world(&engine, &path, &p.name, p.world)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", omnihost::error::chain(&e)))?;
            }
            let ids: Vec<String> = order.iter().map(|&i| pipeline.stages[i].stage_id.to_string()).collect();
            println!("pipeline `{}` is valid: stages run in the order {}", pipeline.name, ids.join(" -> "));
        }
        PipelineCommand::Run { file, prompt, image, sampling_params_list, config, record } => {
            let mut server = offline_config(config.as_deref())?;
            server.pipelines.push(omnihost::config::PipelineRef { file: absolute(&file)?, record: record.map(|r| absolute(&r)).transpose()? });
            let services = load_offline(&server).await?;
            let pipeline = services.pipelines.iter().next().cloned().context("the pipeline did not load")?;
            let (inputs, single) = match image {
                Some(path) => {
                    let bytes = tokio::fs::read(&path).await.with_context(|| format!("reading {}", path.display()))?;
                    (vec![Input::image(bytes)?], true)
                }
                None if prompt.is_empty() => bail!("give --prompt (one or more) or --image"),
                None => (prompt.into_iter().map(Input::Prompt).collect(), false),
            };
            let params: Vec<Value> = match sampling_params_list {
                Some(text) => serde_json::from_str(&text).context("--sampling-params-list must be a JSON list")?,
                None => vec![json!({}); pipeline.stage_ids().len()],
            };
            let finals = pipeline.generate(inputs, params).await.map_err(|e| anyhow::anyhow!("{}", omnihost::error::chain(&e)))?;
            let outputs = omnihost::pipeline::outputs_json(finals, single);
            println!("{}", serde_json::to_string_pretty(&json!({"outputs": outputs}))?);
        }
        PipelineCommand::Replay { dir, pipeline, stage, processor } => {
            let file = PipelineConfig::load(&pipeline).map_err(|e| anyhow::anyhow!("{}", omnihost::error::chain(&e)))?;
            let spec = file.stages.iter().find(|s| s.stage_id == stage).with_context(|| format!("the pipeline has no stage {stage}"))?;
            let name = spec.input_processor.clone().with_context(|| format!("stage {stage} has no input_processor"))?;
            let mut plugin = file.processors.iter().find(|p| p.name == name).cloned().with_context(|| format!("no processor `{name}`"))?;
            plugin.component = absolute(&processor)?;
            // The new component may implement the 0.1.0 stage-processor world; replay serves either.
            // The same compiled-component cache as the load below, so a large component is compiled once.
            let mut server = offline_config(None)?;
            let compiled = server.resolve(&server.server.data_dir).join("compiled");
            let memory = (plugin.limits.memory_mib as usize) << 20;
            let engine = std::sync::Arc::new(omnihost::plugin::PluginEngine::new(&compiled, memory, plugin.limits.fuel.is_some())?);
            if plugin.world.processes_stages()
                && omnihost::plugin::check_world(&engine, &plugin.component, &name, plugin.world).await.is_err()
            {
                plugin.world = if plugin.world == omnihost::config::World::PipelineProcessor {
                    omnihost::config::World::StageProcessor
                } else {
                    omnihost::config::World::PipelineProcessor
                };
            }
            plugin.data_dir = plugin.data_dir.map(|d| file.resolve(&d));
            plugin.onnx = plugin.onnx.into_iter().map(|(k, v)| (k, file.resolve(&v))).collect();
            server.plugins.push(plugin);
            let services = load_offline(&server).await?;
            let loaded = services.plugins.get(&name)?;
            let recorded = if dir.join(&file.name).is_dir() { dir.join(&file.name) } else { dir.clone() };
            let diffs = omnihost::pipeline::record::replay(&recorded, stage, loaded).await?;
            let mut changed = 0;
            for d in &diffs {
                if d.changes.is_empty() {
                    println!("{} chunk {}: same", d.request_id, d.chunk);
                } else {
                    changed += 1;
                    println!("{} chunk {}: changed", d.request_id, d.chunk);
                    for c in &d.changes {
                        println!("    {c}");
                    }
                }
            }
            println!("{} calls replayed on stage {stage}: {} same, {changed} changed", diffs.len(), diffs.len() - changed);
        }
    }
    Ok(())
}

async fn plugin(target: Target, command: PluginCommand) -> Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(300)).build()?;
    let base = target.controller.trim_end_matches('/').to_string();
    let request = match &command {
        PluginCommand::List => client.get(format!("{base}/admin/plugins")),
        PluginCommand::Swap { name, file } => {
            let bytes = tokio::fs::read(file).await.with_context(|| format!("reading {}", file.display()))?;
            client.put(format!("{base}/admin/plugins/{name}")).body(bytes)
        }
        PluginCommand::History { name } => client.get(format!("{base}/admin/plugins/{name}/history")),
        PluginCommand::Rollback { name, to } => {
            client.post(format!("{base}/admin/plugins/{name}/rollback")).json(&json!({ "sha256": to }))
        }
    };
    let body = send(&target, request).await?;
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

/// Sends `request` with the admin token, failing with the server's message on an error status.
async fn send(target: &Target, request: reqwest::RequestBuilder) -> Result<Value> {
    let request = match &target.admin_token {
        Some(t) => request.bearer_auth(t),
        None => request,
    };
    let response = request.send().await.context("contacting the server")?;
    let status = response.status();
    let body: Value = response.json().await.context("reading the server's answer")?;
    if !status.is_success() {
        let message = body["error"]["message"].as_str().unwrap_or("(no message)");
        bail!("{status}: {message}");
    }
    Ok(body)
}

fn age(last_heartbeat_ms: i64) -> String {
    let secs = (omnihost::registry::now_ms() - last_heartbeat_ms).max(0) / 1000;
    match secs {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s => format!("{}h ago", s / 3600),
    }
}

/// The controller as a typed registry client: the same requests, auth and errors as a worker host's.
fn controller(target: &Target) -> Result<RemoteRegistry> {
    Ok(RemoteRegistry::new(&target.controller, target.admin_token.clone().map(Secret::new))?)
}

/// A query for `model` (a name or `name@type`), every model when `None`.
fn model_query(model: Option<&str>, healthy_only: bool) -> Result<Query> {
    let (name, worker_type) = match model.map(|m| m.rsplit_once('@').unwrap_or((m, ""))) {
        None => (None, None),
        Some((name, "")) => (Some(name), None),
        Some((name, t)) => (Some(name), Some(WorkerType::parse(t).with_context(|| format!("unknown worker type `{t}`"))?)),
    };
    Ok(Query { model_name: name.map(str::to_string), worker_type, healthy_only })
}

async fn model(target: Target, command: ModelCommand) -> Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(300)).build()?;
    let base = target.controller.trim_end_matches('/').to_string();
    match command {
        ModelCommand::List { model, all } => {
            let instances = controller(&target)?.list(&model_query(model.as_deref(), !all)?).await?;
            println!("{:<28} {:<9} {:<22} {:<8} {:>6}  LAST HEARTBEAT", "MODEL", "TYPE", "HOST:PORT", "HEALTHY", "WEIGHT");
            for i in instances {
                println!(
                    "{:<28} {:<9} {:<22} {:<8} {:>6}  {}",
                    i.id.model_name,
                    i.id.worker_type.name(),
                    format!("{}:{}", i.id.host, i.id.port),
                    if i.healthy { "yes" } else { "no" },
                    i.weight,
                    age(i.last_heartbeat_ms),
                );
            }
        }
        ModelCommand::Start { model, worker_type, plugin, worker, params } => {
            let mut p = serde_json::Map::new();
            p.insert("plugin".into(), json!(plugin));
            for (k, v) in params {
                p.insert(k, serde_json::from_str(&v).unwrap_or(Value::String(v)));
            }
            let host = worker.unwrap_or_else(|| base.clone());
            let body = json!({"model": model, "worker_type": worker_type, "params": p});
            send(&target, client.post(format!("{}/api/worker/models/startup", host.trim_end_matches('/'))).json(&body)).await?;
            println!("{model}@{worker_type} started on {host}");
        }
        ModelCommand::Stop { model, worker_type } => stop_or_restart(&target, &client, model, worker_type, false).await?,
        ModelCommand::Restart { model, worker_type } => stop_or_restart(&target, &client, model, worker_type, true).await?,
    }
    Ok(())
}

/// Stops (shuts down) or restarts `model` on every host that registered it.
async fn stop_or_restart(
    target: &Target,
    client: &reqwest::Client,
    model: String,
    worker_type: String,
    is_restart: bool,
) -> Result<()> {
    let key = format!("{model}@{worker_type}");
    let instances = controller(target)?.list(&model_query(Some(&key), false)?).await?;
    let mut hosts: Vec<String> = instances.iter().map(|i| format!("http://{}:{}", i.id.host, i.id.port)).collect();
    hosts.sort();
    hosts.dedup();
    if hosts.is_empty() {
        bail!("no host has registered {key}");
    }
    for host in hosts {
        let (path, body) = if is_restart {
            ("/api/worker/apply", json!({"model": model, "worker_type": worker_type, "apply_type": "restart"}))
        } else {
            ("/api/worker/models/shutdown", json!({"model": model, "worker_type": worker_type}))
        };
        let answer = send(target, client.post(format!("{host}{path}")).json(&body)).await?;
        if answer.get("success").and_then(Value::as_bool) == Some(false) {
            bail!("{host}: {}", answer["message"].as_str().unwrap_or("failed"));
        }
        println!("{key} {} on {host}", if is_restart { "restarted" } else { "stopped" });
    }
    Ok(())
}
