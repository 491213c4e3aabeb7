//! The event ring buffer as an async stream of decoded records.
use aya::maps::{MapData, RingBuf};
use tokio::io::{Interest, unix::AsyncFd};

use probe_common::Event;

use crate::{
    error::Error,
    events::{Decoder, Record, parse_event},
    probes::Probes,
};

pub struct EventStream {
    ring: AsyncFd<RingBuf<MapData>>,
    decoder: Decoder,
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
        Ok(EventStream { ring, decoder: Decoder::new(probes.reasons.clone()), tick })
    }

    /// Waits for a wakeup or the poll timer, then hands every queued event to `f`.
    pub async fn next_batch(&mut self, mut f: impl FnMut(Record)) -> Result<(), Error> {
        self.next_raw_batch(|decoder, ev| {
            if let Some(rec) = decoder.decode(ev) {
                f(rec);
            }
        })
        .await
    }

    /// As [`EventStream::next_batch`], with the raw kernel records.
    pub async fn next_raw_batch(&mut self, mut f: impl FnMut(&mut Decoder, &Event)) -> Result<(), Error> {
        tokio::select! {
            guard = self.ring.readable_mut() => {
                let mut guard = guard.map_err(|e| Error::io("event ring buffer", e))?;
                guard.clear_ready();
            }
            _ = self.tick.tick() => {}
        }
        let ring = self.ring.get_mut();
        while let Some(item) = ring.next() {
            if let Some(ev) = parse_event(&item) {
                // One kernel record for a close out of CLOSE_WAIT: two events.
                if let Some(end) = ev.close_wait_end() {
                    f(&mut self.decoder, &end);
                }
                f(&mut self.decoder, &ev);
            }
        }
        Ok(())
    }

    pub fn decoder(&mut self) -> &mut Decoder {
        &mut self.decoder
    }
}
