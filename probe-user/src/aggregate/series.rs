//! The label sets sockprobe has created, and every index into them, kept in
//! step by one type: a label set is found by its kernel identity (the
//! per-event fast path: one hash lookup, no string built) or by its labels,
//! and whole processes expire together.
use std::collections::HashSet;

use prometheus::{Histogram, IntCounter};

use super::families::{Count, Spread};

/// `comm` of sockets whose owner was never seen in process context.
pub const UNKNOWN_COMM: &str = "[unknown]";
/// The `endpoint` of label sets folded past the per-process cap.
pub const OTHER_ENDPOINT: &str = "other";

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProcKey {
    pub comm: String,
    pub container: String,
}

impl ProcKey {
    pub fn new(comm: &str, container: String) -> ProcKey {
        ProcKey { comm: if comm.is_empty() { UNKNOWN_COMM } else { comm }.to_string(), container }
    }
}

/// One label set (comm, container, direction, endpoint) after folding.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    pub proc: ProcKey,
    pub direction: &'static str,
    pub endpoint: String,
}

/// The kernel's identity of a label set, before any string is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RawKey {
    pub comm: [u8; 16],
    pub cgroup_id: u64,
    pub inbound: bool,
    pub family: u16,
    pub addr: [u8; 16],
    pub port: u16,
}

/// Metric handles of one label set, created on first use.
pub struct Series {
    pub key: SeriesKey,
    raw_keys: Vec<RawKey>,
    pub counters: [Option<IntCounter>; Count::ALL.len()],
    pub histograms: [Option<Histogram>; Spread::ALL.len()],
    /// (raw reason, its label, the counter).
    pub resets_sent: Vec<(u32, String, IntCounter)>,
    /// Kernel monotonic ns of the last event (the event's own timestamp: no
    /// clock read per event).
    pub last_seen_ns: u64,
}

impl Series {
    pub fn labels(&self) -> [&str; 4] {
        [&self.key.proc.comm, &self.key.proc.container, self.key.direction, &self.key.endpoint]
    }
}

#[derive(Default)]
struct Proc {
    endpoints: HashSet<String>,
    slots: Vec<usize>,
}

/// Slots of [`Series`] with their indexes.
pub struct SeriesTable {
    max_endpoints: usize,
    slots: Vec<Option<Series>>,
    free: Vec<usize>,
    by_raw: foldhash::HashMap<RawKey, usize>,
    by_key: foldhash::HashMap<SeriesKey, usize>,
    procs: foldhash::HashMap<ProcKey, Proc>,
}

impl SeriesTable {
    pub fn new(max_endpoints: usize) -> SeriesTable {
        SeriesTable {
            max_endpoints,
            slots: Vec::new(),
            free: Vec::new(),
            by_raw: Default::default(),
            by_key: Default::default(),
            procs: Default::default(),
        }
    }

    pub fn by_raw(&self, raw: &RawKey) -> Option<usize> {
        self.by_raw.get(raw).copied()
    }

    /// The slot of a label set, created if new, its endpoint folded into
    /// [`OTHER_ENDPOINT`] past the per-process cap (then `folded` is called).
    /// `raw`, if given, finds the slot from now on.
    pub fn slot(
        &mut self,
        now_ns: u64,
        proc: ProcKey,
        direction: &'static str,
        endpoint: String,
        raw: Option<RawKey>,
        folded: impl FnOnce(),
    ) -> usize {
        let p = self.procs.entry(proc.clone()).or_default();
        let endpoint = if p.endpoints.contains(&endpoint) || p.endpoints.len() < self.max_endpoints {
            p.endpoints.insert(endpoint.clone());
            endpoint
        } else {
            folded();
            OTHER_ENDPOINT.to_string()
        };
        let key = SeriesKey { proc, direction, endpoint };
        let slot = match self.by_key.get(&key) {
            Some(&slot) => slot,
            None => {
                let series = Series {
                    key: key.clone(),
                    raw_keys: Vec::new(),
                    counters: Default::default(),
                    histograms: Default::default(),
                    resets_sent: Vec::new(),
                    last_seen_ns: now_ns,
                };
                let slot = match self.free.pop() {
                    Some(i) => {
                        self.slots[i] = Some(series);
                        i
                    }
                    None => {
                        self.slots.push(Some(series));
                        self.slots.len() - 1
                    }
                };
                p.slots.push(slot);
                self.by_key.insert(key, slot);
                slot
            }
        };
        if let Some(raw) = raw {
            self.by_raw.insert(raw, slot);
            if let Some(s) = self.slots[slot].as_mut() {
                s.raw_keys.push(raw);
            }
        }
        slot
    }

    pub fn get(&self, slot: usize) -> Option<&Series> {
        self.slots.get(slot)?.as_ref()
    }

    pub fn get_mut(&mut self, slot: usize) -> Option<&mut Series> {
        self.slots.get_mut(slot)?.as_mut()
    }

    /// Removes the processes none of whose label sets saw an event since
    /// `idle_since_ns` or holds a live socket; returns their series.
    pub fn expire(&mut self, idle_since_ns: u64, live: impl Fn(usize) -> bool) -> Vec<Series> {
        let slots = &self.slots;
        let idle = |i: &usize| {
            slots[*i].as_ref().is_none_or(|s| !live(*i) && s.last_seen_ns < idle_since_ns)
        };
        let gone: Vec<ProcKey> =
            self.procs.iter().filter(|(_, p)| p.slots.iter().all(idle)).map(|(k, _)| k.clone()).collect();
        let mut removed = Vec::new();
        for k in gone {
            let Some(p) = self.procs.remove(&k) else { continue };
            for i in p.slots {
                let Some(s) = self.slots[i].take() else { continue };
                for raw in &s.raw_keys {
                    self.by_raw.remove(raw);
                }
                self.by_key.remove(&s.key);
                self.free.push(i);
                removed.push(s);
            }
        }
        removed
    }
}
