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
use crate::tasks::Background;

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
        // Every write of the registry's sets `version` from the sequence (an insert by the column's default); its
        // statements do it themselves, which costs less than a row trigger at thousands of heartbeats a second.
        // An update by hand keeps the row's version: listeners still read the row, and an equal version applies.
        &["CREATE SEQUENCE omnihost_instances_version",
        "ALTER TABLE omnihost_instances ADD COLUMN version BIGINT NOT NULL DEFAULT nextval('omnihost_instances_version')",
        "CREATE INDEX omnihost_instances_version_idx ON omnihost_instances (version)",
        // The sweeper reads every row at each pass anyway; one index fewer to keep at every heartbeat.
        "DROP INDEX omnihost_instances_heartbeat",
        // One notice per statement, not per row: a batch of 2,000 heartbeats is one notice of its version range.
        "CREATE FUNCTION omnihost_instances_written() RETURNS trigger LANGUAGE plpgsql AS $$
         DECLARE low BIGINT; high BIGINT;
         BEGIN
           SELECT MIN(version), MAX(version) INTO low, high FROM written;
           IF low IS NOT NULL THEN PERFORM pg_notify('omnihost_instances', 'u ' || low || ' ' || high); END IF;
           RETURN NULL;
         END $$",
        "CREATE TRIGGER omnihost_instances_inserted AFTER INSERT ON omnihost_instances
         REFERENCING NEW TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION omnihost_instances_written()",
        "CREATE TRIGGER omnihost_instances_updated AFTER UPDATE ON omnihost_instances
         REFERENCING NEW TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION omnihost_instances_written()",
        // Removals name their rows (they are rare); too many for one notice asks listeners to read everything.
        "CREATE FUNCTION omnihost_instances_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
         DECLARE rows TEXT;
         BEGIN
           SELECT json_agg(json_build_array(model_name, worker_type, host, port, version))::text INTO rows FROM gone;
           IF rows IS NULL THEN RETURN NULL; END IF;
           IF length(rows) > 7000 THEN rows := 'all'; END IF;
           PERFORM pg_notify('omnihost_instances', 'd ' || rows);
           RETURN NULL;
         END $$",
        "CREATE TRIGGER omnihost_instances_deleted AFTER DELETE ON omnihost_instances
         REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION omnihost_instances_deleted()"],
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

fn decode_all(rows: &[PgRow]) -> Result<Vec<(Instance, i64)>, RegistryError> {
    rows.iter().map(decode_versioned).collect()
}

/// The identities and versions of removed rows.
fn removals(rows: Vec<(Instance, i64)>) -> Vec<(InstanceId, i64)> {
    rows.into_iter().map(|(i, v)| (i.id, v)).collect()
}

async fn upsert_many(pool: &PgPool, view: &View, rows: &[Instance], on_conflict: &str) -> Result<(), sqlx::Error> {
    let sql = format!("{UPSERT_MANY}{on_conflict}, version = EXCLUDED.version RETURNING {COLUMNS}, version");
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
    let decoded = decode_all(rows).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
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
    let all = decode_all(&rows)?;
    view.reload(all, snapshot);
    Ok(())
}

/// One announced change.
#[derive(Debug, PartialEq)]
enum Notice {
    /// Rows were inserted or updated with versions in this range (other statements' rows may share it).
    Written { low: i64, high: i64 },
    /// These rows were removed, each at its version.
    Removed(Vec<(InstanceId, i64)>),
    /// Too much changed to say: read everything.
    Everything,
}

/// Reads a notice: `u LOW HIGH`, or `d [[model_name, worker_type, host, port, version], ...]`, or `d all`.
fn parse_notice(payload: &str) -> Option<Notice> {
    let (kind, rest) = payload.split_once(' ')?;
    match kind {
        "u" => {
            let (low, high) = rest.split_once(' ')?;
            Some(Notice::Written { low: low.parse().ok()?, high: high.parse().ok()? })
        }
        "d" if rest == "all" => Some(Notice::Everything),
        "d" => {
            let rows: Vec<(String, String, String, i64, i64)> = serde_json::from_str(rest).ok()?;
            let removed = rows
                .into_iter()
                .filter_map(|(name, worker_type, host, port, version)| {
                    let worker_type = super::parse_worker_type(&worker_type).ok()?;
                    Some((InstanceId::new(&name, worker_type, &host, port).ok()?, version))
                })
                .collect();
            Some(Notice::Removed(removed))
        }
        _ => None,
    }
}

/// Applies a batch of notices from other controllers: removals at once, writes by reading their version ranges.
async fn apply_notices(pool: &PgPool, view: &View, notices: Vec<Notice>) -> Result<(), RegistryError> {
    let mut ranges: Vec<(i64, i64)> = Vec::new();
    for notice in notices {
        match notice {
            Notice::Removed(rows) => view.remove(rows),
            Notice::Written { low, high } => ranges.push((low, high)),
            Notice::Everything => return reload(pool, view).await,
        }
    }
    if ranges.is_empty() {
        return Ok(());
    }
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS}, version FROM omnihost_instances o WHERE EXISTS \
         (SELECT 1 FROM UNNEST($1::int8[], $2::int8[]) AS r(low, high) WHERE o.version BETWEEN r.low AND r.high)"
    ))
    .bind(ranges.iter().map(|r| r.0).collect::<Vec<_>>())
    .bind(ranges.iter().map(|r| r.1).collect::<Vec<_>>())
    .fetch_all(pool)
    .await?;
    view.upsert(decode_all(&rows)?);
    Ok(())
}

/// What the listener passes to the applier: a notice, or word that notices may have been missed.
enum Heard {
    Notice(Notice),
    Lost,
}

/// The server processes of this controller's pool connections: their writes are applied from `RETURNING`
/// already, so their notices are skipped.
type Own = Arc<std::sync::Mutex<std::collections::HashSet<u32>>>;

/// Listens for changes until aborted, reconnecting after a lost connection. `listener` is already listening.
async fn listen(pool: PgPool, mut listener: PgListener, own: Own, heard: mpsc::UnboundedSender<Heard>) {
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) => {
                if own.lock().unwrap_or_else(|p| p.into_inner()).contains(&n.process_id()) {
                    continue;
                }
                let notice = parse_notice(n.payload()).unwrap_or_else(|| {
                    tracing::warn!(payload = n.payload(), "registry: a notice it cannot read; reading everything");
                    Notice::Everything
                });
                if heard.send(Heard::Notice(notice)).is_err() {
                    return;
                }
                continue;
            }
            Ok(None) => tracing::warn!("registry: lost the notification connection; reconnecting"),
            Err(_) if pool.is_closed() => return,
            Err(e) => tracing::warn!(error = %e, "registry: notification connection failed; reconnecting"),
        }
        // The server may have restarted and handed our old process ids to another controller's connections.
        own.lock().unwrap_or_else(|p| p.into_inner()).clear();
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
    loop {
        let mut batch = Vec::new();
        // A stale view is read again at once; otherwise wait for news.
        if !stale {
            match heard.recv().await {
                Some(h) => batch.push(h),
                None => return,
            }
        }
        while let Ok(next) = heard.try_recv() {
            batch.push(next);
        }
        let mut notices = Vec::new();
        for h in batch {
            match h {
                Heard::Notice(n) => notices.push(n),
                Heard::Lost => stale = true,
            }
        }
        let result = if stale { reload(&pool, &view).await } else { apply_notices(&pool, &view, notices).await };
        match result {
            Ok(()) => stale = false,
            Err(e) => {
                // Read everything again next (a notice whose rows could not be read is lost).
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
        Self::connect_in(url, max_connections, &Background::default()).await
    }

    /// Like [`PostgresRegistry::connect`], its listener, follower and heartbeat writer running in `background`.
    pub async fn connect_in(url: &str, max_connections: u32, background: &Background) -> Result<Self, RegistryError> {
        let options = PgConnectOptions::from_str(url)?.disable_statement_logging();
        let own: Own = Arc::default();
        let mine = own.clone();
        let pool = PgPoolOptions::new()
            .after_connect(move |conn, _| {
                let mine = mine.clone();
                Box::pin(async move {
                    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *conn).await?;
                    mine.lock().unwrap_or_else(|p| p.into_inner()).insert(pid as u32);
                    Ok(())
                })
            })
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
            background.spawn(listen(pool.clone(), listener, own, tx)).abort_handle(),
            background.spawn(follow(pool.clone(), view.clone(), rx)).abort_handle(),
        ];
        let (writer_pool, writer_view) = (pool.clone(), view.clone());
        let heartbeats = GroupCommit::start(
            move |rows| {
                let (pool, view) = (writer_pool.clone(), writer_view.clone());
                async move { upsert_many(&pool, &view, &rows, "healthy = TRUE, last_heartbeat_ms = EXCLUDED.last_heartbeat_ms").await }
            },
            background,
        );
        let leadership = Mutex::new(Leadership { conn: None, leading: false });
        Ok(Self { pool, options, leadership, heartbeats, view, follower })
    }

    /// Runs raw SQL against the store (tests write rows behind a registry's back with it). Its notice comes from
    /// this controller's own connection and is skipped like its other writes', so the view is read again.
    pub async fn execute_raw(&self, sql: &str) -> Result<u64, RegistryError> {
        let affected = sqlx::query(sql).execute(&self.pool).await?.rows_affected();
        reload(&self.pool, &self.view).await?;
        Ok(affected)
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
            format!("UPDATE omnihost_instances SET healthy = FALSE, version = nextval('omnihost_instances_version') WHERE model_name = $1 AND worker_type = $2 AND host = $3 AND port = $4 RETURNING {COLUMNS}, version")
        };
        let rows = sqlx::query(&sql)
            .bind(&id.model_name)
            .bind(id.worker_type.name())
            .bind(&id.host)
            .bind(i32::from(id.port))
            .fetch_all(&self.pool)
            .await?;
        let rows = decode_all(&rows)?;
        if remove {
            self.view.remove(removals(rows));
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
            "UPDATE omnihost_instances SET healthy = FALSE, version = nextval('omnihost_instances_version') WHERE healthy AND check_healthy AND last_heartbeat_ms < {NOW_MS} - $1 \
             RETURNING {COLUMNS}, version"
        ))
        .bind(ms(timeout))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let evicted = decode_all(&evicted)?;
        let marked = decode_all(&marked)?;
        let sweep = Sweep { marked_unhealthy: marked.len() as u64, evicted: evicted.len() as u64 };
        self.view.remove(removals(evicted));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WorkerType;

    #[test]
    fn notices_read_as_written_ranges_removed_rows_or_everything() {
        assert_eq!(parse_notice("u 7 12"), Some(Notice::Written { low: 7, high: 12 }));
        let removed = parse_notice(r#"d [["m", "llm", "10.0.0.1", 80, 9]]"#);
        let id = InstanceId::new("m", WorkerType::Llm, "10.0.0.1", 80).unwrap();
        assert_eq!(removed, Some(Notice::Removed(vec![(id, 9)])));
        assert_eq!(parse_notice("d all"), Some(Notice::Everything));
        assert_eq!(parse_notice("u seven"), None);
        assert_eq!(parse_notice("x"), None);
    }
}
