//! Assembles a running server from a [`Config`] and a [`Role`]: opens the registry (controller), loads ONNX
//! Runtime, compiles the plugins and starts the workers (worker host), sets up routing (API server), and serves
//! HTTP while that happens (`/health/ready` says when it is done). `serve` plays every role in one process.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::compute::{ComputeError, ComputeSettings, Decoder, DecoderLimits, Model, Runtime, library};
use crate::config::{Config, StoreKind};
use crate::http::{self, AppState, HttpSettings, Readiness, Services};
use crate::pipeline::{BuildError, Parts, Pipeline, PipelineConfig, PipelineConfigError, Pipelines};
use crate::plugin::{Plugin, PluginEngine, PluginError, Plugins};
use crate::registry::{
    MemoryRegistry, PostgresRegistry, Registry, RegistryError, RemoteRegistry, SqliteRegistry, SweepSettings, Sweeper,
};
use crate::worker::error::ManagerError;
use crate::worker::manager::{Registration, WorkerManager};
use crate::tasks::Background;
use crate::worker::router::Resolver;

/// Which parts of omnihost a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Controller, worker host and API server in one process (the default).
    Serve,
    /// The registry service only.
    Controller,
    /// A worker host: registers its workers with a controller and serves `/api/worker/*`.
    Worker,
    /// The OpenAI-compatible front door, routing to workers found through a controller.
    Api,
}

impl Role {
    fn keeps_registry(self) -> bool {
        matches!(self, Role::Serve | Role::Controller)
    }

    fn runs_workers(self) -> bool {
        matches!(self, Role::Serve | Role::Worker)
    }

    /// Whether the process serves controller or worker routes, which must not be open to the network.
    pub fn serves_cluster_routes(self) -> bool {
        !matches!(self, Role::Api)
    }

    fn names(self) -> Vec<&'static str> {
        match self {
            Role::Serve => vec!["controller", "worker", "api"],
            Role::Controller => vec!["controller"],
            Role::Worker => vec!["worker"],
            Role::Api => vec!["api"],
        }
    }
}

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Compute(#[from] ComputeError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("a loading task stopped")]
    Join(#[from] tokio::task::JoinError),
    #[error("serving HTTP")]
    Serve(#[source] std::io::Error),
    #[error("the server did not become ready within {0:?}")]
    NotReady(Duration),
    /// Loading failed; the cause is shared with the readiness routes, so it is kept behind an `Arc`.
    #[error(transparent)]
    LoadFailed(crate::http::LoadFailure),
    #[error(
        "refusing to listen on {addr}: without an admin token the controller and worker routes are open, so they \
         are served on loopback only. Set --admin-token (or OMNIHOST_ADMIN_TOKEN) to listen on other addresses"
    )]
    OpenCluster { addr: SocketAddr },
    #[error("the {role} role needs a controller: pass --controller URL (or set cluster.controller)")]
    NoController { role: &'static str },
    #[error("the registry store `postgres` needs a URL: pass --registry-url (or set registry.url)")]
    NoRegistryUrl,
    #[error("`{0}` is not a host:port address to advertise")]
    BadAdvertise(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Manager(#[from] ManagerError),
    #[error(transparent)]
    PipelineConfig(#[from] PipelineConfigError),
    #[error(transparent)]
    Pipeline(#[from] BuildError),
    #[error("pipeline `{pipeline}`: processor `{processor}` has the name of another plugin; plugin names are shared")]
    ProcessorName { pipeline: String, processor: String },
}

/// Refuses a non-loopback listen address for a process serving controller or worker routes without a token.
pub fn check_listen(addr: SocketAddr, config: &Config, role: Role) -> Result<(), ServerError> {
    if role.serves_cluster_routes() && config.server.admin_token.is_none() && !addr.ip().is_loopback() {
        return Err(ServerError::OpenCluster { addr });
    }
    Ok(())
}

/// Opens the registry store the config names; its writer and listener tasks run in `background`.
pub async fn open_registry(config: &Config, background: &Background) -> Result<Arc<dyn Registry>, ServerError> {
    let registry = &config.registry;
    Ok(match registry.store {
        StoreKind::Memory => Arc::new(MemoryRegistry::new()),
        StoreKind::Sqlite => {
            let path = match &registry.path {
                Some(p) => config.resolve(p),
                None => config.resolve(&config.server.data_dir).join("registry.sqlite3"),
            };
            tracing::info!(path = %path.display(), "registry: sqlite");
            Arc::new(SqliteRegistry::open_in(&path, background).await?)
        }
        StoreKind::Postgres => {
            let url = registry.url.as_ref().ok_or(ServerError::NoRegistryUrl)?;
            tracing::info!("registry: postgres");
            Arc::new(PostgresRegistry::connect_in(url.expose(), registry.max_connections, background).await?)
        }
    })
}

fn split_address(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.trim().rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_string(), port.parse().ok().filter(|p| *p != 0)?))
}

/// Loads what `role` needs from the config. `addr` is where this process listens. Progress goes to the log.
pub async fn load(config: &Config, role: Role, addr: SocketAddr) -> Result<Services, ServerError> {
    let background = Background::default();
    let registry = if role.keeps_registry() { Some(open_registry(config, &background).await?) } else { None };
    let sweeper = registry.as_ref().map(|r| {
        Sweeper::start(
            r.clone(),
            SweepSettings {
                interval: Duration::from_millis(config.registry.sweep_interval_ms),
                timeout: Duration::from_millis(config.registry.heartbeat_timeout_ms),
                evict_after: Duration::from_millis(config.registry.evict_after_ms),
            },
            &background,
        )
    });
    let controller = match (&config.cluster.controller, role) {
        (Some(url), Role::Worker | Role::Api) => {
            Some(Arc::new(RemoteRegistry::new(url, config.server.admin_token.clone())?) as Arc<dyn Registry>)
        }
        (None, Role::Worker) => return Err(ServerError::NoController { role: "worker" }),
        (None, Role::Api) => return Err(ServerError::NoController { role: "api" }),
        _ => None,
    };
    let advertised = match &config.cluster.advertise {
        Some(a) => split_address(a).ok_or_else(|| ServerError::BadAdvertise(a.clone()))?,
        None => (addr.ip().to_string(), addr.port()),
    };
    let Loaded { plugins, library: onnxruntime, pooling, pipelines } =
        if role.runs_workers() { load_plugins(config).await? } else { Loaded::default() };
    let plugins = Arc::new(plugins);
    let manager = if role.runs_workers() {
        let lookup = if role == Role::Serve { registry.clone() } else { controller.clone() };
        let registration = lookup.map(|registry| Registration {
            registry,
            host: advertised.0.clone(),
            port: advertised.1,
            heartbeat_interval: Duration::from_millis(config.cluster.heartbeat_interval_ms),
        });
        let state_file = match &config.cluster.state_file {
            Some(p) => config.resolve(p),
            None => config.resolve(&config.server.data_dir).join("started-models.json"),
        };
        let manager = Arc::new(
            WorkerManager::new(plugins.clone(), config.models.clone(), registration, Some(state_file))
                .in_background(background.clone()),
        );
        manager.start().await?;
        Some(manager)
    } else {
        None
    };
    let mut built = Pipelines::default();
    for (file, models, record) in pipelines {
        let parts = Parts { plugins: &plugins, models, manager: manager.clone(), record };
        built.insert(Pipeline::build(file, None, parts)?);
    }
    let lookups = match role {
        Role::Serve => registry.clone(),
        Role::Api => controller.clone(),
        Role::Controller | Role::Worker => None,
    };
    let resolver = Resolver::new(
        manager,
        lookups,
        Some(format!("{}:{}", advertised.0, advertised.1)),
        Duration::from_millis(config.cluster.lookup_cache_ms),
        Duration::from_millis(config.cluster.forward_timeout_ms),
        config.server.admin_token.clone(),
    );
    Ok(Services {
        plugins,
        pipelines: Arc::new(built),
        resolver,
        registry,
        sweeper,
        advertised,
        roles: role.names(),
        onnxruntime,
        pooling,
        background,
    })
}

/// What a worker host loads before its workers start.
#[derive(Default)]
struct Loaded {
    plugins: Plugins,
    library: Option<PathBuf>,
    pooling: bool,
    /// Each pipeline's file, the ONNX models its stages run, and where to record its requests.
    pipelines: Vec<LoadedPipeline>,
}

/// A pipeline's file, the ONNX models its stages run (by name), and where to record its requests.
type LoadedPipeline = (PipelineConfig, std::collections::BTreeMap<String, Arc<Model>>, Option<PathBuf>);

/// One plugin to load: its config and the folder its relative paths are resolved against.
struct PluginSource<'a> {
    config: &'a crate::config::PluginConfig,
    base: PathBuf,
}

fn resolve_in(base: &std::path::Path, path: &std::path::Path) -> PathBuf {
    if path.is_absolute() { path.to_path_buf() } else { base.join(path) }
}

/// Loads ONNX Runtime, the models and the plugins the config names, with the processors and models of its
/// pipelines.
async fn load_plugins(config: &Config) -> Result<Loaded, ServerError> {
    let data_dir = config.resolve(&config.server.data_dir);
    let mut pipeline_files = Vec::with_capacity(config.pipelines.len());
    for p in &config.pipelines {
        pipeline_files.push((PipelineConfig::load(&config.resolve(&p.file))?, p.record.as_ref().map(|r| config.resolve(r))));
    }
    let mut sources: Vec<PluginSource<'_>> =
        config.plugins.iter().map(|p| PluginSource { config: p, base: config.base_dir.clone() }).collect();
    for (file, _) in &pipeline_files {
        for processor in &file.processors {
            if sources.iter().any(|s| s.config.name == processor.name) {
                return Err(ServerError::ProcessorName { pipeline: file.name.clone(), processor: processor.name.clone() });
            }
            sources.push(PluginSource { config: processor, base: file.base_dir.clone() });
        }
    }
    let needs_ort = sources.iter().any(|p| !p.config.onnx.is_empty() || !p.config.decoders.is_empty())
        || pipeline_files.iter().any(|(f, _)| !f.models.is_empty());
    let runtime = if needs_ort {
        let mut roots = vec![config.base_dir.clone()];
        roots.extend(std::env::current_dir().ok());
        roots.extend(std::env::current_exe().ok().and_then(|e| e.parent().map(PathBuf::from)));
        let explicit = config.compute.library.as_deref().map(|p| config.resolve(p));
        let path = library::locate(explicit.as_deref(), &roots).map_err(ComputeError::from)?;
        tracing::info!(library = %path.display(), "loading ONNX Runtime");
        Some(tokio::task::spawn_blocking(move || Runtime::load(&path)).await??)
    } else {
        None
    };
    let settings = ComputeSettings::new(&config.compute, data_dir.join("cache"));
    let max_memory = sources.iter().map(|p| p.config.limits.memory_mib).max().unwrap_or(256);
    let fuel = sources.iter().any(|p| p.config.limits.fuel.is_some());
    let engine = Arc::new(PluginEngine::new(&data_dir.join("compiled"), (max_memory as usize) << 20, fuel)?);

    let mut loaded: HashMap<PathBuf, Arc<Model>> = HashMap::new();
    let mut plugins = Plugins::default();
    for source in &sources {
        let plugin = source.config;
        let mut models = std::collections::BTreeMap::new();
        for (name, path) in &plugin.onnx {
            let path = resolve_in(&source.base, path);
            let model = match (loaded.get(&path), &runtime) {
                (Some(m), _) => m.clone(),
                (None, Some(rt)) => {
                    tracing::info!(plugin = %plugin.name, model = %name, path = %path.display(), "loading ONNX model");
                    let (rt, n, p, s) = (rt.clone(), name.clone(), path.clone(), settings.clone());
                    let model = tokio::task::spawn_blocking(move || rt.load_model(&n, &p, &s)).await?.map_err(
                        |source| PluginError::Model { plugin: plugin.name.clone(), model: name.clone(), source: Box::new(source) },
                    )?;
                    loaded.insert(path, model.clone());
                    model
                }
                (None, None) => continue,
            };
            models.insert(name.clone(), model);
        }
        let mut decoders = std::collections::BTreeMap::new();
        for (name, decoder) in &plugin.decoders {
            let Some(rt) = &runtime else { continue };
            let path = resolve_in(&source.base, &decoder.path);
            tracing::info!(plugin = %plugin.name, decoder = %name, path = %path.display(), "loading decoder");
            let limits = DecoderLimits {
                max_sequences: decoder.max_sequences,
                max_context: decoder.max_context,
                prefill_chunk: decoder.prefill_chunk,
                queue_capacity: decoder.queue_capacity,
            };
            let (rt, n, s) = (rt.clone(), name.clone(), settings.clone());
            let loaded = tokio::task::spawn_blocking(move || Decoder::load(&rt, &n, &path, &s, limits)).await?.map_err(
                |source| PluginError::Model { plugin: plugin.name.clone(), model: name.clone(), source: Box::new(source) },
            )?;
            decoders.insert(name.clone(), Arc::new(loaded));
        }
        tracing::info!(plugin = %plugin.name, component = %resolve_in(&source.base, &plugin.component).display(), "compiling plugin");
        let base = source.base.clone();
        let loaded_plugin =
            Plugin::load(engine.clone(), plugin, |p| resolve_in(&base, p), models, decoders, config.compute.tensor_limit)
                .await?;
        plugins.insert(loaded_plugin);
    }
    for model in &config.models {
        plugins.get(&model.plugin)?;
    }
    let mut pipelines = Vec::with_capacity(pipeline_files.len());
    for (file, record) in pipeline_files {
        let mut models = std::collections::BTreeMap::new();
        for (name, path) in &file.models {
            let path = file.resolve(path);
            let model = match (loaded.get(&path), &runtime) {
                (Some(m), _) => m.clone(),
                (None, Some(rt)) => {
                    tracing::info!(pipeline = %file.name, model = %name, path = %path.display(), "loading ONNX model");
                    let (rt, n, p, s) = (rt.clone(), name.clone(), path.clone(), settings.clone());
                    let model = tokio::task::spawn_blocking(move || rt.load_model(&n, &p, &s)).await?.map_err(|source| {
                        PluginError::Model { plugin: file.name.clone(), model: name.clone(), source: Box::new(source) }
                    })?;
                    loaded.insert(path, model.clone());
                    model
                }
                (None, None) => continue,
            };
            models.insert(name.clone(), model);
        }
        pipelines.push((file, models, record));
    }
    Ok(Loaded { plugins, library: runtime.map(|r| r.library), pooling: engine.pooling, pipelines })
}

/// Serves `config` on `listener` until `shutdown` resolves or loading fails. HTTP answers at once;
/// `/health/ready` turns 200 when loading is done.
pub async fn serve(
    config: Config,
    role: Role,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let state = AppState::new(HttpSettings::from(&config.server));
    serve_with_state(config, role, listener, state, shutdown).await
}

async fn serve_with_state(
    config: Config,
    role: Role,
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let addr = listener.local_addr().map_err(ServerError::Serve)?;
    check_listen(addr, &config, role)?;
    crate::metrics::install();
    let app = http::router(state.clone());
    let (failed_tx, failed_rx) = oneshot::channel::<()>();
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    let loader_state = state.clone();
    let loader = tokio::spawn(async move {
        match load(&config, role, addr).await {
            Ok(services) => {
                loader_state.set_ready(services);
                tracing::info!("ready");
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %crate::error::chain(&e), "loading failed");
                let failure: crate::http::LoadFailure = Arc::new(e);
                loader_state.set_failed(failure.clone());
                let _ = failed_tx.send(());
                Err(ServerError::LoadFailed(failure))
            }
        }
    });
    let (stopping_tx, stopping_rx) = oneshot::channel::<()>();
    let stop = async move {
        tokio::select! {
            _ = shutdown => {}
            Ok(()) = failed_rx => {}
        }
        let _ = stopping_tx.send(());
    };
    // Graceful: the listener closes at once, requests and streams already running finish, up to the grace.
    let serving = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).with_graceful_shutdown(stop);
    let grace_over = async move {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        served = serving => served.map_err(ServerError::Serve)?,
        () = grace_over => tracing::warn!(grace_ms = grace.as_millis() as u64, "requests still running when the shutdown grace ran out were cut off"),
    }
    if loader.is_finished() {
        loader.await??;
    } else {
        loader.abort();
    }
    if let Readiness::Ready(services) = state.readiness() {
        // Deregister this host's workers and hand sweeping over, so the cluster learns at once, not after a timeout.
        if let Some(manager) = services.resolver.local()
            && let Err(e) = manager.stop().await
        {
            tracing::warn!(error = %crate::error::chain(&e), "stopping the workers");
        }
        if let Some(sweeper) = &services.sweeper {
            sweeper.stop().await;
        }
        // Then every background task (batchers, schedulers, registry writers and listeners) is cancelled, and
        // waited for, so nothing of this server is still running when serving returns.
        let left = services.background.shutdown(grace).await;
        if left > 0 {
            tracing::warn!(tasks = left, "background tasks still running after the shutdown grace");
        }
    }
    Ok(())
}

/// A server running in this process (tests, benchmarks, embedding omnihost in another program).
pub struct Running {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
}

impl Running {
    /// Binds `listener` and starts serving `config` in the background, in every role.
    pub fn start(config: Config, listener: TcpListener) -> std::io::Result<Running> {
        Self::start_role(config, Role::Serve, listener)
    }

    /// Like [`Running::start`], in one role.
    pub fn start_role(config: Config, role: Role, listener: TcpListener) -> std::io::Result<Running> {
        let addr = listener.local_addr()?;
        let state = AppState::new(HttpSettings::from(&config.server));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_with_state(config, role, listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        Ok(Running { addr, state, stop: Some(stop), task })
    }

    /// Waits until every model and plugin is loaded.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<Arc<Services>, ServerError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.state.readiness() {
                Readiness::Ready(s) => return Ok(s),
                Readiness::Failed(e) => return Err(ServerError::LoadFailed(e)),
                Readiness::Loading if tokio::time::Instant::now() > deadline => return Err(ServerError::NotReady(timeout)),
                Readiness::Loading => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting requests, lets those in flight finish, and waits for the server to end.
    pub async fn stop(mut self) -> Result<(), ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await?
    }
}
