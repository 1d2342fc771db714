//! The HTTP surface: axum routers, shared state, access control and OpenAI-shaped errors.

pub mod admin;
pub mod auth;
pub mod body;
pub mod chat;
pub mod controller;
pub mod error;
pub mod health;
pub mod openai;
pub mod openapi;
pub mod pipelines;
pub mod speech;
pub mod worker;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post, put};

use crate::config::{Secret, ServerConfig};
use crate::plugin::Plugins;
use crate::registry::{Registry, Sweeper};
use crate::worker::router::Resolver;
use error::ApiError;

/// Everything a request can reach once loading has finished. Which parts exist depends on the process's role.
pub struct Services {
    pub plugins: Arc<Plugins>,
    pub pipelines: Arc<crate::pipeline::Pipelines>,
    /// Routes requests to this host's workers (when it has a worker manager) or to remote ones.
    pub resolver: Resolver,
    /// The registry this process keeps, when it is a controller.
    pub registry: Option<Arc<dyn Registry>>,
    pub sweeper: Option<Sweeper>,
    /// The `host:port` this host's workers are registered under.
    pub advertised: (String, u16),
    /// Which roles this process plays: `controller`, `worker`, `api`.
    pub roles: Vec<&'static str>,
    /// The ONNX Runtime library in use, when any model is loaded.
    pub onnxruntime: Option<PathBuf>,
    /// Whether the wasm pooling allocator is in use (it falls back to on-demand allocation).
    pub pooling: bool,
    /// The server's background tasks, stopped together at shutdown.
    pub background: crate::tasks::Background,
}

/// Settings the HTTP layer needs, taken from the server config and flags.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    pub body_limit: usize,
    pub plugin_body_limit: usize,
    pub max_inputs_per_request: usize,
    pub api_keys: Vec<Secret>,
    pub admin_token: Option<Secret>,
}

impl From<&ServerConfig> for HttpSettings {
    fn from(c: &ServerConfig) -> Self {
        Self {
            body_limit: c.body_limit,
            plugin_body_limit: c.plugin_body_limit,
            max_inputs_per_request: c.max_inputs_per_request,
            api_keys: c.api_keys.clone(),
            admin_token: c.admin_token.clone(),
        }
    }
}

struct Shared {
    settings: HttpSettings,
    services: ArcSwapOption<Services>,
    failure: Mutex<Option<LoadFailure>>,
    started: u64,
}

/// Why loading failed, shared by the readiness routes and the task that waits for the server.
pub type LoadFailure = Arc<dyn std::error::Error + Send + Sync>;

/// Where loading stands.
pub enum Readiness {
    Loading,
    Failed(LoadFailure),
    Ready(Arc<Services>),
}

/// The state every handler gets: settings now, services once they are loaded.
#[derive(Clone)]
pub struct AppState {
    shared: Arc<Shared>,
}

impl AppState {
    pub fn new(settings: HttpSettings) -> Self {
        let started = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Self {
            shared: Arc::new(Shared { settings, services: ArcSwapOption::empty(), failure: Mutex::new(None), started }),
        }
    }

    pub fn settings(&self) -> &HttpSettings {
        &self.shared.settings
    }

    pub fn started_unix(&self) -> u64 {
        self.shared.started
    }

    pub fn set_ready(&self, services: Services) {
        self.shared.services.store(Some(Arc::new(services)));
    }

    pub fn set_failed(&self, error: LoadFailure) {
        *self.shared.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }

    pub fn readiness(&self) -> Readiness {
        if let Some(s) = self.shared.services.load_full() {
            return Readiness::Ready(s);
        }
        match self.shared.failure.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            Some(e) => Readiness::Failed(e),
            None => Readiness::Loading,
        }
    }

    /// The loaded services, or a 503 saying why there are none yet.
    pub fn services(&self) -> Result<Arc<Services>, ApiError> {
        match self.readiness() {
            Readiness::Ready(s) => Ok(s),
            Readiness::Loading => Err(ApiError::not_ready("The server is still loading its models and plugins")),
            Readiness::Failed(_) => Err(ApiError::not_ready("The server failed to load its models and plugins (the cause is in its log)")),
        }
    }
}

fn openai(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/models", get(openai::models))
        .route("/embeddings", post(openai::embeddings))
        .route("/rerank", post(openai::rerank))
        .route("/chat/completions", post(chat::chat_completions))
        .route("/completions", post(chat::completions))
        .route("/pipelines", get(pipelines::list))
        .route("/pipelines/{name}/generate", post(pipelines::generate))
        .route("/audio/speech", post(speech::speech))
        .layer(from_fn_with_state(state.clone(), auth::api_key))
        .layer(DefaultBodyLimit::max(state.settings().body_limit))
}

/// Counts every request by its route (the pattern, not the path, so ids do not explode the label set), method
/// and status, and times it to the response's head.
async fn count_request(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().as_str().to_string();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    crate::metrics::http_request(&route, &method, response.status().as_u16(), started.elapsed());
    response
}

/// The whole application. Serve it with `into_make_service_with_connect_info::<SocketAddr>()` so the
/// loopback-only admin rule can see the peer.
pub fn router(state: AppState) -> Router {
    let admin = Router::new()
        .route("/plugins", get(admin::list))
        .route("/plugins/{name}", put(admin::swap))
        .route("/plugins/{name}/history", get(admin::history))
        .route("/plugins/{name}/rollback", post(admin::rollback))
        .layer(from_fn_with_state(state.clone(), auth::admin))
        .layer(DefaultBodyLimit::max(state.settings().plugin_body_limit));
    let cluster = Router::new()
        .route("/health", get(controller::health))
        .route("/controller/models", get(controller::list).post(controller::register).delete(controller::deregister))
        .route("/controller/heartbeat", post(controller::heartbeat))
        .route("/worker/embeddings", post(worker::embeddings))
        .route("/worker/rerank", post(worker::rerank))
        .route("/worker/generate_stream", post(chat::generate_stream))
        .route("/worker/generate", post(chat::generate))
        .route("/worker/count_token", post(chat::count_token))
        .route("/worker/model_metadata", post(chat::model_metadata))
        // The OpenAI routes of a worker host, for API servers that route to it (same bodies and answers).
        .route("/worker/chat/completions", post(chat::chat_completions))
        .route("/worker/completions", post(chat::completions))
        .route("/worker/apply", post(worker::apply))
        .route("/worker/parameter/descriptions", get(worker::parameter_descriptions))
        .route("/worker/models/supports", get(worker::supports))
        .route("/worker/models/startup", post(worker::startup))
        .route("/worker/models/shutdown", post(worker::shutdown))
        .layer(from_fn_with_state(state.clone(), auth::cluster))
        .layer(DefaultBodyLimit::max(state.settings().body_limit));
    Router::new()
        .nest("/api", cluster)
        .nest("/v1", openai(&state))
        .nest("/api/v1", openai(&state))
        .nest("/admin", admin)
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/openapi.json", get(openapi::openapi))
        .route("/metrics", get(health::metrics).layer(from_fn_with_state(state.clone(), auth::cluster)))
        .fallback(|| async { ApiError::not_found("not_found", "No such route") })
        .layer(axum::middleware::from_fn(count_request))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    fn settings() -> HttpSettings {
        HttpSettings::from(&ServerConfig::default())
    }

    async fn status_and_body(app: Router, request: Request<Body>) -> (StatusCode, serde_json::Value) {
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn before_loading_finishes_health_is_live_but_not_ready_and_the_api_says_why() {
        let state = AppState::new(settings());
        let (status, body) = status_and_body(router(state.clone()), Request::get("/health/live").body(Body::empty()).unwrap()).await;
        assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("live")));
        let (status, body) = status_and_body(router(state.clone()), Request::get("/health/ready").body(Body::empty()).unwrap()).await;
        assert_eq!((status, body["status"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("loading")));
        let (status, body) = status_and_body(router(state.clone()), Request::get("/v1/models").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "not_ready");

        state.set_failed(Arc::new(std::io::Error::new(std::io::ErrorKind::NotFound, "model file missing")));
        let (status, body) = status_and_body(router(state), Request::get("/health/ready").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "failed");
        assert!(!body.to_string().contains("model file missing"), "the cause stays in the log: {body}");
    }

    #[tokio::test]
    async fn every_documented_operation_is_routed_and_every_method_routed_on_a_documented_path_is_documented() {
        let documented = openapi::documented();
        assert!(documented.len() > 40, "{} operations", documented.len());
        // With the token, the access checks let every request through to the method routing.
        let mut with_token = settings();
        with_token.admin_token = Some(Secret::new("t"));
        for (path, _) in documented.iter().map(|(m, p)| (p, m)) {
            for method in ["get", "post", "put", "delete"] {
                let uri = path.replace("{name}", "x");
                let request = Request::builder()
                    .method(method.to_uppercase().as_str())
                    .uri(&uri)
                    .header("authorization", "Bearer t")
                    .body(Body::empty())
                    .unwrap();
                let response = router(AppState::new(with_token.clone())).oneshot(request).await.unwrap();
                let status = response.status();
                let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
                let fallback = String::from_utf8_lossy(&bytes).contains("No such route");
                let routed = status != StatusCode::METHOD_NOT_ALLOWED && !fallback;
                let is_documented = documented.iter().any(|(m, p)| *m == method && p == path);
                assert_eq!(routed, is_documented, "{method} {path}: routed {routed} ({status}), documented {is_documented}");
            }
        }
    }

    #[tokio::test]
    async fn the_openapi_document_is_served_and_every_operation_answers_errors_in_one_shape() {
        let (status, doc) = status_and_body(router(AppState::new(settings())), Request::get("/openapi.json").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(doc["openapi"], "3.0.3");
        let paths = doc["paths"].as_object().unwrap();
        for (path, ops) in paths {
            for (method, op) in ops.as_object().unwrap() {
                assert_eq!(op["responses"]["default"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/Error", "{method} {path}");
                assert!(op["responses"]["200"]["content"].as_object().is_some_and(|c| !c.is_empty()), "{method} {path}");
            }
        }
        assert!(paths.contains_key("/v1/chat/completions") && paths.contains_key("/api/controller/heartbeat") && paths.contains_key("/metrics"));
    }

    #[tokio::test]
    async fn without_an_admin_token_admin_refuses_clients_not_known_to_be_on_loopback() {
        let app = router(AppState::new(settings()));
        let (status, body) = status_and_body(app, Request::get("/admin/plugins").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body["error"]["message"].as_str().unwrap().contains("loopback"));
    }

    #[tokio::test]
    async fn unknown_routes_get_an_openai_shaped_404() {
        let app = router(AppState::new(settings()));
        let (status, body) = status_and_body(app, Request::get("/v2/nothing").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }
}
