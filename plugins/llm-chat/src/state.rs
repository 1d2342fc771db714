//! The per-sequence state that travels through the host as opaque bytes between steps, and its codec.
//!
//! The format is private to one build of this plugin (the host pins a sequence to the version that prepared
//! it), so it is a plain little-endian layout behind a magic byte and a format number, decoded with bounds
//! checks: a corrupt state fails its own sequence, never the instance.

use crate::rng::Rng;
use crate::sampler::Params;

const MAGIC: u8 = 0xC7;
const FORMAT: u8 = 1;

/// Everything a step needs to remember about its sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceState {
    pub rng: Rng,
    pub params: Params,
    /// Alternatives to return with each token's log-probability; none: no log-probabilities.
    pub top_logprobs: Option<u32>,
    pub max_new_tokens: u32,
    /// Tokens chosen so far (EOS included).
    pub generated: u32,
    /// Kept for logs and sanity checks; the host knows it too.
    pub prompt_len: u32,
    pub stops: Vec<String>,
    /// The start of a UTF-8 character whose other bytes come with later tokens.
    pub pending: Vec<u8>,
    /// Decoded text not yet sent because it may be the start of a stop string.
    pub held: String,
    /// (token, times generated), sorted by token; only kept when a penalty is set, so unpenalised states stay
    /// small.
    pub counts: Vec<(u32, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateError(pub String);

impl std::fmt::Display for StateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "corrupt sequence state: {}", self.0)
    }
}

impl SequenceState {
    /// Counts one more occurrence of `token` for the penalties.
    pub fn count(&mut self, token: u32) {
        match self.counts.binary_search_by_key(&token, |c| c.0) {
            Ok(i) => self.counts[i].1 += 1,
            Err(i) => self.counts.insert(i, (token, 1)),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(96 + self.held.len() + self.counts.len() * 8);
        w.extend_from_slice(&[MAGIC, FORMAT]);
        for s in self.rng.s {
            w.extend_from_slice(&s.to_le_bytes());
        }
        let p = &self.params;
        for f in [p.temperature, p.top_p, p.presence_penalty, p.frequency_penalty] {
            w.extend_from_slice(&f.to_le_bytes());
        }
        // u32::MAX stands for "no log-probabilities"; the host caps top-logprobs at 20.
        let top_logprobs = self.top_logprobs.unwrap_or(u32::MAX);
        for n in [p.top_k, top_logprobs, self.max_new_tokens, self.generated, self.prompt_len] {
            w.extend_from_slice(&n.to_le_bytes());
        }
        w.extend_from_slice(&(self.stops.len() as u32).to_le_bytes());
        for s in &self.stops {
            put_bytes(&mut w, s.as_bytes());
        }
        put_bytes(&mut w, &self.pending);
        put_bytes(&mut w, self.held.as_bytes());
        w.extend_from_slice(&(self.counts.len() as u32).to_le_bytes());
        for &(id, n) in &self.counts {
            w.extend_from_slice(&id.to_le_bytes());
            w.extend_from_slice(&n.to_le_bytes());
        }
        w
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        let mut r = Reader(bytes);
        if r.take(2)? != [MAGIC, FORMAT] {
            return Err(StateError("unknown magic or format".into()));
        }
        let rng = Rng { s: [r.u64()?, r.u64()?, r.u64()?, r.u64()?] };
        let (temperature, top_p, presence_penalty, frequency_penalty) = (r.f32()?, r.f32()?, r.f32()?, r.f32()?);
        let (top_k, top_logprobs, max_new_tokens, generated, prompt_len) =
            (r.u32()?, r.u32()?, r.u32()?, r.u32()?, r.u32()?);
        let n_stops = r.u32()?;
        if n_stops > 64 {
            return Err(StateError(format!("{n_stops} stop strings")));
        }
        let stops = (0..n_stops).map(|_| r.string()).collect::<Result<Vec<_>, _>>()?;
        let pending = r.bytes()?.to_vec();
        let held = r.string()?;
        let n_counts = r.u32()? as usize;
        if n_counts > r.0.len() / 8 {
            return Err(StateError(format!("{n_counts} penalty counts in {} bytes", r.0.len())));
        }
        let counts = (0..n_counts).map(|_| Ok((r.u32()?, r.u32()?))).collect::<Result<Vec<_>, StateError>>()?;
        if !r.0.is_empty() {
            return Err(StateError(format!("{} trailing bytes", r.0.len())));
        }
        Ok(Self {
            rng,
            params: Params { temperature, top_p, top_k, presence_penalty, frequency_penalty },
            top_logprobs: (top_logprobs != u32::MAX).then_some(top_logprobs),
            max_new_tokens,
            generated,
            prompt_len,
            stops,
            pending,
            held,
            counts,
        })
    }
}

fn put_bytes(w: &mut Vec<u8>, b: &[u8]) {
    w.extend_from_slice(&(b.len() as u32).to_le_bytes());
    w.extend_from_slice(b);
}

/// A bounds-checked cursor.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StateError> {
        if self.0.len() < n {
            return Err(StateError(format!("truncated: wanted {n} more bytes, {} left", self.0.len())));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], StateError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32, StateError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, StateError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn f32(&mut self) -> Result<f32, StateError> {
        Ok(f32::from_le_bytes(self.array()?))
    }

    fn bytes(&mut self) -> Result<&'a [u8], StateError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, StateError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| StateError("text is not UTF-8".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SequenceState {
        SequenceState {
            rng: Rng::seeded(5, 1),
            params: Params { temperature: 0.7, top_p: 0.9, top_k: 40, presence_penalty: 0.5, frequency_penalty: -0.25 },
            top_logprobs: Some(3),
            max_new_tokens: 100,
            generated: 7,
            prompt_len: 12,
            stops: vec!["</s>".into(), "。".into()],
            pending: vec![0xE4, 0xBD],
            held: "</".into(),
            counts: vec![(3, 2), (900, 1)],
        }
    }

    #[test]
    fn round_trips() {
        let s = sample();
        assert_eq!(SequenceState::decode(&s.encode()).unwrap(), s);
        let plain = SequenceState {
            top_logprobs: None,
            stops: vec![],
            pending: vec![],
            held: String::new(),
            counts: vec![],
            ..s
        };
        assert_eq!(SequenceState::decode(&plain.encode()).unwrap(), plain);
    }

    #[test]
    fn rejects_corruption() {
        let bytes = sample().encode();
        assert!(SequenceState::decode(&[]).is_err());
        assert!(SequenceState::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(SequenceState::decode(&extra).is_err());
        let mut bad = bytes;
        bad[0] ^= 1;
        assert!(SequenceState::decode(&bad).is_err());
        // A huge count must fail cleanly instead of allocating.
        let mut huge = SequenceState { counts: vec![], ..sample() }.encode();
        let at = huge.len() - 4;
        huge[at..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(SequenceState::decode(&huge).is_err());
    }

    #[test]
    fn counts_stay_sorted() {
        let mut s = SequenceState { counts: vec![], ..sample() };
        for t in [9, 3, 9, 5, 3, 9] {
            s.count(t);
        }
        assert_eq!(s.counts, vec![(3, 2), (5, 1), (9, 3)]);
    }
}
