//! Worker adapter for sentence-transformers MiniLM embedders (all-MiniLM-L6-v2 and its quantised builds).
//!
//! This file is the adapter's logic, free of WIT so it also builds natively: tokenising ([`wordpiece`]),
//! splitting a batch into model runs that waste little on padding, building the three BERT inputs, and
//! mean-pooling `last_hidden_state` under the attention mask before L2-normalising, as sentence-transformers
//! does. The benchmark runs this same code natively as the baseline the plugin is measured against.
//! `component.rs` is the WebAssembly glue: configuration, the host's `compute` interface, errors.
//!
//! Config keys: `tokenizer` (path of tokenizer.json), `model` (the compute model name, default `minilm`),
//! `max-input-tokens` (default 256, the length the model was trained with), `max-batch` (most texts in one
//! compute run, default 64), `run-overhead-tokens` (what one more run costs, in padded token slots, default 24;
//! see [`plan`]).

// Only the WebAssembly build exports the component; natively its export symbols would not even link.
#[cfg(all(target_arch = "wasm32", feature = "component"))]
mod component;
pub mod wordpiece;

pub use wordpiece::{Encoded, Tokenizer};

/// Most texts in one model run, unless configured (`max-batch`).
pub const MAX_BATCH: usize = 64;
/// What one more model run costs, in padded token slots, unless configured (`run-overhead-tokens`); see [`plan`].
pub const RUN_OVERHEAD_TOKENS: usize = 24;

/// Tokenised texts of one model run, right-padded to the longest, as the model's three `[rows, width]` inputs.
#[derive(Debug, Default)]
pub struct Batch {
    pub rows: usize,
    pub width: usize,
    /// Real (unpadded) tokens of each row, special tokens included.
    pub lengths: Vec<usize>,
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub token_type_ids: Vec<i64>,
}

/// Tokenises `texts` one by one. `encode_batch` would hand single texts to a thread pool natively and adds
/// nothing in WebAssembly, where there are no threads.
pub fn encode(tokenizer: &Tokenizer, texts: &[String]) -> tokenizers::Result<Vec<Encoded>> {
    texts.iter().map(|text| tokenizer.encode(text)).collect()
}

/// The first input that was cut at the tokenizer's truncation length, if any.
pub fn first_truncated(encodings: &[Encoded]) -> Option<usize> {
    encodings.iter().position(Encoded::truncated)
}

/// Splits inputs into model runs, each a list of indices into `lengths`, so that padding costs little.
///
/// A run costs about `run_overhead` token slots plus one slot per row per position of its longest input; a
/// batch of short and long sentences padded together spends most of its time on padding. Runs are contiguous
/// stretches of the inputs sorted by length, chosen by dynamic programming to minimise the total cost, at most
/// `max_rows` inputs each. On all-MiniLM-L6-v2 int8 with 2 CPU threads a run costs ~2.3 ms plus ~0.08 ms per slot,
/// hence the default overhead of 24 slots.
pub fn plan(lengths: &[usize], run_overhead: usize, max_rows: usize) -> Vec<Vec<usize>> {
    let max_rows = max_rows.max(1);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    let n = order.len();
    // best[j]: cheapest cost of the first j sorted inputs; cut[j]: where the last run of that plan starts.
    let mut best = vec![usize::MAX; n + 1];
    let mut cut = vec![0; n + 1];
    best[0] = 0;
    for j in 1..=n {
        let width = lengths[order[j - 1]];
        for i in j.saturating_sub(max_rows)..j {
            let cost = best[i].saturating_add(run_overhead + (j - i) * width);
            if cost < best[j] {
                best[j] = cost;
                cut[j] = i;
            }
        }
    }
    let mut runs = Vec::new();
    let mut j = n;
    while j > 0 {
        runs.push(order[cut[j]..j].to_vec());
        j = cut[j];
    }
    runs.reverse();
    runs
}

/// The model inputs of the encodings at `rows`, in that order. Single texts are all segment 0, so
/// `token_type_ids` stays zero.
pub fn batch(encodings: &[Encoded], rows: &[usize]) -> Batch {
    let width = rows.iter().map(|&r| encodings[r].len()).max().unwrap_or(0).max(1);
    let n = rows.len();
    let mut batch = Batch {
        rows: n,
        width,
        lengths: Vec::with_capacity(n),
        input_ids: vec![0; n * width],
        attention_mask: vec![0; n * width],
        token_type_ids: vec![0; n * width],
    };
    for (row, &r) in rows.iter().enumerate() {
        let enc = &encodings[r];
        let span = row * width..row * width + enc.len();
        for (slot, &id) in batch.input_ids[span.clone()].iter_mut().zip(&enc.ids) {
            *slot = i64::from(id);
        }
        batch.attention_mask[span].fill(1);
        batch.lengths.push(enc.len());
    }
    batch
}

/// A `[rows, width, dims]` float tensor as the model returned it: native `f32`s, or the little-endian bytes a
/// host tensor reads into WebAssembly memory.
pub trait Hidden {
    /// Elements held.
    fn elements(&self) -> usize;
    /// Adds the `acc.len()` elements starting at element `start` into `acc`.
    fn add_into(&self, start: usize, acc: &mut [f32]);
}

impl Hidden for [f32] {
    fn elements(&self) -> usize {
        self.len()
    }
    fn add_into(&self, start: usize, acc: &mut [f32]) {
        let n = acc.len();
        for (a, v) in acc.iter_mut().zip(&self[start..start + n]) {
            *a += v;
        }
    }
}

impl Hidden for [u8] {
    fn elements(&self) -> usize {
        self.len() / 4
    }
    fn add_into(&self, start: usize, acc: &mut [f32]) {
        let n = acc.len();
        // A slice of `[u8; 4]` arrays, unlike `chunks_exact(4)`, has no per-chunk length to check, so each
        // element is one load and the loop vectorises (f32x4 in WebAssembly).
        let (words, _) = self[start * 4..(start + n) * 4].as_chunks::<4>();
        for (a, w) in acc.iter_mut().zip(words) {
            *a += f32::from_le_bytes(*w);
        }
    }
}

/// The hidden state does not have the batch's `[rows, width, dims]` shape.
#[derive(Debug, PartialEq)]
pub struct ShapeMismatch {
    pub expected: usize,
    pub actual: usize,
}

impl std::fmt::Display for ShapeMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "last_hidden_state holds {} elements, the batch needs {}", self.actual, self.expected)
    }
}

/// Σ v², in eight independent partial sums: a single running sum is one chain of dependent adds that cannot
/// vectorise, because the compiler may not reorder float additions.
fn sum_of_squares(values: &[f32]) -> f32 {
    let (lanes, rest) = values.as_chunks::<8>();
    let mut partial = [0f32; 8];
    for lane in lanes {
        for (p, v) in partial.iter_mut().zip(lane) {
            *p += v * v;
        }
    }
    partial.iter().sum::<f32>() + rest.iter().map(|v| v * v).sum::<f32>()
}

/// Mean of each row's real tokens (padding is only ever at the end of a row, so its first `length` tokens),
/// L2-normalised.
pub fn pool<H: Hidden + ?Sized>(hidden: &H, batch: &Batch, dims: usize) -> Result<Vec<Vec<f32>>, ShapeMismatch> {
    let expected = batch.rows * batch.width * dims;
    if hidden.elements() != expected {
        return Err(ShapeMismatch { expected, actual: hidden.elements() });
    }
    let mut out = Vec::with_capacity(batch.rows);
    for (row, &length) in batch.lengths.iter().enumerate() {
        let mut acc = vec![0f32; dims];
        for token in 0..length {
            hidden.add_into((row * batch.width + token) * dims, &mut acc);
        }
        let n = length.max(1) as f32;
        acc.iter_mut().for_each(|v| *v /= n);
        let norm = sum_of_squares(&acc).sqrt().max(1e-12);
        acc.iter_mut().for_each(|v| *v /= norm);
        out.push(acc);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shaped(lengths: &[usize], width: usize) -> Batch {
        Batch { rows: lengths.len(), width, lengths: lengths.to_vec(), ..Batch::default() }
    }

    #[test]
    fn pooling_averages_real_tokens_only_and_normalises() {
        // Two rows, width 3, 2 dims; row 0 has 2 real tokens, row 1 has 3. Padding holds huge values that must
        // not leak into the mean.
        let hidden: Vec<f32> = vec![
            1.0, 0.0, 3.0, 0.0, 1e6, 1e6, //
            0.0, 2.0, 0.0, 4.0, 0.0, 6.0,
        ];
        let pooled = pool(hidden.as_slice(), &shaped(&[2, 3], 3), 2).unwrap();
        assert_eq!(pooled, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        let bytes: Vec<u8> = hidden.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(pool(bytes.as_slice(), &shaped(&[2, 3], 3), 2).unwrap(), pooled, "bytes and floats pool alike");
    }

    #[test]
    fn pooling_gives_unit_vectors_in_the_mean_direction() {
        let hidden = [3.0f32, 4.0, 3.0, 4.0];
        let pooled = pool(hidden.as_slice(), &shaped(&[2], 2), 2).unwrap();
        assert!((pooled[0][0] - 0.6).abs() < 1e-6 && (pooled[0][1] - 0.8).abs() < 1e-6, "{pooled:?}");
    }

    #[test]
    fn plans_keep_short_and_long_inputs_apart_only_when_padding_costs_more_than_a_run() {
        // Four short and four long inputs: padding the short ones to 40 would waste 4 * 35 slots, more than a run.
        let lengths = [5, 40, 6, 38, 5, 40, 7, 39];
        let runs = plan(&lengths, 24, 64);
        assert_eq!(runs.len(), 2, "{runs:?}");
        let mut short: Vec<usize> = runs[0].clone();
        short.sort();
        assert_eq!(short, vec![0, 2, 4, 6]);
        // Similar lengths: one run.
        assert_eq!(plan(&[10, 11, 12, 10], 24, 64).len(), 1);
        // Every input appears exactly once, and no run is longer than allowed.
        let many: Vec<usize> = (0..100).map(|i| 5 + (i * 37) % 60).collect();
        let runs = plan(&many, 24, 16);
        let mut seen: Vec<usize> = runs.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
        assert!(runs.iter().all(|r| !r.is_empty() && r.len() <= 16), "{runs:?}");
        assert!(plan(&[], 24, 64).is_empty());
    }

    #[test]
    fn pooling_at_model_width_matches_a_plain_f64_mean() {
        // 384 dimensions (the lanes of eight) and 389 (a remainder), three tokens of which two are real.
        for dims in [384usize, 389] {
            let hidden: Vec<f32> = (0..3 * dims).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
            let mean: Vec<f64> = (0..dims).map(|d| (f64::from(hidden[d]) + f64::from(hidden[dims + d])) / 2.0).collect();
            let norm = mean.iter().map(|v| v * v).sum::<f64>().sqrt();
            let bytes: Vec<u8> = hidden.iter().flat_map(|v| v.to_le_bytes()).collect();
            for pooled in [pool(hidden.as_slice(), &shaped(&[2], 3), dims), pool(bytes.as_slice(), &shaped(&[2], 3), dims)] {
                let pooled = pooled.unwrap();
                let worst = pooled[0].iter().zip(&mean).map(|(p, m)| (f64::from(*p) - m / norm).abs()).fold(0.0, f64::max);
                assert!(worst < 1e-6, "{dims} dims: off by {worst}");
            }
        }
    }

    #[test]
    fn a_hidden_state_of_the_wrong_size_is_refused() {
        let hidden = [0.0f32; 5];
        assert_eq!(pool(hidden.as_slice(), &shaped(&[1], 1), 4), Err(ShapeMismatch { expected: 4, actual: 5 }));
    }
}
