//! Picks the next token from a logits row: OpenAI's penalties, temperature, top-k, top-p, and log-probabilities.
//!
//! This runs once per token per sequence over the whole vocabulary (49,152 entries for SmolLM2), so no path sorts
//! the row and every pass over it is branch-free and written in fixed-width lanes the compiler turns into SIMD
//! (simd128 in wasm): greedy is a max pass and a search; top-k finds a threshold with counting passes and
//! selects among the few tokens above it; full sampling and top-p weigh the row with an inlined `exp` in one
//! pass, unless the tokens within `CUTOFF` of the best are few enough to weigh one by one.

use std::cell::RefCell;
use std::cmp::Ordering;

use crate::rng::Rng;

/// Tokens whose scaled logit is more than this below the best are left out where a pass is skipped: each weighs
/// less than e^-20 ≈ 2e-9 of the best token.
const CUTOFF: f32 = 20.0;
/// Up to this many tokens within `CUTOFF` are weighed one by one; more, and the whole row is weighed in a pass.
const SPARSE_MAX: usize = 4096;
/// First size of the sorted prefix searched for the top-p nucleus; it grows fourfold while the mass is short.
const NUCLEUS_START: usize = 64;
/// Width of the lane arrays the passes are written in: four simd128 vectors.
const LANES: usize = 16;
/// Tokens per block of the weighed row: sampling finds the block by its sum, then the token inside it.
const BLOCK: usize = 256;

/// `v` where `keep`, else 0, through the bits: LLVM leaves a float select scalar in wasm, but vectorises a mask.
#[inline(always)]
fn masked(v: f32, keep: bool) -> f32 {
    f32::from_bits(v.to_bits() & (i32::from(keep).wrapping_neg() as u32))
}

thread_local! {
    /// The weighed row of the dense path, reused by every step this instance serves (it holds nothing about a
    /// sequence between calls).
    static WEIGHTS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The sampling parameters of one sequence, with OpenAI's defaults resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// 0 is greedy.
    pub temperature: f32,
    /// 1 keeps every token.
    pub top_p: f32,
    /// 0 keeps every token.
    pub top_k: u32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
}

impl Params {
    pub fn penalised(&self) -> bool {
        self.presence_penalty != 0.0 || self.frequency_penalty != 0.0
    }

    fn greedy(&self) -> bool {
        self.temperature <= 0.0 || self.top_k == 1
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleError {
    /// Every logit is NaN or -inf: nothing can be chosen.
    NoFiniteLogit,
}

/// Subtracts OpenAI's penalties from the logits of tokens already generated: `count * frequency + presence`.
/// `counts` is (token, times generated). Returns the logits it changed, as they were, so log-probabilities can
/// still be taken from the raw row.
pub fn apply_penalties(logits: &mut [f32], counts: &[(u32, u32)], params: &Params) -> Vec<(u32, f32)> {
    let mut saved = Vec::new();
    if !params.penalised() {
        return saved;
    }
    saved.reserve(counts.len());
    for &(id, count) in counts {
        if let Some(l) = logits.get_mut(id as usize) {
            saved.push((id, *l));
            *l -= count as f32 * params.frequency_penalty + params.presence_penalty;
        }
    }
    saved
}

/// The largest logit, NaN ignored.
pub fn max_logit(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            // A compare and select rather than `f32::max`, whose NaN rule costs extra instructions in wasm.
            *lane = if x > *lane { x } else { *lane };
        }
    }
    rest.iter().chain(&lanes).fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m })
}

/// The first index holding exactly `v`: whole chunks are tested with a vectorisable `any` first.
fn first_index_of(xs: &[f32], v: f32) -> Option<usize> {
    xs.chunks(LANES)
        .enumerate()
        .find(|(_, chunk)| chunk.iter().fold(false, |any, &x| any | (x == v)))
        .and_then(|(c, chunk)| chunk.iter().position(|&x| x == v).map(|i| c * LANES + i))
}

/// How many entries are at least `threshold` (NaN never is). Counted in f32 lanes (exact to 2^24 per lane) with
/// a masked 1.0, the form that vectorises both natively and in wasm (a widened bool or a float select did not).
fn count_at_least(xs: &[f32], threshold: f32) -> usize {
    let mut lanes = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    // The remainder goes through the same masked adds: a different expression for it (a filtered count) kept
    // LLVM from vectorising the main loop in wasm, at a fifth of the speed.
    let mut rest = 0f32;
    for &x in chunks.remainder() {
        rest += masked(1.0, x >= threshold);
    }
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += masked(1.0, x >= threshold);
        }
    }
    (lanes.iter().sum::<f32>() + rest) as usize
}

/// Appends (value, index) of every entry at least `threshold`. Chunks without one are skipped after a
/// vectorisable test, so a sparse selection costs little more than a count; inside a chunk the writes are
/// unconditional and only the length moves, so a dense one does not pay a mispredicted branch per entry.
fn collect_at_least(xs: &[f32], threshold: f32, out: &mut Vec<(f32, u32)>) {
    let mut buf = [(0f32, 0u32); LANES];
    for (c, chunk) in xs.chunks(LANES).enumerate() {
        if chunk.iter().fold(false, |any, &x| any | (x >= threshold)) {
            let mut n = 0;
            for (i, &x) in chunk.iter().enumerate() {
                if let Some(slot) = buf.get_mut(n) {
                    *slot = (x, (c * LANES + i) as u32);
                }
                n += usize::from(x >= threshold);
            }
            out.extend_from_slice(buf.get(..n).unwrap_or_default());
        }
    }
}

/// A threshold below the best (`m`) that at least `k` entries reach, with as few more as a handful of counting
/// passes can manage: doubling bands of `unit` (1, 2, 4, ...) up to `max_delta` units, then bisection while
/// the band holds far more than `k`. When even `max_delta` holds fewer than `k`, that band is returned.
fn band_threshold(xs: &[f32], m: f32, unit: f32, k: usize, max_delta: f32) -> f32 {
    let mut lo = 0.0f32;
    let mut delta = 1.0f32;
    let (mut hi, mut hi_count) = loop {
        let d = delta.min(max_delta);
        let count = count_at_least(xs, m - d * unit);
        if count >= k || d >= max_delta {
            break (d, count);
        }
        lo = d;
        delta *= 2.0;
    };
    for _ in 0..6 {
        if hi_count < k || hi_count <= 8 * k + 256 {
            break;
        }
        let mid = 0.5 * (lo + hi);
        let count = count_at_least(xs, m - mid * unit);
        if count >= k {
            (hi, hi_count) = (mid, count);
        } else {
            lo = mid;
        }
    }
    m - hi * unit
}

/// The first index of the largest logit, NaN ignored.
pub fn argmax(xs: &[f32]) -> Result<u32, SampleError> {
    let m = max_logit(xs);
    if m == f32::NEG_INFINITY {
        return Err(SampleError::NoFiniteLogit);
    }
    first_index_of(xs, m).map(|i| i as u32).ok_or(SampleError::NoFiniteLogit)
}

/// e^x for x <= 0, to a few ulp: Cody-Waite range reduction and Cephes' `expf` polynomial, with the rounding
/// and the exponent done on the float's bits so the whole function vectorises (a float-to-int conversion
/// would not on every target). libm's `expf` is a call per entry in wasm; this inlines to a dozen
/// instructions, and being plain arithmetic it gives the same bits natively and in wasm, so a seed gives the
/// same text on both. NaN and -inf give 0 where the caller masks them (`weigh`).
#[inline(always)]
fn exp_neg(x: f32) -> f32 {
    // Below -87 the result is under f32's smallest normal; clamping keeps the exponent bits valid.
    let x = if x < -87.0 { -87.0 } else { x };
    // Adding 1.5 * 2^23 rounds to an integer and leaves it in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let k = x * std::f32::consts::LOG2_E + ROUND;
    let n = k - ROUND;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1)
        * r
        + 0.5;
    let e_r = p * r * r + r + 1.0;
    let scale = f32::from_bits(k.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23);
    e_r * scale
}

/// Writes `exp((x - m) * inv_t)` of every logit into `weights` (0 for NaN and -inf) and returns each block's sum.
fn weigh(logits: &[f32], m: f32, inv_t: f32, weights: &mut Vec<f32>) -> Vec<f32> {
    weights.clear();
    weights.resize(logits.len(), 0.0);
    let mut blocks = Vec::with_capacity(logits.len().div_ceil(BLOCK));
    let weight = |x: f32| masked(exp_neg((x - m) * inv_t), x > f32::NEG_INFINITY);
    for (xs, ws) in logits.chunks(BLOCK).zip(weights.chunks_mut(BLOCK)) {
        let mut lanes = [0f32; LANES];
        let mut tail = 0.0f32;
        let mut xs_chunks = xs.chunks_exact(LANES);
        let mut ws_chunks = ws.chunks_exact_mut(LANES);
        for (xs, ws) in (&mut xs_chunks).zip(&mut ws_chunks) {
            for ((lane, &x), w) in lanes.iter_mut().zip(xs).zip(ws.iter_mut()) {
                *w = weight(x);
                *lane += *w;
            }
        }
        for (&x, w) in xs_chunks.remainder().iter().zip(ws_chunks.into_remainder()) {
            *w = weight(x);
            tail += *w;
        }
        blocks.push(lanes.iter().sum::<f32>() + tail);
    }
    blocks
}

/// Sum of the entries at least `threshold`.
fn mass_at_least(ws: &[f32], threshold: f32) -> f64 {
    let mut total = 0.0f64;
    for block in ws.chunks(BLOCK) {
        let mut lanes = [0f32; LANES];
        let chunks = block.chunks_exact(LANES);
        let rest: f32 = chunks.remainder().iter().map(|&w| masked(w, w >= threshold)).sum();
        for chunk in chunks {
            for (lane, &w) in lanes.iter_mut().zip(chunk) {
                *lane += masked(w, w >= threshold);
            }
        }
        total += f64::from(lanes.iter().sum::<f32>() + rest);
    }
    total
}

/// Descending by weight, then ascending by id: a total order, so selection and sorting are deterministic.
fn by_weight_desc(a: &(f32, u32), b: &(f32, u32)) -> Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Draws from weighed candidates, in their order.
fn draw(cands: &[(f32, u32)], total: f64, rng: &mut Rng) -> Result<u32, SampleError> {
    let target = rng.next_f64() * total;
    let mut acc = 0.0f64;
    for &(w, id) in cands {
        acc += f64::from(w);
        if acc > target {
            return Ok(id);
        }
    }
    // Rounding left the target just past the sum: the last candidate with any weight is the one it fell on.
    cands.iter().rev().find(|c| c.0 > 0.0).map(|c| c.1).ok_or(SampleError::NoFiniteLogit)
}

/// Draws from the whole weighed row: the block by its sum, then the token inside it.
fn draw_blocks(weights: &[f32], blocks: &[f32], rng: &mut Rng) -> Result<u32, SampleError> {
    let total: f64 = blocks.iter().map(|&b| f64::from(b)).sum();
    let target = rng.next_f64() * total;
    let mut acc = 0.0f64;
    for (b, &sum) in blocks.iter().enumerate() {
        let next = acc + f64::from(sum);
        if next > target {
            let start = b * BLOCK;
            let block = weights.get(start..).unwrap_or_default();
            for (i, &w) in block.iter().take(BLOCK).enumerate() {
                acc += f64::from(w);
                if acc > target && w > 0.0 {
                    return Ok((start + i) as u32);
                }
            }
            // The block's f32 sum and the f64 walk disagree in the last bits: take its last weighed token.
            if let Some(i) = block.iter().take(BLOCK).rposition(|&w| w > 0.0) {
                return Ok((start + i) as u32);
            }
        }
        acc = next;
    }
    weights.iter().rposition(|&w| w > 0.0).map(|i| i as u32).ok_or(SampleError::NoFiniteLogit)
}

/// Chooses the next token from (penalised) logits; the row is left as it was.
pub fn choose(logits: &[f32], params: &Params, rng: &mut Rng) -> Result<u32, SampleError> {
    if params.greedy() {
        return argmax(logits);
    }
    let m = max_logit(logits);
    if m == f32::NEG_INFINITY {
        return Err(SampleError::NoFiniteLogit);
    }
    if m == f32::INFINITY {
        // An infinite logit takes all the probability.
        return argmax(logits);
    }
    let t = params.temperature;
    let inv_t = 1.0 / t;
    let floor = m - CUTOFF * t;
    let k = params.top_k as usize;
    let mut cands: Vec<(f32, u32)> = Vec::new();
    if k > 0 {
        // A narrow band below the best that holds k tokens, found by counting (cheap passes); the selection
        // then runs over that band only.
        let threshold = band_threshold(logits, m, t, k, CUTOFF);
        collect_at_least(logits, threshold, &mut cands);
        if k < cands.len() {
            cands.select_nth_unstable_by(k - 1, by_weight_desc);
            cands.truncate(k);
        }
    } else if count_at_least(logits, floor) <= SPARSE_MAX {
        collect_at_least(logits, floor, &mut cands);
    } else {
        return WEIGHTS.with(|cell| {
            let mut weights = cell.borrow_mut();
            let blocks = weigh(logits, m, inv_t, &mut weights);
            if params.top_p >= 1.0 {
                return draw_blocks(&weights, &blocks, rng);
            }
            let total: f64 = blocks.iter().map(|&b| f64::from(b)).sum();
            // The nucleus lies within the heaviest tokens that already hold top_p of the mass; find how heavy
            // (in steps of 16x, a few cheap passes) before collecting them.
            let target = f64::from(params.top_p) * total;
            let mut threshold = 1.0f32;
            while threshold > 1e-9 && mass_at_least(&weights, threshold) < target {
                threshold /= 16.0;
            }
            collect_at_least(&weights, threshold, &mut cands);
            let kept = nucleus(&mut cands, total, params.top_p);
            draw(&cands, kept, rng)
        });
    }
    let mut total = 0.0f64;
    for c in cands.iter_mut() {
        c.0 = exp_neg((c.0 - m) * inv_t);
        total += f64::from(c.0);
    }
    if params.top_p < 1.0 {
        total = nucleus(&mut cands, total, params.top_p);
    }
    draw(&cands, total, rng)
}

/// Keeps the smallest most-likely prefix whose weight reaches `top_p` of `total`, sorted most likely first;
/// returns its weight. Sorts only a growing prefix: with a peaked distribution the first 64 are plenty.
fn nucleus(cands: &mut Vec<(f32, u32)>, total: f64, top_p: f32) -> f64 {
    let target = f64::from(top_p) * total;
    let mut n = NUCLEUS_START.min(cands.len());
    loop {
        if n < cands.len() {
            cands.select_nth_unstable_by(n - 1, by_weight_desc);
        }
        let head = &mut cands[..n];
        head.sort_unstable_by(by_weight_desc);
        let mut acc = 0.0f64;
        for (i, &(w, _)) in head.iter().enumerate() {
            acc += f64::from(w);
            if acc >= target {
                cands.truncate(i + 1);
                return acc;
            }
        }
        if n == cands.len() {
            return acc;
        }
        n = (n * 4).min(cands.len());
    }
}

/// Log-softmax facts of the raw row: its normaliser and the `n` most likely tokens (id, raw logit), most likely
/// first.
#[derive(Debug, Clone, PartialEq)]
pub struct RawLogprobs {
    pub log_normaliser: f32,
    pub top: Vec<(u32, f32)>,
}

impl RawLogprobs {
    pub fn of(&self, logit: f32) -> f32 {
        logit - self.log_normaliser
    }
}

/// Computes the normaliser in one weighing pass and the top `n` by a band search, as top-k does.
pub fn raw_logprobs(logits: &[f32], n: usize) -> Result<RawLogprobs, SampleError> {
    let m = max_logit(logits);
    if !m.is_finite() {
        return Err(SampleError::NoFiniteLogit);
    }
    let sum: f64 =
        WEIGHTS.with(|cell| weigh(logits, m, 1.0, &mut cell.borrow_mut()).iter().map(|&b| f64::from(b)).sum());
    let log_normaliser = m + sum.ln() as f32;
    let mut top: Vec<(u32, f32)> = Vec::new();
    if n > 0 {
        // Unbounded: alternatives are asked for even when they are far below the best.
        let threshold = band_threshold(logits, m, 1.0, n, f32::MAX);
        let mut cands = Vec::new();
        collect_at_least(logits, threshold, &mut cands);
        if n < cands.len() {
            cands.select_nth_unstable_by(n - 1, by_weight_desc);
            cands.truncate(n);
        }
        cands.sort_unstable_by(by_weight_desc);
        top = cands.into_iter().map(|(x, id)| (id, x)).collect();
    }
    Ok(RawLogprobs { log_normaliser, top })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_p: f32, top_k: u32) -> Params {
        Params { temperature, top_p, top_k, presence_penalty: 0.0, frequency_penalty: 0.0 }
    }

    /// A deterministic pseudo-logit row shaped like a language model's: mostly low, a few high.
    pub fn fake_logits(vocab: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::seeded(seed, 0);
        (0..vocab)
            .map(|_| {
                let u = rng.next_f64() as f32;
                let v = rng.next_f64() as f32;
                -8.0 + 10.0 * u + if v > 0.999 { 12.0 * v } else { 0.0 }
            })
            .collect()
    }

    #[test]
    fn fast_exp_is_accurate() {
        let mut x = 0.0f32;
        while x > -87.0 {
            let (a, b) = (exp_neg(x), x.exp());
            assert!(((a - b) / b).abs() < 1e-6, "exp({x}) = {a}, want {b}");
            x -= 0.0137;
        }
        assert!(exp_neg(-1000.0) < 1e-37);
        assert!(exp_neg(f32::NEG_INFINITY) < 1e-37);
    }

    #[test]
    fn greedy_is_argmax_and_ignores_nan() {
        let mut logits = fake_logits(49152, 1);
        logits[123] = 50.0;
        logits[7] = f32::NAN;
        let mut rng = Rng::seeded(0, 0);
        assert_eq!(choose(&logits, &params(0.0, 1.0, 0), &mut rng), Ok(123));
        assert_eq!(argmax(&[1.0, 3.0, 3.0, f32::NAN]), Ok(1));
        assert_eq!(argmax(&[f32::NAN, f32::NEG_INFINITY]), Err(SampleError::NoFiniteLogit));
    }

    #[test]
    fn top_k_one_is_greedy() {
        let logits = fake_logits(49152, 2);
        let best = argmax(&logits).unwrap();
        for seed in 0..20 {
            let mut rng = Rng::seeded(seed, 0);
            assert_eq!(choose(&logits, &params(1.5, 1.0, 1), &mut rng), Ok(best));
            // A tiny nucleus is greedy too.
            assert_eq!(choose(&logits, &params(1.0, 0.0, 0), &mut rng), Ok(best));
        }
    }

    #[test]
    fn same_seed_same_choices() {
        let logits = fake_logits(49152, 3);
        let run = |seed| {
            let mut rng = Rng::seeded(seed, 0);
            (0..50).map(|_| choose(&logits, &params(0.9, 0.95, 50), &mut rng).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn top_k_and_top_p_restrict_the_choice() {
        let mut logits = vec![-5.0f32; 1000];
        logits[10] = 5.0;
        logits[20] = 4.9;
        logits[30] = 4.8;
        let mut rng = Rng::seeded(1, 0);
        for _ in 0..200 {
            let t = choose(&logits, &params(1.0, 1.0, 2), &mut rng).unwrap();
            assert!(t == 10 || t == 20);
            // The three high tokens hold ~0.98 of the mass: a 0.5 nucleus is within them.
            let t = choose(&logits, &params(1.0, 0.5, 0), &mut rng).unwrap();
            assert!([10, 20, 30].contains(&t), "{t}");
        }
    }

    #[test]
    fn sampling_follows_the_distribution() {
        // Two tokens with probabilities 0.75 and 0.25 (ln 3 apart); the rest masked out.
        let mut logits = vec![f32::NEG_INFINITY; 100];
        logits[1] = 3f32.ln();
        logits[2] = 0.0;
        let mut rng = Rng::seeded(9, 0);
        let n = 20000;
        let ones = (0..n).filter(|_| choose(&logits, &params(1.0, 1.0, 0), &mut rng) == Ok(1)).count();
        let p = ones as f64 / n as f64;
        assert!((p - 0.75).abs() < 0.015, "{p}");
    }

    #[test]
    fn dense_rows_sample_the_same_distribution() {
        // 10,000 equal tokens and one as heavy as all of them: too many to weigh one by one.
        let mut logits = vec![0.0f32; 10_001];
        logits[5] = 10_000f32.ln();
        let n = 5_000;
        let mut rng = Rng::seeded(11, 0);
        let hits = (0..n).filter(|_| choose(&logits, &params(1.0, 1.0, 0), &mut rng) == Ok(5)).count();
        let p = hits as f64 / n as f64;
        assert!((p - 0.5).abs() < 0.03, "{p}");
        // A nucleus of 0.4 is the heavy token alone; one of 0.6 needs some of the others.
        assert!((0..200).all(|_| choose(&logits, &params(1.0, 0.4, 0), &mut rng) == Ok(5)));
        assert!((0..200).any(|_| choose(&logits, &params(1.0, 0.6, 0), &mut rng) != Ok(5)));
        // top-k over a dense row keeps the k best.
        logits[7] = 1.0;
        assert!((0..200).all(|_| [5, 7].contains(&choose(&logits, &params(1.0, 1.0, 2), &mut rng).unwrap())));
    }

    #[test]
    fn masked_tokens_are_never_drawn() {
        let mut logits = vec![f32::NEG_INFINITY; 49_152];
        for (i, l) in logits.iter_mut().enumerate().skip(100).take(5000) {
            *l = (i % 7) as f32 * 0.1;
        }
        logits[3] = f32::NAN;
        let mut rng = Rng::seeded(2, 0);
        for _ in 0..500 {
            let t = choose(&logits, &params(1.3, 1.0, 0), &mut rng).unwrap() as usize;
            assert!((100..5100).contains(&t), "{t}");
        }
    }

    #[test]
    fn penalties_change_the_choice() {
        let mut logits = vec![0.0f32; 10];
        logits[3] = 2.0;
        logits[4] = 1.5;
        let p = Params { presence_penalty: 0.6, ..params(0.0, 1.0, 0) };
        let saved = apply_penalties(&mut logits, &[(3, 1)], &p);
        assert_eq!(saved, vec![(3, 2.0)]);
        assert_eq!(argmax(&logits), Ok(4));
        let mut logits = vec![0.0f32; 10];
        logits[3] = 2.0;
        logits[4] = 1.5;
        let p = Params { frequency_penalty: 0.2, ..params(0.0, 1.0, 0) };
        apply_penalties(&mut logits, &[(3, 2)], &p);
        assert_eq!(argmax(&logits), Ok(3));
        apply_penalties(&mut logits, &[(3, 1)], &p);
        assert_eq!(argmax(&logits), Ok(4));
        // Negative penalties encourage repetition.
        let mut logits = vec![0.0f32, 1.0];
        apply_penalties(&mut logits, &[(0, 1)], &Params { presence_penalty: -2.0, ..p });
        assert_eq!(argmax(&logits), Ok(0));
    }

    #[test]
    fn raw_logprobs_match_a_plain_log_softmax() {
        let logits = fake_logits(5000, 4);
        let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let lse = m + logits.iter().map(|&x| f64::from((x - m).exp())).sum::<f64>().ln() as f32;
        let r = raw_logprobs(&logits, 5).unwrap();
        assert!((r.log_normaliser - lse).abs() < 1e-4);
        let mut sorted: Vec<(u32, f32)> = logits.iter().enumerate().map(|(i, &x)| (i as u32, x)).collect();
        sorted.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        assert_eq!(r.top, sorted[..5].to_vec());
        assert!(raw_logprobs(&logits, 0).unwrap().top.is_empty());
        assert_eq!(raw_logprobs(&[1.0, 1.0, 0.0], 2).unwrap().top, vec![(0, 1.0), (1, 1.0)]);
    }
}
