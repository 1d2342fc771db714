//! Access control: API keys on `/v1`, an admin token (or loopback only) on `/admin`, and the same admin token
//! on the controller and worker routes (`/api/controller/*`, `/api/worker/*`, `/api/health`).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;
use crate::config::Secret;

fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).map(str::trim)
}

/// Compares in constant time so response timing does not reveal how much of a key was right.
fn matches(given: &str, secret: &Secret) -> bool {
    given.as_bytes().ct_eq(secret.expose().as_bytes()).into()
}

/// Requires one of the configured API keys, when any are configured.
pub async fn api_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let keys = &state.settings().api_keys;
    if keys.is_empty() {
        return next.run(req).await;
    }
    match bearer(&req) {
        None => ApiError::unauthorized("Missing API key: send `Authorization: Bearer <key>`").into_response(),
        Some(given) if keys.iter().any(|k| matches(given, k)) => next.run(req).await,
        Some(_) => ApiError::unauthorized("Incorrect API key provided").into_response(),
    }
}

/// Requires the admin token; without one configured, only loopback clients are served.
pub async fn admin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match &state.settings().admin_token {
        Some(token) => match bearer(&req) {
            Some(given) if matches(given, token) => next.run(req).await,
            Some(_) => ApiError::unauthorized("Incorrect admin token").into_response(),
            None => ApiError::unauthorized("Missing admin token: send `Authorization: Bearer <token>`").into_response(),
        },
        None => {
            let loopback = req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .is_some_and(|ConnectInfo(addr)| addr.ip().is_loopback());
            if loopback {
                next.run(req).await
            } else {
                ApiError::forbidden("No admin token is configured, so administration is only served on loopback")
                    .into_response()
            }
        }
    }
}

/// Requires the admin token on controller and worker routes when one is configured. Without one, the process
/// refuses to listen anywhere but loopback (see `server::check_listen`), which is what keeps these routes
/// private; DB-GPT's token-less clients work in that mode.
pub async fn cluster(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match &state.settings().admin_token {
        None => next.run(req).await,
        Some(token) => match bearer(&req) {
            Some(given) if matches(given, token) => next.run(req).await,
            Some(_) => ApiError::unauthorized("Incorrect admin token").into_response(),
            None => ApiError::unauthorized("Missing admin token: send `Authorization: Bearer <token>`").into_response(),
        },
    }
}
