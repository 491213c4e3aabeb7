//! Kernel-side state that `/metrics` and `trace` report on: the per-CPU
//! counters and how many sockets the kernel side tracks.
use aya::maps::{HashMap as AyaHashMap, MapData, PerCpuArray};
use probe_common::{Counter, SockState};

pub struct KernelStats {
    /// The LRU socket map, when it holds the state.
    sockets: Option<AyaHashMap<MapData, u64, SockState>>,
    counters: PerCpuArray<MapData, u64>,
}

impl KernelStats {
    pub(super) fn new(
        sockets: Option<AyaHashMap<MapData, u64, SockState>>,
        counters: PerCpuArray<MapData, u64>,
    ) -> KernelStats {
        KernelStats { sockets, counters }
    }

    /// Sum over CPUs of one kernel-side counter.
    pub fn counter(&self, counter: Counter) -> u64 {
        self.counters.get(&(counter as u32), 0).map(|v| v.iter().fold(0, |a: u64, b| a.wrapping_add(*b))).unwrap_or(0)
    }

    /// Sockets with kernel-side state now: the LRU map's entries (one
    /// syscall per socket), or (cookie table, socket-local storage) states
    /// created minus freed.
    pub fn tracked_sockets(&self) -> usize {
        match &self.sockets {
            Some(map) => map.keys().filter(Result::is_ok).count(),
            None => self.counter(Counter::StatesCreated).saturating_sub(self.counter(Counter::StatesFreed)) as usize,
        }
    }
}
