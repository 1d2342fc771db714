//! A server's background tasks (batchers, heartbeats, schedulers, the sweeper, registry writers and
//! listeners), tracked together so that shutdown can cancel every one and wait until each has ended.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// One cancellation token and one task tracker for a server's background work. Clones share both.
///
/// Parts built outside a server (a store opened by a test, a benchmark's worker) get their own, which nothing
/// shuts down: their tasks end as before, when what feeds them is dropped.
#[derive(Clone, Debug, Default)]
pub struct Background {
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Background {
    /// Runs `task` until it ends by itself or shutdown cancels it (it is then dropped at its next await).
    pub fn spawn<F>(&self, task: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = task => {}
            }
        })
    }

    /// Tasks still running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Whether shutdown has begun.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Cancels every task and waits up to `deadline` for them to end; returns how many had not.
    pub async fn shutdown(&self, deadline: Duration) -> usize {
        self.cancel.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(deadline, self.tracker.wait()).await;
        self.tracker.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_cancels_endless_tasks_and_waits_for_them() {
        let background = Background::default();
        for _ in 0..3 {
            background.spawn(async {
                loop {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
        }
        background.spawn(async {});
        assert!(background.running() >= 3);
        assert_eq!(background.shutdown(Duration::from_secs(5)).await, 0);
        assert!(background.is_cancelled());
        // A task spawned after shutdown is cancelled at once rather than left running.
        let late = background.spawn(async { std::future::pending::<()>().await });
        tokio::time::timeout(Duration::from_secs(5), late).await.unwrap().unwrap();
    }
}
