//! Routing a request to a worker: this host's own worker when it has one, otherwise a healthy instance found in
//! the registry, called over HTTP at `/api/worker/*`. Lookups are cached briefly and dropped as soon as an
//! instance fails, and a failed instance is skipped for the rest of the request and, for [`SUSPECT_FOR`], by
//! every other request while another instance is left, so a dead or cut-off worker costs one failed attempt,
//! not an error to the client (nor a wait per request until the registry notices). When the registry cannot be
//! reached, the last lookup keeps routing: a controller restart does not stop traffic to known workers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::manager::WorkerManager;
use super::{EmbedOutput, WorkerError};
use crate::config::{Secret, WorkerType};
use crate::plugin::Embedded;
use crate::registry::{Instance, Query, Registry, RegistryError, pick_weighted};

/// Header carrying the token count of each input, comma-separated, on worker embedding answers.
pub const TOKENS_HEADER: &str = "x-omnihost-tokens";
/// Header naming the plugin version (first 12 hex digits of its sha256) that computed an answer.
pub const VERSION_HEADER: &str = "x-omnihost-plugin-version";

/// Why a request could not be routed or failed where it was routed.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("the model `{0}` does not exist")]
    NotFound(String),
    #[error("model `{model}` ({worker_type}) has no healthy instance left")]
    NoHealthy { model: String, worker_type: &'static str },
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// A remote worker's own error answer, passed on as it was given.
    #[error("worker at {address} answered {status}")]
    Remote { address: String, status: u16, body: Value },
    #[error("looking the model up in the registry")]
    Registry(#[from] RegistryError),
}

pub struct Resolver {
    local: Option<Arc<WorkerManager>>,
    registry: Option<Arc<dyn Registry>>,
    /// This process's own advertised address: its registry rows are served locally, never over HTTP.
    own_address: Option<String>,
    cache: Mutex<HashMap<(String, WorkerType), Cached>>,
    /// Addresses that failed a request recently, and until when they are avoided.
    suspects: Mutex<HashMap<String, Instant>>,
    ttl: Duration,
    client: reqwest::Client,
    token: Option<Secret>,
}

/// An instance lookup and when it was made.
type Cached = (Instant, Arc<Vec<Instance>>);

/// How long an instance that failed a request is tried only when no other is left. Long enough to ride out a
/// registry's heartbeat timeout, short enough that a worker back on the network gets traffic again soon.
const SUSPECT_FOR: Duration = Duration::from_secs(5);

enum Attempt<T> {
    Done(T),
    /// The instance could not serve (unreachable, stopped, unhealthy): try another.
    Next,
}

impl Resolver {
    pub fn new(
        local: Option<Arc<WorkerManager>>,
        registry: Option<Arc<dyn Registry>>,
        own_address: Option<String>,
        ttl: Duration,
        forward_timeout: Duration,
        token: Option<Secret>,
    ) -> Self {
        let client = reqwest::Client::builder()
            .timeout(forward_timeout)
            .connect_timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(64)
            .build()
            .unwrap_or_else(|e| {
                // Only a broken TLS backend fails this; say so, since the fallback has no timeouts.
                tracing::error!(error = %e, "building the forwarding client failed; forwarding without timeouts");
                reqwest::Client::new()
            });
        let suspects = Mutex::new(HashMap::new());
        Self { local, registry, own_address, cache: Mutex::new(HashMap::new()), suspects, ttl, client, token }
    }

    pub fn local(&self) -> Option<&Arc<WorkerManager>> {
        self.local.as_ref()
    }

    /// Every instance of the model, healthy or not, from the cache when fresh.
    async fn instances(&self, model: &str, worker_type: WorkerType) -> Result<Arc<Vec<Instance>>, RouteError> {
        let Some(registry) = &self.registry else { return Ok(Arc::new(Vec::new())) };
        let key = (model.to_string(), worker_type);
        if let Some((at, list)) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key)
            && at.elapsed() < self.ttl
        {
            return Ok(list.clone());
        }
        let query = Query { model_name: Some(model.to_string()), worker_type: Some(worker_type), healthy_only: false };
        let mut list = match registry.list(&query).await {
            Ok(list) => list,
            Err(e) => {
                // The controller is down or cut off: route with what was last known rather than fail everything.
                let stale = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key).map(|(_, list)| list.clone());
                match stale {
                    Some(list) => {
                        tracing::warn!(model, error = %crate::error::chain(&e), "registry unreachable; routing with the last lookup");
                        return Ok(list);
                    }
                    None => return Err(e.into()),
                }
            }
        };
        list.retain(|i| self.own_address.as_deref() != Some(i.id.address().as_str()));
        let list = Arc::new(list);
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(key, (Instant::now(), list.clone()));
        Ok(list)
    }

    /// Makes the next lookup ask the registry again (the stale list stays as a fallback while it is unreachable).
    fn forget(&self, model: &str, worker_type: WorkerType) {
        if let Some(entry) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&(model.to_string(), worker_type)) {
            entry.0 = Instant::now().checked_sub(self.ttl).unwrap_or(entry.0);
        }
    }

    fn suspect(&self, address: String) {
        let mut suspects = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        suspects.retain(|_, until| *until > now);
        suspects.insert(address, now + SUSPECT_FOR);
    }

    /// Healthy, enabled instances that have not failed recently.
    fn trusted(&self, all: &[Instance]) -> Vec<Instance> {
        let now = Instant::now();
        let suspects = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
        all.iter()
            .filter(|i| i.healthy && i.enabled && suspects.get(&i.id.address()).is_none_or(|until| *until <= now))
            .cloned()
            .collect()
    }

    /// Tries healthy instances, weighted, until one answers.
    async fn route<T, F, Fut>(&self, model: &str, worker_type: WorkerType, call: F) -> Result<T, RouteError>
    where
        F: Fn(Instance) -> Fut,
        Fut: Future<Output = Result<Attempt<T>, RouteError>>,
    {
        let mut all = self.instances(model, worker_type).await?;
        if all.is_empty() {
            return Err(RouteError::NotFound(model.to_string()));
        }
        let mut candidates = self.trusted(&all);
        let mut tried: Vec<String> = Vec::new();
        let mut looked_again = false;
        loop {
            let Some(pick) = pick_weighted(&candidates).cloned() else {
                // The recent failures left out at first are still worth a try before giving up.
                let rest: Vec<Instance> =
                    all.iter().filter(|i| i.healthy && i.enabled && !tried.contains(&i.id.address())).cloned().collect();
                if !rest.is_empty() {
                    candidates = rest;
                    continue;
                }
                // Every instance this list offered failed, but the list may predate a recovery (a lookup cached
                // while another instance was down): ask the registry once more before answering 503.
                if looked_again || tried.is_empty() {
                    break;
                }
                looked_again = true;
                self.forget(model, worker_type);
                all = match self.instances(model, worker_type).await {
                    Ok(list) => list,
                    Err(_) => break,
                };
                continue;
            };
            tried.push(pick.id.address());
            match call(pick.clone()).await? {
                Attempt::Done(value) => return Ok(value),
                Attempt::Next => {
                    tracing::warn!(model, instance = %pick.id.address(), "instance failed; trying another");
                    self.forget(model, worker_type);
                    self.suspect(pick.id.address());
                    candidates.retain(|c| c.id != pick.id);
                }
            }
        }
        Err(RouteError::NoHealthy { model: model.to_string(), worker_type: worker_type.name() })
    }

    /// Sends a request to an instance with the cluster's token. `None` means another instance should be tried:
    /// this one is unreachable, stopped, still loading, or no longer serves the model.
    async fn send(&self, instance: &Instance, path: &str, body: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder) -> Option<reqwest::Response> {
        let url = format!("http://{}{path}", instance.id.address());
        let request = body(self.client.post(&url));
        let request = match &self.token {
            Some(t) => request.bearer_auth(t.expose()),
            None => request,
        };
        match request.send().await {
            Err(e) => {
                tracing::debug!(url, error = %e, "forwarding failed");
                None
            }
            Ok(r) if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE || r.status() == reqwest::StatusCode::NOT_FOUND => None,
            Ok(r) => Some(r),
        }
    }

    async fn post(&self, instance: &Instance, path: &str, body: &Value) -> Result<Attempt<reqwest::Response>, RouteError> {
        match self.send(instance, path, |r| r.json(body)).await {
            None => Ok(Attempt::Next),
            Some(r) if r.status().is_success() => Ok(Attempt::Done(r)),
            Some(r) => {
                let status = r.status().as_u16();
                let body = r.json().await.unwrap_or_else(|_| json!({"error": {"message": "the worker's error answer was unreadable"}}));
                Err(RouteError::Remote { address: instance.id.address(), status, body })
            }
        }
    }

    /// Embeds `texts` with `model` wherever it runs.
    pub async fn embed(&self, model: &str, texts: Vec<String>, truncate: bool) -> Result<EmbedOutput, RouteError> {
        if let Some(worker) = self.local.as_ref().and_then(|m| m.get(model, Some(WorkerType::Text2vec)).or_else(|| m.get(model, None))) {
            return Ok(worker.embed(texts, truncate).await?);
        }
        let body = json!({"model": model, "input": texts, "truncate": truncate});
        self.route(model, WorkerType::Text2vec, |instance| {
            let body = &body;
            async move {
                let response = match self.post(&instance, "/api/worker/embeddings", body).await? {
                    Attempt::Done(r) => r,
                    Attempt::Next => return Ok(Attempt::Next),
                };
                let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
                let version = header(VERSION_HEADER).unwrap_or_default();
                let tokens: Vec<u32> =
                    header(TOKENS_HEADER).unwrap_or_default().split(',').filter_map(|t| t.trim().parse().ok()).collect();
                let Ok(vectors) = response.json::<Vec<Vec<f32>>>().await else { return Ok(Attempt::Next) };
                let vectors = vectors
                    .into_iter()
                    .enumerate()
                    .map(|(i, values)| Embedded { values, tokens: tokens.get(i).copied().unwrap_or(0) })
                    .collect();
                Ok(Attempt::Done(EmbedOutput { vectors, plugin_version: version }))
            }
        })
        .await
    }

    /// Scores `documents` against `query` with `model` wherever it runs.
    pub async fn rerank(&self, model: &str, query: String, documents: Vec<String>) -> Result<(Vec<f32>, String), RouteError> {
        if let Some(worker) = self.local.as_ref().and_then(|m| m.get(model, Some(WorkerType::Reranker)).or_else(|| m.get(model, None))) {
            return Ok(worker.rerank(query, documents).await?);
        }
        let body = json!({"model": model, "query": query, "documents": documents});
        let mut last_not_found = None;
        for worker_type in [WorkerType::Reranker, WorkerType::Text2vec] {
            let result = self
                .route(model, worker_type, |instance| {
                    let body = &body;
                    async move {
                        let response = match self.post(&instance, "/api/worker/rerank", body).await? {
                            Attempt::Done(r) => r,
                            Attempt::Next => return Ok(Attempt::Next),
                        };
                        let version = response
                            .headers()
                            .get(VERSION_HEADER)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        match response.json::<Vec<f32>>().await {
                            Ok(scores) => Ok(Attempt::Done((scores, version))),
                            Err(_) => Ok(Attempt::Next),
                        }
                    }
                })
                .await;
            match result {
                Err(RouteError::NotFound(m)) => last_not_found = Some(m),
                other => return other,
            }
        }
        Err(RouteError::NotFound(last_not_found.unwrap_or_else(|| model.to_string())))
    }

    /// Forwards a request body to a worker host serving `model` and returns its answer as is, so a stream passes
    /// through unchanged. Fails over like every other call until a host answers.
    pub async fn forward(
        &self,
        model: &str,
        worker_type: WorkerType,
        path: &str,
        body: bytes::Bytes,
    ) -> Result<reqwest::Response, RouteError> {
        self.route(model, worker_type, |instance| {
            let body = body.clone();
            async move {
                // Client errors (a bad parameter) are the answer, not a reason to try another host.
                match self.send(&instance, path, |r| r.header("content-type", "application/json").body(body)).await {
                    Some(r) => Ok(Attempt::Done(r)),
                    None => Ok(Attempt::Next),
                }
            }
        })
        .await
    }

    /// Every model served here or registered healthy, as `(name, worker_type)`, sorted and unique.
    pub async fn models(&self) -> Result<Vec<(String, WorkerType)>, RouteError> {
        let mut models: Vec<(String, WorkerType)> = self
            .local
            .iter()
            .flat_map(|m| m.running())
            .map(|w| (w.model.clone(), w.worker_type))
            .collect();
        if let Some(registry) = &self.registry {
            let healthy = registry.list(&Query { healthy_only: true, ..Query::default() }).await?;
            models.extend(healthy.into_iter().filter(|i| i.enabled).map(|i| (i.id.model_name, i.id.worker_type)));
        }
        models.sort();
        models.dedup();
        Ok(models)
    }
}

#[cfg(test)]
mod tests {
    use axum::routing::post;

    use super::*;
    use crate::registry::{InstanceId, MemoryRegistry};

    /// A worker host that answers every embedding request with one fixed vector.
    async fn worker_host() -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new().route("/api/worker/embeddings", post(|| async { axum::Json(vec![vec![1.0f32, 0.0]]) }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        port
    }

    #[tokio::test]
    async fn a_lookup_cached_before_an_instance_came_back_is_refreshed_before_giving_up() {
        let registry = Arc::new(MemoryRegistry::new());
        let dead_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dead = Instance::new(InstanceId::new("m", WorkerType::Text2vec, "127.0.0.1", i64::from(dead_port)).unwrap());
        registry.register(&dead).await.unwrap();
        let resolver = Resolver::new(None, Some(registry.clone()), None, Duration::from_secs(60), Duration::from_secs(2), None);
        // The resolver's cached lookup knows only the instance that is about to fail...
        assert_eq!(resolver.instances("m", WorkerType::Text2vec).await.unwrap().len(), 1);
        // ...and the instance that can answer registers after it.
        let live = worker_host().await;
        registry.register(&Instance::new(InstanceId::new("m", WorkerType::Text2vec, "127.0.0.1", i64::from(live)).unwrap())).await.unwrap();
        let out = resolver.embed("m", vec!["text".into()], true).await.unwrap();
        assert_eq!(out.vectors[0].values, vec![1.0, 0.0]);
    }
}
