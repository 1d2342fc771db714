//! The health sweeper: every interval, the controller that leads marks instances whose heartbeats stopped
//! unhealthy and evicts long-dead ones. On a shared store only the elected leader sweeps; the others keep
//! trying to lead, so one of them takes over within an interval when the leader goes away.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Registry;
use crate::tasks::Background;

/// How often to sweep and what counts as dead.
#[derive(Debug, Clone, Copy)]
pub struct SweepSettings {
    pub interval: Duration,
    /// Silence after which an instance is marked unhealthy.
    pub timeout: Duration,
    /// Silence after which an unhealthy instance is removed.
    pub evict_after: Duration,
}

/// What the sweeper has done, for health answers and benchmarks.
#[derive(Debug, Default)]
pub struct SweeperStats {
    pub leader: AtomicBool,
    pub passes: AtomicU64,
    pub marked_unhealthy: AtomicU64,
    pub evicted: AtomicU64,
    /// Duration of the last pass, in microseconds.
    pub last_pass_us: AtomicU64,
}

pub struct Sweeper {
    stats: Arc<SweeperStats>,
    stop: watch::Sender<bool>,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
    registry: Arc<dyn Registry>,
}

impl Sweeper {
    /// Starts sweeping in `background`.
    pub fn start(registry: Arc<dyn Registry>, settings: SweepSettings, background: &Background) -> Sweeper {
        let stats = Arc::new(SweeperStats::default());
        let (stop, mut stopped) = watch::channel(false);
        let (reg, st) = (registry.clone(), stats.clone());
        let task = background.spawn(async move {
            let mut tick = tokio::time::interval(settings.interval.max(Duration::from_millis(10)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => break,
                }
                let leading = match reg.lead().await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %crate::error::chain(&e), "registry leader election failed");
                        false
                    }
                };
                st.leader.store(leading, Ordering::Relaxed);
                if !leading {
                    continue;
                }
                let started = Instant::now();
                match reg.sweep(settings.timeout, settings.evict_after).await {
                    Ok(sweep) => {
                        st.passes.fetch_add(1, Ordering::Relaxed);
                        st.marked_unhealthy.fetch_add(sweep.marked_unhealthy, Ordering::Relaxed);
                        st.evicted.fetch_add(sweep.evicted, Ordering::Relaxed);
                        st.last_pass_us.store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                        if sweep.marked_unhealthy > 0 || sweep.evicted > 0 {
                            tracing::info!(unhealthy = sweep.marked_unhealthy, evicted = sweep.evicted, "registry sweep");
                        }
                    }
                    Err(e) => tracing::warn!(error = %crate::error::chain(&e), "registry sweep failed"),
                }
            }
        });
        Sweeper { stats, stop, task: std::sync::Mutex::new(Some(task)), registry }
    }

    pub fn stats(&self) -> &SweeperStats {
        &self.stats
    }

    pub fn is_leader(&self) -> bool {
        self.stats.leader.load(Ordering::Relaxed)
    }

    /// Stops sweeping and gives up leadership, so another controller takes over at once.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        self.stats.leader.store(false, Ordering::Relaxed);
        self.registry.resign().await;
    }
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            task.abort();
        }
    }
}
