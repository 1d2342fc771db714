//! One plugin version's instances: the warm pool, and calls made under the version's limits.
//!
//! An instance is reused for up to `max_calls_per_instance` calls, because a worker adapter's set-up (parsing a
//! tokenizer) must not be paid per request. An instance whose call trapped, ran out of time or hit its memory
//! cap is dropped, never reused: its state may be half-updated.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use wasmtime::Store;

use super::bindings::{
    LlmAdapter, LlmAdapterPre, PipelineProcessor, PipelineProcessorPre, StageProcessor, StageProcessorPre, WorkerAdapter,
    WorkerAdapterPre,
};
use super::engine::{PluginEngine, TICK};
use super::host::{PluginContext, PluginState};
use super::CallError;
use crate::config::Limits;

/// The pre-instantiated component, typed by the world it implements.
#[derive(Clone)]
pub enum Pre {
    Worker(WorkerAdapterPre<PluginState>),
    Stage(StageProcessorPre<PluginState>),
    Llm(LlmAdapterPre<PluginState>),
    Pipeline(PipelineProcessorPre<PluginState>),
}

/// The exports of one live instance.
pub enum Exports {
    Worker(WorkerAdapter),
    Stage(StageProcessor),
    Llm(LlmAdapter),
    Pipeline(PipelineProcessor),
}

pub struct Instance {
    pub store: Store<PluginState>,
    pub exports: Exports,
    calls: u32,
}

/// Instantiation, the warm pool and limits of one plugin version.
pub struct Instances {
    engine: Arc<PluginEngine>,
    pre: Pre,
    ctx: Arc<PluginContext>,
    limits: Limits,
    wasi: super::WasiGrant,
    idle: Mutex<Vec<Instance>>,
    permits: Semaphore,
}

/// The future a call returns; it borrows the instance's exports and store.
pub type CallFuture<'a, R> = Pin<Box<dyn Future<Output = wasmtime::Result<R>> + Send + 'a>>;

impl Instances {
    pub fn new(
        engine: Arc<PluginEngine>,
        pre: Pre,
        ctx: Arc<PluginContext>,
        limits: Limits,
        wasi: super::WasiGrant,
    ) -> Self {
        let permits = Semaphore::new(limits.max_concurrency.max(1));
        Self { engine, pre, ctx, limits, wasi, idle: Mutex::new(Vec::new()), permits }
    }

    pub fn context(&self) -> &PluginContext {
        &self.ctx
    }

    fn memory_cap(&self) -> usize {
        (self.limits.memory_mib as usize).saturating_mul(1 << 20)
    }

    async fn instantiate(&self) -> Result<Instance, CallError> {
        let wasi = self.wasi.build().map_err(|source| CallError::Instantiate {
            plugin: self.ctx.plugin.clone(),
            source,
        })?;
        let mut store = Store::new(&self.engine.engine, PluginState::new(wasi, self.ctx.clone(), self.memory_cap()));
        store.limiter(|s| &mut s.limiter);
        // Instantiation runs the guest's start-up code: it gets the same budget as a call.
        self.arm(&mut store)?;
        let err = |e: wasmtime::Error| CallError::Instantiate { plugin: self.ctx.plugin.clone(), source: e.into() };
        let exports = match &self.pre {
            Pre::Worker(pre) => Exports::Worker(pre.instantiate_async(&mut store).await.map_err(err)?),
            Pre::Stage(pre) => Exports::Stage(pre.instantiate_async(&mut store).await.map_err(err)?),
            Pre::Llm(pre) => Exports::Llm(pre.instantiate_async(&mut store).await.map_err(err)?),
            Pre::Pipeline(pre) => Exports::Pipeline(pre.instantiate_async(&mut store).await.map_err(err)?),
        };
        Ok(Instance { store, exports, calls: 0 })
    }

    fn arm(&self, store: &mut Store<PluginState>) -> Result<(), CallError> {
        let ticks = self.limits.timeout_ms.div_ceil(TICK.as_millis() as u64).max(1);
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        if self.engine.fuel {
            // Metering is engine-wide; a plugin without a fuel limit gets an unlimited tank.
            store
                .set_fuel(self.limits.fuel.unwrap_or(u64::MAX))
                .map_err(|e| CallError::Instantiate { plugin: self.ctx.plugin.clone(), source: e.into() })?;
        }
        store.data_mut().limiter.hit = false;
        Ok(())
    }

    /// Runs `f` on a warm (or new) instance under the version's limits.
    pub async fn call<R: Send>(
        &self,
        f: impl for<'a> FnOnce(&'a Exports, &'a mut Store<PluginState>) -> CallFuture<'a, R> + Send,
    ) -> Result<R, CallError> {
        let _permit = self.permits.acquire().await.map_err(|_| CallError::Closed(self.ctx.plugin.clone()))?;
        let pooled = if self.limits.fresh_instance_per_call {
            None
        } else {
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
        };
        let mut instance = match pooled {
            Some(i) => i,
            None => self.instantiate().await?,
        };
        let result = self.call_on(&mut instance, f).await;
        if result.is_ok() {
            self.give_back(instance);
        }
        result
    }

    /// Runs `f` on the given instance under the version's limits. After an error the instance must be dropped.
    pub async fn call_on<R: Send>(
        &self,
        instance: &mut Instance,
        f: impl for<'a> FnOnce(&'a Exports, &'a mut Store<PluginState>) -> CallFuture<'a, R> + Send,
    ) -> Result<R, CallError> {
        self.arm(&mut instance.store)?;
        // The epoch deadline stops guest code; this outer timeout also bounds time spent waiting on the host
        // (a compute queue), with one tick of slack so the epoch trap wins when both fire.
        let budget = Duration::from_millis(self.limits.timeout_ms) + TICK * 2;
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(budget, f(&instance.exports, &mut instance.store)).await;
        let result = match outcome {
            Err(_) => Err(CallError::Timeout { plugin: self.ctx.plugin.clone(), after_ms: self.limits.timeout_ms }),
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.classify(&instance.store, e)),
        };
        let fuel = if self.engine.fuel {
            instance.store.get_fuel().ok().map(|left| self.limits.fuel.unwrap_or(u64::MAX).saturating_sub(left))
        } else {
            None
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(CallError::Trap { .. }) => "trap",
            Err(CallError::Timeout { .. }) => "timeout",
            Err(CallError::MemoryLimit { .. }) => "memory_limit",
            Err(CallError::OutOfFuel { .. }) => "out_of_fuel",
            Err(_) => "error",
        };
        crate::metrics::plugin_call(&self.ctx.plugin, &self.ctx.version, outcome, started.elapsed(), fuel);
        result
    }

    fn classify(&self, store: &Store<PluginState>, e: wasmtime::Error) -> CallError {
        let plugin = self.ctx.plugin.clone();
        if store.data().limiter.hit {
            return CallError::MemoryLimit { plugin, cap_mib: self.limits.memory_mib };
        }
        match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => CallError::Timeout { plugin, after_ms: self.limits.timeout_ms },
            Some(wasmtime::Trap::OutOfFuel) => CallError::OutOfFuel { plugin },
            _ => CallError::Trap { plugin, source: e.into() },
        }
    }

    fn give_back(&self, mut instance: Instance) {
        instance.calls += 1;
        if self.limits.fresh_instance_per_call || instance.calls >= self.limits.max_calls_per_instance {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.limits.pool_size {
            idle.push(instance);
        }
    }

    /// A new instance, not yet in the pool: the smoke test and pre-warming of a new version.
    pub async fn warm(&self) -> Result<Instance, CallError> {
        self.instantiate().await
    }

    /// How many idle instances the pool keeps.
    pub fn pool_size(&self) -> usize {
        if self.limits.fresh_instance_per_call { 0 } else { self.limits.pool_size }
    }

    pub fn adopt(&self, instance: Instance) {
        self.give_back(instance);
    }

    /// Idle instances now in the pool.
    pub fn idle(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(0)
    }
}
