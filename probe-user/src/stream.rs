//! The event ring buffer as an async stream of decoded records.
use aya::maps::{MapData, RingBuf};
use tokio::io::{Interest, unix::AsyncFd};

use crate::{
    error::Error,
    events::{Decoder, Record, parse_event},
    probes::Probes,
};

pub struct EventStream {
    ring: AsyncFd<RingBuf<MapData>>,
    decoder: Decoder,
}

impl EventStream {
    pub fn new(probes: &mut Probes) -> Result<EventStream, Error> {
        let ring = probes.take_events()?;
        // SAFETY: the ring buffer's fd lives as long as `ring`, which AsyncFd owns.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| Error::io("cannot poll the event ring buffer", e.into()))?;
        Ok(EventStream { ring, decoder: Decoder::new(probes.reasons.clone()) })
    }

    /// Waits for events, then hands every queued one to `f`.
    pub async fn next_batch(&mut self, mut f: impl FnMut(Record)) -> Result<(), Error> {
        let mut guard = self.ring.readable_mut().await.map_err(|e| Error::io("event ring buffer", e))?;
        while let Some(item) = guard.get_inner_mut().next() {
            let Some(ev) = parse_event(&item) else { continue };
            if let Some(rec) = self.decoder.decode(&ev) {
                f(rec);
            }
        }
        guard.clear_ready();
        Ok(())
    }

    pub fn decoder(&mut self) -> &mut Decoder {
        &mut self.decoder
    }
}
