//! The sequence's random generator: xoshiro256** seeded through splitmix64, small enough to live in the state.
//!
//! Written out here rather than taken from `rand` because its whole state must round-trip through the opaque
//! state bytes, and because "same seed, same text" must hold across builds: the output of this generator is
//! fixed by this file, not by a dependency's version.

use std::hash::{BuildHasher, Hasher};

/// splitmix64: turns any 64-bit seed, zero included, into well-mixed words to seed xoshiro with.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// xoshiro256** (Blackman and Vigna): fast, 256 bits of state, good enough for sampling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rng {
    pub s: [u64; 4],
}

impl Rng {
    /// The generator of one choice of a seeded request. The choice is folded into the seed so that the `n`
    /// choices of one request differ while each stays reproducible.
    pub fn seeded(seed: u64, choice: u32) -> Self {
        let mut mix = SplitMix64(u64::from(choice));
        let mut sm = SplitMix64(seed ^ mix.next());
        Self { s: [sm.next(), sm.next(), sm.next(), sm.next()] }
    }

    /// A generator for an unseeded request. std's `RandomState` draws its keys from the host's random source
    /// (wasi `random`), which spares a dependency on `getrandom`.
    pub fn from_entropy() -> Self {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(0x5EED);
        Self::seeded(hasher.finish(), 0)
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1), with the 53 bits an f64 holds.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_choices_differ() {
        let mut a = Rng::seeded(42, 0);
        let mut b = Rng::seeded(42, 0);
        let mut c = Rng::seeded(42, 1);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    #[test]
    fn zero_seed_is_not_degenerate() {
        let mut r = Rng::seeded(0, 0);
        assert_ne!(r.s, [0; 4]);
        let u = r.next_f64();
        assert!((0.0..1.0).contains(&u));
    }

    #[test]
    fn entropy_generators_differ() {
        assert_ne!(Rng::from_entropy().s, Rng::from_entropy().s);
    }
}
