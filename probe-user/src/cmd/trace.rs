//! `sockprobe trace`: events as JSON lines on stdout.
use std::io::Write;

use probe_common::{AF_INET, Closer, Counter, EventKind};
use serde::Serialize;

use super::{Started, signals};
use crate::{
    decode::{Decoded, direction_label},
    error::Error,
    identity::{
        Clock,
        listing::{comm_str, ip_addr},
        rfc3339_ns,
    },
    kernel::{EventStream, ProbeSettings},
};

/// One event as `sockprobe trace` prints it (docs/metrics.md, "Events").
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub ts: String,
    /// The event kind; printed as its name under `event`.
    #[serde(rename = "event", serialize_with = "kind_name")]
    pub kind: EventKind,
    pub pid: u32,
    pub comm: String,
    pub container: String,
    pub cookie: u64,
    pub family: &'static str,
    pub saddr: String,
    pub sport: u16,
    pub daddr: String,
    pub dport: u16,
    pub direction: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ns: Option<u64>,
    /// Who ended the connection (`close` only): local, peer, reset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closer: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_out: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exchanges: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unread_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_ns: Option<u64>,
    /// On a `retransmit`: segments sent again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segments: Option<u64>,
    /// On an outbound `open` (or the `close` standing for it): its connect().
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_ns: Option<u64>,
}

fn kind_name<S: serde::Serializer>(kind: &EventKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.name())
}

impl Record {
    /// The decoded event as printed, its time on the wall clock.
    pub fn new(d: &Decoded<'_>, clock: &Clock) -> Record {
        let ev = d.ev;
        let mut r = Record {
            ts: rfc3339_ns(clock.unix_ns(ev.ts_ns)),
            kind: d.kind,
            pid: ev.owner.tgid,
            comm: comm_str(&ev.owner.comm),
            container: d.container.to_string(),
            cookie: ev.cookie,
            family: if ev.family == AF_INET { "ipv4" } else { "ipv6" },
            saddr: ip_addr(ev.family, &ev.saddr).to_string(),
            sport: ev.sport,
            daddr: ip_addr(ev.family, &ev.daddr).to_string(),
            dport: ev.dport,
            direction: direction_label(d.direction),
            duration_ns: None,
            closer: None,
            bytes_in: None,
            bytes_out: None,
            exchanges: None,
            unread_bytes: None,
            reason: None,
            age_ns: None,
            segments: None,
            connect_ns: (ev.connect_us > 0 && matches!(d.kind, EventKind::Open | EventKind::Close))
                .then(|| ev.connect_us as u64 * 1000),
        };
        match d.kind {
            EventKind::Close => {
                r.duration_ns = Some(ev.value);
                r.closer = Closer::from_u8(ev.closer).map(Closer::name);
                r.bytes_in = Some(ev.bytes_in);
                r.bytes_out = Some(ev.bytes_out);
                r.exchanges = Some(ev.exchanges);
            }
            EventKind::UnreadClose => r.unread_bytes = Some(ev.value),
            EventKind::ResetSent => r.reason = d.reason.as_deref().map(String::from),
            EventKind::CloseWaitEnd => r.age_ns = Some(ev.value),
            EventKind::ConnectFailed => {
                r.duration_ns = Some(ev.value);
                r.reason = Some(crate::aggregate::ConnectFailure::of(ev).name().into());
            }
            EventKind::Retransmit => r.segments = Some(ev.value),
            EventKind::Open | EventKind::ResetReceived | EventKind::CloseWait => {}
        }
        r
    }
}

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
    let Started { mut probes, mut decoder } = super::start(ProbeSettings { trace_all: true, ..sizes }).await?;
    let mut events = EventStream::new(&mut probes)?;
    let stats = probes.take_stats()?;
    // As the daemon does: listeners that predate us, so their accepted
    // sockets carry an owner from the start (docs/architecture.md).
    super::listing::first(&mut probes, &mut decoder, None).await;
    let clock = Clock::new();
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
                let Some(decoded) = decoder.decode(ev) else { return };
                let rec = Record::new(&decoded, &clock);
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use probe_common::{Direction, Event};

    use super::*;

    #[test]
    fn records_name_their_event() {
        let mut ev: Event = unsafe { std::mem::zeroed() };
        ev.kind = EventKind::UnreadClose as u8;
        ev.family = AF_INET;
        ev.value = 42;
        let decoded = Decoded {
            ev: &ev,
            kind: EventKind::UnreadClose,
            direction: Direction::Outbound,
            container: Arc::from("/podman/abc"),
            reason: None,
        };
        let json = serde_json::to_value(Record::new(&decoded, &Clock::new())).unwrap();
        assert_eq!(json["event"], "unread_close");
        assert_eq!(json["unread_bytes"], 42);
        assert_eq!(json["direction"], "outbound");
        assert_eq!(json["container"], "/podman/abc");
        assert_eq!(json["saddr"], "0.0.0.0");
        assert!(json.get("reason").is_none());
    }
}
