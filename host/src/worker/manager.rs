//! The worker manager of one host: adds, starts, stops, restarts and reconfigures its model workers, registers
//! them with the registry and heartbeats for them, and remembers which models were started at run time so a
//! restarted host serves them again.
//!
//! Workers are keyed by `(worker_type, model_name)`. Applying an action to several workers runs them in
//! parallel and reduces the outcomes: success only if every one succeeded, messages joined, time = the slowest.
//! Unlike DB-GPT, restarting keeps the workers, a failed start leaves nothing behind, and stopping really stops
//! the heartbeats.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;

use super::Worker;
use super::error::ManagerError;
use super::params::{ParamDescription, SupportedModel, apply_params, parameter_descriptions};
use super::state_file::StateFile;
use crate::config::{ModelConfig, WorkerType};
use crate::plugin::Plugins;
use crate::registry::{Instance, InstanceId, Registry};
use crate::tasks::Background;

/// What to do to workers (DB-GPT's `WorkerApplyType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyType {
    Start,
    Stop,
    Restart,
    UpdateParams,
}

impl ApplyType {
    fn name(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::UpdateParams => "update_params",
        }
    }
}

/// The reduced outcome of an action (DB-GPT's `WorkerApplyOutput`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyOutput {
    pub message: String,
    pub success: bool,
    /// Seconds the slowest worker took.
    pub timecost: f64,
}

/// Where this host's workers are reached and how they report in.
#[derive(Clone)]
pub struct Registration {
    pub registry: Arc<dyn Registry>,
    /// Host and port other processes reach this host's `/api/worker/*` at.
    pub host: String,
    pub port: u16,
    pub heartbeat_interval: Duration,
}

struct Entry {
    spec: Mutex<ModelConfig>,
    worker: ArcSwapOption<Worker>,
    heartbeat: Mutex<Option<JoinHandle<()>>>,
    /// Serialises lifecycle actions on one worker (a stop cannot interleave with a start).
    op: tokio::sync::Mutex<()>,
}

impl Entry {
    fn spec(&self) -> ModelConfig {
        self.spec.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn stop_heartbeat(&self) {
        if let Some(task) = self.heartbeat.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

type Key = (WorkerType, String);

fn key_text(key: &Key) -> String {
    format!("{}@{}", key.1, key.0.name())
}

pub struct WorkerManager {
    plugins: Arc<Plugins>,
    registration: Option<Registration>,
    state_file: StateFile,
    configured: Vec<ModelConfig>,
    workers: RwLock<BTreeMap<Key, Arc<Entry>>>,
    /// Where batchers, schedulers and heartbeats run.
    background: Background,
}

impl WorkerManager {
    /// A manager for `configured` models served by `plugins`. With `registration`, started workers are registered
    /// and heartbeat; with `state_file`, models started or shut down at run time are remembered there.
    pub fn new(
        plugins: Arc<Plugins>,
        configured: Vec<ModelConfig>,
        registration: Option<Registration>,
        state_file: Option<PathBuf>,
    ) -> Self {
        Self {
            plugins,
            registration,
            state_file: StateFile::new(state_file),
            configured,
            workers: RwLock::new(BTreeMap::new()),
            background: Background::default(),
        }
    }

    /// Runs the workers' batchers, schedulers and heartbeats in `background` (a server's, which its shutdown
    /// stops) instead of a set of its own.
    pub fn in_background(mut self, background: Background) -> Self {
        self.background = background;
        self
    }

    pub fn plugins(&self) -> &Arc<Plugins> {
        &self.plugins
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Key, Arc<Entry>>> {
        self.workers.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<Key, Arc<Entry>>> {
        self.workers.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a (stopped) worker. False when one for the same model and type exists: no second copy is made.
    pub fn add_worker(&self, spec: ModelConfig) -> bool {
        let key = (spec.worker_type, spec.name.clone());
        let mut workers = self.write();
        if workers.contains_key(&key) {
            return false;
        }
        let entry = Entry {
            spec: Mutex::new(spec),
            worker: ArcSwapOption::empty(),
            heartbeat: Mutex::new(None),
            op: tokio::sync::Mutex::new(()),
        };
        workers.insert(key, Arc::new(entry));
        true
    }

    /// Stops and removes a worker; removing one that does not exist does nothing.
    pub async fn remove_worker(&self, worker_type: WorkerType, model: &str) -> Result<(), ManagerError> {
        let entry = self.write().remove(&(worker_type, model.to_string()));
        if let Some(entry) = entry {
            let _guard = entry.op.lock().await;
            self.stop_entry(&entry, true).await?;
        }
        Ok(())
    }

    /// The configured and added workers, with whether each is running.
    pub fn workers(&self) -> Vec<(ModelConfig, bool)> {
        self.read().values().map(|e| (e.spec(), e.worker.load().is_some())).collect()
    }

    /// The running worker for `model` (of `worker_type`, or of any type when `None`).
    pub fn get(&self, model: &str, worker_type: Option<WorkerType>) -> Option<Arc<Worker>> {
        let workers = self.read();
        match worker_type {
            Some(t) => workers.get(&(t, model.to_string())).and_then(|e| e.worker.load_full()),
            None => workers.iter().filter(|((_, name), _)| name == model).find_map(|(_, e)| e.worker.load_full()),
        }
    }

    /// Every running worker.
    pub fn running(&self) -> Vec<Arc<Worker>> {
        self.read().values().filter_map(|e| e.worker.load_full()).collect()
    }

    /// Starts every configured model and every model started at run time before the last shutdown. Fails if
    /// any configured model fails to start (a remembered one that no longer starts is logged and skipped).
    pub async fn start(&self) -> Result<(), ManagerError> {
        let persisted = self.state_file.load().await;
        for spec in &self.configured {
            if !persisted.shut_down.contains(&format!("{}@{}", spec.name, spec.worker_type.name())) {
                self.add_worker(spec.clone());
            }
        }
        let out = self.apply(None, None, ApplyType::Start, None).await;
        if !out.success {
            return Err(ManagerError::Apply { action: "starting the worker manager", message: out.message });
        }
        for spec in persisted.started {
            let name = format!("{}@{}", spec.name, spec.worker_type.name());
            match self.startup_inner(spec).await {
                Ok(()) => tracing::info!(model = %name, "restarted a model started before the last shutdown"),
                Err(e) => tracing::error!(model = %name, error = %crate::error::chain(&e), "a remembered model did not start"),
            }
        }
        Ok(())
    }

    /// Stops every worker. Fails, after trying all of them, if any failed to stop.
    pub async fn stop(&self) -> Result<(), ManagerError> {
        let out = self.apply(None, None, ApplyType::Stop, None).await;
        if out.success { Ok(()) } else { Err(ManagerError::Apply { action: "stopping the worker manager", message: out.message }) }
    }

    /// Applies `action` to every worker, or to those of `model` (and `worker_type`), in parallel.
    pub async fn apply(
        &self,
        model: Option<&str>,
        worker_type: Option<WorkerType>,
        action: ApplyType,
        params: Option<&Map<String, Value>>,
    ) -> ApplyOutput {
        let targets: Vec<(Key, Arc<Entry>)> = self
            .read()
            .iter()
            .filter(|((t, name), _)| model.is_none_or(|m| m == name) && worker_type.is_none_or(|w| w == *t))
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        if targets.is_empty() {
            return match model {
                Some(m) => ApplyOutput { message: ManagerError::NotFound(m.to_string()).to_string(), success: false, timecost: 0.0 },
                None => ApplyOutput { message: "no workers".into(), success: true, timecost: 0.0 },
            };
        }
        let runs = targets.into_iter().map(|(key, entry)| async move {
            let started = Instant::now();
            let result = {
                let _guard = entry.op.lock().await;
                self.apply_one(&entry, action, params).await
            };
            (key, result, started.elapsed())
        });
        let outcomes = futures::future::join_all(runs).await;
        let mut messages = Vec::new();
        let mut success = true;
        let mut slowest = Duration::ZERO;
        for (key, result, took) in outcomes {
            slowest = slowest.max(took);
            match result {
                Ok(()) => messages.push(format!("{}: {} ok", key_text(&key), action.name())),
                Err(e) => {
                    success = false;
                    let text = crate::error::chain(&e);
                    tracing::warn!(model = %key_text(&key), action = action.name(), error = %text, "worker action failed");
                    messages.push(format!("{}: {} failed: {text}", key_text(&key), action.name()));
                }
            }
        }
        ApplyOutput { message: messages.join("\n"), success, timecost: slowest.as_secs_f64() }
    }

    async fn apply_one(&self, entry: &Entry, action: ApplyType, params: Option<&Map<String, Value>>) -> Result<(), ManagerError> {
        match action {
            ApplyType::Start => {
                if entry.worker.load().is_none() {
                    self.start_entry(entry).await?;
                }
                Ok(())
            }
            ApplyType::Stop => self.stop_entry(entry, false).await,
            ApplyType::Restart => {
                self.stop_entry(entry, false).await?;
                self.start_entry(entry).await
            }
            ApplyType::UpdateParams => {
                let mut spec = entry.spec();
                apply_params(&mut spec, params.unwrap_or(&Map::new()))?;
                self.check(&spec)?;
                let was_running = entry.worker.load().is_some();
                if was_running {
                    self.stop_entry(entry, false).await?;
                }
                *entry.spec.lock().unwrap_or_else(|p| p.into_inner()) = spec;
                if was_running { self.start_entry(entry).await } else { Ok(()) }
            }
        }
    }

    /// Checks that this host can serve `spec`: its plugin is loaded and supports its worker type.
    fn check(&self, spec: &ModelConfig) -> Result<Arc<crate::plugin::Plugin>, ManagerError> {
        if spec.name.trim().is_empty() || spec.name.contains('@') {
            return Err(ManagerError::BadName(spec.name.clone()));
        }
        let plugin = self
            .plugins
            .get(&spec.plugin)
            .map_err(|_| ManagerError::UnknownPlugin { model: spec.name.clone(), plugin: spec.plugin.clone() })?
            .clone();
        let supported = plugin.current().adapter.as_ref().map(|a| a.worker_types.clone()).unwrap_or_default();
        if !supported.iter().any(|t| t == spec.worker_type.name()) {
            return Err(ManagerError::Unsupported {
                model: spec.name.clone(),
                plugin: spec.plugin.clone(),
                worker_type: spec.worker_type.name(),
                supported: if supported.is_empty() { "no worker type".into() } else { supported.join(", ") },
            });
        }
        Ok(plugin)
    }

    fn instance(&self, spec: &ModelConfig, registration: &Registration) -> Result<Instance, ManagerError> {
        let id = InstanceId::new(&spec.name, spec.worker_type, &registration.host, i64::from(registration.port))
            .map_err(|e| ManagerError::Register { model: spec.name.clone(), source: e.into() })?;
        let mut instance = Instance::new(id);
        instance.weight = spec.weight;
        instance.metadata.insert("plugin".into(), json!(spec.plugin));
        Ok(instance)
    }

    async fn start_entry(&self, entry: &Entry) -> Result<(), ManagerError> {
        let spec = entry.spec();
        let plugin = self.check(&spec)?;
        let worker = Worker::start(&spec, plugin, &self.background);
        if let Some(registration) = &self.registration {
            let instance = self.instance(&spec, registration)?;
            if let Err(source) = registration.registry.register(&instance).await {
                worker.stop();
                return Err(ManagerError::Register { model: spec.name.clone(), source });
            }
            let (registry, interval) = (registration.registry.clone(), registration.heartbeat_interval);
            let task = self.background.spawn(async move {
                let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if let Err(e) = registry.heartbeat(&instance).await {
                        tracing::warn!(model = %instance.id.key(), error = %crate::error::chain(&e), "heartbeat failed");
                    }
                }
            });
            entry.stop_heartbeat();
            *entry.heartbeat.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        }
        entry.worker.store(Some(worker));
        tracing::info!(model = %spec.name, worker_type = spec.worker_type.name(), plugin = %spec.plugin, "model serving");
        Ok(())
    }

    /// Stops heartbeats and the worker, then deregisters it (removing the row when `remove`). The worker is
    /// stopped even when the registry cannot be reached; that failure is still reported.
    async fn stop_entry(&self, entry: &Entry, remove: bool) -> Result<(), ManagerError> {
        entry.stop_heartbeat();
        let spec = entry.spec();
        if let Some(worker) = entry.worker.swap(None) {
            worker.stop();
            tracing::info!(model = %spec.name, worker_type = spec.worker_type.name(), "model stopped");
        }
        if let Some(registration) = &self.registration {
            let instance = self.instance(&spec, registration)?;
            registration
                .registry
                .deregister(&instance.id, remove)
                .await
                .map_err(|source| ManagerError::Deregister { model: spec.name.clone(), source })?;
        }
        Ok(())
    }

    /// Builds, starts and registers a worker for a model not yet on this host, and remembers it across
    /// restarts. Starting a running model again is an error; a failed start leaves nothing behind.
    pub async fn model_startup(&self, spec: ModelConfig) -> Result<(), ManagerError> {
        let key = format!("{}@{}", spec.name, spec.worker_type.name());
        self.startup_inner(spec.clone()).await?;
        self.state_file.update(|p| {
            p.shut_down.retain(|k| *k != key);
            p.started.retain(|s| !(s.name == spec.name && s.worker_type == spec.worker_type));
            if !self.configured.contains(&spec) {
                p.started.push(spec.clone());
            }
        })
        .await
    }

    async fn startup_inner(&self, spec: ModelConfig) -> Result<(), ManagerError> {
        self.check(&spec)?;
        let key = (spec.worker_type, spec.name.clone());
        if !self.add_worker(spec.clone()) {
            return Err(ManagerError::AlreadyRunning(spec.name));
        }
        let Some(entry) = self.read().get(&key).cloned() else { return Err(ManagerError::NotFound(spec.name)) };
        let _guard = entry.op.lock().await;
        if let Err(e) = self.start_entry(&entry).await {
            self.write().remove(&key);
            return Err(e);
        }
        Ok(())
    }

    /// Stops, deregisters and removes a model's worker, and remembers that it is gone.
    pub async fn model_shutdown(&self, worker_type: WorkerType, model: &str) -> Result<(), ManagerError> {
        let key = (worker_type, model.to_string());
        if !self.read().contains_key(&key) {
            return Err(ManagerError::NotFound(model.to_string()));
        }
        let result = self.remove_worker(worker_type, model).await;
        let text = key_text(&key);
        let configured = self.configured.iter().any(|s| s.name == model && s.worker_type == worker_type);
        self.state_file.update(|p| {
            p.started.retain(|s| !(s.name == model && s.worker_type == worker_type));
            if configured && !p.shut_down.contains(&text) {
                p.shut_down.push(text.clone());
            }
        })
        .await?;
        result
    }

    /// DB-GPT's parameter descriptions of a model's worker, with its current values as defaults.
    pub fn parameter_descriptions(&self, worker_type: WorkerType, model: &str) -> Option<Vec<ParamDescription>> {
        let spec = self.read().get(&(worker_type, model.to_string()))?.spec();
        Some(parameter_descriptions(&spec))
    }

    /// What this host could start: each loaded worker-adapter plugin with the worker types it supports.
    pub fn supported_models(&self) -> Vec<SupportedModel> {
        self.plugins
            .iter()
            .filter_map(|p| {
                let adapter = p.current().adapter.clone()?;
                let plugin = p.name.clone();
                Some(adapter.worker_types.iter().filter_map(|t| WorkerType::parse(t)).map(move |t| {
                    SupportedModel::new(&adapter.name, &plugin, t)
                }).collect::<Vec<_>>())
            })
            .flatten()
            .collect()
    }
}
