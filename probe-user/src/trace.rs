//! `sockprobe trace`: events as JSON lines on stdout.
use std::io::Write;

use probe_common::{Counter, EventKind};
use tokio::io::unix::AsyncFd;

use crate::{
    error::Error,
    events::{Decoder, Record, parse_event},
    probes::{MapSizes, Probes},
    shutdown,
};

/// Which events to print. Empty lists match everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    pub events: Vec<EventKind>,
}

impl Filter {
    pub fn matches(&self, r: &Record) -> bool {
        (self.pids.is_empty() || self.pids.contains(&r.pid))
            && (self.comms.is_empty() || self.comms.iter().any(|c| *c == r.comm))
            && (self.events.is_empty() || r.kind.is_some_and(|k| self.events.contains(&k)))
    }
}

/// Parses `--event` values: names from contract.md, comma-separated or repeated.
pub fn parse_event_names(values: &[String]) -> Result<Vec<EventKind>, String> {
    let mut out = Vec::new();
    for name in values.iter().flat_map(|v| v.split(',')).map(str::trim).filter(|s| !s.is_empty()) {
        match EventKind::ALL.into_iter().find(|k| k.name() == name) {
            Some(k) => out.push(k),
            None => {
                let allowed: Vec<_> = EventKind::ALL.iter().map(|k| k.name()).collect();
                return Err(format!("invalid --event '{name}': allowed are {}", allowed.join(", ")));
            }
        }
    }
    Ok(out)
}

pub async fn run(filter: Filter, sizes: MapSizes) -> Result<(), Error> {
    let mut probes = Probes::attach(sizes)?;
    crate::check::log_probe_status(&probes);
    let ring = probes.take_events()?;
    // SAFETY: the ring buffer's fd lives as long as `ring`, which AsyncFd owns.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| Error::io("cannot poll the event ring buffer", e.into()))?;
    let mut decoder = Decoder::new(probes.reasons.clone());
    eprintln!("sockprobe trace: probes attached, streaming events (Ctrl-C to stop)");
    let mut stop = std::pin::pin!(shutdown::requested());
    let stdout = std::io::stdout();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(|e| Error::io("event ring buffer", e))?;
                let mut out = stdout.lock();
                while let Some(item) = guard.get_inner_mut().next() {
                    let Some(ev) = parse_event(&item) else { continue };
                    let Some(rec) = decoder.decode(&ev) else { continue };
                    if filter.matches(&rec) {
                        let line = serde_json::to_string(&rec).unwrap_or_default();
                        // A closed pipe ends the trace, like any Unix filter.
                        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                            return Ok(());
                        }
                    }
                }
                guard.clear_ready();
            }
        }
    }
    let lost = probes.counter(Counter::EventsLost);
    if lost > 0 {
        eprintln!("sockprobe trace: {lost} events lost (ring buffer full); raise --ring-buffer-bytes");
    }
    Ok(())
}
