//! Benchmark (not a test): do process names chosen to collide slow the
//! per-event lookup? `cargo run --release -p probe-user --example hash_collisions`
//!
//! The daemon finds a label set by the event's kernel identity
//! (`aggregate::series::RawKey`: comm bytes, cgroup, address, port) in a hash
//! map. The multiply-add hash it used before foldhash is linear in its input
//! words, so names whose two 8-byte words satisfy `w1 * K + w2 = C` all hash
//! alike whatever the per-process seed: a local process could rename itself
//! through such names and turn every lookup into a scan. This builds 20 000
//! such names (valid comms: 15 non-NUL bytes), then times lookups of them
//! and of 20 000 ordinary names under both hashes.
use std::{
    collections::HashMap,
    hash::{BuildHasher, Hasher},
    time::Instant,
};

use sockprobe::aggregate::series::RawKey;

/// The hash sockprobe used before foldhash (seeded multiply-add, per word).
#[derive(Clone, Copy)]
struct Linear(u64);
struct LinearHasher(u64);
const K: u64 = 0xf135_7aea_2e62_a9c5;

impl LinearHasher {
    fn add(&mut self, w: u64) {
        self.0 = self.0.wrapping_add(w).wrapping_mul(K);
    }
}

impl Hasher for LinearHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last) ^ (rest.len() as u64) << 59);
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.add(n as u64)
    }
    fn write_u16(&mut self, n: u16) {
        self.add(n as u64)
    }
    fn write_u32(&mut self, n: u32) {
        self.add(n as u64)
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n)
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64)
    }
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }
}

impl BuildHasher for Linear {
    type Hasher = LinearHasher;
    fn build_hasher(&self) -> LinearHasher {
        LinearHasher(self.0)
    }
}

fn key(comm: [u8; 16]) -> RawKey {
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&[10, 0, 0, 1]);
    RawKey { comm, cgroup_id: 1, inbound: false, family: 2, addr, port: 80 }
}

/// A small xorshift, so the run needs no crate and repeats.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Names whose words satisfy w1 * K + w2 = C: one hash under [`Linear`].
fn colliding(n: usize) -> Vec<RawKey> {
    const C: u64 = 0x0041_4243_4445_4647;
    let mut rng = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        // w1: 8 printable bytes; w2 must then be 7 non-NUL bytes and a NUL.
        let w1 = u64::from_le_bytes(std::array::from_fn(|_| b'!' + (next(&mut rng) % 90) as u8));
        let w2 = C.wrapping_sub(w1.wrapping_mul(K));
        let b2 = w2.to_le_bytes();
        if b2[7] != 0 || b2[..7].contains(&0) {
            continue;
        }
        let mut comm = [0u8; 16];
        comm[..8].copy_from_slice(&w1.to_le_bytes());
        comm[8..].copy_from_slice(&b2);
        out.push(key(comm));
    }
    out
}

fn ordinary(n: usize) -> Vec<RawKey> {
    (0..n)
        .map(|i| {
            let name = format!("worker-{i}");
            let mut comm = [0u8; 16];
            comm[..name.len()].copy_from_slice(name.as_bytes());
            key(comm)
        })
        .collect()
}

/// ns per lookup, after inserting all keys.
fn time<S: BuildHasher>(keys: &[RawKey], hasher: S) -> f64 {
    let mut map: HashMap<RawKey, usize, S> = HashMap::with_hasher(hasher);
    for (i, k) in keys.iter().enumerate() {
        map.insert(*k, i);
    }
    let t = Instant::now();
    let mut found = 0;
    for _ in 0..5 {
        for k in keys {
            found += map.get(k).copied().unwrap_or(0) & 1;
        }
    }
    std::hint::black_box(found);
    t.elapsed().as_nanos() as f64 / (5 * keys.len()) as f64
}

fn main() {
    let n = 20_000;
    let bad = colliding(n);
    let good = ordinary(n);
    let seed = Linear(std::hash::RandomState::new().hash_one(0u64));
    let linear_bad = seed.hash_one(bad[0]) == seed.hash_one(bad[1]);
    println!("{n} names built to collide under the old hash: all one hash there: {linear_bad}");
    println!("| hash | ordinary names (ns/lookup) | colliding names (ns/lookup) | ratio |\n|---|---|---|---|");
    let (lg, lb) = (time(&good, seed), time(&bad, seed));
    println!("| old multiply-add (seeded) | {lg:.0} | {lb:.0} | {:.0}x |", lb / lg);
    let (fg, fb) =
        (time(&good, foldhash::fast::RandomState::default()), time(&bad, foldhash::fast::RandomState::default()));
    println!("| foldhash (now) | {fg:.0} | {fb:.0} | {:.2}x |", fb / fg);
}
