//! The PostgreSQL store, shared by several controllers. Timestamps come from the database's clock, so
//! controllers on hosts whose clocks disagree still judge heartbeats alike. Exactly one controller sweeps:
//! the one holding a session-level advisory lock on its own connection. When that process dies its
//! connection closes, PostgreSQL releases the lock, and another controller takes it on its next tick.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::sync::Mutex;

use super::group::GroupCommit;
use super::{COLUMNS, Instance, InstanceId, Query, Registry, RegistryError, Sweep};

/// The database's clock in milliseconds since the epoch (UTC).
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// Advisory lock keys (one namespace for this schema, so other applications' locks do not collide).
const SWEEPER_LOCK: i64 = 0x6f6d_6e69_0001;
const MIGRATION_LOCK: i64 = 0x6f6d_6e69_0002;

const MIGRATIONS: &[(i64, &str)] = &[(
    1,
    "CREATE TABLE omnihost_instances (
        model_name TEXT NOT NULL,
        worker_type TEXT NOT NULL,
        host TEXT NOT NULL,
        port INTEGER NOT NULL,
        weight DOUBLE PRECISION NOT NULL DEFAULT 1.0,
        check_healthy BOOLEAN NOT NULL DEFAULT TRUE,
        healthy BOOLEAN NOT NULL DEFAULT TRUE,
        enabled BOOLEAN NOT NULL DEFAULT TRUE,
        prompt_template TEXT,
        last_heartbeat_ms BIGINT NOT NULL,
        metadata TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (model_name, worker_type, host, port)
    );
    CREATE INDEX omnihost_instances_heartbeat ON omnihost_instances (last_heartbeat_ms);",
)];

/// Upserts many rows in one statement; `$1..$9` are parallel arrays.
const UPSERT_MANY: &str = "INSERT INTO omnihost_instances (model_name, worker_type, host, port, weight, check_healthy, \
     healthy, enabled, prompt_template, last_heartbeat_ms, metadata) \
     SELECT m, t, h, p, w, c, TRUE, e, pt, (extract(epoch from clock_timestamp()) * 1000)::bigint, md \
     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int4[], $5::float8[], $6::bool[], $7::bool[], $8::text[], $9::text[]) \
     AS u(m, t, h, p, w, c, e, pt, md) \
     ON CONFLICT (model_name, worker_type, host, port) DO UPDATE SET ";

struct Leadership {
    conn: Option<PgConnection>,
    leading: bool,
}

pub struct PostgresRegistry {
    pool: PgPool,
    options: PgConnectOptions,
    leadership: Mutex<Leadership>,
    heartbeats: GroupCommit,
}

async fn upsert_many(pool: &PgPool, rows: &[Instance], on_conflict: &str) -> Result<(), sqlx::Error> {
    let sql = format!("{UPSERT_MANY}{on_conflict}");
    sqlx::query(&sql)
        .bind(rows.iter().map(|i| i.id.model_name.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|i| i.id.worker_type.name().to_string()).collect::<Vec<_>>())
        .bind(rows.iter().map(|i| i.id.host.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|i| i32::from(i.id.port)).collect::<Vec<_>>())
        .bind(rows.iter().map(|i| i.weight).collect::<Vec<_>>())
        .bind(rows.iter().map(|i| i.check_healthy).collect::<Vec<_>>())
        .bind(rows.iter().map(|i| i.enabled).collect::<Vec<_>>())
        .bind(rows.iter().map(|i| i.prompt_template.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|i| serde_json::Value::Object(i.metadata.clone()).to_string()).collect::<Vec<_>>())
        .execute(pool)
        .await?;
    Ok(())
}

impl PostgresRegistry {
    /// Connects to `url` (`postgres://user:password@host:port/database`) and brings the schema up to date.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, RegistryError> {
        let options = PgConnectOptions::from_str(url)?.disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        migrate(&pool).await?;
        let writer_pool = pool.clone();
        let heartbeats = GroupCommit::start(move |rows| {
            let pool = writer_pool.clone();
            async move { upsert_many(&pool, &rows, "healthy = TRUE, last_heartbeat_ms = EXCLUDED.last_heartbeat_ms").await }
        });
        Ok(Self { pool, options, leadership: Mutex::new(Leadership { conn: None, leading: false }), heartbeats })
    }

    /// Runs raw SQL against the store (tests write rows behind the registry's back with it).
    pub async fn execute_raw(&self, sql: &str) -> Result<u64, RegistryError> {
        Ok(sqlx::query(sql).execute(&self.pool).await?.rows_affected())
    }

    pub async fn close(&self) {
        self.resign().await;
        self.pool.close().await;
    }
}

async fn migrate(pool: &PgPool) -> Result<(), RegistryError> {
    let mut tx = pool.begin().await?;
    // Controllers starting together must not apply the same migration twice.
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATION_LOCK).execute(&mut *tx).await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS omnihost_schema (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        .execute(&mut *tx)
        .await?;
    let current: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM omnihost_schema").fetch_one(&mut *tx).await?;
    // Collected first: an iterator adaptor held across the awaits makes the future not provably `Send`.
    let pending: Vec<(i64, &'static str)> = MIGRATIONS.iter().copied().filter(|(v, _)| *v > current.unwrap_or(0)).collect();
    for (version, sql) in pending {
        for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            sqlx::query(statement)
                .execute(&mut *tx)
                .await
                .map_err(|e| RegistryError::Migration { version, source: e.into() })?;
        }
        sqlx::query("INSERT INTO omnihost_schema (version) VALUES ($1)").bind(version).execute(&mut *tx).await?;
        tracing::info!(version, "registry schema migrated (postgres)");
    }
    tx.commit().await?;
    Ok(())
}

#[async_trait::async_trait]
impl Registry for PostgresRegistry {
    async fn register(&self, instance: &Instance) -> Result<bool, RegistryError> {
        instance.validate()?;
        upsert_many(
            &self.pool,
            std::slice::from_ref(instance),
            "weight = EXCLUDED.weight, check_healthy = EXCLUDED.check_healthy, healthy = TRUE, \
             enabled = EXCLUDED.enabled, prompt_template = EXCLUDED.prompt_template, \
             last_heartbeat_ms = EXCLUDED.last_heartbeat_ms, metadata = EXCLUDED.metadata",
        )
        .await?;
        Ok(true)
    }

    async fn deregister(&self, id: &InstanceId, remove: bool) -> Result<bool, RegistryError> {
        let sql = if remove {
            "DELETE FROM omnihost_instances WHERE model_name = $1 AND worker_type = $2 AND host = $3 AND port = $4"
        } else {
            "UPDATE omnihost_instances SET healthy = FALSE WHERE model_name = $1 AND worker_type = $2 AND host = $3 AND port = $4"
        };
        sqlx::query(sql)
            .bind(&id.model_name)
            .bind(id.worker_type.name())
            .bind(&id.host)
            .bind(i32::from(id.port))
            .execute(&self.pool)
            .await?;
        Ok(true)
    }

    async fn list(&self, query: &Query) -> Result<Vec<Instance>, RegistryError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM omnihost_instances WHERE ($1::text IS NULL OR model_name = $1) \
             AND ($2::text IS NULL OR worker_type = $2) AND (NOT $3 OR healthy) \
             ORDER BY model_name, worker_type, host, port"
        );
        let rows = sqlx::query(&sql)
            .bind(query.model_name.as_deref())
            .bind(query.worker_type.map(|t| t.name()))
            .bind(query.healthy_only)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(super::decode_row).collect()
    }

    async fn heartbeat(&self, instance: &Instance) -> Result<bool, RegistryError> {
        instance.validate()?;
        self.heartbeats.submit(instance.clone()).await?;
        Ok(true)
    }

    async fn sweep(&self, timeout: Duration, evict_after: Duration) -> Result<Sweep, RegistryError> {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let mut tx = self.pool.begin().await?;
        let evicted = sqlx::query(&format!(
            "DELETE FROM omnihost_instances WHERE NOT healthy AND last_heartbeat_ms < {NOW_MS} - $1"
        ))
        .bind(ms(evict_after))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let marked = sqlx::query(&format!(
            "UPDATE omnihost_instances SET healthy = FALSE WHERE healthy AND check_healthy AND last_heartbeat_ms < {NOW_MS} - $1"
        ))
        .bind(ms(timeout))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(Sweep { marked_unhealthy: marked, evicted })
    }

    async fn lead(&self) -> Result<bool, RegistryError> {
        let mut state = self.leadership.lock().await;
        // A leader re-checks its connection: if it broke, the lock went with it.
        if let Some(conn) = state.conn.as_mut()
            && conn.ping().await.is_err()
        {
            if state.leading {
                tracing::warn!("lost the registry sweeper lock with its database connection");
            }
            state.conn = None;
            state.leading = false;
        }
        if state.leading {
            return Ok(true);
        }
        if state.conn.is_none() {
            state.conn = Some(self.options.connect().await?);
        }
        let Some(conn) = state.conn.as_mut() else { return Ok(false) };
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(SWEEPER_LOCK).fetch_one(&mut *conn).await?;
        if got {
            tracing::info!("this controller now runs the registry sweeper");
        }
        state.leading = got;
        Ok(got)
    }

    async fn resign(&self) {
        let mut state = self.leadership.lock().await;
        if let Some(conn) = state.conn.take() {
            let _ = conn.close().await;
        }
        state.leading = false;
    }

    fn store(&self) -> &'static str {
        "postgres"
    }
}
