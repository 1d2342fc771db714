//! Served models: each is a worker-adapter plugin behind a dynamic batcher.
//!
//! Embedding requests for a model queue on a bounded channel (a full queue is a 429, not an unbounded wait).
//! While no batch is in flight a request goes straight to the plugin, so an idle server adds no latency; while
//! one is, requests gather for up to `max_delay_ms` or `max_batch` texts and go together in one plugin call.
//! A batch runs on one plugin version, so every response comes from exactly one version. When a batch fails,
//! each request in it is retried alone, so a bad input fails only its own request.
//!
//! Generation has two paths. An llm-adapter plugin names a decoder and the host drives its loop with
//! continuous batching ([`generate`]); a worker adapter that exports `generate` drives its own loop and pushes
//! deltas into a sink (the scripted model). Both give the caller one event stream per choice.
//!
//! [`manager`] owns the lifecycle of the workers of a host (start, stop, restart, registration, heartbeats), with
//! DB-GPT's worker parameters in [`params`], the started-models file in [`state_file`] and its errors in
//! [`error`]; [`router`] routes each request to a worker, this host's first, then others found through the
//! registry.

pub mod error;
pub mod generate;
pub mod manager;
pub mod params;
pub mod router;
pub mod state_file;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::config::{ModelConfig, WorkerType};
use crate::plugin::bindings::{decoding, worker_exports};
use crate::plugin::{AdapterInfo, CallError, Embedded, Plugin, Version};
use crate::tasks::Background;
pub use generate::{Event, Finish, Scheduler, SchedulerStats, SequenceError};

/// Errors of a served model.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("model `{model}` is overloaded: {capacity} requests are already queued")]
    Overloaded { model: String, capacity: usize },
    #[error("model `{model}` is at its concurrency limit of {limit} requests in flight; retry later")]
    ConcurrencyLimit { model: String, limit: usize },
    #[error("model `{0}` has stopped")]
    Stopped(String),
    #[error("model `{model}` does not support {operation}")]
    Unsupported { model: String, operation: &'static str },
    #[error("model `{model}`: the prompt has {prompt_tokens} tokens but the context holds {capacity}")]
    ContextLength { model: String, prompt_tokens: usize, capacity: usize },
    #[error(transparent)]
    Call(#[from] CallError),
}

/// The event streams of one generation request, one per choice, and what holds its place.
pub struct Generation {
    pub streams: Vec<mpsc::UnboundedReceiver<Event>>,
    pub plugin_version: String,
    /// The request's slot under the model's concurrency limit, held until the streams are dropped.
    _permit: OwnedSemaphorePermit,
}

/// Embeddings of one request and the plugin version that computed them.
#[derive(Debug)]
pub struct EmbedOutput {
    pub vectors: Vec<Embedded>,
    pub plugin_version: String,
}

struct Job {
    texts: Vec<String>,
    truncate: bool,
    queued_at: Instant,
    reply: oneshot::Sender<Result<EmbedOutput, WorkerError>>,
}

/// A served model.
pub struct Worker {
    pub model: String,
    pub worker_type: WorkerType,
    pub plugin: Arc<Plugin>,
    queue_capacity: usize,
    concurrency_limit: usize,
    in_flight: Arc<Semaphore>,
    /// Batches handed to the plugin and not yet answered.
    batches_running: Arc<AtomicUsize>,
    stopped: AtomicBool,
    tx: mpsc::Sender<Job>,
    /// One scheduler per decoder this model's plugin versions have used (normally one).
    schedulers: std::sync::Mutex<std::collections::HashMap<String, Arc<Scheduler>>>,
    /// Where the batcher and schedulers run, so shutdown can stop them.
    background: Background,
}

impl Worker {
    /// Starts the model's batcher task in `background`. The batcher ends once the worker is dropped and its
    /// queue is drained, or at shutdown.
    pub fn start(spec: &ModelConfig, plugin: Arc<Plugin>, background: &Background) -> Arc<Worker> {
        let batch = &spec.batch;
        let capacity = batch.queue_capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let slots = Arc::new(Semaphore::new(plugin.limits().max_concurrency.min(batch.max_in_flight).max(1)));
        let max_delay = Duration::from_millis(batch.max_delay_ms);
        let batches_running = Arc::new(AtomicUsize::new(0));
        let gather = Gather { max_batch: batch.max_batch.max(1), max_delay, running: batches_running.clone() };
        background.spawn(batcher(spec.name.clone(), rx, plugin.clone(), slots, gather, background.clone()));
        let limit = spec.concurrency_limit.max(1);
        Arc::new(Worker {
            model: spec.name.clone(),
            worker_type: spec.worker_type,
            plugin,
            queue_capacity: capacity,
            concurrency_limit: limit,
            in_flight: Arc::new(Semaphore::new(limit)),
            batches_running,
            stopped: AtomicBool::new(false),
            tx,
            schedulers: std::sync::Mutex::new(std::collections::HashMap::new()),
            background: background.clone(),
        })
    }

    /// Refuses new requests; those already accepted finish.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    /// A request slot under the worker's concurrency limit, or a 429-class error.
    fn admit(&self) -> Result<OwnedSemaphorePermit, WorkerError> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(WorkerError::Stopped(self.model.clone()));
        }
        self.in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| WorkerError::ConcurrencyLimit { model: self.model.clone(), limit: self.concurrency_limit })
    }

    /// Embedding requests waiting in the queue.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// Embedding batches the plugin is computing.
    pub fn batches_running(&self) -> usize {
        self.batches_running.load(Ordering::Acquire)
    }

    /// What the adapter reported about itself (dimensions, token limit).
    pub fn adapter(&self) -> Option<AdapterInfo> {
        self.plugin.current().adapter.clone()
    }

    /// Embeds `texts`, batched with other requests. Fails at once with `Overloaded` when the queue is full.
    pub async fn embed(&self, texts: Vec<String>, truncate: bool) -> Result<EmbedOutput, WorkerError> {
        let result = self.embed_queued(texts, truncate).await;
        crate::metrics::model_request(&self.model, "embeddings", outcome(&result));
        if let Ok(out) = &result {
            crate::metrics::tokens(&self.model, "in", out.vectors.iter().map(|v| u64::from(v.tokens)).sum());
        }
        result
    }

    async fn embed_queued(&self, texts: Vec<String>, truncate: bool) -> Result<EmbedOutput, WorkerError> {
        let _permit = self.admit()?;
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(Job { texts, truncate, queued_at: Instant::now(), reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                WorkerError::Overloaded { model: self.model.clone(), capacity: self.queue_capacity }
            }
            mpsc::error::TrySendError::Closed(_) => WorkerError::Stopped(self.model.clone()),
        })?;
        rx.await.map_err(|_| WorkerError::Stopped(self.model.clone()))?
    }

    /// Scores documents against a query (not batched: one call per request).
    pub async fn rerank(&self, query: String, documents: Vec<String>) -> Result<(Vec<f32>, String), WorkerError> {
        let result = self.rerank_checked(query, documents).await;
        crate::metrics::model_request(&self.model, "rerank", outcome(&result));
        result
    }

    async fn rerank_checked(&self, query: String, documents: Vec<String>) -> Result<(Vec<f32>, String), WorkerError> {
        let _permit = self.admit()?;
        let version = self.plugin.current();
        let supports = version.adapter.as_ref().is_some_and(|a| a.worker_types.iter().any(|t| t == "reranker"));
        if !supports {
            return Err(WorkerError::Unsupported { model: self.model.clone(), operation: "rerank" });
        }
        // `Version::rerank` holds the guest to one finite score per document: callers index documents by position.
        let scores = version.rerank(query, documents).await?;
        Ok((scores, version.info.short().to_string()))
    }
}

impl Worker {
    fn scheduler(&self, binding: &crate::plugin::DecoderBinding) -> Arc<Scheduler> {
        let mut schedulers = self.schedulers.lock().unwrap_or_else(|p| p.into_inner());
        schedulers
            .entry(binding.info.model.clone())
            .or_insert_with(|| {
                let limits = &binding.decoder.limits;
                Arc::new(Scheduler::start(binding.decoder.clone(), limits.queue_capacity, limits.prefill_chunk, &self.background))
            })
            .clone()
    }

    /// The schedulers of the model's decoders (empty until the first generation request).
    pub fn schedulers(&self) -> Vec<Arc<Scheduler>> {
        self.schedulers.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Counters of the model's generation schedulers, summed (running sequences, decode steps, cancellations).
    pub fn generation_stats(&self) -> Option<(usize, u64, u64)> {
        let schedulers = self.schedulers.lock().unwrap_or_else(|p| p.into_inner());
        if schedulers.is_empty() {
            return None;
        }
        Some(schedulers.values().fold((0, 0, 0), |(r, s, c), sch| {
            let st = &sch.stats;
            (
                r + st.running.load(Ordering::Relaxed),
                s + st.steps.load(Ordering::Relaxed),
                c + st.cancelled.load(Ordering::Relaxed),
            )
        }))
    }

    /// Starts generating `n` choices for `request`. Errors that concern the request (a bad prompt, a full
    /// queue) come back here, before any event; failures after that arrive as [`Event::Failed`].
    pub async fn generate(&self, request: decoding::GenerationRequest, n: u32) -> Result<Generation, WorkerError> {
        let result = self.generate_started(request, n).await;
        crate::metrics::model_request(&self.model, "generation", outcome(&result));
        let mut generation = result?;
        generation.streams = std::mem::take(&mut generation.streams).into_iter().map(|s| counted(&self.model, s)).collect();
        Ok(generation)
    }

    async fn generate_started(&self, request: decoding::GenerationRequest, n: u32) -> Result<Generation, WorkerError> {
        let permit = self.admit()?;
        let version = self.plugin.current();
        let supports = version.adapter.as_ref().is_some_and(|a| a.worker_types.iter().any(|t| t == "llm"));
        if !supports {
            return Err(WorkerError::Unsupported { model: self.model.clone(), operation: "generation" });
        }
        let plugin_version = version.info.short().to_string();
        let streams = match version.decoder.clone() {
            Some(binding) => self.generate_batched(&version, &binding, request, n).await?,
            None => (0..n.max(1)).map(|choice| spawn_plugin_driven(version.clone(), &request, choice)).collect(),
        };
        Ok(Generation { streams, plugin_version, _permit: permit })
    }

    async fn generate_batched(
        &self,
        version: &Arc<Version>,
        binding: &crate::plugin::DecoderBinding,
        request: decoding::GenerationRequest,
        n: u32,
    ) -> Result<Vec<mpsc::UnboundedReceiver<Event>>, WorkerError> {
        let capacity = binding.decoder.limits.max_context;
        let mut prepared = Vec::with_capacity(n as usize);
        for choice in 0..n.max(1) {
            let p = version.prepare(decoding::GenerationRequest { choice, ..request.clone() }).await?;
            let prompt_tokens = p.prompt_token_ids.len();
            if prompt_tokens >= capacity {
                return Err(WorkerError::ContextLength { model: self.model.clone(), prompt_tokens, capacity });
            }
            // The KV cache may hold less than the model's context: generation stops where the cache ends.
            let room = (capacity - prompt_tokens - 1) as u32;
            prepared.push(decoding::Prepared { max_new_tokens: p.max_new_tokens.min(room), ..p });
        }
        let scheduler = self.scheduler(binding);
        let mut streams = Vec::with_capacity(prepared.len());
        for p in prepared {
            let (events, rx) = mpsc::unbounded_channel();
            let admission = generate::Admission { version: version.clone(), prepared: p, events };
            if scheduler.admit(admission).is_err() {
                return Err(WorkerError::Overloaded {
                    model: self.model.clone(),
                    capacity: binding.decoder.limits.queue_capacity,
                });
            }
            streams.push(rx);
        }
        Ok(streams)
    }
}

/// Runs a plugin-driven `generate` call for one choice and turns what it pushes into events.
fn spawn_plugin_driven(
    version: Arc<Version>,
    request: &decoding::GenerationRequest,
    choice: u32,
) -> mpsc::UnboundedReceiver<Event> {
    let sampling = &request.sampling;
    let legacy = worker_exports::GenerateRequest {
        messages: request
            .messages
            .iter()
            .map(|m| worker_exports::ChatMessage { role: m.role.clone(), content: m.content.clone() })
            .collect(),
        prompt: request.prompt.clone(),
        sampling: worker_exports::SamplingParams {
            max_tokens: sampling.max_tokens,
            temperature: sampling.temperature,
            top_p: sampling.top_p,
            top_k: sampling.top_k,
            seed: sampling.seed.map(|s| s.wrapping_add(u64::from(choice))),
            stop: sampling.stop.clone(),
        },
    };
    let (events, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        // A small channel paces the guest to the forwarding below; when the client goes, `push` returns false.
        let (deltas, mut incoming) = mpsc::channel::<String>(16);
        let forward_events = events.clone();
        let forward = tokio::spawn(async move {
            while let Some(text) = incoming.recv().await {
                if forward_events.send(Event::Delta { text, logprobs: None }).is_err() {
                    break;
                }
            }
        });
        let result = version.generate(legacy, deltas).await;
        let _ = forward.await;
        let event = match result {
            Ok(done) => Event::Done {
                finish: if done.finish_reason == "length" { Finish::Length } else { Finish::Stop },
                prompt_tokens: done.prompt_tokens,
                completion_tokens: done.completion_tokens,
            },
            Err(e) => Event::Failed(SequenceError::Plugin(e)),
        };
        let _ = events.send(event);
    });
    rx
}

/// How a model request ended, as the metrics label it.
fn outcome<T>(result: &Result<T, WorkerError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(WorkerError::Overloaded { .. } | WorkerError::ConcurrencyLimit { .. }) => "overloaded",
        Err(WorkerError::Stopped(_)) => "stopped",
        Err(WorkerError::Unsupported { .. }) => "unsupported",
        Err(WorkerError::ContextLength { .. }) => "context_length",
        Err(WorkerError::Call(CallError::Guest(crate::plugin::GuestError::InvalidInput(_)))) => "invalid_input",
        Err(WorkerError::Call(CallError::Timeout { .. })) => "plugin_timeout",
        Err(WorkerError::Call(CallError::Trap { .. })) => "plugin_trap",
        Err(WorkerError::Call(CallError::BadOutput { .. })) => "plugin_bad_output",
        Err(WorkerError::Call(_)) => "plugin_error",
    }
}

/// Passes a generation's events on, counting the stream as running until it ends and its tokens when it is
/// done. A client that goes away is noticed at the next event, and the scheduler then frees the row.
fn counted(model: &str, mut events: mpsc::UnboundedReceiver<Event>) -> mpsc::UnboundedReceiver<Event> {
    let (tx, rx) = mpsc::unbounded_channel();
    let model = model.to_string();
    crate::metrics::streams(&model, 1.0);
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let Event::Done { prompt_tokens, completion_tokens, .. } = &event {
                crate::metrics::tokens(&model, "in", u64::from(*prompt_tokens));
                crate::metrics::tokens(&model, "out", u64::from(*completion_tokens));
            }
            if tx.send(event).is_err() {
                break;
            }
        }
        crate::metrics::streams(&model, -1.0);
    });
    rx
}

/// How a batch gathers: up to `max_batch` texts, waiting up to `max_delay` for more while another runs.
struct Gather {
    max_batch: usize,
    max_delay: Duration,
    /// Batches handed to the plugin and not yet answered.
    running: Arc<AtomicUsize>,
}

/// Gathers queued requests into batches. It takes a request off the queue only once the plugin has room for
/// another call, so a saturated plugin fills the queue and callers get a 429 instead of piling up unseen.
async fn batcher(
    model: String,
    mut rx: mpsc::Receiver<Job>,
    plugin: Arc<Plugin>,
    slots: Arc<Semaphore>,
    Gather { max_batch, max_delay, running }: Gather,
    background: Background,
) {
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { break };
        let Some(first) = rx.recv().await else { break };
        let mut texts = first.texts.len();
        let mut jobs = vec![first];
        // Everything already waiting joins at once (while a batch runs, requests pile up, and the next batch
        // should take them all rather than one); while another batch runs, more may join until `max_delay`.
        let deadline = (running.load(Ordering::Acquire) > 0).then(|| tokio::time::Instant::now() + max_delay);
        while texts < max_batch {
            let next = match (rx.try_recv(), deadline) {
                (Ok(job), _) => Some(job),
                (Err(_), Some(deadline)) => tokio::time::timeout_at(deadline, rx.recv()).await.ok().flatten(),
                (Err(_), None) => None,
            };
            let Some(job) = next else { break };
            texts += job.texts.len();
            jobs.push(job);
        }
        // Requests that differ in options cannot share a plugin call.
        let (truncating, strict): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| j.truncate);
        let counter = running.clone();
        counter.fetch_add(1, Ordering::AcqRel);
        let plugin = plugin.clone();
        let model = model.clone();
        background.spawn(async move {
            for group in [truncating, strict] {
                if !group.is_empty() {
                    let texts = group.iter().map(|j| j.texts.len()).sum();
                    let queued = group.iter().map(|j| j.queued_at.elapsed()).max().unwrap_or_default();
                    let started = Instant::now();
                    run_batch(&plugin, group).await;
                    crate::metrics::batch(&model, texts, queued, started.elapsed());
                }
            }
            counter.fetch_sub(1, Ordering::AcqRel);
            drop(slot);
        });
    }
}

async fn run_batch(plugin: &Plugin, jobs: Vec<Job>) {
    let version = plugin.current();
    let sha = version.info.short().to_string();
    let truncate = jobs.first().is_some_and(|j| j.truncate);
    let all: Vec<String> = jobs.iter().flat_map(|j| j.texts.iter().cloned()).collect();
    match version.embed(all, truncate).await {
        Ok(vectors) => {
            let mut vectors = vectors.into_iter();
            for job in jobs {
                let mine: Vec<Embedded> = vectors.by_ref().take(job.texts.len()).collect();
                let _ = job.reply.send(Ok(EmbedOutput { vectors: mine, plugin_version: sha.clone() }));
            }
        }
        Err(e) if jobs.len() == 1 => {
            if let Some(job) = jobs.into_iter().next() {
                let _ = job.reply.send(Err(WorkerError::Call(e)));
            }
        }
        Err(_) => {
            // Someone in the batch made it fail (a trap, or an answer that does not fit the batch): retry each
            // alone so only the guilty request fails.
            let retries = jobs.into_iter().map(|job| {
                let version = version.clone();
                let sha = sha.clone();
                async move {
                    let result = version
                        .embed(job.texts, job.truncate)
                        .await
                        .map(|vectors| EmbedOutput { vectors, plugin_version: sha })
                        .map_err(WorkerError::Call);
                    let _ = job.reply.send(result);
                }
            });
            futures::future::join_all(retries).await;
        }
    }
}
