//! The host side of the plugin contract: the state each plugin instance's store carries, and the
//! implementations of the `log`, `config`, `tensors`, `compute` and `streaming` imports.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{compute, config, log, streaming, tensors, types};
use crate::compute::{ComputeError, ElementType, Model, Tensor, TensorError};

/// What every instance of one plugin version shares: its identity, config values and the models it may open.
#[derive(Debug)]
pub struct PluginContext {
    pub plugin: String,
    /// First 12 hex digits of the component's sha256, for log lines.
    pub version: String,
    pub config: BTreeMap<String, String>,
    pub models: BTreeMap<String, Arc<Model>>,
    pub tensor_limit: usize,
}

/// Caps linear memory and remembers whether the cap was hit, so a failed call can be reported as such.
#[derive(Debug)]
pub struct MemoryLimiter {
    pub cap: usize,
    pub hit: bool,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        // Tables hold function references; a million is far beyond any real plugin.
        Ok(desired <= 1_000_000)
    }
}

/// The data of one instance's store.
pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: MemoryLimiter,
    ctx: Arc<PluginContext>,
}

impl PluginState {
    pub fn new(wasi: WasiCtx, ctx: Arc<PluginContext>, memory_cap: usize) -> Self {
        Self { wasi, table: ResourceTable::new(), limiter: MemoryLimiter { cap: memory_cap, hit: false }, ctx }
    }

    /// Registers a sink for one `generate` call.
    pub fn push_sink(&mut self, sink: SinkHandle) -> wasmtime::Result<Resource<SinkHandle>> {
        Ok(self.table.push(sink)?)
    }

    pub fn drop_sink(&mut self, sink: Resource<SinkHandle>) -> wasmtime::Result<()> {
        self.table.delete(sink)?;
        Ok(())
    }

    /// Hands a host tensor to the guest as an owned handle (a cheap clone: the bytes are shared).
    pub fn push_tensor(&mut self, tensor: Tensor) -> wasmtime::Result<Resource<Tensor>> {
        Ok(self.table.push(tensor)?)
    }

    /// Takes back a tensor the guest returned; the guest no longer holds it.
    pub fn take_tensor(&mut self, handle: Resource<Tensor>) -> wasmtime::Result<Tensor> {
        Ok(self.table.delete(handle)?)
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// The host object behind a WIT `session`: a model the plugin was granted.
#[derive(Debug)]
pub struct SessionHandle {
    model: Arc<Model>,
}

/// The host object behind a WIT `sink`: where `generate` deltas go.
#[derive(Debug)]
pub struct SinkHandle {
    pub tx: mpsc::Sender<String>,
}

fn error(code: types::ErrorCode, message: impl ToString) -> types::Error {
    types::Error { code, message: message.to_string() }
}

fn element_type(ty: tensors::TensorType) -> ElementType {
    use tensors::TensorType as T;
    match ty {
        T::Fp16 => ElementType::Fp16,
        T::Fp32 => ElementType::Fp32,
        T::Fp64 => ElementType::Fp64,
        T::Bf16 => ElementType::Bf16,
        T::U8 => ElementType::U8,
        T::I8 => ElementType::I8,
        T::I32 => ElementType::I32,
        T::I64 => ElementType::I64,
        T::Boolean => ElementType::Bool,
    }
}

fn tensor_type(ty: ElementType) -> tensors::TensorType {
    use tensors::TensorType as T;
    match ty {
        ElementType::Fp16 => T::Fp16,
        ElementType::Fp32 => T::Fp32,
        ElementType::Fp64 => T::Fp64,
        ElementType::Bf16 => T::Bf16,
        ElementType::U8 => T::U8,
        ElementType::I8 => T::I8,
        ElementType::I32 => T::I32,
        ElementType::I64 => T::I64,
        ElementType::Bool => T::Boolean,
    }
}

fn compute_error(e: &ComputeError) -> types::Error {
    use types::ErrorCode as C;
    let code = match e {
        ComputeError::MissingInput { .. } | ComputeError::UnknownInput { .. } | ComputeError::InputType { .. } => {
            C::InvalidArgument
        }
        ComputeError::Tensor { source: TensorError::Unsupported(_) | TensorError::UnsupportedOutput { .. }, .. } => {
            C::UnsupportedOperation
        }
        ComputeError::Tensor { source: TensorError::TooLarge { .. }, .. } => C::TooLarge,
        ComputeError::Tensor { .. } => C::InvalidArgument,
        _ => C::RuntimeError,
    };
    error(code, e)
}

impl types::Host for PluginState {}

impl log::Host for PluginState {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let (plugin, version) = (self.ctx.plugin.as_str(), self.ctx.version.as_str());
        match level {
            log::Level::Trace => tracing::trace!(target: "plugin", plugin, version, "{message}"),
            log::Level::Debug => tracing::debug!(target: "plugin", plugin, version, "{message}"),
            log::Level::Info => tracing::info!(target: "plugin", plugin, version, "{message}"),
            log::Level::Warn => tracing::warn!(target: "plugin", plugin, version, "{message}"),
            log::Level::Error => tracing::error!(target: "plugin", plugin, version, "{message}"),
        }
        Ok(())
    }
}

impl config::Host for PluginState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.ctx.config.get(&key).cloned())
    }

    fn keys(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.ctx.config.keys().cloned().collect())
    }
}

impl tensors::Host for PluginState {}

/// The `tensors` interface's name in the linker, as the WIT package declares it.
pub(super) const TENSORS_INTERFACE: &str = "omnihost:plugin/tensors@0.1.2";

/// Serves `tensor.read` by lowering the host tensor's shared bytes straight into the guest's memory. The
/// generated binding returns a `Vec<u8>`, which copied the whole tensor once more first; for a batch's
/// `last_hidden_state` that copy was the largest single cost of a read.
pub(super) fn serve_read_without_copy(linker: &mut wasmtime::component::Linker<PluginState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let defined = linker.instance(TENSORS_INTERFACE).and_then(|mut tensors| {
        tensors.func_wrap(
            "[method]tensor.read",
            |store: wasmtime::StoreContextMut<'_, PluginState>, (this,): (Resource<Tensor>,)| {
                Ok((store.data().table.get(&this)?.data.clone(),))
            },
        )
    });
    linker.allow_shadowing(false);
    defined
}

impl tensors::HostTensor for PluginState {
    fn create(
        &mut self,
        dimensions: Vec<u32>,
        ty: tensors::TensorType,
        data: Vec<u8>,
    ) -> wasmtime::Result<Result<Resource<Tensor>, types::Error>> {
        let tensor = match Tensor::new(dimensions, element_type(ty), data, self.ctx.tensor_limit) {
            Ok(t) => t,
            Err(e @ TensorError::TooLarge { .. }) => return Ok(Err(error(types::ErrorCode::TooLarge, e))),
            Err(e) => return Ok(Err(error(types::ErrorCode::InvalidArgument, e))),
        };
        Ok(Ok(self.table.push(tensor)?))
    }

    fn dimensions(&mut self, this: Resource<Tensor>) -> wasmtime::Result<Vec<u32>> {
        Ok(self.table.get(&this)?.dims.clone())
    }

    fn ty(&mut self, this: Resource<Tensor>) -> wasmtime::Result<tensors::TensorType> {
        Ok(tensor_type(self.table.get(&this)?.ty))
    }

    /// Never called: [`serve_read_without_copy`] replaces this import in the linker. The generated trait still
    /// asks for it, and it stays correct should that replacement ever be left out.
    fn read(&mut self, this: Resource<Tensor>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.table.get(&this)?.data.to_vec())
    }

    fn drop(&mut self, this: Resource<Tensor>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

fn describe(items: &[crate::compute::IoInfo]) -> Vec<compute::TensorInfo> {
    items
        .iter()
        .map(|i| compute::TensorInfo { name: i.name.clone(), ty: i.ty.map(tensor_type), dimensions: i.dims.clone() })
        .collect()
}

impl compute::Host for PluginState {
    fn open(&mut self, model: String) -> wasmtime::Result<Result<Resource<SessionHandle>, types::Error>> {
        let Some(found) = self.ctx.models.get(&model) else {
            let granted: Vec<&str> = self.ctx.models.keys().map(String::as_str).collect();
            return Ok(Err(error(
                types::ErrorCode::NotFound,
                format!("model `{model}` is not granted to plugin `{}` (granted: {granted:?})", self.ctx.plugin),
            )));
        };
        Ok(Ok(self.table.push(SessionHandle { model: found.clone() })?))
    }
}

impl compute::HostSession for PluginState {
    fn inputs(&mut self, this: Resource<SessionHandle>) -> wasmtime::Result<Vec<compute::TensorInfo>> {
        Ok(describe(&self.table.get(&this)?.model.inputs))
    }

    fn outputs(&mut self, this: Resource<SessionHandle>) -> wasmtime::Result<Vec<compute::TensorInfo>> {
        Ok(describe(&self.table.get(&this)?.model.outputs))
    }

    fn metadata(&mut self, this: Resource<SessionHandle>) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.table.get(&this)?.model.metadata.clone())
    }

    async fn run(
        &mut self,
        this: Resource<SessionHandle>,
        inputs: Vec<(String, Resource<Tensor>)>,
    ) -> wasmtime::Result<Result<Vec<(String, Resource<Tensor>)>, types::Error>> {
        let model = self.table.get(&this)?.model.clone();
        let mut values = Vec::with_capacity(inputs.len());
        for (name, handle) in inputs {
            values.push((name, self.table.get(&handle)?.clone()));
        }
        let outputs = match model.run(values).await {
            Ok(outputs) => outputs,
            Err(e) => return Ok(Err(compute_error(&e))),
        };
        let mut handles = Vec::with_capacity(outputs.len());
        for (name, tensor) in outputs {
            handles.push((name, self.table.push(tensor)?));
        }
        Ok(Ok(handles))
    }

    fn drop(&mut self, this: Resource<SessionHandle>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl streaming::Host for PluginState {}

impl streaming::HostSink for PluginState {
    async fn push(&mut self, this: Resource<SinkHandle>, delta: String) -> wasmtime::Result<bool> {
        let tx = self.table.get(&this)?.tx.clone();
        // Waiting on a full channel slows the guest to the client's pace instead of dropping text; the guest
        // learns the client is gone when the receiver is dropped.
        Ok(tx.send(delta).await.is_ok())
    }

    fn drop(&mut self, this: Resource<SinkHandle>) -> wasmtime::Result<()> {
        // The sink is owned by the host for the duration of a `generate` call; the guest only ever borrows it.
        let _ = this;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_free_read_replaces_the_generated_one() {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        let engine = wasmtime::Engine::new(&config).unwrap();
        let mut linker = wasmtime::component::Linker::<PluginState>::new(&engine);
        crate::plugin::bindings::WorkerAdapter::add_to_linker::<PluginState, wasmtime::component::HasSelf<PluginState>>(
            &mut linker,
            |s| s,
        )
        .unwrap();
        // Without shadowing, defining the import again must clash: proof that the name is the generated one and
        // the replacement does not land in an interface no plugin imports.
        let clash = linker
            .instance(TENSORS_INTERFACE)
            .and_then(|mut t| t.func_wrap("[method]tensor.read", |_: wasmtime::StoreContextMut<'_, PluginState>, (_,): (Resource<Tensor>,)| Ok((Vec::<u8>::new(),))));
        assert!(clash.is_err(), "{TENSORS_INTERFACE} does not name the generated tensors interface");
        serve_read_without_copy(&mut linker).unwrap();
    }
}
