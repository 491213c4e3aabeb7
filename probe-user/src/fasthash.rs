//! A fast hasher for the daemon's per-event maps. SipHash was a quarter of the
//! daemon's CPU under connection churn; the keys here are short and
//! kernel-made (socket cookies, comm bytes, addresses), so a multiply-rotate
//! hash does, seeded per process so that collisions cannot be precomputed.
use std::{
    collections::{HashMap, HashSet, hash_map::RandomState},
    hash::{BuildHasher, Hasher},
    sync::OnceLock,
};

pub type FastMap<K, V> = HashMap<K, V, FastState>;
pub type FastSet<K> = HashSet<K, FastState>;

/// Builds [`FastHasher`]s with this process's seed.
#[derive(Clone, Copy, Debug)]
pub struct FastState {
    seed: u64,
}

impl Default for FastState {
    fn default() -> Self {
        static SEED: OnceLock<u64> = OnceLock::new();
        FastState { seed: *SEED.get_or_init(|| RandomState::new().hash_one(0x50c4_b0be_u64)) }
    }
}

impl BuildHasher for FastState {
    type Hasher = FastHasher;

    fn build_hasher(&self) -> FastHasher {
        FastHasher(self.seed)
    }
}

pub struct FastHasher(u64);

/// An odd constant with well-spread bits (as in rustc's FxHash successor).
const K: u64 = 0xf135_7aea_2e62_a9c5;

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = self.0.wrapping_add(word).wrapping_mul(K);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last) ^ (rest.len() as u64) << 59);
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.add(n as u64);
    }

    #[inline]
    fn write_u16(&mut self, n: u16) {
        self.add(n as u64);
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.add(n as u64);
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // The multiply leaves the low bits weakest; hashbrown takes its
        // bucket index from the low bits and its tag from the top 7.
        self.0.rotate_left(26)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_cookies_spread_over_buckets() {
        let state = FastState::default();
        let buckets: HashSet<u64> = (1..=4096u64).map(|c| state.hash_one(c) & 1023).collect();
        assert!(buckets.len() > 900, "only {} of 1024 buckets used", buckets.len());
    }

    #[test]
    fn equal_keys_hash_equal_and_lengths_matter() {
        let state = FastState::default();
        assert_eq!(state.hash_one(b"nginx\0\0\0"), state.hash_one(b"nginx\0\0\0"));
        assert_ne!(state.hash_one([0u8; 3].as_slice()), state.hash_one([0u8; 4].as_slice()));
    }
}
