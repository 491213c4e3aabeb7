//! Sockets open now, by cookie: the `sockprobe_tcp_sockets` and
//! `sockprobe_tcp_close_wait_oldest_seconds` gauges are computed from them at
//! each scrape.
use std::collections::HashSet;

use crate::identity::sockets::LiveState;

#[derive(Clone, Copy, Debug)]
pub struct LiveSocket {
    /// The label set it counts under (a [`super::series::SeriesTable`] slot).
    pub slot: usize,
    pub state: LiveState,
    /// Monotonic ns when CLOSE_WAIT began (or when first seen in it).
    pub close_wait_since: u64,
}

#[derive(Default)]
pub struct LiveSockets {
    by_cookie: foldhash::HashMap<u64, LiveSocket>,
}

impl LiveSockets {
    /// A socket opened, or entered CLOSE_WAIT at `since`.
    pub fn track(&mut self, cookie: u64, slot: usize, state: LiveState, since: u64) {
        // Kprobe-only kernels report no cookie: no live gauges there.
        if cookie == 0 {
            return;
        }
        let l = self.by_cookie.entry(cookie).or_insert(LiveSocket { slot, state, close_wait_since: since });
        if state == LiveState::CloseWait {
            l.state = state;
            l.close_wait_since = since;
        }
    }

    pub fn untrack(&mut self, cookie: u64) {
        self.by_cookie.remove(&cookie);
    }

    /// Drops sockets the kernel no longer has (missed close events).
    pub fn retain(&mut self, existing: &HashSet<u64>) {
        self.by_cookie.retain(|c, _| existing.contains(c));
    }

    pub fn iter(&self) -> impl Iterator<Item = &LiveSocket> {
        self.by_cookie.values()
    }

    /// Slots that hold at least one live socket.
    pub fn slots(&self) -> HashSet<usize> {
        self.by_cookie.values().map(|l| l.slot).collect()
    }
}
