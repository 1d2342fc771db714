//! Assembles a running server from a [`Config`]: loads ONNX Runtime and the models, compiles and validates
//! the plugins, starts the workers, and serves HTTP while that happens (`/health/ready` says when it is done).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::compute::{ComputeError, ComputeSettings, Model, Runtime, library};
use crate::config::Config;
use crate::http::{self, AppState, HttpSettings, Readiness, Services};
use crate::plugin::{Plugin, PluginEngine, PluginError, Plugins};
use crate::worker::{Worker, Workers};

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
    #[error("the server failed to load: {0}")]
    LoadFailed(String),
}

/// Loads everything the config names. Progress goes to the log, one line per step.
pub async fn load(config: &Config) -> Result<Services, ServerError> {
    let data_dir = config.resolve(&config.server.data_dir);
    let needs_ort = config.plugins.iter().any(|p| !p.onnx.is_empty());
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
    let settings = ComputeSettings {
        providers: config.compute.execution_providers.clone(),
        intra_threads: config.compute.intra_threads,
        queue_capacity: config.compute.queue_capacity,
        tensor_limit: config.compute.tensor_limit,
        cache_dir: data_dir.join("cache"),
    };
    let max_memory = config.plugins.iter().map(|p| p.limits.memory_mib).max().unwrap_or(256);
    let fuel = config.plugins.iter().any(|p| p.limits.fuel.is_some());
    let engine = Arc::new(PluginEngine::new(&data_dir.join("compiled"), (max_memory as usize) << 20, fuel)?);

    let mut loaded: HashMap<PathBuf, Arc<Model>> = HashMap::new();
    let mut plugins = Plugins::default();
    for plugin in &config.plugins {
        let mut models = std::collections::BTreeMap::new();
        for (name, path) in &plugin.onnx {
            let path = config.resolve(path);
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
        tracing::info!(plugin = %plugin.name, component = %config.resolve(&plugin.component).display(), "compiling plugin");
        let loaded_plugin =
            Plugin::load(engine.clone(), plugin, |p| config.resolve(p), models, config.compute.tensor_limit).await?;
        plugins.insert(loaded_plugin);
    }
    let mut workers = Workers::default();
    for model in &config.models {
        let plugin = plugins.get(&model.plugin)?.clone();
        workers.insert(Worker::start(&model.name, model.worker_type, plugin, &model.batch));
        tracing::info!(model = %model.name, worker_type = model.worker_type.name(), plugin = %model.plugin, "model serving");
    }
    Ok(Services {
        workers,
        plugins,
        onnxruntime: runtime.map(|r| r.library),
        pooling: engine.pooling,
    })
}

/// Serves `config` on `listener` until `shutdown` resolves or loading fails. HTTP answers at once;
/// `/health/ready` turns 200 when loading is done.
pub async fn serve(config: Config, listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServerError> {
    let state = AppState::new(HttpSettings::from(&config.server));
    serve_with_state(config, listener, state, shutdown).await
}

async fn serve_with_state(
    config: Config,
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let app = http::router(state.clone());
    let (failed_tx, failed_rx) = oneshot::channel::<()>();
    let loader_state = state.clone();
    let loader = tokio::spawn(async move {
        match load(&config).await {
            Ok(services) => {
                loader_state.set_ready(services);
                tracing::info!("ready");
                Ok(())
            }
            Err(e) => {
                let text = http::error::chain(&e);
                tracing::error!(error = %text, "loading failed");
                loader_state.set_failed(text);
                let _ = failed_tx.send(());
                Err(e)
            }
        }
    });
    let stop = async move {
        tokio::select! {
            _ = shutdown => {}
            Ok(()) = failed_rx => {}
        }
    };
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(stop)
        .await
        .map_err(ServerError::Serve)?;
    if loader.is_finished() {
        loader.await??;
    } else {
        loader.abort();
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
    /// Binds `listener` and starts serving `config` in the background.
    pub fn start(config: Config, listener: TcpListener) -> std::io::Result<Running> {
        let addr = listener.local_addr()?;
        let state = AppState::new(HttpSettings::from(&config.server));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_with_state(config, listener, state.clone(), async move {
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
