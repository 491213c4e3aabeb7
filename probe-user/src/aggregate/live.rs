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
    /// Its `open` record came: its close must not count it again.
    pub opened: bool,
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
        let l = self.by_cookie.entry(cookie).or_insert(LiveSocket {
            slot,
            state,
            close_wait_since: at,
            tracked_since: at,
            opened: false,
        });
        if state != l.state {
            l.state = state;
            l.close_wait_since = at;
        }
    }

    /// As [`LiveSockets::track`], for the socket's `open` record.
    pub fn track_open(&mut self, cookie: u64, slot: usize, at: u64) {
        self.track(cookie, slot, LiveState::Established, at);
        if let Some(l) = self.by_cookie.get_mut(&cookie) {
            l.opened = true;
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
