//! The wasmtime engine: configuration, the epoch ticker behind per-call deadlines, and compilation with an
//! on-disk cache of precompiled components.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

use super::PluginError;
use super::host::PluginState;

/// One epoch tick; deadlines are rounded up to it.
pub const TICK: Duration = Duration::from_millis(10);

/// Capacity of the instance pool shared by every plugin; beyond it instantiation fails until one is freed.
const POOL_INSTANCES: u32 = 256;

/// The engine and linker every plugin shares.
pub struct PluginEngine {
    pub engine: Engine,
    pub linker: Linker<PluginState>,
    cache_dir: PathBuf,
    /// Identifies the compiler settings; precompiled files from another build are never loaded.
    compat: String,
    ticker_stop: Arc<AtomicBool>,
    pub pooling: bool,
    /// Whether fuel is metered: then every store needs fuel, even those of plugins without a fuel limit.
    pub fuel: bool,
}

impl Drop for PluginEngine {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

fn config(max_memory: usize, fuel: bool, pooling: bool) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.consume_fuel(fuel);
    config.cranelift_opt_level(OptLevel::Speed);
    config.parallel_compilation(false);
    if pooling {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_INSTANCES)
            .total_core_instances(POOL_INSTANCES * 8)
            .total_memories(POOL_INSTANCES * 2)
            .total_tables(POOL_INSTANCES * 8)
            .total_stacks(POOL_INSTANCES)
            .max_memories_per_component(4)
            .max_core_instances_per_component(16)
            .max_tables_per_component(16)
            .max_memory_size(max_memory)
            .max_unused_warm_slots(32);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

impl PluginEngine {
    /// Builds the engine. `max_memory` is the largest memory cap of any plugin; the pooling allocator reserves
    /// slots of that size. Where the pooling allocator cannot reserve its address space, instances are
    /// allocated on demand instead (slower to instantiate, same limits).
    pub fn new(cache_dir: &Path, max_memory: usize, fuel: bool) -> Result<Self, PluginError> {
        let (engine, pooling) = match Engine::new(&config(max_memory, fuel, true)) {
            Ok(engine) => (engine, true),
            Err(e) => {
                tracing::warn!(error = %e, "pooling allocator unavailable, allocating instances on demand");
                (Engine::new(&config(max_memory, fuel, false)).map_err(|e| PluginError::Engine(e.into()))?, false)
            }
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| PluginError::Engine(e.into()))?;
        super::bindings::WorkerAdapter::add_to_linker::<PluginState, wasmtime::component::HasSelf<PluginState>>(
            &mut linker,
            |s| s,
        )
        .map_err(|e| PluginError::Engine(e.into()))?;
        super::host::serve_read_without_copy(&mut linker).map_err(|e| PluginError::Engine(e.into()))?;
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let compat = format!("{:016x}", hasher.finish());
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let stop = ticker_stop.clone();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(PluginError::Ticker)?;
        Ok(Self { engine, linker, cache_dir: cache_dir.to_path_buf(), compat, ticker_stop, pooling, fuel })
    }

    /// Compiles a component, or loads it precompiled from the cache. The cache key is the component's sha256
    /// plus the engine's compatibility hash, and the cache holds only files this host wrote (atomically, by
    /// rename), which is what makes deserialising them sound.
    pub fn compile(&self, bytes: &[u8]) -> Result<(Component, String, bool), PluginError> {
        let sha = hex::encode(Sha256::digest(bytes));
        let path = self.cache_dir.join(format!("{sha}-{}.cwasm", self.compat));
        if path.is_file() {
            #[allow(unsafe_code)]
            // SAFETY: the file lives in the host's own cache folder, was produced by `Component::serialize`
            // of an engine with the same compatibility hash, and was moved into place atomically.
            let loaded = unsafe { Component::deserialize_file(&self.engine, &path) };
            match loaded {
                Ok(component) => return Ok((component, sha, true)),
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable precompiled plugin"),
            }
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| PluginError::Compile(e.into()))?;
        if let Err(e) = self.store_cache(&component, &path) {
            tracing::warn!(path = %path.display(), error = %e, "could not cache the precompiled plugin");
        }
        Ok((component, sha, false))
    }

    fn store_cache(&self, component: &Component, path: &Path) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        std::fs::create_dir_all(&self.cache_dir)?;
        let bytes = component.serialize()?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}
