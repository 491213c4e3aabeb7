//! Sockets open now, by cookie: the `sockprobe_tcp_sockets` and
//! `sockprobe_tcp_close_wait_oldest_seconds` gauges are computed from them at
//! each scrape.
use std::collections::HashSet;

use crate::identity::listing::LiveState;

#[derive(Clone, Copy, Debug)]
pub struct LiveSocket {
    /// The label set it counts under (a [`super::series::SeriesTable`] slot).
    pub slot: usize,
    pub state: LiveState,
    /// Monotonic ns when CLOSE_WAIT began (or when first seen in it).
    pub close_wait_since: u64,
    /// Monotonic ns since when it is tracked: a listing that began earlier
    /// cannot show it missing.
    pub tracked_since: u64,
}

#[derive(Default)]
pub struct LiveSockets {
    by_cookie: foldhash::HashMap<u64, LiveSocket>,
}

impl LiveSockets {
    /// A socket opened (or was found), or entered CLOSE_WAIT, at `at`.
    pub fn track(&mut self, cookie: u64, slot: usize, state: LiveState, at: u64) {
        // Kprobe-only kernels report no cookie: no live gauges there.
        if cookie == 0 {
            return;
        }
        let l =
            self.by_cookie.entry(cookie).or_insert(LiveSocket { slot, state, close_wait_since: at, tracked_since: at });
        if state != l.state {
            l.state = state;
            l.close_wait_since = at;
        }
    }

    pub fn untrack(&mut self, cookie: u64) {
        self.by_cookie.remove(&cookie);
    }

    pub fn get(&self, cookie: u64) -> Option<&LiveSocket> {
        self.by_cookie.get(&cookie)
    }

    /// Drops the sockets tracked since before `listed_at` that a listing
    /// taken then did not show; returns how many.
    pub fn drop_unlisted(&mut self, listed: &HashSet<u64>, listed_at: u64) -> usize {
        let before = self.by_cookie.len();
        self.by_cookie.retain(|c, l| listed.contains(c) || l.tracked_since > listed_at);
        before - self.by_cookie.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &LiveSocket> {
        self.by_cookie.values()
    }
}
