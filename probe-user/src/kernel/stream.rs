//! The event ring buffer as an async source of raw kernel records.
use aya::maps::{MapData, RingBuf};
use probe_common::Event;
use tokio::io::{Interest, unix::AsyncFd};

use super::Probes;
use crate::error::Error;

pub struct EventStream {
    ring: AsyncFd<RingBuf<MapData>>,
    /// The kernel side wakes us only when much data is queued (to spare an
    /// irq_work per event), so we also look on this timer.
    tick: tokio::time::Interval,
}

/// Longest an event waits in the ring buffer before userspace sees it.
pub const POLL_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

impl EventStream {
    pub fn new(probes: &mut Probes) -> Result<EventStream, Error> {
        let ring = probes.take_events()?;
        // SAFETY: the ring buffer's fd lives as long as `ring`, which AsyncFd owns.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| Error::io("cannot poll the event ring buffer", e.into()))?;
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(EventStream { ring, tick })
    }

    /// Waits for a wakeup or the poll timer, then hands every queued event to `f`.
    pub async fn next_batch(&mut self, f: impl FnMut(&Event)) -> Result<(), Error> {
        tokio::select! {
            guard = self.ring.readable_mut() => {
                let mut guard = guard.map_err(|e| Error::io("event ring buffer", e))?;
                guard.clear_ready();
            }
            _ = self.tick.tick() => {}
        }
        self.drain_queued(f);
        Ok(())
    }

    /// Hands every record queued now to `f`, without waiting: a scrape sees
    /// what the kernel emitted before it began, not up to [`POLL_EVERY`] less.
    pub fn drain_queued(&mut self, mut f: impl FnMut(&Event)) {
        let ring = self.ring.get_mut();
        while let Some(item) = ring.next() {
            if let Some(ev) = parse_event(&item) {
                // One kernel record for a close out of CLOSE_WAIT: two events.
                if let Some(end) = ev.close_wait_end() {
                    f(&end);
                }
                f(&ev);
            }
        }
    }
}

/// One ring-buffer record; `None` when it is too short to be an [`Event`].
pub fn parse_event(bytes: &[u8]) -> Option<Event> {
    if bytes.len() < size_of::<Event>() {
        return None;
    }
    // SAFETY: length checked; Event is plain old data.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const Event) })
}
