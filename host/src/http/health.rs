//! Liveness and readiness: `/health/live` answers as soon as the process listens; `/health/ready` is 503 until
//! every model and plugin is loaded, and then says what is serving on which execution providers.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{AppState, Readiness};

pub async fn live() -> Response {
    Json(json!({"status": "live"})).into_response()
}

pub async fn ready(State(state): State<AppState>) -> Response {
    match state.readiness() {
        Readiness::Loading => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "loading"}))).into_response()
        }
        // The cause (paths, library names) is in the server's log; this route answers anyone.
        Readiness::Failed(_) => {
            let error = "loading the models and plugins failed; the cause is in the server's log";
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "failed", "error": error}))).into_response()
        }
        Readiness::Ready(services) => {
            let mut providers: Vec<&str> = Vec::new();
            let running = services.resolver.local().map(|m| m.running()).unwrap_or_default();
            let models: Vec<_> = running
                .iter()
                .map(|w| {
                    let version = w.plugin.current();
                    let onnx: Vec<_> = w
                        .plugin
                        .models()
                        .map(|m| {
                            let names: Vec<&str> = m.providers.iter().map(|p| p.name()).collect();
                            for n in &names {
                                if !providers.contains(n) {
                                    providers.push(n);
                                }
                            }
                            json!({"name": m.name, "execution_providers": names})
                        })
                        .collect();
                    let decoder = version.decoder.as_ref().map(|d| {
                        for n in d.decoder.providers.iter().map(|p| p.name()) {
                            if !providers.contains(&n) {
                                providers.push(n);
                            }
                        }
                        json!({
                            "name": d.decoder.name,
                            "execution_providers": d.decoder.providers.iter().map(|p| p.name()).collect::<Vec<_>>(),
                            "max_sequences": d.decoder.limits.max_sequences,
                            "max_context": d.decoder.limits.max_context,
                        })
                    });
                    let generation = w.generation_stats().map(|(running, steps, cancelled)| {
                        json!({"running": running, "decode_steps": steps, "cancelled": cancelled})
                    });
                    json!({
                        "model": w.model,
                        "worker_type": w.worker_type.name(),
                        "plugin": w.plugin.name,
                        "plugin_version": version.info.short(),
                        "onnx": onnx,
                        "decoder": decoder,
                        "generation": generation,
                    })
                })
                .collect();
            let plugins: Vec<_> = services
                .plugins
                .iter()
                .map(|p| json!({"name": p.name, "world": p.world.name(), "sha256": p.current().info.sha256}))
                .collect();
            let sweeper = services.sweeper.as_ref().map(|s| {
                let st = s.stats();
                json!({
                    "leader": s.is_leader(),
                    "passes": st.passes.load(std::sync::atomic::Ordering::Relaxed),
                    "last_pass_us": st.last_pass_us.load(std::sync::atomic::Ordering::Relaxed),
                })
            });
            Json(json!({
                "status": "ready",
                "roles": services.roles,
                "registry": services.registry.as_ref().map(|r| r.store()),
                "sweeper": sweeper,
                "execution_providers": providers,
                "onnxruntime": services.onnxruntime.as_ref().map(|p| p.display().to_string()),
                "wasm_pooling_allocator": services.pooling,
                "models": models,
                "plugins": plugins,
            }))
            .into_response()
        }
    }
}

/// `GET /metrics`: Prometheus text. Before the server is ready it still answers, with what there is so far.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut snapshot = crate::metrics::Snapshot::default();
    if let Readiness::Ready(services) = state.readiness() {
        if let Some(registry) = &services.registry {
            let query = crate::registry::Query { model_name: None, worker_type: None, healthy_only: false };
            match registry.list(&query).await {
                Ok(instances) => {
                    let healthy = instances.iter().filter(|i| i.healthy).count() as u64;
                    snapshot.instances = Some((healthy, instances.len() as u64 - healthy));
                }
                Err(e) => tracing::warn!(error = %crate::error::chain(&e), "metrics: listing the registry"),
            }
        }
        if let Some(sweeper) = &services.sweeper {
            use std::sync::atomic::Ordering::Relaxed;
            let stats = sweeper.stats();
            let counts = (stats.passes.load(Relaxed), stats.marked_unhealthy.load(Relaxed), stats.evicted.load(Relaxed));
            snapshot.sweeper = Some((counts.0, counts.1, counts.2, sweeper.is_leader()));
        }
        if let Some(manager) = services.resolver.local() {
            // One model may run as several worker types; its queues add up under its name.
            let mut queues = std::collections::BTreeMap::<String, (usize, usize)>::new();
            for worker in manager.running() {
                let entry = queues.entry(worker.model.clone()).or_default();
                entry.0 += worker.queued();
                entry.1 += worker.batches_running();
            }
            snapshot.queues = queues.into_iter().map(|(model, (queued, running))| (model, queued, running)).collect();
        }
        for pipeline in services.pipelines.iter() {
            for s in pipeline.stage_info() {
                snapshot.stages.push(crate::metrics::StageSample {
                    pipeline: pipeline.name.clone(),
                    stage_id: s.stage_id,
                    runs: s.runs,
                    failures: s.failures,
                    processor_seconds: s.processor_ms / 1e3,
                    engine_seconds: s.engine_ms / 1e3,
                });
            }
        }
    }
    let body = crate::metrics::render(&snapshot);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}
