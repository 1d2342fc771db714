//! The in-memory store: the registry's [`View`] alone. For tests and throwaway single-process clusters; it
//! forgets everything when the process ends (the embedded default is SQLite for that reason).

use std::sync::Mutex;
use std::time::Duration;

use super::view::View;
use super::{Instance, InstanceId, Query, Registry, RegistryError, Sweep, ms_before, now_ms};

#[derive(Default)]
pub struct MemoryRegistry {
    view: View,
    /// Writes take this in turn (it counts their versions), so a read-modify-write of a row is not interleaved.
    writes: Mutex<i64>,
}

impl MemoryRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes a row as given, bypassing the registry's rules (tests use it to age heartbeats).
    pub fn put_raw(&self, instance: Instance) {
        let mut version = self.lock();
        *version += 1;
        self.view.upsert([(instance, *version)]);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, i64> {
        self.writes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl Registry for MemoryRegistry {
    async fn register(&self, instance: &Instance) -> Result<bool, RegistryError> {
        instance.validate()?;
        let mut row = instance.clone();
        row.healthy = true;
        row.last_heartbeat_ms = now_ms();
        self.put_raw(row);
        Ok(true)
    }

    async fn deregister(&self, id: &InstanceId, remove: bool) -> Result<bool, RegistryError> {
        let mut version = self.lock();
        *version += 1;
        if remove {
            self.view.remove([(id.clone(), *version)]);
        } else {
            self.view.mark_down(id, *version);
        }
        Ok(true)
    }

    async fn list(&self, query: &Query) -> Result<Vec<Instance>, RegistryError> {
        Ok(self.view.list(query))
    }

    async fn heartbeat(&self, instance: &Instance) -> Result<bool, RegistryError> {
        let mut version = self.lock();
        if self.view.get(&instance.id).is_none() {
            instance.validate()?;
        }
        *version += 1;
        self.view.beat(instance.clone(), now_ms(), *version);
        Ok(true)
    }

    async fn sweep(&self, timeout: Duration, evict_after: Duration) -> Result<Sweep, RegistryError> {
        let mut version = self.lock();
        *version += 1;
        let now = now_ms();
        let (stale, gone) = (ms_before(now, timeout), ms_before(now, evict_after));
        let (mut evicted, mut marked) = (Vec::new(), Vec::new());
        let due = |row: &Instance| {
            (!row.healthy && row.last_heartbeat_ms < gone) || (row.healthy && row.check_healthy && row.last_heartbeat_ms < stale)
        };
        for row in self.view.select(due) {
            if row.healthy { marked.push(row.id) } else { evicted.push((row.id, *version)) }
        }
        let sweep = Sweep { marked_unhealthy: marked.len() as u64, evicted: evicted.len() as u64 };
        self.view.remove(evicted);
        for id in &marked {
            self.view.mark_down(id, *version);
        }
        Ok(sweep)
    }

    fn store(&self) -> &'static str {
        "memory"
    }
}
