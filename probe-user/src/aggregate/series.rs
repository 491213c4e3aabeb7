//! The label sets sockprobe has created, and every index into them, kept in
//! step by one type: a label set is found by its kernel identity (the
//! per-event fast path: one hash lookup, no string built) or by its labels,
//! and whole processes expire together.
use super::time_wait::TimeWait;
use std::{collections::HashSet, sync::Arc};

use super::{
    cells::{Cells, CellsIndex},
    window::{MARKS, Tally},
};
/// Process ids remembered per label set (for `pids` in findings).
const PIDS_PER_SERIES: usize = 8;

/// `comm` of sockets whose owner was never seen in process context.
pub const UNKNOWN_COMM: &str = "[unknown]";
/// The `endpoint` of label sets folded past the per-process cap.
pub const OTHER_ENDPOINT: &str = "other";
/// The `comm` of label sets folded past the process or series cap.
pub const OTHER_COMM: &str = "other";

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

/// One label set: its metrics' values, shared with the renders, and what
/// the diagnosis keeps of it.
pub struct Series {
    pub key: SeriesKey,
    raw_keys: Vec<RawKey>,
    pub cells: Arc<Cells>,
    /// Kernel monotonic ns of the last event (the event's own timestamp: no
    /// clock read per event).
    pub last_seen_ns: u64,
    /// The diagnosis's numbers, cumulative, and their marks ([`super::window`]).
    pub tally: Tally,
    pub marks: [Tally; MARKS],
    /// The most recent owners seen (bounded).
    pub pids: Vec<u32>,
    /// Its connections closed here first, still in TIME_WAIT (once there was one).
    pub time_wait: Option<Box<TimeWait>>,
}

impl Series {
    /// Remembers `pid` as an owner, the most recent last; true when it is
    /// new to this label set.
    pub fn saw_pid(&mut self, pid: u32) -> bool {
        if pid == 0 || self.pids.last() == Some(&pid) {
            return false;
        }
        let before = self.pids.len();
        self.pids.retain(|p| *p != pid);
        let new = self.pids.len() == before;
        if self.pids.len() == PIDS_PER_SERIES {
            self.pids.remove(0);
        }
        self.pids.push(pid);
        new
    }
}

#[derive(Default)]
struct Proc {
    endpoints: HashSet<String>,
    slots: Vec<usize>,
}

/// How many label sets may exist: what a process (its name, its endpoints)
/// can make sockprobe and Prometheus hold is bounded by these.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// `endpoint` values per (comm, container); past it, `endpoint="other"`.
    pub max_endpoints: usize,
    /// (comm, container) pairs; past it, `comm="other"` (a process renaming
    /// itself before each connection cannot add pairs without end).
    pub max_processes: usize,
    /// Label sets in all; past it, `comm="other"` and `endpoint="other"`.
    pub max_series: usize,
    /// Per container (pod), before the caps above: a tenant that bloats its
    /// own labels folds its own (`comm="other"` in its container), never
    /// another's. The host's processes (no container) have only the caps
    /// above.
    pub max_processes_per_container: usize,
    pub max_series_per_container: usize,
}

impl Limits {
    /// The defaults of `sockprobe run` (docs/configuration.md).
    pub const DEFAULT: Limits = Limits {
        max_endpoints: 100,
        max_processes: 1000,
        max_series: 20_000,
        max_processes_per_container: 250,
        max_series_per_container: 5000,
    };
}

/// What one container holds of the caps.
#[derive(Default)]
struct ContainerUse {
    procs: usize,
    series: usize,
}

/// What the kernel-identity index may hold: folded label sets are looked up
/// the slow way instead of being cached, so it stays bounded too.
const RAW_KEYS_PER_SERIES: usize = 4;

/// Slots of [`Series`] with their indexes.
pub struct SeriesTable {
    limits: Limits,
    slots: Vec<Option<Series>>,
    free: Vec<usize>,
    by_raw: foldhash::HashMap<RawKey, usize>,
    by_key: foldhash::HashMap<SeriesKey, usize>,
    procs: foldhash::HashMap<ProcKey, Proc>,
    /// By `container` label (the host's "" not kept).
    containers: foldhash::HashMap<String, ContainerUse>,
    /// The label sets a render walks, kept in step with `slots`.
    index: CellsIndex,
}

impl SeriesTable {
    pub fn new(limits: Limits) -> SeriesTable {
        SeriesTable {
            limits,
            slots: Vec::new(),
            free: Vec::new(),
            by_raw: Default::default(),
            by_key: Default::default(),
            procs: Default::default(),
            containers: Default::default(),
            index: CellsIndex::default(),
        }
    }

    /// What renders walk.
    pub fn index(&self) -> CellsIndex {
        self.index.clone()
    }

    pub fn by_raw(&self, raw: &RawKey) -> Option<usize> {
        self.by_raw.get(raw).copied()
    }

    /// The slot of a label set, created if new, folded past the
    /// [`Limits`] (then `folded` is called). `raw`, if given, finds the
    /// slot from now on, while the index has room (past it, a folded label
    /// set is folded, and counted, at each of its events).
    pub fn slot(
        &mut self,
        now_ns: u64,
        proc: ProcKey,
        direction: &'static str,
        endpoint: String,
        raw: Option<RawKey>,
        mut folded: impl FnMut(),
    ) -> usize {
        let mut was_folded = false;
        let existing = SeriesKey { proc, direction, endpoint };
        if let Some(&slot) = self.by_key.get(&existing) {
            self.remember(raw, slot);
            return slot;
        }
        let SeriesKey { proc, endpoint, .. } = existing;
        let full = self.by_key.len() >= self.limits.max_series;
        let used = self.containers.get(&proc.container);
        let (container_full, container_procs_full) = used.map_or((false, false), |u| {
            (u.series >= self.limits.max_series_per_container, u.procs >= self.limits.max_processes_per_container)
        });
        let new_proc = !self.procs.contains_key(&proc);
        let proc = if full
            || container_full
            || (new_proc && (self.procs.len() >= self.limits.max_processes || container_procs_full))
        {
            was_folded = true;
            ProcKey { comm: OTHER_COMM.to_string(), container: if full { String::new() } else { proc.container } }
        } else {
            proc
        };
        if !self.procs.contains_key(&proc) && !proc.container.is_empty() {
            self.containers.entry(proc.container.clone()).or_default().procs += 1;
        }
        let p = self.procs.entry(proc.clone()).or_default();
        let endpoint = if !full
            && !container_full
            && (p.endpoints.contains(&endpoint) || p.endpoints.len() < self.limits.max_endpoints)
        {
            p.endpoints.insert(endpoint.clone());
            endpoint
        } else {
            was_folded = true;
            OTHER_ENDPOINT.to_string()
        };
        if was_folded {
            folded();
        }
        let key = SeriesKey { proc, direction, endpoint };
        let slot = match self.by_key.get(&key) {
            Some(&slot) => slot,
            None => {
                let cells = Arc::new(Cells::new(&key.proc.comm, &key.proc.container, direction, &key.endpoint));
                let series = Series {
                    key: key.clone(),
                    raw_keys: Vec::new(),
                    cells: cells.clone(),
                    last_seen_ns: now_ns,
                    tally: Tally::default(),
                    marks: Default::default(),
                    pids: Vec::new(),
                    time_wait: None,
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
                if !key.proc.container.is_empty() {
                    self.containers.entry(key.proc.container.clone()).or_default().series += 1;
                }
                self.by_key.insert(key, slot);
                self.index.set(slot, Some(cells));
                slot
            }
        };
        self.remember(raw, slot);
        slot
    }

    /// Lets `raw` find `slot` from now on, while the index has room.
    fn remember(&mut self, raw: Option<RawKey>, slot: usize) {
        let room = self.by_raw.len() < RAW_KEYS_PER_SERIES * self.limits.max_series;
        if let Some(raw) = raw.filter(|_| room)
            && let Some(s) = self.slots[slot].as_mut()
        {
            self.by_raw.insert(raw, slot);
            s.raw_keys.push(raw);
        }
    }

    /// Lets no raw key find its slot any more: labels are built afresh
    /// (the names of remote addresses changed).
    pub fn forget_raw_keys(&mut self) {
        self.by_raw.clear();
        for s in self.slots.iter_mut().flatten() {
            s.raw_keys.clear();
        }
    }

    pub fn get(&self, slot: usize) -> Option<&Series> {
        self.slots.get(slot)?.as_ref()
    }

    pub fn get_mut(&mut self, slot: usize) -> Option<&mut Series> {
        self.slots.get_mut(slot)?.as_mut()
    }

    pub fn iter(&self) -> impl Iterator<Item = (usize, &Series)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| Some((i, s.as_ref()?)))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut Series)> {
        self.slots.iter_mut().enumerate().filter_map(|(i, s)| Some((i, s.as_mut()?)))
    }

    /// Label sets now (bounded by [`Limits::max_series`], plus the folded ones).
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Kernel identities cached (bounded by RAW_KEYS_PER_SERIES x max_series).
    pub fn raw_keys(&self) -> usize {
        self.by_raw.len()
    }

    /// Removes the processes none of whose label sets saw an event since
    /// `idle_since_ns` or holds a live socket; returns how many label sets went.
    pub fn expire(&mut self, idle_since_ns: u64, live: impl Fn(usize) -> bool) -> usize {
        let slots = &self.slots;
        let idle = |i: &usize| slots[*i].as_ref().is_none_or(|s| !live(*i) && s.last_seen_ns < idle_since_ns);
        let gone: Vec<ProcKey> =
            self.procs.iter().filter(|(_, p)| p.slots.iter().all(idle)).map(|(k, _)| k.clone()).collect();
        let mut removed = 0;
        for k in gone {
            let Some(p) = self.procs.remove(&k) else { continue };
            if let Some(u) = self.containers.get_mut(&k.container) {
                u.procs -= 1;
                u.series -= p.slots.len();
                if u.procs == 0 {
                    self.containers.remove(&k.container);
                }
            }
            for i in p.slots {
                let Some(s) = self.slots[i].take() else { continue };
                for raw in &s.raw_keys {
                    self.by_raw.remove(raw);
                }
                self.by_key.remove(&s.key);
                self.index.set(i, None);
                self.free.push(i);
                removed += 1;
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(comm: &str, container: &str) -> ProcKey {
        ProcKey::new(comm, container.to_string())
    }

    /// A container renaming itself, or fanning out to endpoints, folds its
    /// own label sets; the next container's process keeps its name, and the
    /// host's processes have only the global caps.
    #[test]
    fn one_container_folds_only_its_own() {
        let limits = Limits { max_processes_per_container: 3, max_series_per_container: 5, ..Limits::DEFAULT };
        let mut t = SeriesTable::new(limits);
        let folds = std::cell::Cell::new(0);
        let slot = |t: &mut SeriesTable, p: ProcKey, e: &str| {
            t.slot(0, p, "outbound", e.into(), None, || folds.set(folds.get() + 1))
        };
        for i in 0..10 {
            slot(&mut t, proc(&format!("rn{i}"), "attacker"), "10.0.0.1:80");
        }
        let names = |t: &SeriesTable, c: &str| -> Vec<String> {
            let mut v: Vec<String> =
                t.iter().filter(|(_, s)| s.key.proc.container == c).map(|(_, s)| s.key.proc.comm.clone()).collect();
            v.sort();
            v.dedup();
            v
        };
        assert_eq!(
            names(&t, "attacker"),
            ["other", "rn0", "rn1", "rn2"],
            "3 pairs, then comm=\"other\" in its container"
        );
        for e in 0..10 {
            slot(&mut t, proc("rn0", "attacker"), &format!("10.0.1.{e}:80"));
        }
        let in_attacker = t.iter().filter(|(_, s)| s.key.proc.container == "attacker").count();
        assert!(in_attacker <= 5 + 2, "series per container capped (plus the folded ones): {in_attacker}");
        let s = slot(&mut t, proc("victim", "victim"), "10.0.0.2:80");
        assert_eq!(t.get(s).unwrap().key.proc.comm, "victim", "another container keeps its name");
        for i in 0..10 {
            slot(&mut t, proc(&format!("host{i}"), ""), "10.0.0.3:80");
        }
        assert_eq!(names(&t, "").len(), 10, "host processes have only the global caps");
        assert!(folds.get() >= 7 + 9, "{} folds", folds.get());
        // Expiry gives the container its share back.
        t.expire(1, |_| false);
        let s = slot(&mut t, proc("rn99", "attacker"), "10.0.0.1:80");
        assert_eq!(t.get(s).unwrap().key.proc.comm, "rn99");
    }
}
