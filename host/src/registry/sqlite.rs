//! The SQLite store, the embedded default: one file under the data dir, so registered instances survive a
//! restart. WAL mode lets lookups read while heartbeats are written; heartbeats are group-committed.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use super::group::GroupCommit;
use super::{COLUMNS, Instance, InstanceId, Query, Registry, RegistryError, Sweep, decode_row, ms_before, now_ms};

/// Schema versions, applied in order at start-up and recorded in `omnihost_schema`.
const MIGRATIONS: &[(i64, &str)] = &[(
    1,
    "CREATE TABLE omnihost_instances (
        model_name TEXT NOT NULL,
        worker_type TEXT NOT NULL,
        host TEXT NOT NULL,
        port INTEGER NOT NULL,
        weight REAL NOT NULL DEFAULT 1.0,
        check_healthy BOOLEAN NOT NULL DEFAULT 1,
        healthy BOOLEAN NOT NULL DEFAULT 1,
        enabled BOOLEAN NOT NULL DEFAULT 1,
        prompt_template TEXT,
        last_heartbeat_ms INTEGER NOT NULL,
        metadata TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (model_name, worker_type, host, port)
    );
    CREATE INDEX omnihost_instances_heartbeat ON omnihost_instances (last_heartbeat_ms);",
)];

const UPSERT: &str = "INSERT INTO omnihost_instances (model_name, worker_type, host, port, weight, check_healthy, \
     healthy, enabled, prompt_template, last_heartbeat_ms, metadata) VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?) \
     ON CONFLICT (model_name, worker_type, host, port) DO UPDATE SET ";

pub struct SqliteRegistry {
    pool: SqlitePool,
    heartbeats: GroupCommit,
}

fn bind_row<'q>(
    query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    i: &'q Instance,
    now: i64,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    query
        .bind(&i.id.model_name)
        .bind(i.id.worker_type.name())
        .bind(&i.id.host)
        .bind(i32::from(i.id.port))
        .bind(i.weight)
        .bind(i.check_healthy)
        .bind(i.enabled)
        .bind(i.prompt_template.as_deref())
        .bind(now)
        .bind(serde_json::Value::Object(i.metadata.clone()).to_string())
}

impl SqliteRegistry {
    /// Opens (creating if needed) the registry file and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Self, RegistryError> {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        migrate(&pool).await?;
        let writer_pool = pool.clone();
        let heartbeats = GroupCommit::start(move |rows| {
            let pool = writer_pool.clone();
            async move {
                let now = now_ms();
                let mut tx = pool.begin().await?;
                let sql = format!("{UPSERT} healthy = 1, last_heartbeat_ms = excluded.last_heartbeat_ms");
                for row in &rows {
                    bind_row(sqlx::query(&sql), row, now).execute(&mut *tx).await?;
                }
                tx.commit().await
            }
        });
        Ok(Self { pool, heartbeats })
    }

    /// Runs raw SQL against the store (tests write rows behind the registry's back with it).
    pub async fn execute_raw(&self, sql: &str) -> Result<u64, RegistryError> {
        Ok(sqlx::query(sql).execute(&self.pool).await?.rows_affected())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

async fn migrate(pool: &SqlitePool) -> Result<(), RegistryError> {
    let mut tx = pool.begin().await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS omnihost_schema (version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL)")
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
        sqlx::query("INSERT INTO omnihost_schema (version, applied_ms) VALUES (?, ?)")
            .bind(version)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        tracing::info!(version, "registry schema migrated (sqlite)");
    }
    tx.commit().await?;
    Ok(())
}

#[async_trait::async_trait]
impl Registry for SqliteRegistry {
    async fn register(&self, instance: &Instance) -> Result<bool, RegistryError> {
        instance.validate()?;
        let sql = format!(
            "{UPSERT} weight = excluded.weight, check_healthy = excluded.check_healthy, healthy = 1, \
             enabled = excluded.enabled, prompt_template = excluded.prompt_template, \
             last_heartbeat_ms = excluded.last_heartbeat_ms, metadata = excluded.metadata"
        );
        bind_row(sqlx::query(&sql), instance, now_ms()).execute(&self.pool).await?;
        Ok(true)
    }

    async fn deregister(&self, id: &InstanceId, remove: bool) -> Result<bool, RegistryError> {
        let sql = if remove {
            "DELETE FROM omnihost_instances WHERE model_name = ? AND worker_type = ? AND host = ? AND port = ?"
        } else {
            "UPDATE omnihost_instances SET healthy = 0 WHERE model_name = ? AND worker_type = ? AND host = ? AND port = ?"
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
            "SELECT {COLUMNS} FROM omnihost_instances WHERE (?1 IS NULL OR model_name = ?1) \
             AND (?2 IS NULL OR worker_type = ?2) AND (?3 = 0 OR healthy = 1) \
             ORDER BY model_name, worker_type, host, port"
        );
        let rows = sqlx::query(&sql)
            .bind(query.model_name.as_deref())
            .bind(query.worker_type.map(|t| t.name()))
            .bind(query.healthy_only)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode_row).collect()
    }

    async fn heartbeat(&self, instance: &Instance) -> Result<bool, RegistryError> {
        instance.validate()?;
        self.heartbeats.submit(instance.clone()).await?;
        Ok(true)
    }

    async fn sweep(&self, timeout: Duration, evict_after: Duration) -> Result<Sweep, RegistryError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let evicted = sqlx::query("DELETE FROM omnihost_instances WHERE healthy = 0 AND last_heartbeat_ms < ?")
            .bind(ms_before(now, evict_after))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let marked = sqlx::query(
            "UPDATE omnihost_instances SET healthy = 0 WHERE healthy = 1 AND check_healthy = 1 AND last_heartbeat_ms < ?",
        )
        .bind(ms_before(now, timeout))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(Sweep { marked_unhealthy: marked, evicted })
    }

    fn store(&self) -> &'static str {
        "sqlite"
    }
}
