//! Continuous batching for host-driven generation: one scheduler task per decoder runs every sequence's prompt
//! and decode steps, asking the llm-adapter plugin for the sampling, detokenising and stop rules of each step.
//!
//! The loop lives in the host (see DESIGN.md, "Generation"): a sequence joins the batch between steps once its
//! prompt has run, leaves it as soon as it finishes or its client goes away, and every step of the running
//! sequences is one decoder run and one plugin call per plugin version. A long prompt runs in chunks with a
//! decode step between each, so running streams wait at most one chunk.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::mpsc;

use crate::compute::{ComputeError, Decoder, SeqId};
use crate::plugin::bindings::decoding::{FinishReason, LogprobInfo, Prepared, StepInput, StepOutput};
use crate::plugin::{CallError, GuestError, Version};
use crate::tasks::Background;

/// Why a sequence ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    /// EOS or a stop string.
    Stop,
    /// `max_tokens` or the context.
    Length,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

/// Why a sequence failed after it was admitted.
#[derive(Debug, thiserror::Error)]
pub enum SequenceError {
    #[error(transparent)]
    Compute(#[from] ComputeError),
    #[error(transparent)]
    Plugin(#[from] CallError),
    #[error(transparent)]
    Guest(#[from] GuestError),
    /// The decoder failed a step that this sequence shared with others; they all carry the one cause.
    #[error("the decode step failed: {0}")]
    Step(#[source] Arc<ComputeError>),
}

/// What a sequence sends to the request that owns it.
#[derive(Debug)]
pub enum Event {
    Delta { text: String, logprobs: Option<LogprobInfo> },
    Done { finish: Finish, prompt_tokens: u32, completion_tokens: u32 },
    Failed(SequenceError),
}

/// A sequence waiting for a place in the batch.
pub struct Admission {
    pub version: Arc<Version>,
    pub prepared: Prepared,
    pub events: mpsc::UnboundedSender<Event>,
}

/// Counters of a scheduler, for `/health/ready` and tests.
#[derive(Debug, Default)]
pub struct SchedulerStats {
    /// Sequences in the batch (prompt done, decoding).
    pub running: AtomicUsize,
    /// Decode steps run so far.
    pub steps: AtomicU64,
    /// Sequences dropped because their client went away.
    pub cancelled: AtomicU64,
    /// Time spent in decode runs and in the plugin's step calls of decode steps, in nanoseconds: the plugin's
    /// share of a step is what the design promises to keep small.
    pub decode_nanos: AtomicU64,
    pub plugin_nanos: AtomicU64,
}

/// The handle requests use to queue sequences.
pub struct Scheduler {
    tx: mpsc::Sender<Admission>,
    pub stats: Arc<SchedulerStats>,
}

impl Scheduler {
    /// Starts the scheduler task of `decoder` in `background`. It ends when the handle is dropped and its queue
    /// is drained, or at shutdown.
    pub fn start(decoder: Arc<Decoder>, queue_capacity: usize, prefill_chunk: usize, background: &Background) -> Scheduler {
        let (tx, rx) = mpsc::channel(queue_capacity.max(1));
        let stats = Arc::new(SchedulerStats::default());
        let looped = Loop {
            decoder,
            chunk: prefill_chunk.max(1),
            stats: stats.clone(),
            running: Vec::new(),
            prefilling: None,
            next_seq: 0,
        };
        background.spawn(looped.run(rx));
        Scheduler { tx, stats }
    }

    /// Queues a sequence; `Err` gives it back when the queue is full (the caller answers 429).
    #[allow(clippy::result_large_err, reason = "the admission is handed back whole so the caller can answer")]
    pub fn admit(&self, admission: Admission) -> Result<(), Admission> {
        self.tx.try_send(admission).map_err(|e| match e {
            mpsc::error::TrySendError::Full(a) | mpsc::error::TrySendError::Closed(a) => a,
        })
    }
}

/// A sequence in the batch.
struct Running {
    seq: SeqId,
    version: Arc<Version>,
    state: Vec<u8>,
    /// The token to feed in the next step.
    token: u32,
    prompt_tokens: u32,
    generated: u32,
    max_new: u32,
    events: mpsc::UnboundedSender<Event>,
}

/// The sequence whose prompt is running, chunk by chunk.
struct Prefilling {
    seq: SeqId,
    version: Arc<Version>,
    tokens: Vec<u32>,
    done: usize,
    state: Vec<u8>,
    max_new: u32,
    events: mpsc::UnboundedSender<Event>,
}

struct Loop {
    decoder: Arc<Decoder>,
    chunk: usize,
    stats: Arc<SchedulerStats>,
    running: Vec<Running>,
    prefilling: Option<Prefilling>,
    next_seq: SeqId,
}

/// What became of a sequence after a step.
enum Outcome {
    Continue,
    Finished,
}

impl Loop {
    async fn run(mut self, mut rx: mpsc::Receiver<Admission>) {
        let mut closed = false;
        loop {
            self.drop_cancelled();
            if self.prefilling.is_none() && self.running.len() < self.decoder.limits.max_sequences && !closed {
                let next = if self.running.is_empty() {
                    rx.recv().await
                } else {
                    match rx.try_recv() {
                        Ok(a) => Some(a),
                        Err(mpsc::error::TryRecvError::Empty) => None,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            closed = true;
                            None
                        }
                    }
                };
                match next {
                    Some(admission) => self.begin(admission),
                    None if self.running.is_empty() => break,
                    None => {}
                }
            }
            // Prompts run in chunks up to `chunk` tokens per step: short prompts that arrive together share one
            // step's budget, and no step stalls running streams for more than one chunk's worth of prompt.
            let mut budget = self.chunk;
            while budget > 0 && self.prefilling.is_some() {
                budget = budget.saturating_sub(self.prefill_chunk(budget).await);
                if self.prefilling.is_none() && self.running.len() < self.decoder.limits.max_sequences && !closed {
                    match rx.try_recv() {
                        Ok(admission) => self.begin(admission),
                        Err(mpsc::error::TryRecvError::Empty) => {}
                        Err(mpsc::error::TryRecvError::Disconnected) => closed = true,
                    }
                }
            }
            if !self.running.is_empty() {
                self.decode_step().await;
            }
        }
        tracing::debug!(model = %self.decoder.name, "generation scheduler stopped");
    }

    fn begin(&mut self, admission: Admission) {
        if admission.events.is_closed() {
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.prefilling = Some(Prefilling {
            seq,
            version: admission.version,
            tokens: admission.prepared.prompt_token_ids,
            done: 0,
            state: admission.prepared.state,
            max_new: admission.prepared.max_new_tokens,
            events: admission.events,
        });
    }

    fn drop_cancelled(&mut self) {
        let decoder = &self.decoder;
        let stats = &self.stats;
        self.running.retain(|r| {
            if r.events.is_closed() {
                decoder.release(r.seq);
                stats.cancelled.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            true
        });
        if self.prefilling.as_ref().is_some_and(|p| p.events.is_closed())
            && let Some(p) = self.prefilling.take()
        {
            decoder.release(p.seq);
            stats.cancelled.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.running.store(self.running.len(), Ordering::Relaxed);
    }

    /// Runs up to `budget` tokens of the prompt in progress; returns how many it ran.
    async fn prefill_chunk(&mut self, budget: usize) -> usize {
        let Some(p) = self.prefilling.as_mut() else { return 0 };
        let end = (p.done + budget).min(p.tokens.len());
        let ran = end - p.done;
        let last = end == p.tokens.len();
        let chunk = p.tokens.get(p.done..end).map(<[u32]>::to_vec).unwrap_or_default();
        let result = self.decoder.prefill(p.seq, chunk, p.done, last).await;
        p.done = end;
        let logits = match result {
            Ok(logits) => logits,
            Err(e) => {
                if let Some(p) = self.prefilling.take() {
                    self.decoder.release(p.seq);
                    let _ = p.events.send(Event::Failed(e.into()));
                }
                return ran;
            }
        };
        if !last {
            return ran;
        }
        let Some(p) = self.prefilling.take() else { return ran };
        let mut seq = Running {
            seq: p.seq,
            version: p.version,
            state: p.state,
            token: 0,
            prompt_tokens: p.tokens.len() as u32,
            generated: 0,
            max_new: p.max_new,
            events: p.events,
        };
        let outcome = step_group(std::slice::from_mut(&mut seq), vec![logits]).await;
        match outcome.into_iter().next() {
            Some(Outcome::Continue) => self.running.push(seq),
            _ => self.decoder.release(seq.seq),
        }
        self.stats.running.store(self.running.len(), Ordering::Relaxed);
        ran
    }

    async fn decode_step(&mut self) {
        let items: Vec<(SeqId, u32)> = self.running.iter().map(|r| (r.seq, r.token)).collect();
        let started = std::time::Instant::now();
        let decoded = self.decoder.decode(items).await;
        self.stats.decode_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let rows = match decoded {
            Ok(rows) => rows,
            Err(e) => {
                // The decoder failed the whole step: every sequence in it fails with the same cause.
                tracing::error!(model = %self.decoder.name, error = %e, "decode step failed");
                let cause = Arc::new(e);
                for r in self.running.drain(..) {
                    self.decoder.release(r.seq);
                    let _ = r.events.send(Event::Failed(SequenceError::Step(cause.clone())));
                }
                return;
            }
        };
        self.stats.steps.fetch_add(1, Ordering::Relaxed);
        // One plugin call per version: sequences started before a swap finish on the version that prepared them.
        let mut groups: Vec<(Vec<Running>, Vec<Vec<f32>>)> = Vec::new();
        for (r, row) in self.running.drain(..).zip(rows) {
            match groups.iter_mut().find(|(g, _)| g.first().is_some_and(|f| Arc::ptr_eq(&f.version, &r.version))) {
                Some((group, logits)) => {
                    group.push(r);
                    logits.push(row);
                }
                None => groups.push((vec![r], vec![row])),
            }
        }
        for (mut group, logits) in groups {
            let outcomes = step_group(&mut group, logits).await;
            for (r, outcome) in group.into_iter().zip(outcomes) {
                match outcome {
                    Outcome::Continue => self.running.push(r),
                    Outcome::Finished => self.decoder.release(r.seq),
                }
            }
        }
        self.stats.plugin_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.stats.running.store(self.running.len(), Ordering::Relaxed);
    }
}

/// Runs the plugin's step for sequences that share a version, and applies each result. When the call itself
/// fails (a trap, a timeout, the memory cap), the states are still the host's, so each sequence is retried
/// alone and only the one that makes the plugin fail fails.
async fn step_group(group: &mut [Running], logits: Vec<Vec<f32>>) -> Vec<Outcome> {
    let Some(version) = group.first().map(|r| r.version.clone()) else { return Vec::new() };
    let inputs: Arc<[StepInput]> =
        group.iter().zip(logits).map(|(r, logits)| StepInput { logits, state: r.state.clone() }).collect();
    match version.step(inputs.clone()).await {
        Ok(results) => group.iter_mut().zip(results).map(|(r, result)| apply(r, result.map_err(Into::into))).collect(),
        Err(e) if group.len() == 1 => match group.first_mut() {
            Some(r) => vec![apply(r, Err(e.into()))],
            None => Vec::new(),
        },
        Err(_) => {
            let mut outcomes = Vec::with_capacity(group.len());
            for (r, input) in group.iter_mut().zip(inputs.iter()) {
                let result = match version.step(Arc::from([input.clone()])).await {
                    Ok(mut one) => one.pop().map(|o| o.map_err(SequenceError::from)).unwrap_or_else(|| {
                        Err(SequenceError::Plugin(CallError::StepCount {
                            plugin: version.info.sha256.clone(),
                            expected: 1,
                            got: 0,
                        }))
                    }),
                    Err(e) => Err(e.into()),
                };
                outcomes.push(apply(r, result));
            }
            outcomes
        }
    }
}

fn apply(r: &mut Running, result: Result<StepOutput, SequenceError>) -> Outcome {
    let out = match result {
        Ok(out) => out,
        Err(e) => {
            let _ = r.events.send(Event::Failed(e));
            return Outcome::Finished;
        }
    };
    r.generated += 1;
    r.state = out.state;
    if !out.delta.is_empty() || out.logprobs.is_some() {
        let _ = r.events.send(Event::Delta { text: out.delta, logprobs: out.logprobs });
    }
    let finish = match out.finish {
        Some(FinishReason::Stop) => Some(Finish::Stop),
        Some(FinishReason::Length) => Some(Finish::Length),
        // The plugin promised to stop at `max_new_tokens`; the host holds it to that.
        None if r.generated >= r.max_new => Some(Finish::Length),
        None => None,
    };
    match finish {
        Some(finish) => {
            let _ = r.events.send(Event::Done { finish, prompt_tokens: r.prompt_tokens, completion_tokens: r.generated });
            Outcome::Finished
        }
        None => {
            r.token = out.token;
            Outcome::Continue
        }
    }
}
