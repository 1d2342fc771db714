//! The SQLite store, the embedded default: one file under the data dir, so registered instances survive a
//! restart. Heartbeats are group-committed. Lookups read a [`View`] in memory: the file belongs to the one
//! controller that opened it, which makes every write itself and applies it to the view under the same lock
//! (SQLite takes one writer at a time anyway), so the view is the file's content at every moment.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use super::group::GroupCommit;
use super::view::View;
use super::{COLUMNS, Instance, InstanceId, Query, Registry, RegistryError, Sweep, decode_row, ms_before, now_ms};
use crate::tasks::Background;

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
    shared: Arc<Shared>,
}

/// What the heartbeat writer and the registry share: the view, and the lock every write holds from its
/// statement to its update of the view (with the version counter it guards), so the view sees writes in the
/// order the file does.
struct Shared {
    view: View,
    writes: tokio::sync::Mutex<i64>,
}

impl Shared {
    /// Reads every row into the view; the caller holds the write lock.
    async fn reload(&self, pool: &SqlitePool, version: &mut i64) -> Result<(), RegistryError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM omnihost_instances")).fetch_all(pool).await?;
        *version += 1;
        let all = rows.iter().map(|r| decode_row(r).map(|i| (i, *version))).collect::<Result<Vec<_>, _>>()?;
        self.view.reload(all, *version);
        Ok(())
    }
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
        Self::open_in(path, &Background::default()).await
    }

    /// Like [`SqliteRegistry::open`], its heartbeat writer running in `background`.
    pub async fn open_in(path: &Path, background: &Background) -> Result<Self, RegistryError> {
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
        let shared = Arc::new(Shared { view: View::default(), writes: tokio::sync::Mutex::new(0) });
        {
            let mut version = shared.writes.lock().await;
            shared.reload(&pool, &mut version).await?;
        }
        let (writer_pool, writer) = (pool.clone(), shared.clone());
        let heartbeats = GroupCommit::start(
            move |rows| {
                let (pool, shared) = (writer_pool.clone(), writer.clone());
                async move { write_heartbeats(&pool, &shared, rows).await }
            },
            background,
        );
        Ok(Self { pool, heartbeats, shared })
    }

    /// Runs raw SQL against the store (tests write rows behind the registry's back with it), then reads the
    /// file into the view again: the one back door, so it keeps the view exact too.
    pub async fn execute_raw(&self, sql: &str) -> Result<u64, RegistryError> {
        let mut version = self.shared.writes.lock().await;
        let affected = sqlx::query(sql).execute(&self.pool).await?.rows_affected();
        self.shared.reload(&self.pool, &mut version).await?;
        Ok(affected)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Writes a batch of heartbeats in one transaction: a known row keeps its fields and is stamped healthy now,
/// an unknown one is registered as sent.
async fn write_heartbeats(pool: &SqlitePool, shared: &Shared, rows: Vec<Instance>) -> Result<(), sqlx::Error> {
    let mut version = shared.writes.lock().await;
    let now = now_ms();
    let mut tx = pool.begin().await?;
    let sql = format!("{UPSERT} healthy = 1, last_heartbeat_ms = excluded.last_heartbeat_ms");
    for row in &rows {
        bind_row(sqlx::query(&sql), row, now).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    *version += 1;
    for sent in rows {
        shared.view.beat(sent, now, *version);
    }
    Ok(())
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
        let mut version = self.shared.writes.lock().await;
        let now = now_ms();
        bind_row(sqlx::query(&sql), instance, now).execute(&self.pool).await?;
        *version += 1;
        let mut row = instance.clone();
        row.healthy = true;
        row.last_heartbeat_ms = now;
        self.shared.view.upsert([(row, *version)]);
        Ok(true)
    }

    async fn deregister(&self, id: &InstanceId, remove: bool) -> Result<bool, RegistryError> {
        let sql = if remove {
            "DELETE FROM omnihost_instances WHERE model_name = ? AND worker_type = ? AND host = ? AND port = ?"
        } else {
            "UPDATE omnihost_instances SET healthy = 0 WHERE model_name = ? AND worker_type = ? AND host = ? AND port = ?"
        };
        let mut version = self.shared.writes.lock().await;
        sqlx::query(sql)
            .bind(&id.model_name)
            .bind(id.worker_type.name())
            .bind(&id.host)
            .bind(i32::from(id.port))
            .execute(&self.pool)
            .await?;
        *version += 1;
        if remove {
            self.shared.view.remove([(id.clone(), *version)]);
        } else {
            self.shared.view.mark_down(id, *version);
        }
        Ok(true)
    }

    async fn list(&self, query: &Query) -> Result<Vec<Instance>, RegistryError> {
        Ok(self.shared.view.list(query))
    }

    async fn heartbeat(&self, instance: &Instance) -> Result<bool, RegistryError> {
        instance.validate()?;
        self.heartbeats.submit(instance.clone()).await?;
        Ok(true)
    }

    async fn sweep(&self, timeout: Duration, evict_after: Duration) -> Result<Sweep, RegistryError> {
        let mut version = self.shared.writes.lock().await;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let evicted = sqlx::query(&format!("DELETE FROM omnihost_instances WHERE healthy = 0 AND last_heartbeat_ms < ? RETURNING {COLUMNS}"))
            .bind(ms_before(now, evict_after))
            .fetch_all(&mut *tx)
            .await?;
        let marked = sqlx::query(&format!(
            "UPDATE omnihost_instances SET healthy = 0 WHERE healthy = 1 AND check_healthy = 1 AND last_heartbeat_ms < ? RETURNING {COLUMNS}"
        ))
        .bind(ms_before(now, timeout))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        *version += 1;
        let evicted = evicted.iter().map(decode_row).collect::<Result<Vec<_>, _>>()?;
        let marked = marked.iter().map(decode_row).collect::<Result<Vec<_>, _>>()?;
        let sweep = Sweep { marked_unhealthy: marked.len() as u64, evicted: evicted.len() as u64 };
        self.shared.view.remove(evicted.into_iter().map(|i| (i.id, *version)).collect::<Vec<_>>());
        self.shared.view.upsert(marked.into_iter().map(|i| (i, *version)).collect::<Vec<_>>());
        Ok(sweep)
    }

    fn store(&self) -> &'static str {
        "sqlite"
    }
}
