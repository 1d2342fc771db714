//! Group commit for heartbeats: heartbeats that arrive while a write is in progress are written together in the
//! next transaction. An idle registry writes each one at once; a busy one writes thousands per transaction, so
//! the heartbeat rate is bounded by transactions per second times the batch size, not by fsyncs per heartbeat.
//! Every caller waits for the transaction holding its heartbeat, so an answer of `true` means it is stored.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{Instance, InstanceId, RegistryError};
use crate::tasks::Background;

type Reply = oneshot::Sender<Result<(), Arc<sqlx::Error>>>;

/// Most heartbeats written in one transaction.
const MAX_BATCH: usize = 2048;

pub(crate) struct GroupCommit {
    tx: mpsc::Sender<(Instance, Reply)>,
}

impl GroupCommit {
    /// Starts the writer task in `background`; it ends when the store holding this is dropped, or at shutdown.
    /// `write` gets each batch with at most one row per instance, sorted by identity (a fixed lock order, so two
    /// controllers cannot deadlock).
    pub(crate) fn start<F, Fut>(write: F, background: &Background) -> Self
    where
        F: Fn(Vec<Instance>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), sqlx::Error>> + Send,
    {
        let (tx, mut rx) = mpsc::channel::<(Instance, Reply)>(MAX_BATCH * 4);
        background.spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let mut rows: BTreeMap<InstanceId, Instance> = BTreeMap::new();
                let mut replies = Vec::with_capacity(batch.len());
                for (instance, reply) in batch {
                    rows.insert(instance.id.clone(), instance);
                    replies.push(reply);
                }
                let result = write(rows.into_values().collect()).await.map_err(Arc::new);
                if let Err(e) = &result {
                    tracing::warn!(error = %e, heartbeats = replies.len(), "writing heartbeats failed");
                }
                for reply in replies {
                    let _ = reply.send(result.clone());
                }
            }
        });
        Self { tx }
    }

    /// Queues one heartbeat and waits until its transaction has committed.
    pub(crate) async fn submit(&self, instance: Instance) -> Result<(), RegistryError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send((instance, reply)).await.map_err(|_| RegistryError::WriterStopped)?;
        answer.await.map_err(|_| RegistryError::WriterStopped)?.map_err(RegistryError::Database)
    }
}
