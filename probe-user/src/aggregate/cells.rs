//! The values of the per-connection families, one [`Cells`] per label set:
//! written by the aggregator (the event thread), read by a render on the
//! HTTP side through [`CellsIndex`]. The prometheus crate's vecs kept, per
//! label set and metric, its label pairs as owned strings, a hash-map entry
//! and a histogram core: ~7.5 KB a label set (measured:
//! `--example label_set_memory`). Here the labels are shared once and the
//! values are plain atomics: see docs/security.md for the figures.
use std::sync::{
    Arc, Mutex, RwLock,
    atomic::{AtomicU32, AtomicU64, Ordering::Relaxed},
};

use probe_common::Closer;

use super::families::{Count, Spread};

/// Buckets of the widest histogram ([`Spread::buckets`]).
pub const MAX_BUCKETS: usize = 14;

/// One histogram of one label set: per-bucket counts (not cumulative), the
/// count and the sum (f64 bits).
#[derive(Default)]
pub struct Hist {
    buckets: [AtomicU64; MAX_BUCKETS],
    count: AtomicU64,
    sum: AtomicU64,
}

/// What a render reads of a histogram.
pub struct HistValues {
    /// Cumulative, one per bound of [`Spread::buckets`].
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum: f64,
}

/// The values of one label set (comm, container, direction, endpoint).
pub struct Cells {
    pub comm: Arc<str>,
    pub container: Arc<str>,
    pub direction: &'static str,
    pub endpoint: Arc<str>,
    /// A bit per value ever written: a metric appears once it counted
    /// something, as a prometheus vec's child appears at first use.
    touched: AtomicU32,
    counters: [AtomicU64; Count::ALL.len()],
    closed: [AtomicU64; Closer::ALL.len()],
    hists: [Hist; Spread::ALL.len()],
    /// (kernel reason, RSTs): rare, and few reasons per label set.
    resets_sent: Mutex<Vec<(Arc<str>, u64)>>,
    /// (reason, failed connect()s): as rare, six reasons at most.
    connect_failures: Mutex<Vec<(&'static str, u64)>>,
}

const CLOSED_BIT: u32 = Count::ALL.len() as u32;
const HIST_BIT: u32 = CLOSED_BIT + Closer::ALL.len() as u32;

impl Cells {
    pub fn new(comm: &str, container: &str, direction: &'static str, endpoint: &str) -> Cells {
        Cells {
            comm: comm.into(),
            container: container.into(),
            direction,
            endpoint: endpoint.into(),
            touched: AtomicU32::new(0),
            counters: Default::default(),
            closed: Default::default(),
            hists: Default::default(),
            resets_sent: Mutex::new(Vec::new()),
            connect_failures: Mutex::new(Vec::new()),
        }
    }

    fn touch(&self, bit: u32) {
        if self.touched.load(Relaxed) & (1 << bit) == 0 {
            self.touched.fetch_or(1 << bit, Relaxed);
        }
    }

    fn was_touched(&self, bit: u32) -> bool {
        self.touched.load(Relaxed) & (1 << bit) != 0
    }

    pub fn add(&self, c: Count, by: u64) {
        self.counters[c as usize].fetch_add(by, Relaxed);
        self.touch(c as u32);
    }

    pub fn close(&self, closer: Closer) {
        let i = closer as usize - 1;
        self.closed[i].fetch_add(1, Relaxed);
        self.touch(CLOSED_BIT + i as u32);
    }

    pub fn observe(&self, s: Spread, v: f64) {
        let h = &self.hists[s as usize];
        let bucket = s.buckets().iter().position(|b| v <= *b).unwrap_or(MAX_BUCKETS);
        if let Some(b) = h.buckets.get(bucket) {
            b.fetch_add(1, Relaxed);
        }
        h.count.fetch_add(1, Relaxed);
        // One writer (the aggregator): a load and a store cannot lose an add.
        h.sum.store((f64::from_bits(h.sum.load(Relaxed)) + v).to_bits(), Relaxed);
        self.touch(HIST_BIT + s as u32);
    }

    pub fn reset_sent(&self, reason: &Arc<str>) {
        let mut resets = self.resets_sent.lock().unwrap_or_else(|e| e.into_inner());
        match resets.iter_mut().find(|(r, _)| r == reason) {
            Some((_, n)) => *n += 1,
            None => resets.push((reason.clone(), 1)),
        }
    }

    pub fn connect_failed(&self, reason: &'static str) {
        let mut failures = self.connect_failures.lock().unwrap_or_else(|e| e.into_inner());
        match failures.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => failures.push((reason, 1)),
        }
    }

    pub fn connect_failures(&self) -> Vec<(&'static str, u64)> {
        self.connect_failures.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn counter(&self, c: Count) -> Option<u64> {
        self.was_touched(c as u32).then(|| self.counters[c as usize].load(Relaxed))
    }

    pub fn closed(&self, closer: Closer) -> Option<u64> {
        let i = closer as usize - 1;
        self.was_touched(CLOSED_BIT + i as u32).then(|| self.closed[i].load(Relaxed))
    }

    pub fn hist(&self, s: Spread) -> Option<HistValues> {
        if !self.was_touched(HIST_BIT + s as u32) {
            return None;
        }
        let h = &self.hists[s as usize];
        let mut total = 0;
        let cumulative = (0..s.buckets().len())
            .map(|i| {
                total += h.buckets[i].load(Relaxed);
                total
            })
            .collect();
        Some(HistValues { cumulative, count: h.count.load(Relaxed), sum: f64::from_bits(h.sum.load(Relaxed)) })
    }

    pub fn resets_sent(&self) -> Vec<(Arc<str>, u64)> {
        self.resets_sent.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The label sets a render walks, by slot: the aggregator adds and removes
/// (rarely: a new label set, an expiry); a render copies the list out (a
/// pointer per label set) and reads without the lock.
#[derive(Clone, Default)]
pub struct CellsIndex(Arc<RwLock<Vec<Option<Arc<Cells>>>>>);

impl CellsIndex {
    pub fn set(&self, slot: usize, cells: Option<Arc<Cells>>) {
        let mut v = self.0.write().unwrap_or_else(|e| e.into_inner());
        if v.len() <= slot {
            v.resize(slot + 1, None);
        }
        v[slot] = cells;
    }

    pub fn snapshot(&self) -> Vec<Arc<Cells>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).iter().flatten().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_appear_once_written_and_buckets_cumulate() {
        let c = Cells::new("a", "", "outbound", "10.0.0.1:80");
        assert!(c.counter(Count::Opened).is_none() && c.hist(Spread::Exchanges).is_none());
        c.add(Count::Opened, 0);
        assert_eq!(c.counter(Count::Opened), Some(0), "touched by a zero add, as inc_by(0) creates a child");
        for v in [1.0, 2.0, 2.0, 7.0, 5000.0] {
            c.observe(Spread::Exchanges, v);
        }
        let h = c.hist(Spread::Exchanges).unwrap();
        // Bounds 1, 2, 3, 5, 10, 20, 50, 100, 1000; 5000 only in +Inf (count).
        assert_eq!(h.cumulative, [1, 3, 3, 3, 4, 4, 4, 4, 4]);
        assert_eq!((h.count, h.sum), (5, 5012.0));
        c.close(Closer::Peer);
        assert_eq!((c.closed(Closer::Local), c.closed(Closer::Peer)), (None, Some(1)));
        let r: Arc<str> = "not_specified".into();
        c.reset_sent(&r);
        c.reset_sent(&r);
        assert_eq!(c.resets_sent(), [(r, 2)]);
    }

    #[test]
    fn every_bucket_list_fits() {
        assert!(Spread::ALL.iter().all(|s| s.buckets().len() <= MAX_BUCKETS));
    }
}
