//! Execution providers from config (`["tensorrt", "cuda", "cpu"]`), registered in order with fallback.

use std::path::Path;

use ort::ep::{self, ExecutionProvider};
use ort::session::builder::SessionBuilder;
use serde::{Deserialize, Serialize};

/// An execution provider an operator can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Tensorrt,
    Cuda,
    Cpu,
}

impl Provider {
    pub fn name(self) -> &'static str {
        match self {
            Self::Tensorrt => "tensorrt",
            Self::Cuda => "cuda",
            Self::Cpu => "cpu",
        }
    }
}

/// Registers each requested provider on `builder`, in order, and returns the ones ONNX Runtime accepted.
/// A provider this build of ONNX Runtime lacks, or one that fails to initialise (no GPU, missing CUDA
/// libraries), is skipped with a warning naming the reason; the CPU provider is always the last resort.
pub fn register(builder: &mut SessionBuilder, wanted: &[Provider], model: &str, trt_cache: &Path) -> Vec<Provider> {
    let mut used = Vec::new();
    for &provider in wanted {
        let outcome = match provider {
            Provider::Cpu => {
                used.push(Provider::Cpu);
                continue;
            }
            Provider::Cuda => try_register::<ep::CUDA>(builder, ep::CUDA::default().build()),
            Provider::Tensorrt => try_register::<ep::TensorRT>(
                builder,
                ep::TensorRT::default()
                    .with_engine_cache(true)
                    .with_engine_cache_path(trt_cache.display().to_string())
                    .with_timing_cache(true)
                    .with_timing_cache_path(trt_cache.display().to_string())
                    .build(),
            ),
        };
        match outcome {
            Ok(()) => used.push(provider),
            Err(reason) => {
                tracing::warn!(model, provider = provider.name(), %reason, "execution provider unavailable, falling back")
            }
        }
    }
    if !used.contains(&Provider::Cpu) {
        used.push(Provider::Cpu);
    }
    used
}

fn try_register<E: ExecutionProvider>(
    builder: &mut SessionBuilder,
    dispatch: ep::ExecutionProviderDispatch,
) -> Result<(), String> {
    match E::is_available() {
        Ok(true) => {}
        Ok(false) => return Err("this ONNX Runtime build does not include it".to_string()),
        Err(e) => return Err(e.to_string()),
    }
    dispatch.error_on_failure().register(builder).map_err(|e| e.to_string())
}
