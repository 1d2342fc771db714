//! The registry's behaviour (DESIGN.md §4), one test body run against the in-memory, SQLite and PostgreSQL
//! stores alike, plus leader election between two controllers sharing one PostgreSQL database.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use omnihost::config::WorkerType;
use omnihost::registry::{
    Instance, InstanceId, MemoryRegistry, PostgresRegistry, Query, Registry, SqliteRegistry, SweepSettings, Sweeper, now_ms,
    select_one,
};

/// A database of its own on the test PostgreSQL server (set by `cargo xtask test`), so tests do not share rows;
/// dropped with the value, so a shared server does not collect one per test run.
pub struct TestDatabase {
    pub url: String,
    server: String,
    name: String,
}

pub async fn postgres_database() -> TestDatabase {
    use sqlx::Connection;
    static N: AtomicU32 = AtomicU32::new(0);
    let server = std::env::var("OMNIHOST_TEST_POSTGRES")
        .expect("OMNIHOST_TEST_POSTGRES names the test PostgreSQL server: run the tests with `cargo xtask test`");
    let name = format!("omnihost_test_{}_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed), now_ms() % 1_000_000);
    let mut conn = sqlx::PgConnection::connect(&server).await.expect("the test PostgreSQL server accepts connections");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
    let (base, _) = server.rsplit_once('/').unwrap();
    TestDatabase { url: format!("{base}/{name}"), server, name }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        use sqlx::Connection;
        let (server, name) = (self.server.clone(), self.name.clone());
        // Drop cannot await, and the test's runtime may be shutting down: a thread of its own does it, bounded.
        // FORCE ends the connections the registries under test still hold.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let drop = async {
                    let mut conn = sqlx::PgConnection::connect(&server).await.ok()?;
                    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await.ok()
                };
                tokio::time::timeout(Duration::from_secs(10), drop).await.ok().flatten()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("could not drop the test database {}", self.name);
        }
    }
}

enum Store {
    Memory(Arc<MemoryRegistry>),
    Sqlite(Arc<SqliteRegistry>, std::path::PathBuf),
    /// The registry under test, and another controller on the same database (dropped after both).
    Postgres(Arc<PostgresRegistry>, Arc<PostgresRegistry>, #[expect(dead_code, reason = "held for its Drop")] TestDatabase),
}

impl Store {
    async fn open(kind: &str) -> Store {
        match kind {
            "memory" => Store::Memory(Arc::new(MemoryRegistry::new())),
            "sqlite" => {
                static N: AtomicU32 = AtomicU32::new(0);
                let dir = crate::common::root().join("target/omnihost-test-cache/registries");
                let path = dir.join(format!("{}-{}.sqlite3", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
                let _ = std::fs::remove_file(&path);
                Store::Sqlite(Arc::new(SqliteRegistry::open(&path).await.unwrap()), path)
            }
            _ => {
                let db = postgres_database().await;
                let (mine, other) = (PostgresRegistry::connect(&db.url, 8).await.unwrap(), PostgresRegistry::connect(&db.url, 2).await.unwrap());
                Store::Postgres(Arc::new(mine), Arc::new(other), db)
            }
        }
    }

    fn registry(&self) -> Arc<dyn Registry> {
        match self {
            Store::Memory(r) => r.clone(),
            Store::Sqlite(r, _) => r.clone(),
            Store::Postgres(r, ..) => r.clone(),
        }
    }

    /// Writes a row straight into the store, behind the registry's back.
    async fn write_raw(&self, i: &Instance) {
        let sql = format!(
            "INSERT INTO omnihost_instances (model_name, worker_type, host, port, weight, check_healthy, healthy, enabled, \
             prompt_template, last_heartbeat_ms, metadata) VALUES ('{}', '{}', '{}', {}, {}, {}, {}, {}, NULL, {}, '{{}}') \
             ON CONFLICT (model_name, worker_type, host, port) DO UPDATE SET healthy = excluded.healthy, \
             last_heartbeat_ms = excluded.last_heartbeat_ms",
            i.id.model_name,
            i.id.worker_type.name(),
            i.id.host,
            i.id.port,
            i.weight,
            i.check_healthy,
            i.healthy,
            i.enabled,
            i.last_heartbeat_ms
        );
        match self {
            Store::Memory(r) => r.put_raw(i.clone()),
            Store::Sqlite(r, _) => {
                r.execute_raw(&sql.replace("true", "1").replace("false", "0")).await.unwrap();
            }
            Store::Postgres(r, other, _) => {
                other.execute_raw(&sql).await.unwrap();
                // Written by another controller, it reaches this one's view as a notification.
                let started = std::time::Instant::now();
                let query = Query { model_name: Some(i.id.model_name.clone()), worker_type: Some(i.id.worker_type), healthy_only: false };
                loop {
                    let seen = r.list(&query).await.unwrap().into_iter().find(|row| row.id == i.id);
                    if seen.is_some_and(|row| row.healthy == i.healthy && row.last_heartbeat_ms == i.last_heartbeat_ms) {
                        break;
                    }
                    assert!(started.elapsed() < Duration::from_secs(2), "another controller's write never reached this one's view");
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }
    }
}

fn instance(name: &str, host: &str, port: i64) -> Instance {
    Instance::new(InstanceId::new(name, WorkerType::Llm, host, port).unwrap())
}

fn all(name: &str) -> Query {
    Query { model_name: Some(name.into()), worker_type: None, healthy_only: false }
}

fn healthy(name: &str) -> Query {
    Query { healthy_only: true, ..all(name) }
}

async fn behaviours(kind: &str) {
    let store = Store::open(kind).await;
    let r = store.registry();
    let a = instance("test_model", "192.168.1.1", 5000);

    // 1. register upserts: true, healthy, stamped with the registry's clock; names and hosts are trimmed;
    //    another host or port is a second entry, the same one is not.
    let before = now_ms();
    assert!(r.register(&a).await.unwrap());
    let mut padded = instance("test_model", "192.168.1.1", 5000);
    padded.id.model_name = "  test_model ".into();
    padded.id.host = " 192.168.1.1 ".into();
    let padded = Instance { id: InstanceId::new(&padded.id.model_name, WorkerType::Llm, &padded.id.host, 5000).unwrap(), ..padded };
    assert!(r.register(&padded).await.unwrap());
    let listed = r.list(&all("test_model")).await.unwrap();
    assert_eq!(listed.len(), 1, "{kind}: registering twice keeps one entry: {listed:?}");
    assert!(listed[0].healthy && listed[0].last_heartbeat_ms >= before - 5, "{kind}: {listed:?}");
    r.register(&instance("test_model", "192.168.1.2", 6000)).await.unwrap();
    r.register(&instance("test_model", "192.168.1.1", 5001)).await.unwrap();
    assert_eq!(r.list(&all("test_model")).await.unwrap().len(), 3, "{kind}: other host/port are other entries");

    // 2. deregister marks unhealthy and keeps the row, or removes it when asked; unknown is not an error.
    assert!(r.deregister(&a.id, false).await.unwrap());
    let rows = r.list(&all("test_model")).await.unwrap();
    let row = rows.iter().find(|i| i.id == a.id).expect("the deregistered row is kept");
    assert!(!row.healthy, "{kind}");
    assert!(r.deregister(&instance("nobody", "h", 1).id, false).await.unwrap(), "{kind}: unknown instance");
    r.deregister(&InstanceId::new("test_model", WorkerType::Llm, "192.168.1.1", 5001).unwrap(), true).await.unwrap();

    // 3. healthy_only leaves out unhealthy entries; without it they are listed.
    assert_eq!(r.list(&healthy("test_model")).await.unwrap().len(), 1, "{kind}");
    assert_eq!(r.list(&all("test_model")).await.unwrap().len(), 2, "{kind}: removed row is gone, deregistered kept");

    // 4. a heartbeat stamps the registry's clock (later than the client's) and sets healthy; unknown registers.
    let mut stale = a.clone();
    stale.last_heartbeat_ms = now_ms() - 10_000;
    assert!(r.heartbeat(&stale).await.unwrap());
    let row = r.list(&all("test_model")).await.unwrap().into_iter().find(|i| i.id == a.id).unwrap();
    assert!(row.healthy && row.last_heartbeat_ms > stale.last_heartbeat_ms, "{kind}: {row:?}");
    assert!(r.heartbeat(&instance("fresh", "10.0.0.9", 80)).await.unwrap());
    assert_eq!(r.list(&healthy("fresh")).await.unwrap().len(), 1, "{kind}: heartbeat registers an unknown instance");

    // 5. (timing) the sweeper marks silent instances unhealthy within interval + 1 s; a heartbeat heals them;
    //    eviction waits for its own, longer grace.
    let sweeper = Sweeper::start(
        r.clone(),
        SweepSettings { interval: Duration::from_millis(200), timeout: Duration::from_secs(1), evict_after: Duration::from_secs(3600) },
        &omnihost::tasks::Background::default(),
    );
    let b = instance("swept", "10.0.0.1", 7000);
    r.register(&b).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(r.list(&healthy("swept")).await.unwrap().len(), 1, "{kind}: healthy before the timeout");
    tokio::time::sleep(Duration::from_millis(1000 + 200 + 300)).await;
    let rows = r.list(&all("swept")).await.unwrap();
    assert!(rows.len() == 1 && !rows[0].healthy, "{kind}: silent past the timeout, it is unhealthy: {rows:?}");
    r.heartbeat(&b).await.unwrap();
    assert_eq!(r.list(&healthy("swept")).await.unwrap().len(), 1, "{kind}: a heartbeat heals it");
    assert!(sweeper.is_leader(), "{kind}: a lone controller leads");
    sweeper.stop().await;
    let mut dead = instance("dead", "10.0.0.2", 1);
    dead.healthy = false;
    dead.last_heartbeat_ms = now_ms() - 120_000;
    store.write_raw(&dead).await;
    let sweep = r.sweep(Duration::from_secs(1), Duration::from_secs(3600)).await.unwrap();
    assert_eq!(sweep.evicted, 0, "{kind}: not evicted before the grace");
    let sweep = r.sweep(Duration::from_secs(1), Duration::from_secs(60)).await.unwrap();
    assert_eq!(sweep.evicted, 1, "{kind}: evicted after the grace");
    assert!(r.list(&all("dead")).await.unwrap().is_empty(), "{kind}");

    // 6. select-one picks healthy, enabled instances in proportion to their weights.
    let mut light = instance("weighted", "10.1.0.1", 1);
    light.weight = 1.0;
    let mut heavy = instance("weighted", "10.1.0.2", 1);
    heavy.weight = 4.0;
    let mut off = instance("weighted", "10.1.0.3", 1);
    off.enabled = false;
    off.weight = 100.0;
    for i in [&light, &heavy, &off] {
        r.register(i).await.unwrap();
    }
    let mut heavy_picks = 0;
    for _ in 0..500 {
        let pick = select_one(r.as_ref(), "weighted", WorkerType::Llm).await.unwrap().unwrap();
        assert_ne!(pick.id, off.id, "{kind}: a disabled instance is never selected");
        heavy_picks += usize::from(pick.id == heavy.id);
    }
    assert!((350..=450).contains(&heavy_picks), "{kind}: weight 4 of 5 picked {heavy_picks} of 500");
    assert!(select_one(r.as_ref(), "nobody", WorkerType::Llm).await.unwrap().is_none());

    // 7. a row written straight to the store is visible at once: no stale cache.
    let mut direct = instance("direct", "10.2.0.1", 9);
    direct.last_heartbeat_ms = now_ms();
    store.write_raw(&direct).await;
    assert_eq!(r.list(&healthy("direct")).await.unwrap().len(), 1, "{kind}: written behind the registry's back");

    if let Store::Sqlite(sqlite, path) = &store {
        // The embedded default survives a restart.
        sqlite.close().await;
        let reopened = SqliteRegistry::open(path).await.unwrap();
        assert_eq!(reopened.list(&all("weighted")).await.unwrap().len(), 3, "the SQLite registry survives a reopen");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_behaviour_in_memory() {
    behaviours("memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_behaviour_on_sqlite() {
    behaviours("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_behaviour_on_postgres() {
    behaviours("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_from_many_clients_at_once_are_all_stored() {
    for kind in ["sqlite", "postgres"] {
        let store = Store::open(kind).await;
        let r = store.registry();
        let beats = (0..500).map(|i| {
            let r = r.clone();
            async move { r.heartbeat(&instance(&format!("m{}", i % 50), "10.3.0.1", 1000 + i)).await.unwrap() }
        });
        assert!(futures::future::join_all(beats).await.into_iter().all(|ok| ok));
        let rows = r.list(&Query { healthy_only: true, ..Query::default() }).await.unwrap();
        assert_eq!(rows.len(), 500, "{kind}: every group-committed heartbeat is stored");
    }
}
