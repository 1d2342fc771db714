//! The one place the host generates bindings for the `omnihost:plugin` WIT package; everyone imports from here.
//!
//! Every world shares its imports: the stage-processor and llm-adapter bindings reuse the interfaces generated for the
//! worker-adapter world, so a `Tensor` or an `Error` is the same Rust type everywhere.

pub mod worker {
    wasmtime::component::bindgen!({
        path: "../wit/plugin",
        world: "worker-adapter",
        imports: {
            "omnihost:plugin/compute.[method]session.run": async | trappable,
            "omnihost:plugin/streaming.[method]sink.push": async | trappable,
            default: trappable,
        },
        exports: { default: async },
        with: {
            "omnihost:plugin/tensors.tensor": crate::compute::Tensor,
            "omnihost:plugin/compute.session": crate::plugin::host::SessionHandle,
            "omnihost:plugin/streaming.sink": crate::plugin::host::SinkHandle,
        },
    });
}

pub mod stage {
    wasmtime::component::bindgen!({
        path: "../wit/plugin",
        world: "stage-processor",
        exports: { default: async },
        with: {
            "omnihost:plugin/types": crate::plugin::bindings::worker::omnihost::plugin::types,
            "omnihost:plugin/tensors": crate::plugin::bindings::worker::omnihost::plugin::tensors,
            "omnihost:plugin/compute": crate::plugin::bindings::worker::omnihost::plugin::compute,
            "omnihost:plugin/log": crate::plugin::bindings::worker::omnihost::plugin::log,
            "omnihost:plugin/config": crate::plugin::bindings::worker::omnihost::plugin::config,
        },
    });
}

pub mod pipeline {
    wasmtime::component::bindgen!({
        path: "../wit/plugin",
        world: "pipeline-processor",
        exports: { default: async },
        with: {
            "omnihost:plugin/types": crate::plugin::bindings::worker::omnihost::plugin::types,
            "omnihost:plugin/tensors": crate::plugin::bindings::worker::omnihost::plugin::tensors,
            "omnihost:plugin/compute": crate::plugin::bindings::worker::omnihost::plugin::compute,
            "omnihost:plugin/log": crate::plugin::bindings::worker::omnihost::plugin::log,
            "omnihost:plugin/config": crate::plugin::bindings::worker::omnihost::plugin::config,
        },
    });
}

pub mod llm {
    wasmtime::component::bindgen!({
        path: "../wit/plugin",
        world: "llm-adapter",
        exports: { default: async },
        with: {
            "omnihost:plugin/types": crate::plugin::bindings::worker::omnihost::plugin::types,
            "omnihost:plugin/tensors": crate::plugin::bindings::worker::omnihost::plugin::tensors,
            "omnihost:plugin/compute": crate::plugin::bindings::worker::omnihost::plugin::compute,
            "omnihost:plugin/log": crate::plugin::bindings::worker::omnihost::plugin::log,
            "omnihost:plugin/config": crate::plugin::bindings::worker::omnihost::plugin::config,
            "omnihost:plugin/streaming": crate::plugin::bindings::worker::omnihost::plugin::streaming,
        },
    });
}

pub use worker::omnihost::plugin::{compute, config, log, streaming, tensors, types};
pub use llm::exports::omnihost::plugin::decoding;
pub use llm::{LlmAdapter, LlmAdapterPre};
pub use worker::exports::omnihost::plugin::worker as worker_exports;
pub use worker::{WorkerAdapter, WorkerAdapterPre};
pub use stage::{StageProcessor, StageProcessorPre};
pub use pipeline::exports::omnihost::plugin::processor;
pub use pipeline::{PipelineProcessor, PipelineProcessorPre};
