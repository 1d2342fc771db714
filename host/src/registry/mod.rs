//! The model registry: which model instances exist, where they listen and whether they are healthy.
//!
//! One [`Registry`] trait, several stores: [`memory`] (tests, throwaway clusters), [`sqlite`] (the embedded
//! default, a file that survives restarts), [`postgres`] (shared by several controllers), and [`remote`] (a
//! controller reached over HTTP, used by worker hosts and API servers). Every timestamp is the registry's own
//! clock in UTC milliseconds, never a client's. The [`sweeper`] marks instances whose heartbeats stopped.

mod group;
pub mod memory;
pub mod postgres;
pub mod remote;
pub mod sqlite;
pub mod sweeper;
mod view;
pub mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::config::WorkerType;

pub use memory::MemoryRegistry;
pub use postgres::PostgresRegistry;
pub use remote::RemoteRegistry;
pub use sqlite::SqliteRegistry;
pub use sweeper::{SweepSettings, Sweeper};

/// Errors of a registry store.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid instance: {0}")]
    Invalid(#[from] InvalidInstance),
    #[error("registry database")]
    Database(#[source] Arc<sqlx::Error>),
    #[error("registry database schema migration {version}")]
    Migration { version: i64, #[source] source: Arc<sqlx::Error> },
    #[error("the registry's heartbeat writer has stopped")]
    WriterStopped,
    #[error("contacting the controller at {url}")]
    Unreachable { url: String, #[source] source: reqwest::Error },
    #[error("the controller at {url} answered {status}: {message}")]
    Refused { url: String, status: u16, message: String },
    #[error("the controller at {url} sent an answer that is not a registry answer")]
    BadAnswer { url: String, #[source] source: wire::WireError },
}

impl From<sqlx::Error> for RegistryError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(Arc::new(e))
    }
}

/// Why an instance cannot be registered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidInstance {
    #[error("model name `{0}` must be non-empty and must not contain `@` (the registry key is `name@type`)")]
    Name(String),
    #[error("host must not be empty")]
    EmptyHost,
    #[error("port {0} is out of range (1-65535)")]
    Port(i64),
    #[error("weight {0} must be a finite number >= 0")]
    Weight(f64),
}

/// Which instance: the identity of a registry row.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId {
    pub model_name: String,
    pub worker_type: WorkerType,
    pub host: String,
    pub port: u16,
}

impl InstanceId {
    /// Trims and checks the parts of an identity.
    pub fn new(model_name: &str, worker_type: WorkerType, host: &str, port: i64) -> Result<Self, InvalidInstance> {
        let model_name = model_name.trim();
        if model_name.is_empty() || model_name.contains('@') {
            return Err(InvalidInstance::Name(model_name.to_string()));
        }
        let host = host.trim();
        if host.is_empty() {
            return Err(InvalidInstance::EmptyHost);
        }
        let port = u16::try_from(port).ok().filter(|p| *p != 0).ok_or(InvalidInstance::Port(port))?;
        Ok(Self { model_name: model_name.to_string(), worker_type, host: host.to_string(), port })
    }

    /// The registry key DB-GPT clients use: `name@type`.
    pub fn key(&self) -> String {
        format!("{}@{}", self.model_name, self.worker_type.name())
    }

    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// One registered model instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub id: InstanceId,
    /// Share of traffic relative to the other instances of the model.
    pub weight: f64,
    /// Whether the sweeper may mark the instance unhealthy when its heartbeats stop.
    pub check_healthy: bool,
    pub healthy: bool,
    /// A disabled instance stays listed but is never selected.
    pub enabled: bool,
    pub prompt_template: Option<String>,
    /// Milliseconds since the Unix epoch (UTC), on the registry's clock.
    pub last_heartbeat_ms: i64,
    pub metadata: Map<String, Value>,
}

impl Instance {
    /// A new healthy, enabled instance of weight 1.
    pub fn new(id: InstanceId) -> Self {
        Self {
            id,
            weight: 1.0,
            check_healthy: true,
            healthy: true,
            enabled: true,
            prompt_template: None,
            last_heartbeat_ms: 0,
            metadata: Map::new(),
        }
    }

    /// Checks the fields the identity does not cover.
    pub fn validate(&self) -> Result<(), InvalidInstance> {
        if !self.weight.is_finite() || self.weight < 0.0 {
            return Err(InvalidInstance::Weight(self.weight));
        }
        Ok(())
    }
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// A bare model name; `None` lists every model.
    pub model_name: Option<String>,
    /// Narrows to one worker type (the `@type` half of a key).
    pub worker_type: Option<WorkerType>,
    pub healthy_only: bool,
}

impl Query {
    pub fn model(name: &str, worker_type: WorkerType) -> Self {
        Self { model_name: Some(name.to_string()), worker_type: Some(worker_type), healthy_only: true }
    }

    /// Whether `instance` belongs in the answer (stores without a query language filter with this).
    pub fn matches(&self, instance: &Instance) -> bool {
        self.model_name.as_deref().is_none_or(|n| n == instance.id.model_name)
            && self.worker_type.is_none_or(|t| t == instance.id.worker_type)
            && (!self.healthy_only || instance.healthy)
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Instances newly marked unhealthy because their heartbeats stopped.
    pub marked_unhealthy: u64,
    /// Unhealthy instances removed after the eviction grace.
    pub evicted: u64,
}

/// A store of model instances. Writes go to the store; the SQL stores answer `list` from a view in memory that
/// every write updates (and, on PostgreSQL, every other controller's write through a notification), so a
/// lookup costs no database round trip and still sees every row written.
#[async_trait::async_trait]
pub trait Registry: Send + Sync {
    /// Upserts `instance`: healthy, stamped with the registry's clock. Returns true.
    async fn register(&self, instance: &Instance) -> Result<bool, RegistryError>;
    /// Marks the instance unhealthy, or removes it when `remove`. An unknown instance is not an error.
    async fn deregister(&self, id: &InstanceId, remove: bool) -> Result<bool, RegistryError>;
    /// The instances `query` selects, ordered by key and address.
    async fn list(&self, query: &Query) -> Result<Vec<Instance>, RegistryError>;
    /// Stamps the instance's heartbeat with the registry's clock and marks it healthy; registers an unknown one.
    async fn heartbeat(&self, instance: &Instance) -> Result<bool, RegistryError>;
    /// Marks instances silent for longer than `timeout` unhealthy, and removes unhealthy ones silent for longer
    /// than `evict_after`.
    async fn sweep(&self, timeout: Duration, evict_after: Duration) -> Result<Sweep, RegistryError>;
    /// Whether this process should run the sweeper now. Stores shared by several controllers elect one.
    async fn lead(&self) -> Result<bool, RegistryError> {
        Ok(true)
    }
    /// Gives up leadership (on shutdown), so another controller takes over at once.
    async fn resign(&self) {}
    /// The store's name, for logs and health answers.
    fn store(&self) -> &'static str;
}

/// One healthy, enabled instance of `name@worker_type`, chosen at random in proportion to the weights.
pub async fn select_one(
    registry: &dyn Registry,
    name: &str,
    worker_type: WorkerType,
) -> Result<Option<Instance>, RegistryError> {
    let instances = registry.list(&Query::model(name, worker_type)).await?;
    Ok(pick_weighted(&instances).cloned())
}

/// Picks a healthy, enabled instance with probability proportional to its weight. Instances of weight 0 are
/// picked only when every candidate has weight 0 (a drained pool still answers rather than failing).
pub fn pick_weighted(instances: &[Instance]) -> Option<&Instance> {
    let candidates: Vec<&Instance> = instances.iter().filter(|i| i.healthy && i.enabled).collect();
    let total: f64 = candidates.iter().map(|i| i.weight).sum();
    if candidates.is_empty() {
        return None;
    }
    if total <= 0.0 {
        return candidates.get((random_u64() % candidates.len() as u64) as usize).copied();
    }
    let mut point = random_unit() * total;
    for candidate in &candidates {
        if point < candidate.weight {
            return Some(candidate);
        }
        point -= candidate.weight;
    }
    candidates.iter().rev().find(|i| i.weight > 0.0).copied()
}

/// A fast, non-cryptographic random number (splitmix64 over a shared counter seeded from the clock):
/// load balancing needs spread, not secrecy.
fn random_u64() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut seed = STATE.load(Ordering::Relaxed);
    if seed == 0 {
        seed = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) | 1;
        let _ = STATE.compare_exchange(0, seed, Ordering::Relaxed, Ordering::Relaxed);
    }
    let mut z = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn random_unit() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// The registry's clock: milliseconds since the Unix epoch, UTC.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// `now - d` in registry milliseconds.
pub(crate) fn ms_before(now: i64, d: Duration) -> i64 {
    now.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Parses a stored worker type; rows are only written by us, so an unknown one is reported as corrupt.
pub(crate) fn parse_worker_type(text: &str) -> Result<WorkerType, RegistryError> {
    WorkerType::parse(text).ok_or_else(|| {
        RegistryError::Database(Arc::new(sqlx::Error::Decode(format!("unknown worker type `{text}` in the registry").into())))
    })
}

/// Columns every SQL store selects, in the order [`decode_row`] reads them.
pub(crate) const COLUMNS: &str = "model_name, worker_type, host, port, weight, check_healthy, healthy, enabled, \
     prompt_template, last_heartbeat_ms, metadata";

/// Reads a row selected with [`COLUMNS`], for either SQL store.
pub(crate) fn decode_row<R>(row: &R) -> Result<Instance, RegistryError>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> f64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let name: String = row.try_get(0)?;
    let worker_type = parse_worker_type(&row.try_get::<String, _>(1)?)?;
    let host: String = row.try_get(2)?;
    let port: i32 = row.try_get(3)?;
    let id = InstanceId::new(&name, worker_type, &host, i64::from(port)).map_err(|e| {
        RegistryError::Database(Arc::new(sqlx::Error::Decode(format!("corrupt registry row: {e}").into())))
    })?;
    Ok(Instance {
        id,
        weight: row.try_get(4)?,
        check_healthy: row.try_get(5)?,
        healthy: row.try_get(6)?,
        enabled: row.try_get(7)?,
        prompt_template: row.try_get(8)?,
        last_heartbeat_ms: row.try_get(9)?,
        metadata: parse_metadata(&row.try_get::<String, _>(10)?),
    })
}

/// Parses stored metadata, treating anything but a JSON object as empty.
pub(crate) fn parse_metadata(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(port: u16, weight: f64) -> Instance {
        let mut i = Instance::new(InstanceId::new("m", WorkerType::Llm, "h", i64::from(port)).unwrap());
        i.weight = weight;
        i
    }

    #[test]
    fn identities_are_trimmed_and_checked() {
        let id = InstanceId::new("  m ", WorkerType::Text2vec, " 10.0.0.1 ", 80).unwrap();
        assert_eq!((id.key().as_str(), id.address().as_str()), ("m@text2vec", "10.0.0.1:80"));
        assert_eq!(InstanceId::new("a@b", WorkerType::Llm, "h", 1), Err(InvalidInstance::Name("a@b".into())));
        assert_eq!(InstanceId::new("m", WorkerType::Llm, " ", 1), Err(InvalidInstance::EmptyHost));
        assert_eq!(InstanceId::new("m", WorkerType::Llm, "h", 70000), Err(InvalidInstance::Port(70000)));
        assert_eq!(InstanceId::new("m", WorkerType::Llm, "h", 0), Err(InvalidInstance::Port(0)));
    }

    #[test]
    fn selection_follows_the_weights_and_skips_unhealthy_and_disabled() {
        let mut sick = instance(3, 100.0);
        sick.healthy = false;
        let mut off = instance(4, 100.0);
        off.enabled = false;
        let all = [instance(1, 1.0), instance(2, 3.0), sick, off];
        let mut counts = [0u32; 5];
        for _ in 0..20_000 {
            counts[pick_weighted(&all).unwrap().id.port as usize] += 1;
        }
        assert_eq!((counts[3], counts[4]), (0, 0));
        let ratio = f64::from(counts[2]) / f64::from(counts[1]);
        assert!((2.7..3.3).contains(&ratio), "weight 3 vs 1 picked {counts:?}");
        assert!(pick_weighted(&[]).is_none());
    }
}
