//! The registry's rows in memory, indexed by model, so that lookups never wait on the database. A SQL store
//! keeps its view exactly up to date: every write it makes is applied with the values the database stored, and
//! (PostgreSQL) every other controller's write arrives as a notification. Each row carries the version of the
//! write that produced it, so writes applied out of order (a notification overtaking its own write's answer)
//! never put an older row over a newer one, and a removed row is not brought back by a late, older write.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use super::{Instance, InstanceId, Query};

/// How long a removal is remembered to turn away older writes that arrive after it. Writes are applied within
/// milliseconds of their commit, so this is generous.
const TOMBSTONE_TTL: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Rows {
    /// model name -> rows of that model, in identity order.
    by_model: HashMap<String, BTreeMap<InstanceId, (Instance, i64)>>,
    tombstones: HashMap<InstanceId, (i64, Instant)>,
    len: usize,
}

#[derive(Default)]
pub(crate) struct View {
    rows: RwLock<Rows>,
}

impl View {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Rows> {
        self.rows.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Rows> {
        self.rows.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The rows `query` selects, ordered by identity.
    pub(crate) fn list(&self, query: &Query) -> Vec<Instance> {
        let rows = self.read();
        let pick = |map: &BTreeMap<InstanceId, (Instance, i64)>| -> Vec<Instance> {
            map.values().map(|(i, _)| i).filter(|i| query.matches(i)).cloned().collect()
        };
        match &query.model_name {
            Some(name) => rows.by_model.get(name).map(pick).unwrap_or_default(),
            None => {
                let mut all: Vec<Instance> = rows.by_model.values().flat_map(pick).collect();
                all.sort_by(|a, b| a.id.cmp(&b.id));
                all
            }
        }
    }

    /// The rows `pick` chooses, in no particular order (a sweep looks at every row and takes few).
    pub(crate) fn select(&self, mut pick: impl FnMut(&Instance) -> bool) -> Vec<Instance> {
        self.read().by_model.values().flat_map(|m| m.values()).map(|(i, _)| i).filter(|i| pick(i)).cloned().collect()
    }

    pub(crate) fn get(&self, id: &InstanceId) -> Option<Instance> {
        held(&self.read(), id)
    }

    /// `(all rows, healthy rows)`.
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (usize, usize) {
        let rows = self.read();
        let healthy = rows.by_model.values().flat_map(|m| m.values()).filter(|(i, _)| i.healthy).count();
        (rows.len, healthy)
    }

    /// Applies rows as written by `version`s; each replaces the held row only when newer.
    pub(crate) fn upsert(&self, written: impl IntoIterator<Item = (Instance, i64)>) {
        let mut rows = self.write();
        for (instance, version) in written {
            upsert_one(&mut rows, instance, version);
        }
    }

    /// Applies a heartbeat written at `now` by `version`: a held row keeps its fields and turns healthy, an
    /// unknown one is added as sent.
    pub(crate) fn beat(&self, sent: Instance, now: i64, version: i64) {
        let mut rows = self.write();
        let mut row = held(&rows, &sent.id).unwrap_or(sent);
        row.healthy = true;
        row.last_heartbeat_ms = now;
        upsert_one(&mut rows, row, version);
    }

    /// Marks a held row unhealthy, as written by `version`.
    pub(crate) fn mark_down(&self, id: &InstanceId, version: i64) {
        let mut rows = self.write();
        if let Some(mut row) = held(&rows, id) {
            row.healthy = false;
            upsert_one(&mut rows, row, version);
        }
    }

    /// Applies removals; `version` is the version of the removed row.
    pub(crate) fn remove(&self, removed: impl IntoIterator<Item = (InstanceId, i64)>) {
        let mut rows = self.write();
        let now = Instant::now();
        rows.tombstones.retain(|_, (_, at)| now.duration_since(*at) < TOMBSTONE_TTL);
        for (id, version) in removed {
            remove_one(&mut rows, &id, version);
            let stone = rows.tombstones.entry(id).or_insert((version, now));
            if stone.0 <= version {
                *stone = (version, now);
            }
        }
    }

    /// Replaces everything with a full read of the store made at `snapshot` (the highest version it could
    /// see). Held rows newer than the snapshot were written after it, so they stay.
    pub(crate) fn reload(&self, all: Vec<(Instance, i64)>, snapshot: i64) {
        let mut rows = self.write();
        let read: std::collections::HashSet<InstanceId> = all.iter().map(|(i, _)| i.id.clone()).collect();
        let gone: Vec<(InstanceId, i64)> = rows
            .by_model
            .values()
            .flat_map(|m| m.iter())
            .filter(|(id, (_, v))| *v <= snapshot && !read.contains(*id))
            .map(|(id, (_, v))| (id.clone(), *v))
            .collect();
        for (id, v) in gone {
            remove_one(&mut rows, &id, v);
        }
        for (instance, version) in all {
            upsert_one(&mut rows, instance, version);
        }
    }
}

fn held(rows: &Rows, id: &InstanceId) -> Option<Instance> {
    rows.by_model.get(&id.model_name).and_then(|m| m.get(id)).map(|(i, _)| i.clone())
}

fn upsert_one(rows: &mut Rows, instance: Instance, version: i64) {
    if rows.tombstones.get(&instance.id).is_some_and(|(removed, _)| *removed >= version) {
        return;
    }
    let model = rows.by_model.entry(instance.id.model_name.clone()).or_default();
    match model.get_mut(&instance.id) {
        Some(held) if held.1 > version => {}
        Some(held) => *held = (instance, version),
        None => {
            model.insert(instance.id.clone(), (instance, version));
            rows.len += 1;
        }
    }
}

fn remove_one(rows: &mut Rows, id: &InstanceId, version: i64) {
    let Some(model) = rows.by_model.get_mut(&id.model_name) else { return };
    if model.get(id).is_some_and(|(_, held)| *held <= version) {
        model.remove(id);
        rows.len -= 1;
        if model.is_empty() {
            rows.by_model.remove(&id.model_name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WorkerType;

    fn row(port: i64, healthy: bool) -> Instance {
        let mut i = Instance::new(InstanceId::new("m", WorkerType::Llm, "h", port).unwrap());
        i.healthy = healthy;
        i
    }

    #[test]
    fn a_late_older_write_neither_overwrites_a_newer_row_nor_revives_a_removed_one() {
        let view = View::default();
        view.upsert([(row(1, true), 5)]);
        view.upsert([(row(1, false), 4)]);
        assert!(view.list(&Query::default())[0].healthy, "version 4 arrived after version 5");
        view.remove([(row(1, true).id, 5)]);
        view.upsert([(row(1, true), 5)]);
        assert!(view.list(&Query::default()).is_empty(), "the removed row came back");
        view.upsert([(row(1, true), 6)]);
        assert_eq!(view.counts(), (1, 1), "a newer write registers it again");
    }

    #[test]
    fn a_reload_drops_rows_removed_meanwhile_but_keeps_rows_written_after_it() {
        let view = View::default();
        view.upsert([(row(1, true), 1), (row(2, true), 2), (row(3, true), 9)]);
        view.reload(vec![(row(1, false), 3)], 8);
        let ports: Vec<u16> = view.list(&Query::default()).iter().map(|i| i.id.port).collect();
        assert_eq!(ports, vec![1, 3]);
        assert_eq!(view.counts(), (2, 1));
        let healthy = Query { healthy_only: true, ..Query::model("m", WorkerType::Llm) };
        assert_eq!(view.list(&healthy).len(), 1);
    }
}
