//! omnihost serves model pipelines whose logic is WebAssembly plugins and whose heavy compute is ONNX Runtime.
//!
//! A tour, in the direction requests flow:
//! - [`http`]: axum routers for the OpenAI-compatible API, health and plugin administration.
//! - [`worker`]: served models (a worker-adapter plugin plus dynamic batching), the worker manager of a host,
//!   and routing to remote workers found in the registry.
//! - [`registry`]: model instances and their health: memory, SQLite and PostgreSQL stores, the sweeper.
//! - [`plugin`]: the wasmtime runtime: limits, the warm instance pool, hot swap and rollback.
//! - [`compute`]: ONNX Runtime sessions on dedicated threads, execution providers, host tensors.
//! - [`config`], [`server`]: the config file and the assembly of all of the above into a running server;
//!   [`error`]: the cause-chain helper every layer logs with; [`metrics`]: what `GET /metrics` shows.

pub mod compute;
pub mod config;
pub mod error;
pub mod http;
pub mod metrics;
pub mod pipeline;
pub mod plugin;
pub mod registry;
pub mod server;
pub mod tasks;
pub mod time;
pub mod worker;
