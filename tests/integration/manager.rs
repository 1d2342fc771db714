//! The worker manager's behaviour (DESIGN.md §5) on real workers: the MiniLM embedder and the `faulty` fixture,
//! registered in a real registry.

use std::sync::Arc;
use std::time::Duration;

use omnihost::config::{ModelConfig, WorkerType};
use omnihost::registry::{MemoryRegistry, Query, Registry, RemoteRegistry};
use omnihost::worker::error::ManagerError;
use omnihost::worker::manager::{ApplyType, Registration, WorkerManager};
use omnihost::worker::params::spec_from_params;
use serde_json::{Map, json};

use crate::common::{self, MODEL};

fn spec(name: &str, worker_type: WorkerType, plugin: &str) -> ModelConfig {
    let mut params = Map::new();
    params.insert("plugin".into(), json!(plugin));
    spec_from_params(name, worker_type, &params).unwrap()
}

fn running(manager: &WorkerManager) -> usize {
    manager.workers().iter().filter(|(_, r)| *r).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_add_apply_restart_startup_shutdown_and_heartbeats() {
    let server = common::start(&common::faulty_model("faulty-model", "timeout_ms = 1000", "")).await;
    let services = server.wait_ready(Duration::from_secs(1)).await.unwrap();
    let plugins = services.plugins.clone();
    let registry = Arc::new(MemoryRegistry::new());
    let registration = Registration {
        registry: registry.clone(),
        host: "127.0.0.1".into(),
        port: 9,
        heartbeat_interval: Duration::from_millis(100),
    };
    let manager = WorkerManager::new(plugins.clone(), Vec::new(), Some(registration), None);

    // add: true, then false for a duplicate (no second copy); remove of a missing worker does nothing.
    assert!(manager.add_worker(spec(MODEL, WorkerType::Text2vec, "embed-minilm")));
    assert!(!manager.add_worker(spec(MODEL, WorkerType::Text2vec, "embed-minilm")));
    assert!(manager.add_worker(spec("faulty-model", WorkerType::Text2vec, "faulty")));
    assert_eq!(manager.workers().len(), 2);
    manager.remove_worker(WorkerType::Llm, "not there").await.unwrap();

    // Start all: both run and are registered healthy.
    let out = manager.apply(None, None, ApplyType::Start, None).await;
    assert!(out.success, "{}", out.message);
    assert_eq!(running(&manager), 2);
    assert_eq!(registry.list(&Query { healthy_only: true, ..Query::default() }).await.unwrap().len(), 2);
    let v = manager.get(MODEL, Some(WorkerType::Text2vec)).unwrap().embed(vec!["hello".into()], true).await.unwrap();
    assert_eq!(v.vectors[0].values.len(), 384);

    // Restart keeps the workers (DB-GPT emptied the manager and still reported success).
    let out = manager.apply(None, None, ApplyType::Restart, None).await;
    assert!(out.success && out.message.lines().count() == 2, "{out:?}");
    assert_eq!((manager.workers().len(), running(&manager)), (2, 2));
    assert!(manager.get(MODEL, None).unwrap().embed(vec!["still here".into()], true).await.is_ok());

    // Stop one model: only it stops, it is deregistered, and its heartbeats really stop.
    let out = manager.apply(Some("faulty-model"), None, ApplyType::Stop, None).await;
    assert!(out.success, "{}", out.message);
    assert_eq!(running(&manager), 1);
    let row = |name: &'static str| {
        let registry = registry.clone();
        async move {
            registry.list(&Query { model_name: Some(name.into()), ..Query::default() }).await.unwrap().remove(0)
        }
    };
    let stopped = row("faulty-model").await;
    assert!(!stopped.healthy);
    // Three heartbeat intervals pass, as the running worker's own heartbeats show: the stopped one sends none.
    crate::cluster::wait_for("the running worker heartbeating", Duration::from_secs(10), async || {
        row(MODEL).await.last_heartbeat_ms >= stopped.last_heartbeat_ms + 300
    })
    .await;
    let later = row("faulty-model").await;
    assert_eq!(later.last_heartbeat_ms, stopped.last_heartbeat_ms, "no heartbeat after stop");
    assert!(!later.healthy);

    // Update params: applied, the worker restarted with them; a bad parameter is refused and changes nothing.
    let params: Map<String, serde_json::Value> = json!({"weight": 3.0, "max_batch": 4}).as_object().unwrap().clone();
    let out = manager.apply(Some(MODEL), None, ApplyType::UpdateParams, Some(&params)).await;
    assert!(out.success, "{}", out.message);
    assert_eq!(row(MODEL).await.weight, 3.0);
    let descriptions = manager.parameter_descriptions(WorkerType::Text2vec, MODEL).unwrap();
    assert!(descriptions.len() > 5);
    assert!(descriptions.iter().any(|d| d.param_name == "max_batch" && d.default_value == 4));
    let bad: Map<String, serde_json::Value> = json!({"max_batch": 0}).as_object().unwrap().clone();
    let out = manager.apply(Some(MODEL), None, ApplyType::UpdateParams, Some(&bad)).await;
    assert!(!out.success && out.message.contains("max_batch"), "{out:?}");
    assert!(manager.get(MODEL, None).is_some(), "a refused update leaves the worker running");
    let out = manager.apply(Some("nobody"), None, ApplyType::Start, None).await;
    assert!(!out.success && out.message.contains("nobody"));

    // model_startup: starts and registers; twice is an error; a failed start leaves nothing behind.
    manager.model_startup(spec("copy", WorkerType::Text2vec, "embed-minilm")).await.unwrap();
    assert!(registry.list(&Query::model("copy", WorkerType::Text2vec)).await.unwrap().len() == 1);
    let again = manager.model_startup(spec("copy", WorkerType::Text2vec, "embed-minilm")).await;
    assert!(matches!(again, Err(ManagerError::AlreadyRunning(_))), "{again:?}");
    let wrong_type = manager.model_startup(spec("faulty-rerank", WorkerType::Reranker, "faulty")).await;
    assert!(matches!(wrong_type, Err(ManagerError::Unsupported { .. })), "{wrong_type:?}");
    let no_plugin = manager.model_startup(spec("ghost", WorkerType::Text2vec, "no-such-plugin")).await;
    assert!(matches!(no_plugin, Err(ManagerError::UnknownPlugin { .. })), "{no_plugin:?}");
    assert!(manager.workers().iter().all(|(s, _)| s.name != "faulty-rerank" && s.name != "ghost"));
    assert!(registry.list(&Query { model_name: Some("faulty-rerank".into()), ..Query::default() }).await.unwrap().is_empty());
    // model_shutdown undoes it; shutting down what is not there is an error.
    manager.model_shutdown(WorkerType::Text2vec, "copy").await.unwrap();
    assert!(manager.get("copy", None).is_none());
    assert!(registry.list(&Query { model_name: Some("copy".into()), ..Query::default() }).await.unwrap().is_empty());
    assert!(matches!(manager.model_shutdown(WorkerType::Text2vec, "copy").await, Err(ManagerError::NotFound(_))));

    // Supported models: what this host could start.
    let supported = manager.supported_models();
    assert!(supported.iter().any(|m| m.path == "embed-minilm" && m.worker_type == "text2vec"), "{supported:?}");

    manager.stop().await.unwrap();
    assert_eq!(running(&manager), 0);
    assert!(registry.list(&Query { healthy_only: true, ..Query::default() }).await.unwrap().is_empty());
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_fails_if_a_worker_fails_and_stop_reports_a_failure_without_losing_the_rest() {
    let server = common::start("").await;
    let plugins = server.wait_ready(Duration::from_secs(1)).await.unwrap().plugins.clone();

    // Manager start fails when one worker cannot start (a plugin that does not support the type).
    let bad = vec![spec(MODEL, WorkerType::Text2vec, "embed-minilm"), spec("minilm-llm", WorkerType::Llm, "embed-minilm")];
    let manager = WorkerManager::new(plugins.clone(), bad, None, None);
    let err = manager.start().await.unwrap_err();
    assert!(err.to_string().contains("starting the worker manager"), "{err}");

    // Stop fails (after stopping every worker) when the registry cannot be told: the controller is gone.
    let controller = common::start_with(&common::config_text("", "")).await;
    let remote = Arc::new(RemoteRegistry::new(&controller.url(), None).unwrap());
    let registration = Registration { registry: remote, host: "127.0.0.1".into(), port: 9, heartbeat_interval: Duration::from_secs(5) };
    let specs = vec![spec(MODEL, WorkerType::Text2vec, "embed-minilm"), spec("second", WorkerType::Text2vec, "embed-minilm")];
    let manager = WorkerManager::new(plugins, specs, Some(registration), None);
    manager.start().await.unwrap();
    assert_eq!(running(&manager), 2);
    controller.stop().await.unwrap();
    let out = manager.apply(None, None, ApplyType::Stop, None).await;
    assert!(!out.success && out.message.contains("deregistering"), "{out:?}");
    assert_eq!(running(&manager), 0, "every worker stopped even though the registry could not be told");
    assert!(manager.stop().await.is_err(), "the manager's own stop reports the failure");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_over_its_concurrency_limit_answers_429() {
    let extra = common::faulty_model("limited", "timeout_ms = 1500", "").replace(
        "plugin = \"faulty\"\n",
        "plugin = \"faulty\"\nconcurrency_limit = 1\n",
    );
    let server = common::start(&extra).await;
    let url = server.url();
    let client = common::client();
    let slow = {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move { common::embed_raw(&client, &url, json!({"model": "limited", "input": "loop"})).await })
    };
    crate::cluster::wait_for("the looping request computing", Duration::from_secs(10), async || {
        common::model_gauge(&client, &url, "omnihost_model_batches_running", "limited").await == 1.0
    })
    .await;
    let (status, body) = common::embed_raw(&client, &url, json!({"model": "limited", "input": "hi"})).await;
    assert_eq!(status, 429, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("concurrency limit of 1"), "{body}");
    assert_eq!(slow.await.unwrap().0, 504, "the slow request times out on its own");
    let (status, _) = common::embed_raw(&client, &url, json!({"model": "limited", "input": "hi"})).await;
    assert_eq!(status, 200, "the slot is free again");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_started_at_run_time_are_replayed_when_the_host_restarts() {
    let dir = common::root().join(format!("target/omnihost-test-cache/replay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let extra = format!("[cluster]\nstate_file = \"{}\"\n", dir.join("models.json").display());
    let server = common::start(&extra).await;
    let client = common::client();
    let r = client
        .post(format!("{}/api/worker/models/startup", server.url()))
        .json(&json!({"model": "late", "worker_type": "text2vec", "params": {"plugin": "embed-minilm"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = client
        .post(format!("{}/api/worker/models/shutdown", server.url()))
        .json(&json!({"model": MODEL, "worker_type": "text2vec"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.stop().await.unwrap();

    let server = common::start(&extra).await;
    let (status, body) = common::embed_raw(&client, &server.url(), json!({"model": "late", "input": "back again"})).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = common::embed_raw(&client, &server.url(), json!({"model": MODEL, "input": "x"})).await;
    assert_eq!(status, 404, "a configured model shut down at run time stays down after a restart");
    let models: serde_json::Value = client.get(format!("{}/v1/models", server.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(models["data"].as_array().unwrap().len(), 1, "{models}");
    server.stop().await.unwrap();
}
