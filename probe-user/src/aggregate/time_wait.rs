//! TIME_WAIT sockets per label set, estimated from events: a connection
//! this host closed first (closer `local`) leaves its 4-tuple in TIME_WAIT
//! for 60 s (TCP_TIMEWAIT_LEN, fixed in Linux), and no event marks the end.
//! TIME_WAIT sockets hold no fd, so the listing cannot see them either.

/// How long a TIME_WAIT socket lives.
pub const TIME_WAIT_S: u64 = 60;
/// One-second buckets, a few more than the 60 counted.
const BUCKETS: usize = 64;

/// Local-first closes of the last [`TIME_WAIT_S`] seconds, by second.
#[derive(Clone, Debug)]
pub struct TimeWait {
    counts: [u32; BUCKETS],
    /// The newest bucket's second (kernel monotonic).
    newest: u64,
}

impl Default for TimeWait {
    fn default() -> Self {
        TimeWait { counts: [0; BUCKETS], newest: 0 }
    }
}

impl TimeWait {
    /// One more (or, `-1`, one less: a close that turned into a reset).
    pub fn add(&mut self, now_ns: u64, delta: i32) {
        let s = now_ns / 1_000_000_000;
        if s > self.newest {
            // Clear the buckets the clock moved past (all, after a long gap).
            for second in (self.newest + 1..=s).rev().take(BUCKETS) {
                self.counts[second as usize % BUCKETS] = 0;
            }
            self.newest = s;
        }
        // An event older than the buckets kept is long out of TIME_WAIT.
        if self.newest - s >= BUCKETS as u64 {
            return;
        }
        let c = &mut self.counts[s as usize % BUCKETS];
        *c = c.saturating_add_signed(delta);
    }

    /// Sockets still in TIME_WAIT at `now_ns`.
    pub fn count(&self, now_ns: u64) -> u64 {
        let now = now_ns / 1_000_000_000;
        let from = (now + 1).saturating_sub(TIME_WAIT_S).max((self.newest + 1).saturating_sub(BUCKETS as u64));
        (from..=self.newest.min(now)).map(|s| u64::from(self.counts[s as usize % BUCKETS])).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn closes_count_for_sixty_seconds() {
        let mut tw = TimeWait::default();
        tw.add(1000 * S, 1);
        tw.add(1000 * S + 5, 1);
        tw.add(1030 * S, 1);
        assert_eq!(tw.count(1030 * S), 3);
        assert_eq!(tw.count(1059 * S), 3);
        assert_eq!(tw.count(1060 * S), 1, "the first two left TIME_WAIT");
        assert_eq!(tw.count(1090 * S), 0);
        tw.add(1030 * S, -1);
        assert_eq!(tw.count(1031 * S), 2, "a close that ended in a reset is taken back");
    }

    #[test]
    fn a_long_gap_forgets_everything_and_late_events_are_dropped() {
        let mut tw = TimeWait::default();
        for s in 0..200 {
            tw.add((5000 + s) * S, 1);
        }
        assert_eq!(tw.count(5199 * S), 60);
        tw.add(9000 * S, 1);
        assert_eq!(tw.count(9000 * S), 1);
        tw.add(5000 * S, 1);
        assert_eq!(tw.count(9000 * S), 1);
        assert_eq!(TimeWait::default().count(0), 0);
    }
}
