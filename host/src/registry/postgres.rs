//! The PostgreSQL store, shared by several controllers. Timestamps come from the database's clock, so
//! controllers on hosts whose clocks disagree still judge heartbeats alike. Exactly one controller sweeps:
//! the one holding a session-level advisory lock on its own connection. When that process dies its
//! connection closes, PostgreSQL releases the lock, and another controller takes it on its next tick.
//!
//! Lookups read a [`View`] in memory. A trigger stamps every written row with a version from one sequence and
//! announces it (`NOTIFY omnihost_instances`); this controller applies its own writes from their `RETURNING`
//! rows, and a listener applies everyone else's, so a row written by any controller is served within the
//! notification's delay. Whenever the listener's connection is lost (a database restart), the view is read
//! again in full once it is back; until then lookups keep answering from memory.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Connection, PgConnection, Row};
use tokio::sync::{Mutex, mpsc};

use super::group::GroupCommit;
use super::view::View;
use super::{COLUMNS, Instance, InstanceId, Query, Registry, RegistryError, Sweep};

/// The channel the trigger announces written rows on.
const CHANNEL: &str = "omnihost_instances";

/// The database's clock in milliseconds since the epoch (UTC).
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// Advisory lock keys (one namespace for this schema, so other applications' locks do not collide).
const SWEEPER_LOCK: i64 = 0x6f6d_6e69_0001;
const MIGRATION_LOCK: i64 = 0x6f6d_6e69_0002;

/// Schema versions, each a list of statements (function bodies hold semicolons, so they are not split).
const MIGRATIONS: &[(i64, &[&str])] = &[
    (
        1,
        &["CREATE TABLE omnihost_instances (
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
        )",
        "CREATE INDEX omnihost_instances_heartbeat ON omnihost_instances (last_heartbeat_ms)"],
    ),
    (
        2,
        &["CREATE SEQUENCE omnihost_instances_version",
        "ALTER TABLE omnihost_instances ADD COLUMN version BIGINT NOT NULL DEFAULT 0",
        "CREATE FUNCTION omnihost_instances_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN NEW.version := nextval('omnihost_instances_version'); RETURN NEW; END $$",
        "CREATE TRIGGER omnihost_instances_stamp BEFORE INSERT OR UPDATE ON omnihost_instances
         FOR EACH ROW EXECUTE FUNCTION omnihost_instances_stamp()",
        "CREATE FUNCTION omnihost_instances_notify() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF TG_OP = 'DELETE' THEN
             PERFORM pg_notify('omnihost_instances', json_build_array('d', OLD.model_name, OLD.worker_type, OLD.host, OLD.port, OLD.version)::text);
             RETURN OLD;
           END IF;
           PERFORM pg_notify('omnihost_instances', json_build_array('u', NEW.model_name, NEW.worker_type, NEW.host, NEW.port, NEW.version)::text);
           RETURN NEW;
         END $$",
        "CREATE TRIGGER omnihost_instances_notify AFTER INSERT OR UPDATE OR DELETE ON omnihost_instances
         FOR EACH ROW EXECUTE FUNCTION omnihost_instances_notify()"],
    ),
];

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
    view: Arc<View>,
    /// The listener's tasks, stopped with the registry.
    follower: Vec<tokio::task::AbortHandle>,
}

impl Drop for PostgresRegistry {
    fn drop(&mut self) {
        for task in &self.follower {
            task.abort();
        }
    }
}

/// A row selected with [`COLUMNS`] followed by `version`.
fn decode_versioned(row: &PgRow) -> Result<(Instance, i64), RegistryError> {
    Ok((super::decode_row(row)?, row.try_get::<i64, _>(11)?))
}

async fn upsert_many(pool: &PgPool, view: &View, rows: &[Instance], on_conflict: &str) -> Result<(), sqlx::Error> {
    let sql = format!("{UPSERT_MANY}{on_conflict} RETURNING {COLUMNS}, version");
    let written = sqlx::query(&sql)
        .bind(rows.iter().map(|i| i.id.model_name.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|i| i.id.worker_type.name().to_string()).collect::<Vec<_>>())
        .bind(rows.iter().map(|i| i.id.host.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|i| i32::from(i.id.port)).collect::<Vec<_>>())
        .bind(rows.iter().map(|i| i.weight).collect::<Vec<_>>())
        .bind(rows.iter().map(|i| i.check_healthy).collect::<Vec<_>>())
        .bind(rows.iter().map(|i| i.enabled).collect::<Vec<_>>())
        .bind(rows.iter().map(|i| i.prompt_template.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|i| serde_json::Value::Object(i.metadata.clone()).to_string()).collect::<Vec<_>>())
        .fetch_all(pool)
        .await?;
    apply(view, &written)
}

/// Applies rows a statement returned; a row that does not decode is a corrupt store, reported as such.
fn apply(view: &View, rows: &[PgRow]) -> Result<(), sqlx::Error> {
    let decoded = rows.iter().map(decode_versioned).collect::<Result<Vec<_>, _>>().map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    view.upsert(decoded);
    Ok(())
}

/// Reads every row into the view, for a start or after the listener lost notifications.
async fn reload(pool: &PgPool, view: &View) -> Result<(), RegistryError> {
    let mut tx = pool.begin().await?;
    // One snapshot for both reads: the rows, and the highest version it can see.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").execute(&mut *tx).await?;
    let rows = sqlx::query(&format!("SELECT {COLUMNS}, version FROM omnihost_instances")).fetch_all(&mut *tx).await?;
    let snapshot: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM omnihost_instances").fetch_one(&mut *tx).await?;
    tx.commit().await?;
    let all = rows.iter().map(decode_versioned).collect::<Result<Vec<_>, _>>()?;
    view.reload(all, snapshot);
    Ok(())
}

/// One announced change: `["u"|"d", model_name, worker_type, host, port, version]`.
fn parse_notice(payload: &str) -> Option<(bool, InstanceId, i64)> {
    let value: serde_json::Value = serde_json::from_str(payload).ok()?;
    let parts = value.as_array()?;
    let text = |i: usize| parts.get(i).and_then(|v| v.as_str());
    let worker_type = super::parse_worker_type(text(2)?).ok()?;
    let id = InstanceId::new(text(1)?, worker_type, text(3)?, parts.get(4)?.as_i64()?).ok()?;
    Some((text(0)? == "d", id, parts.get(5)?.as_i64()?))
}

/// Applies a batch of announced changes: removals at once, newer writes by reading their rows in one query.
async fn apply_notices(pool: &PgPool, view: &View, notices: Vec<String>) -> Result<(), RegistryError> {
    let mut removed = Vec::new();
    let mut fetch: Vec<InstanceId> = Vec::new();
    for (delete, id, version) in notices.iter().filter_map(|p| parse_notice(p)) {
        if delete {
            removed.push((id, version));
        } else if view.version(&id).is_none_or(|held| held < version) && !fetch.contains(&id) {
            fetch.push(id);
        }
    }
    view.remove(removed);
    if fetch.is_empty() {
        return Ok(());
    }
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS}, version FROM omnihost_instances WHERE (model_name, worker_type, host, port) IN \
         (SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int4[]))"
    ))
    .bind(fetch.iter().map(|i| i.model_name.clone()).collect::<Vec<_>>())
    .bind(fetch.iter().map(|i| i.worker_type.name().to_string()).collect::<Vec<_>>())
    .bind(fetch.iter().map(|i| i.host.clone()).collect::<Vec<_>>())
    .bind(fetch.iter().map(|i| i32::from(i.port)).collect::<Vec<_>>())
    .fetch_all(pool)
    .await?;
    view.upsert(rows.iter().map(decode_versioned).collect::<Result<Vec<_>, _>>()?);
    Ok(())
}

/// What the listener passes to the applier: a notice, or word that notices may have been missed.
enum Heard {
    Notice(String),
    Lost,
}

/// Listens for changes until aborted, reconnecting after a lost connection. `listener` is already listening.
async fn listen(pool: PgPool, mut listener: PgListener, heard: mpsc::UnboundedSender<Heard>) {
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) => {
                if heard.send(Heard::Notice(n.payload().to_string())).is_err() {
                    return;
                }
                continue;
            }
            Ok(None) => tracing::warn!("registry: lost the notification connection; reconnecting"),
            Err(_) if pool.is_closed() => return,
            Err(e) => tracing::warn!(error = %e, "registry: notification connection failed; reconnecting"),
        }
        let _ = heard.send(Heard::Lost);
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if pool.is_closed() {
                return;
            }
            match subscribe(&pool).await {
                Ok(l) => {
                    listener = l;
                    break;
                }
                Err(e) => tracing::debug!(error = %e, "registry: still reconnecting the notification listener"),
            }
        }
        let _ = heard.send(Heard::Lost);
    }
}

async fn subscribe(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Applies what the listener heard, in batches: every notice already queued goes into one read.
async fn follow(pool: PgPool, view: Arc<View>, mut heard: mpsc::UnboundedReceiver<Heard>) {
    let mut stale = false;
    while let Some(first) = heard.recv().await {
        let mut notices = Vec::new();
        let mut lost = matches!(first, Heard::Lost);
        if let Heard::Notice(n) = first {
            notices.push(n);
        }
        while let Ok(next) = heard.try_recv() {
            match next {
                Heard::Notice(n) => notices.push(n),
                Heard::Lost => lost = true,
            }
        }
        stale |= lost;
        let result = if stale { reload(&pool, &view).await } else { apply_notices(&pool, &view, notices).await };
        match result {
            Ok(()) => stale = false,
            Err(e) => {
                // Read everything again on the next round (a notice whose row could not be read is lost).
                tracing::warn!(error = %crate::error::chain(&e), "registry: applying changes from the database failed");
                stale = true;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
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
        let view = Arc::new(View::default());
        // Listening starts before the first read, so no write falls between the two.
        let listener = subscribe(&pool).await?;
        reload(&pool, &view).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let follower = vec![
            tokio::spawn(listen(pool.clone(), listener, tx)).abort_handle(),
            tokio::spawn(follow(pool.clone(), view.clone(), rx)).abort_handle(),
        ];
        let (writer_pool, writer_view) = (pool.clone(), view.clone());
        let heartbeats = GroupCommit::start(move |rows| {
            let (pool, view) = (writer_pool.clone(), writer_view.clone());
            async move { upsert_many(&pool, &view, &rows, "healthy = TRUE, last_heartbeat_ms = EXCLUDED.last_heartbeat_ms").await }
        });
        let leadership = Mutex::new(Leadership { conn: None, leading: false });
        Ok(Self { pool, options, leadership, heartbeats, view, follower })
    }

    /// Runs raw SQL against the store (tests write rows behind the registry's back with it); the view learns of
    /// it from the trigger's notification, as of any other controller's write.
    pub async fn execute_raw(&self, sql: &str) -> Result<u64, RegistryError> {
        Ok(sqlx::query(sql).execute(&self.pool).await?.rows_affected())
    }

    pub async fn close(&self) {
        for task in &self.follower {
            task.abort();
        }
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
    let pending: Vec<(i64, &'static [&'static str])> = MIGRATIONS.iter().copied().filter(|(v, _)| *v > current.unwrap_or(0)).collect();
    for (version, statements) in pending {
        for statement in statements.iter().copied() {
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
            &self.view,
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
            format!("DELETE FROM omnihost_instances WHERE model_name = $1 AND worker_type = $2 AND host = $3 AND port = $4 RETURNING {COLUMNS}, version")
        } else {
            format!("UPDATE omnihost_instances SET healthy = FALSE WHERE model_name = $1 AND worker_type = $2 AND host = $3 AND port = $4 RETURNING {COLUMNS}, version")
        };
        let rows = sqlx::query(&sql)
            .bind(&id.model_name)
            .bind(id.worker_type.name())
            .bind(&id.host)
            .bind(i32::from(id.port))
            .fetch_all(&self.pool)
            .await?;
        let rows = rows.iter().map(decode_versioned).collect::<Result<Vec<_>, _>>()?;
        if remove {
            self.view.remove(rows.into_iter().map(|(i, v)| (i.id, v)).collect::<Vec<_>>());
        } else {
            self.view.upsert(rows);
        }
        Ok(true)
    }

    async fn list(&self, query: &Query) -> Result<Vec<Instance>, RegistryError> {
        Ok(self.view.list(query))
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
            "DELETE FROM omnihost_instances WHERE NOT healthy AND last_heartbeat_ms < {NOW_MS} - $1 RETURNING {COLUMNS}, version"
        ))
        .bind(ms(evict_after))
        .fetch_all(&mut *tx)
        .await?;
        let marked = sqlx::query(&format!(
            "UPDATE omnihost_instances SET healthy = FALSE WHERE healthy AND check_healthy AND last_heartbeat_ms < {NOW_MS} - $1 \
             RETURNING {COLUMNS}, version"
        ))
        .bind(ms(timeout))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let evicted = evicted.iter().map(decode_versioned).collect::<Result<Vec<_>, _>>()?;
        let marked = marked.iter().map(decode_versioned).collect::<Result<Vec<_>, _>>()?;
        let sweep = Sweep { marked_unhealthy: marked.len() as u64, evicted: evicted.len() as u64 };
        self.view.remove(evicted.into_iter().map(|(i, v)| (i.id, v)).collect::<Vec<_>>());
        self.view.upsert(marked);
        Ok(sweep)
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
