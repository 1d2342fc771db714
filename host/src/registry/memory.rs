//! The in-memory store: a map behind a lock. For tests and throwaway single-process clusters; it forgets
//! everything when the process ends (the embedded default is SQLite for that reason).

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::Duration;

use super::{Instance, InstanceId, Query, Registry, RegistryError, Sweep, ms_before, now_ms};

#[derive(Default)]
pub struct MemoryRegistry {
    rows: RwLock<BTreeMap<InstanceId, Instance>>,
}

impl MemoryRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes a row as given, bypassing the registry's rules (tests use it to age heartbeats).
    pub fn put_raw(&self, instance: Instance) {
        self.write().insert(instance.id.clone(), instance);
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<InstanceId, Instance>> {
        self.rows.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl Registry for MemoryRegistry {
    async fn register(&self, instance: &Instance) -> Result<bool, RegistryError> {
        instance.validate()?;
        let mut row = instance.clone();
        row.healthy = true;
        row.last_heartbeat_ms = now_ms();
        self.write().insert(row.id.clone(), row);
        Ok(true)
    }

    async fn deregister(&self, id: &InstanceId, remove: bool) -> Result<bool, RegistryError> {
        let mut rows = self.write();
        if remove {
            rows.remove(id);
        } else if let Some(row) = rows.get_mut(id) {
            row.healthy = false;
        }
        Ok(true)
    }

    async fn list(&self, query: &Query) -> Result<Vec<Instance>, RegistryError> {
        let rows = self.rows.read().unwrap_or_else(|p| p.into_inner());
        Ok(rows.values().filter(|i| query.matches(i)).cloned().collect())
    }

    async fn heartbeat(&self, instance: &Instance) -> Result<bool, RegistryError> {
        let now = now_ms();
        let mut rows = self.write();
        match rows.get_mut(&instance.id) {
            Some(row) => {
                row.healthy = true;
                row.last_heartbeat_ms = now;
            }
            None => {
                instance.validate()?;
                let mut row = instance.clone();
                row.healthy = true;
                row.last_heartbeat_ms = now;
                rows.insert(row.id.clone(), row);
            }
        }
        Ok(true)
    }

    async fn sweep(&self, timeout: Duration, evict_after: Duration) -> Result<Sweep, RegistryError> {
        let now = now_ms();
        let (stale, gone) = (ms_before(now, timeout), ms_before(now, evict_after));
        let mut rows = self.write();
        let mut sweep = Sweep::default();
        rows.retain(|_, row| {
            if !row.healthy && row.last_heartbeat_ms < gone {
                sweep.evicted += 1;
                return false;
            }
            if row.healthy && row.check_healthy && row.last_heartbeat_ms < stale {
                row.healthy = false;
                sweep.marked_unhealthy += 1;
            }
            true
        });
        Ok(sweep)
    }

    fn store(&self) -> &'static str {
        "memory"
    }
}
