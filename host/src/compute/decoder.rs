//! A decoder with a KV cache for host-driven generation: one ONNX Runtime session on its own thread, the cache
//! in ONNX Runtime's own buffers that the model updates in place, and every running sequence in one row of a
//! batch.
//!
//! The graph follows the decoder contract (README, "Generation"): `GroupQueryAttention` reads `past_key_values.*`
//! and writes `present.*`, and both are bound to the *same* buffer, so a step appends one position per row and
//! copies nothing (a plain graph concatenates and copies the whole cache every step, which is what makes decoding
//! slow down with context). Rows have their own lengths (`seqlens_k`), so sequences of any length share a step.
//!
//! The batch buffer holds a power-of-two number of rows up to `max_sequences`; it grows when a sequence needs a
//! row past its end and shrinks (compacting rows) when few are left, so one stream does not pay for sixteen.
//! Prompts run in chunks on a one-row scratch buffer, then move into their row; the scheduler interleaves the
//! chunks with decode steps.

use std::collections::HashMap;
use std::path::Path;

use ort::memory::Allocator;
use ort::session::Session;
use ort::value::{Tensor as OrtTensor, ValueType};
use tokio::sync::{mpsc, oneshot};

use super::{ComputeError, ComputeSettings, Provider, providers};

/// Identifies a sequence to the decoder; the scheduler picks them.
pub type SeqId = u64;

/// Limits of one decoder.
#[derive(Clone, Debug)]
pub struct DecoderLimits {
    /// Rows of the batch: sequences decoded together.
    pub max_sequences: usize,
    /// Positions of one row's cache.
    pub max_context: usize,
    /// Prompt tokens per prefill run (the scheduler's unit of interleaving).
    pub prefill_chunk: usize,
    /// Sequences that may wait for a row.
    pub queue_capacity: usize,
}

/// The shapes a decoder graph must have, read from its signature.
#[derive(Clone, Debug)]
struct Shape {
    layers: usize,
    kv_heads: usize,
    head_dim: usize,
    vocab: usize,
}

/// A loaded decoder. Commands run in order on its thread.
#[derive(Debug)]
pub struct Decoder {
    pub name: String,
    pub vocab_size: usize,
    pub limits: DecoderLimits,
    /// The execution providers ONNX Runtime accepted, in priority order.
    pub providers: Vec<Provider>,
    tx: mpsc::Sender<Command>,
}

enum Command {
    Prefill { seq: SeqId, tokens: Vec<u32>, start: usize, last: bool, reply: oneshot::Sender<Result<Vec<f32>, ComputeError>> },
    Decode { items: Vec<(SeqId, u32)>, reply: oneshot::Sender<Result<Vec<Vec<f32>>, ComputeError>> },
    Release { seq: SeqId },
}

impl Decoder {
    /// Loads the decoder, checks its signature and warms it up; returns once it is ready.
    pub fn load(
        runtime: &super::Runtime,
        name: &str,
        path: &Path,
        settings: &ComputeSettings,
        limits: DecoderLimits,
    ) -> Result<Decoder, ComputeError> {
        if !path.is_file() {
            return Err(ComputeError::ModelMissing(path.to_path_buf()));
        }
        let session_err = |source| ComputeError::Session { model: name.to_string(), path: path.to_path_buf(), source };
        let mut builder = runtime.session_builder().map_err(session_err)?;
        let providers = providers::register(&mut builder, &settings.providers, name, &settings.cache_dir.join("tensorrt"));
        let mut builder = settings.graph_options(builder).map_err(session_err)?;
        let session = builder.commit_from_file(path).map_err(session_err)?;
        let shape = signature(&session, name)?;
        let limits = DecoderLimits {
            max_sequences: limits.max_sequences.max(1),
            max_context: limits.max_context.max(2),
            prefill_chunk: limits.prefill_chunk.max(1),
            queue_capacity: limits.queue_capacity.max(1),
        };
        let mut engine = Engine::new(session, name, shape.clone(), limits.clone())?;
        // One token through the scratch row sets up kernels and arenas before the model reports ready.
        engine.prefill(SeqId::MAX, &[0], 0, false)?;
        engine.prefill_seq = None;
        let (tx, rx) = mpsc::channel::<Command>(64);
        std::thread::Builder::new()
            .name(format!("ort-{name}"))
            .spawn(move || engine.serve(rx))
            .map_err(|source| ComputeError::Thread { model: name.to_string(), source })?;
        Ok(Decoder { name: name.to_string(), vocab_size: shape.vocab, limits, providers, tx })
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T, ComputeError>>) -> Command) -> Result<T, ComputeError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| ComputeError::Stopped(self.name.clone()))?;
        rx.await.map_err(|_| ComputeError::Stopped(self.name.clone()))?
    }

    /// Runs `tokens` of sequence `seq`'s prompt, which start at position `start`. Chunks of one prompt must come
    /// in order, one prompt at a time; after the `last` chunk the sequence holds a row of the batch. Returns the
    /// logits at the chunk's last position.
    pub async fn prefill(&self, seq: SeqId, tokens: Vec<u32>, start: usize, last: bool) -> Result<Vec<f32>, ComputeError> {
        self.ask(|reply| Command::Prefill { seq, tokens, start, last, reply }).await
    }

    /// One decode step: each sequence's next token goes in at its next position. Returns each item's logits
    /// (`vocab_size` long), in order.
    pub async fn decode(&self, items: Vec<(SeqId, u32)>) -> Result<Vec<Vec<f32>>, ComputeError> {
        self.ask(|reply| Command::Decode { items, reply }).await
    }

    /// Frees the sequence's row. Unknown sequences are ignored.
    pub fn release(&self, seq: SeqId) {
        // A full command queue only delays the release; the thread drains it in order.
        let tx = self.tx.clone();
        if let Err(mpsc::error::TrySendError::Full(command)) = tx.try_send(Command::Release { seq }) {
            tokio::spawn(async move {
                let _ = tx.send(command).await;
            });
        }
    }
}

fn past_name(layer: usize, kind: &str) -> String {
    format!("past_key_values.{layer}.{kind}")
}

fn present_name(layer: usize, kind: &str) -> String {
    format!("present.{layer}.{kind}")
}

const KINDS: [&str; 2] = ["key", "value"];

fn signature(session: &Session, model: &str) -> Result<Shape, ComputeError> {
    let bad = |problem: String| ComputeError::NotADecoder { model: model.to_string(), problem };
    let inputs: Vec<(&str, &ValueType)> = session.inputs().iter().map(|o| (o.name(), o.dtype())).collect();
    for required in ["input_ids", "position_ids", "seqlens_k", "total_sequence_length"] {
        if !inputs.iter().any(|(n, _)| *n == required) {
            return Err(bad(format!("no input `{required}`")));
        }
    }
    let layers = inputs.iter().filter(|(n, _)| n.starts_with("past_key_values.") && n.ends_with(".key")).count();
    if layers == 0 {
        return Err(bad("no `past_key_values.{i}.key` inputs".into()));
    }
    let dims = |name: &str| -> Option<Vec<i64>> {
        inputs.iter().find(|(n, _)| *n == name).and_then(|(_, t)| match t {
            ValueType::Tensor { shape, .. } => Some(shape.to_vec()),
            _ => None,
        })
    };
    let past = dims(&past_name(0, "key")).ok_or_else(|| bad("`past_key_values.0.key` is not a tensor".into()))?;
    let (kv_heads, head_dim) = match past.as_slice() {
        [_, h, _, d] if *h > 0 && *d > 0 => (*h as usize, *d as usize),
        other => return Err(bad(format!("`past_key_values.0.key` must be [batch, heads, context, head_dim], is {other:?}"))),
    };
    for layer in 0..layers {
        for kind in KINDS {
            if dims(&past_name(layer, kind)).is_none() {
                return Err(bad(format!("no input `{}`", past_name(layer, kind))));
            }
            if !session.outputs().iter().any(|o| o.name() == present_name(layer, kind)) {
                return Err(bad(format!("no output `{}`", present_name(layer, kind))));
            }
        }
    }
    let logits = session.outputs().iter().find(|o| o.name() == "logits").ok_or_else(|| bad("no output `logits`".into()))?;
    let vocab = match logits.dtype() {
        ValueType::Tensor { shape, .. } if shape.len() == 2 && shape[1] > 0 => shape[1] as usize,
        _ => return Err(bad("`logits` must be [batch, vocab] with a fixed vocabulary".into())),
    };
    Ok(Shape { layers, kv_heads, head_dim, vocab })
}

/// One set of cache buffers (`rows` sequences of `context` positions per layer) with the binding that makes
/// the model read and write them in place.
struct KvSet {
    rows: usize,
    /// `2 * layers` buffers: layer 0 key, layer 0 value, layer 1 key, ...
    buffers: Vec<OrtTensor<f32>>,
    logits: OrtTensor<f32>,
    binding: ort::session::IoBinding,
}

struct Engine {
    session: Session,
    name: String,
    shape: Shape,
    limits: DecoderLimits,
    scratch: KvSet,
    batch: Option<KvSet>,
    /// Which sequence holds each row of the batch.
    rows: Vec<Option<SeqId>>,
    /// Row and length (positions filled) of every sequence in the batch.
    seqs: HashMap<SeqId, (usize, usize)>,
    /// The sequence whose prompt is in the scratch buffer.
    prefill_seq: Option<SeqId>,
}

impl Engine {
    fn new(session: Session, name: &str, shape: Shape, limits: DecoderLimits) -> Result<Engine, ComputeError> {
        let scratch = kv_set(&session, name, &shape, limits.max_context, 1)?;
        Ok(Engine {
            session,
            name: name.to_string(),
            shape,
            rows: vec![None; limits.max_sequences],
            limits,
            scratch,
            batch: None,
            seqs: HashMap::new(),
            prefill_seq: None,
        })
    }

    fn run_err(&self, source: ort::Error) -> ComputeError {
        ComputeError::Run { model: self.name.clone(), source }
    }

    fn kv_set(&self, rows: usize) -> Result<KvSet, ComputeError> {
        kv_set(&self.session, &self.name, &self.shape, self.limits.max_context, rows)
    }

    fn serve(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(command) = rx.blocking_recv() {
            match command {
                Command::Prefill { seq, tokens, start, last, reply } => {
                    let _ = reply.send(self.prefill(seq, &tokens, start, last));
                }
                Command::Decode { items, reply } => {
                    let _ = reply.send(self.decode(&items));
                }
                Command::Release { seq } => self.release(seq),
            }
        }
        tracing::debug!(model = %self.name, "decoder thread stopped");
    }

    fn context_full(&self, needed: usize) -> ComputeError {
        ComputeError::ContextFull { model: self.name.clone(), needed, capacity: self.limits.max_context }
    }

    /// Runs one call on `set`: `ids` and `positions` are `[set.rows, seq]`. The logits stay in `set.logits`.
    fn run(
        session: &mut Session,
        set: &mut KvSet,
        seq: usize,
        ids: Vec<i64>,
        positions: Vec<i64>,
        seqlens: Vec<i32>,
        total: i32,
    ) -> Result<(), ort::Error> {
        let rows = set.rows;
        set.binding.bind_input("input_ids", &OrtTensor::from_array(([rows, seq], ids))?)?;
        set.binding.bind_input("position_ids", &OrtTensor::from_array(([rows, seq], positions))?)?;
        set.binding.bind_input("seqlens_k", &OrtTensor::from_array(([rows], seqlens))?)?;
        let no_dims: [usize; 0] = [];
        set.binding.bind_input("total_sequence_length", &OrtTensor::from_array((no_dims, vec![total]))?)?;
        drop(session.run_binding(&set.binding)?);
        Ok(())
    }

    fn prefill(&mut self, seq: SeqId, tokens: &[u32], start: usize, last: bool) -> Result<Vec<f32>, ComputeError> {
        if tokens.is_empty() {
            return Err(ComputeError::EmptyPrompt(self.name.clone()));
        }
        let end = start + tokens.len();
        if end >= self.limits.max_context {
            return Err(self.context_full(end + 1));
        }
        if start == 0 {
            self.prefill_seq = Some(seq);
        } else if self.prefill_seq != Some(seq) {
            return Err(ComputeError::UnknownSequence { model: self.name.clone(), seq });
        }
        let ids = tokens.iter().map(|&t| i64::from(t)).collect();
        let positions = (start as i64..end as i64).collect();
        Self::run(&mut self.session, &mut self.scratch, tokens.len(), ids, positions, vec![end as i32 - 1], end as i32)
            .map_err(|e| self.run_err(e))?;
        let logits = self.scratch.logits.extract_tensor().1.to_vec();
        if last {
            self.prefill_seq = None;
            let row = self.rows.iter().position(Option::is_none).ok_or(ComputeError::BatchFull {
                model: self.name.clone(),
                capacity: self.limits.max_sequences,
            })?;
            self.ensure_rows(row + 1)?;
            if let Some(batch) = self.batch.as_mut() {
                copy_row(&self.scratch, 0, batch, row, end, &self.shape, self.limits.max_context);
            }
            self.rows[row] = Some(seq);
            self.seqs.insert(seq, (row, end));
        }
        Ok(logits)
    }

    fn decode(&mut self, items: &[(SeqId, u32)]) -> Result<Vec<Vec<f32>>, ComputeError> {
        let mut placed = Vec::with_capacity(items.len());
        for &(seq, token) in items {
            let &(row, len) =
                self.seqs.get(&seq).ok_or(ComputeError::UnknownSequence { model: self.name.clone(), seq })?;
            if len + 1 >= self.limits.max_context {
                return Err(self.context_full(len + 2));
            }
            placed.push((row, len, token));
        }
        let Some(batch) = self.batch.as_mut() else {
            return Ok(Vec::new());
        };
        let rows = batch.rows;
        // Free rows ride along as one padding token at position 0 of their own (unused) buffer row.
        let mut ids = vec![0i64; rows];
        let mut positions = vec![0i64; rows];
        let mut seqlens = vec![0i32; rows];
        let mut total = 1;
        for &(row, len, token) in &placed {
            ids[row] = i64::from(token);
            positions[row] = len as i64;
            seqlens[row] = len as i32;
            total = total.max(len as i32 + 1);
        }
        let started = std::time::Instant::now();
        Self::run(&mut self.session, batch, 1, ids, positions, seqlens, total)
            .map_err(|source| ComputeError::Run { model: self.name.clone(), source })?;
        tracing::trace!(model = %self.name, rows, live = placed.len(), us = started.elapsed().as_micros() as u64, "decode step");
        // One copy per live row, straight out of the bound output: the rows go to the plugin as they are.
        let all = batch.logits.extract_tensor().1;
        let vocab = self.shape.vocab;
        let logits = placed.iter().map(|&(row, _, _)| all[row * vocab..(row + 1) * vocab].to_vec()).collect();
        for &(seq, _) in items {
            if let Some(entry) = self.seqs.get_mut(&seq) {
                entry.1 += 1;
            }
        }
        Ok(logits)
    }

    /// Makes the batch hold at least `needed` rows, keeping every sequence's cache.
    fn ensure_rows(&mut self, needed: usize) -> Result<(), ComputeError> {
        let have = self.batch.as_ref().map_or(0, |b| b.rows);
        if needed <= have {
            return Ok(());
        }
        let rows = needed.next_power_of_two().min(self.limits.max_sequences).max(needed);
        let mut fresh = self.kv_set(rows)?;
        if let Some(old) = self.batch.take() {
            for &(row, len) in self.seqs.values() {
                copy_row(&old, row, &mut fresh, row, len, &self.shape, self.limits.max_context);
            }
        }
        tracing::debug!(model = %self.name, rows, "decoder batch resized");
        self.batch = Some(fresh);
        Ok(())
    }

    fn release(&mut self, seq: SeqId) {
        if self.prefill_seq == Some(seq) {
            self.prefill_seq = None;
        }
        let Some((row, _)) = self.seqs.remove(&seq) else { return };
        if let Some(slot) = self.rows.get_mut(row) {
            *slot = None;
        }
        let Some(have) = self.batch.as_ref().map(|b| b.rows) else { return };
        let live = self.seqs.len();
        // Shrink with hysteresis (a quarter full), so a batch that breathes around a size does not resize every step.
        if have > 1 && live * 4 <= have {
            let rows = live.max(1).next_power_of_two();
            if let Err(e) = self.compact(rows) {
                tracing::warn!(model = %self.name, error = %e, "could not shrink the decoder batch; keeping it");
            }
        }
    }

    /// Moves every sequence into the first rows of a batch of `rows` rows.
    fn compact(&mut self, rows: usize) -> Result<(), ComputeError> {
        let Some(old) = self.batch.take() else { return Ok(()) };
        let mut fresh = match self.kv_set(rows) {
            Ok(set) => set,
            Err(e) => {
                self.batch = Some(old);
                return Err(e);
            }
        };
        let mut moved: Vec<(SeqId, usize, usize)> = self.seqs.iter().map(|(&s, &(r, l))| (s, r, l)).collect();
        moved.sort_by_key(|&(_, row, _)| row);
        self.rows = vec![None; self.limits.max_sequences];
        for (new_row, (seq, row, len)) in moved.into_iter().enumerate() {
            copy_row(&old, row, &mut fresh, new_row, len, &self.shape, self.limits.max_context);
            self.rows[new_row] = Some(seq);
            self.seqs.insert(seq, (new_row, len));
        }
        tracing::debug!(model = %self.name, rows, "decoder batch compacted");
        self.batch = Some(fresh);
        Ok(())
    }
}

fn kv_set(session: &Session, name: &str, shape: &Shape, context: usize, rows: usize) -> Result<KvSet, ComputeError> {
    let err = |source| ComputeError::Run { model: name.to_string(), source };
    let allocator = Allocator::default();
    let mut binding = session.create_binding().map_err(err)?;
    let mut buffers = Vec::with_capacity(shape.layers * 2);
    for layer in 0..shape.layers {
        for kind in KINDS {
            // Attention reads only the positions a row has filled, so the buffer needs no initialising of its
            // own. (ort's `Tensor::new` zero-fills it anyway, which makes the whole bucket resident at once: the
            // reason buckets grow in powers of two instead of starting at `max_sequences`.)
            let mut buffer =
                OrtTensor::<f32>::new(&allocator, [rows, shape.kv_heads, context, shape.head_dim]).map_err(err)?;
            binding.bind_input(past_name(layer, kind), &buffer).map_err(err)?;
            binding.bind_output(present_name(layer, kind), &mut buffer).map_err(err)?;
            buffers.push(buffer);
        }
    }
    let mut logits = OrtTensor::<f32>::new(&allocator, [rows, shape.vocab]).map_err(err)?;
    binding.bind_output("logits", &mut logits).map_err(err)?;
    Ok(KvSet { rows, buffers, logits, binding })
}

/// Copies the first `len` positions of row `from_row` of `from` into row `to_row` of `to`, every layer.
fn copy_row(from: &KvSet, from_row: usize, to: &mut KvSet, to_row: usize, len: usize, shape: &Shape, context: usize) {
    let head = context * shape.head_dim;
    let used = len * shape.head_dim;
    for (src, dst) in from.buffers.iter().zip(to.buffers.iter_mut()) {
        let src = src.extract_tensor().1;
        let dst = dst.extract_tensor_mut().1;
        for h in 0..shape.kv_heads {
            let s = (from_row * shape.kv_heads + h) * head;
            let d = (to_row * shape.kv_heads + h) * head;
            dst[d..d + used].copy_from_slice(&src[s..s + used]);
        }
    }
}
