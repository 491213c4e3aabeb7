//! `sockprobe trace`: events as JSON lines on stdout.
use std::io::Write;

use probe_common::{Counter, EventKind};

use super::signals;
use crate::{
    decode::{Decoder, Record},
    error::Error,
    kernel::{EventStream, ProbeSettings, Probes},
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
            && (self.comms.is_empty() || self.comms.contains(&r.comm))
            && (self.events.is_empty() || self.events.contains(&r.kind))
    }
}

/// Parses `--event` values (docs/metrics.md, "Events"), comma-separated or repeated.
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

pub async fn run(filter: Filter, sizes: ProbeSettings) -> Result<(), Error> {
    let mut probes = Probes::attach(ProbeSettings { trace_all: true, ..sizes })?;
    probes.log_status();
    let mut events = EventStream::new(&mut probes)?;
    let mut decoder = Decoder::new(probes.reasons.clone());
    let stats = probes.take_stats()?;
    // As the daemon does: listeners that predate us, so their accepted
    // sockets carry an owner from the start (docs/architecture.md).
    match super::listing_job(&mut probes)() {
        Ok(listed) => {
            let _ = probes.seed_listeners(&listed.listing.listeners);
            decoder.set_ports(listed.listing.ports);
        }
        Err(e) => log::warn!("cannot list listening sockets, their connections get owners at first I/O: {e}"),
    }
    eprintln!("sockprobe trace: probes attached, streaming events (Ctrl-C to stop)");
    let mut stop = std::pin::pin!(signals::requested());
    let stdout = std::io::stdout();
    let mut pipe_closed = false;
    while !pipe_closed {
        tokio::select! {
            _ = &mut stop => break,
            batch = events.next_batch(|ev| {
                if pipe_closed {
                    return;
                }
                let Some(rec) = decoder.decode(ev) else { return };
                if !filter.matches(&rec) {
                    return;
                }
                let line = serde_json::to_string(&rec).unwrap_or_default();
                let mut out = stdout.lock();
                // A closed pipe ends the trace, like any Unix filter.
                pipe_closed = writeln!(out, "{line}").and_then(|_| out.flush()).is_err();
            }) => batch?,
        }
    }
    let lost = stats.counter(Counter::EventsLost);
    if lost > 0 {
        eprintln!("sockprobe trace: {lost} events lost (ring buffer full); raise --probe.ring-buffer-bytes");
    }
    Ok(())
}
