//! Events turned into the metrics of contract.md, with bounded cardinality:
//! at most N `endpoint` values per (comm, container), the rest folded into
//! `endpoint="other"`, and label sets of processes gone for a while expired.
use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use probe_common::{Event, EventKind};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder, core::Collector,
};

use crate::{
    events::{Decoder, comm_str, endpoint_label},
    fasthash::FastMap,
};

const PROC: [&str; 2] = ["comm", "container"];
const CONN: [&str; 4] = ["comm", "container", "direction", "endpoint"];
pub const OTHER_ENDPOINT: &str = "other";
/// `comm` of sockets whose owner was never seen in process context.
pub const UNKNOWN_COMM: &str = "[unknown]";

/// The metric families that carry per-connection labels; used to remember
/// which label sets a process created, so they can be expired together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Family {
    Opened,
    Closed,
    UnreadCloses,
    UnreadBytes,
    ResetsSent,
    ResetsReceived,
    Duration,
    Exchanges,
    CloseWaitDuration,
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::Opened => "sockprobe_tcp_connections_opened_total",
            Family::Closed => "sockprobe_tcp_connections_closed_total",
            Family::UnreadCloses => "sockprobe_tcp_unread_closes_total",
            Family::UnreadBytes => "sockprobe_tcp_unread_bytes_total",
            Family::ResetsSent => "sockprobe_tcp_resets_sent_total",
            Family::ResetsReceived => "sockprobe_tcp_resets_received_total",
            Family::Duration => "sockprobe_tcp_connection_duration_seconds",
            Family::Exchanges => "sockprobe_tcp_connection_exchanges",
            Family::CloseWaitDuration => "sockprobe_tcp_close_wait_duration_seconds",
        }
    }
}

struct Families {
    registry: Registry,
    opened: IntCounterVec,
    closed: IntCounterVec,
    unread_closes: IntCounterVec,
    unread_bytes: IntCounterVec,
    resets_sent: IntCounterVec,
    resets_received: IntCounterVec,
    duration: HistogramVec,
    exchanges: HistogramVec,
    close_wait_duration: HistogramVec,
    sockets: IntGaugeVec,
    close_wait_oldest: prometheus::GaugeVec,
    build_info: IntGaugeVec,
    probe_attached: IntGaugeVec,
    events_lost: IntCounter,
    tracked_sockets: IntGauge,
    series_overflow: IntCounterVec,
}

fn register<C: Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    r.register(Box::new(c.clone())).expect("metric names are unique");
    c
}

impl Families {
    fn new() -> Families {
        let r = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(&r, IntCounterVec::new(Opts::new(name, help), labels).unwrap())
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            register(&r, HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), &CONN).unwrap())
        };
        Families {
            opened: counter(Family::Opened.name(), "TCP connections that reached ESTABLISHED.", &CONN),
            closed: counter(Family::Closed.name(), "TCP connections that left ESTABLISHED/CLOSE_WAIT for good.", &CONN),
            unread_closes: counter(
                Family::UnreadCloses.name(),
                "close() while unread bytes were still queued, so the kernel reset the connection (TcpExt TCPAbortOnClose, per process).",
                &CONN,
            ),
            unread_bytes: counter(Family::UnreadBytes.name(), "Bytes thrown away by closes with unread data.", &CONN),
            resets_sent: counter(
                Family::ResetsSent.name(),
                "RSTs this host sent on the process's connections, by kernel reason.",
                &["comm", "container", "direction", "endpoint", "reason"],
            ),
            resets_received: counter(
                Family::ResetsReceived.name(),
                "RSTs received on the process's connections.",
                &CONN,
            ),
            duration: histogram(
                Family::Duration.name(),
                "Time from ESTABLISHED to the application's close.",
                vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0],
            ),
            exchanges: histogram(
                Family::Exchanges.name(),
                "Request/response exchanges a connection carried before it closed (its reuse).",
                vec![1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 1000.0],
            ),
            close_wait_duration: histogram(
                Family::CloseWaitDuration.name(),
                "Time from the peer's FIN to the process's close.",
                vec![0.001, 0.01, 0.1, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0],
            ),
            sockets: register(
                &r,
                IntGaugeVec::new(
                    Opts::new("sockprobe_tcp_sockets", "Open TCP sockets by state, now."),
                    &["comm", "container", "direction", "endpoint", "state"],
                )
                .unwrap(),
            ),
            close_wait_oldest: register(
                &r,
                prometheus::GaugeVec::new(
                    Opts::new(
                        "sockprobe_tcp_close_wait_oldest_seconds",
                        "Age of the process's oldest socket in CLOSE_WAIT (peer closed, process has not).",
                    ),
                    &PROC,
                )
                .unwrap(),
            ),
            build_info: register(
                &r,
                IntGaugeVec::new(
                    Opts::new("sockprobe_build_info", "sockprobe version and the kernel it runs on; always 1."),
                    &["version", "kernel"],
                )
                .unwrap(),
            ),
            probe_attached: register(
                &r,
                IntGaugeVec::new(
                    Opts::new("sockprobe_probe_attached", "1 if the probe is attached, 0 if not."),
                    &["probe"],
                )
                .unwrap(),
            ),
            events_lost: register(
                &r,
                IntCounter::new(
                    "sockprobe_events_lost_total",
                    "Events the kernel side could not hand over (ring buffer full).",
                )
                .unwrap(),
            ),
            tracked_sockets: register(
                &r,
                IntGauge::new("sockprobe_tracked_sockets", "Sockets held in kernel state now.").unwrap(),
            ),
            series_overflow: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "sockprobe_series_overflow_total",
                        "Label sets folded into endpoint=\"other\" by the per-process endpoint cap.",
                    ),
                    &["metric"],
                )
                .unwrap(),
            ),
            registry: r,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ProcKey {
    comm: String,
    container: String,
}

/// One label set (comm, container, direction, endpoint) after folding.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SeriesKey {
    proc: ProcKey,
    direction: &'static str,
    endpoint: String,
}

/// The kernel's identity of a label set, before any string is built: the
/// per-event fast path is one hash lookup on this.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct RawKey {
    comm: [u8; 16],
    cgroup_id: u64,
    inbound: bool,
    family: u16,
    addr: [u8; 16],
    port: u16,
}

/// Metric handles of one label set, created on first use.
struct Series {
    key: SeriesKey,
    raw_keys: Vec<RawKey>,
    opened: Option<IntCounter>,
    closed: Option<IntCounter>,
    unread_closes: Option<IntCounter>,
    unread_bytes: Option<IntCounter>,
    resets_received: Option<IntCounter>,
    resets_sent: Vec<(u32, String, IntCounter)>,
    duration: Option<Histogram>,
    exchanges: Option<Histogram>,
    close_wait_duration: Option<Histogram>,
    live: usize,
    /// Kernel monotonic ns of the last event (the event's own timestamp: no
    /// clock read per event).
    last_seen_ns: u64,
}

impl Series {
    fn labels(&self) -> [&str; 4] {
        [&self.key.proc.comm, &self.key.proc.container, self.key.direction, &self.key.endpoint]
    }
}

fn counter<'a>(slot: &'a mut Option<IntCounter>, vec: &IntCounterVec, labels: &[&str]) -> &'a IntCounter {
    slot.get_or_insert_with(|| vec.with_label_values(labels))
}

fn histogram<'a>(slot: &'a mut Option<Histogram>, vec: &HistogramVec, labels: &[&str]) -> &'a Histogram {
    slot.get_or_insert_with(|| vec.with_label_values(labels))
}

#[derive(Default)]
struct ProcState {
    endpoints: HashSet<String>,
    slots: Vec<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LiveState {
    Established,
    CloseWait,
}

impl LiveState {
    fn label(self) -> &'static str {
        match self {
            LiveState::Established => "established",
            LiveState::CloseWait => "close_wait",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct LiveSocket {
    slot: usize,
    state: LiveState,
    /// Monotonic ns when CLOSE_WAIT began (or when first seen in it).
    close_wait_since: u64,
}

/// A socket found by the start-up scan.
pub struct ExistingSocket {
    pub cookie: u64,
    pub comm: String,
    pub container: String,
    pub direction: &'static str,
    pub endpoint: String,
    pub state: LiveState,
}

pub struct Aggregator {
    f: Families,
    max_endpoints: usize,
    ttl: Duration,
    by_raw: FastMap<RawKey, usize>,
    by_key: FastMap<SeriesKey, usize>,
    slots: Vec<Option<Series>>,
    free: Vec<usize>,
    procs: FastMap<ProcKey, ProcState>,
    live: FastMap<u64, LiveSocket>,
    events_lost_seen: u64,
}

impl Aggregator {
    pub fn new(max_endpoints: u32, ttl: Duration, version: &str, kernel: &str) -> Aggregator {
        let f = Families::new();
        f.build_info.with_label_values(&[version, kernel]).set(1);
        Aggregator {
            f,
            max_endpoints: max_endpoints as usize,
            ttl,
            by_raw: FastMap::default(),
            by_key: FastMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            procs: FastMap::default(),
            live: FastMap::default(),
            events_lost_seen: 0,
        }
    }

    pub fn set_probe(&self, probe: &str, attached: bool) {
        self.f.probe_attached.with_label_values(&[probe]).set(attached as i64);
    }

    /// The slot of a label set, created (with endpoint folding) if new.
    fn slot_for(
        &mut self,
        now_ns: u64,
        comm: &str,
        container: String,
        direction: &'static str,
        endpoint: String,
        family: Family,
    ) -> usize {
        let comm = if comm.is_empty() { UNKNOWN_COMM } else { comm };
        let proc = ProcKey { comm: comm.to_string(), container };
        let p = self.procs.entry(proc.clone()).or_default();
        let endpoint = if p.endpoints.contains(&endpoint) || p.endpoints.len() < self.max_endpoints {
            p.endpoints.insert(endpoint.clone());
            endpoint
        } else {
            self.f.series_overflow.with_label_values(&[family.name()]).inc();
            OTHER_ENDPOINT.to_string()
        };
        let key = SeriesKey { proc, direction, endpoint };
        if let Some(&slot) = self.by_key.get(&key) {
            return slot;
        }
        let series = Series {
            key: key.clone(),
            raw_keys: Vec::new(),
            opened: None,
            closed: None,
            unread_closes: None,
            unread_bytes: None,
            resets_received: None,
            resets_sent: Vec::new(),
            duration: None,
            exchanges: None,
            close_wait_duration: None,
            live: 0,
            last_seen_ns: now_ns,
        };
        let slot = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(series);
                i
            }
            None => {
                self.slots.push(Some(series));
                self.slots.len() - 1
            }
        };
        self.by_key.insert(key.clone(), slot);
        if let Some(p) = self.procs.get_mut(&key.proc) {
            p.slots.push(slot);
        }
        slot
    }

    fn raw_slot(&mut self, decoder: &mut Decoder, ev: &Event, family: Family) -> usize {
        let direction = decoder.direction(ev.direction, ev.sport);
        let inbound = direction == "inbound";
        let (addr, port) = if inbound { (ev.saddr, ev.sport) } else { (ev.daddr, ev.dport) };
        let raw = RawKey { comm: ev.owner.comm, cgroup_id: ev.owner.cgroup_id, inbound, family: ev.family, addr, port };
        if let Some(&slot) = self.by_raw.get(&raw) {
            return slot;
        }
        let comm = comm_str(&ev.owner.comm);
        let container = decoder.container(ev.owner.cgroup_id);
        let ip = crate::events::addr_string(ev.family, &addr);
        let slot = self.slot_for(ev.ts_ns, &comm, container, direction, endpoint_label(&ip, port), family);
        self.by_raw.insert(raw, slot);
        if let Some(s) = self.slots[slot].as_mut() {
            s.raw_keys.push(raw);
        }
        slot
    }

    /// Accounts one kernel event.
    pub fn observe(&mut self, decoder: &mut Decoder, ev: &Event) {
        let Some(kind) = EventKind::from_u8(ev.kind) else { return };
        let family = match kind {
            EventKind::Open => Family::Opened,
            EventKind::Close => Family::Closed,
            EventKind::UnreadClose => Family::UnreadCloses,
            EventKind::ResetSent => Family::ResetsSent,
            EventKind::ResetReceived => Family::ResetsReceived,
            EventKind::CloseWait | EventKind::CloseWaitEnd => Family::CloseWaitDuration,
        };
        let slot = self.raw_slot(decoder, ev, family);
        let f = &self.f;
        let Some(s) = self.slots[slot].as_mut() else { return };
        s.last_seen_ns = s.last_seen_ns.max(ev.ts_ns);
        let labels =
            [s.key.proc.comm.as_str(), s.key.proc.container.as_str(), s.key.direction, s.key.endpoint.as_str()];
        match kind {
            EventKind::Open => {
                counter(&mut s.opened, &f.opened, &labels).inc();
            }
            EventKind::Close => {
                counter(&mut s.closed, &f.closed, &labels).inc();
                if ev.value > 0 {
                    histogram(&mut s.duration, &f.duration, &labels).observe(ev.value as f64 / 1e9);
                }
                histogram(&mut s.exchanges, &f.exchanges, &labels).observe(ev.exchanges as f64);
            }
            EventKind::UnreadClose => {
                counter(&mut s.unread_closes, &f.unread_closes, &labels).inc();
                counter(&mut s.unread_bytes, &f.unread_bytes, &labels).inc_by(ev.value);
            }
            EventKind::ResetSent => match s.resets_sent.iter().find(|(r, _, _)| *r == ev.reason) {
                Some((_, _, c)) => c.inc(),
                None => {
                    let name = decoder.reason_name(ev.reason);
                    let c = f.resets_sent.with_label_values(&[labels[0], labels[1], labels[2], labels[3], &name]);
                    c.inc();
                    s.resets_sent.push((ev.reason, name, c));
                }
            },
            EventKind::ResetReceived => {
                counter(&mut s.resets_received, &f.resets_received, &labels).inc();
            }
            EventKind::CloseWaitEnd => {
                histogram(&mut s.close_wait_duration, &f.close_wait_duration, &labels).observe(ev.value as f64 / 1e9);
            }
            EventKind::CloseWait => {}
        }
        match kind {
            EventKind::Open => self.track(ev.cookie, slot, LiveState::Established, 0),
            EventKind::CloseWait => self.track(ev.cookie, slot, LiveState::CloseWait, ev.ts_ns),
            EventKind::Close => self.untrack(ev.cookie),
            _ => {}
        }
    }

    fn track(&mut self, cookie: u64, slot: usize, state: LiveState, since: u64) {
        // Kprobe-only kernels report no cookie: no live gauges there.
        if cookie == 0 {
            return;
        }
        match self.live.get_mut(&cookie) {
            Some(l) => {
                if state == LiveState::CloseWait {
                    l.state = state;
                    l.close_wait_since = since;
                }
            }
            None => {
                self.live.insert(cookie, LiveSocket { slot, state, close_wait_since: since });
                if let Some(s) = self.slots[slot].as_mut() {
                    s.live += 1;
                }
            }
        }
    }

    fn untrack(&mut self, cookie: u64) {
        if let Some(l) = self.live.remove(&cookie)
            && let Some(s) = self.slots[l.slot].as_mut()
        {
            s.live -= 1;
        }
    }

    /// Adds a socket that existed before sockprobe started.
    pub fn add_existing(&mut self, e: ExistingSocket, now_mono_ns: u64) {
        let slot = self.slot_for(now_mono_ns, &e.comm, e.container, e.direction, e.endpoint, Family::Opened);
        self.track(e.cookie, slot, e.state, now_mono_ns);
    }

    /// Drops live sockets the kernel no longer has (missed close events).
    pub fn retain_live(&mut self, existing: &HashSet<u64>) {
        let gone: Vec<u64> = self.live.keys().filter(|c| !existing.contains(c)).copied().collect();
        for cookie in gone {
            self.untrack(cookie);
        }
    }

    /// Recomputes gauges and self-metrics, expires stale label sets, and
    /// renders the exposition.
    pub fn render(&mut self, now_mono_ns: u64, events_lost: u64, tracked_sockets: i64) -> String {
        self.expire(now_mono_ns);
        self.f.sockets.reset();
        self.f.close_wait_oldest.reset();
        let mut per_slot: HashMap<(usize, LiveState), i64> = HashMap::new();
        let mut oldest: HashMap<&ProcKey, u64> = HashMap::new();
        for l in self.live.values() {
            *per_slot.entry((l.slot, l.state)).or_default() += 1;
            if l.state == LiveState::CloseWait
                && let Some(s) = self.slots[l.slot].as_ref()
            {
                let o = oldest.entry(&s.key.proc).or_insert(l.close_wait_since);
                *o = (*o).min(l.close_wait_since);
            }
        }
        for ((slot, state), n) in per_slot {
            if let Some(s) = self.slots[slot].as_ref() {
                let [c, k, d, e] = s.labels();
                self.f.sockets.with_label_values(&[c, k, d, e, state.label()]).set(n);
            }
        }
        for (key, since) in oldest {
            let age = now_mono_ns.saturating_sub(since) as f64 / 1e9;
            self.f.close_wait_oldest.with_label_values(&[&key.comm, &key.container]).set(age);
        }
        if events_lost > self.events_lost_seen {
            self.f.events_lost.inc_by(events_lost - self.events_lost_seen);
            self.events_lost_seen = events_lost;
        }
        self.f.tracked_sockets.set(tracked_sockets);
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.f.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Forgets processes with no live socket and no event for `ttl`.
    fn expire(&mut self, now_mono_ns: u64) {
        let ttl = self.ttl.as_nanos() as u64;
        let slots = &self.slots;
        let gone: Vec<ProcKey> = self
            .procs
            .iter()
            .filter(|(_, p)| {
                p.slots
                    .iter()
                    .filter_map(|&i| slots[i].as_ref())
                    .all(|s| s.live == 0 && now_mono_ns.saturating_sub(s.last_seen_ns) > ttl)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            let Some(p) = self.procs.remove(&k) else { continue };
            for i in p.slots {
                let Some(s) = self.slots[i].take() else { continue };
                let l = s.labels();
                let f = &self.f;
                let remove = [
                    (s.opened.is_some(), &f.opened),
                    (s.closed.is_some(), &f.closed),
                    (s.unread_closes.is_some(), &f.unread_closes),
                    (s.unread_bytes.is_some(), &f.unread_bytes),
                    (s.resets_received.is_some(), &f.resets_received),
                ];
                for (present, vec) in remove {
                    if present {
                        let _ = vec.remove_label_values(&l);
                    }
                }
                for (present, vec) in [
                    (s.duration.is_some(), &f.duration),
                    (s.exchanges.is_some(), &f.exchanges),
                    (s.close_wait_duration.is_some(), &f.close_wait_duration),
                ] {
                    if present {
                        let _ = vec.remove_label_values(&l);
                    }
                }
                for (_, reason, _) in &s.resets_sent {
                    let _ = f.resets_sent.remove_label_values(&[l[0], l[1], l[2], l[3], reason]);
                }
                for raw in &s.raw_keys {
                    self.by_raw.remove(raw);
                }
                self.by_key.remove(&s.key);
                self.free.push(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use probe_common::{AF_INET, Direction, Owner, REASON_UNKNOWN};

    use super::*;
    use crate::layout::ResetReasons;

    fn event(kind: EventKind, comm: &str, dport: u16, ts_ns: u64) -> Event {
        let mut c = [0u8; 16];
        c[..comm.len()].copy_from_slice(comm.as_bytes());
        let mut daddr = [0u8; 16];
        daddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        Event {
            ts_ns,
            cookie: dport as u64,
            value: 1_000_000,
            bytes_in: 1,
            bytes_out: 1,
            owner: Owner { cgroup_id: 0, tgid: 1, _pad: 0, comm: c },
            exchanges: 1,
            reason: REASON_UNKNOWN,
            saddr: [0; 16],
            daddr,
            sport: 40000,
            dport,
            family: AF_INET,
            kind: kind as u8,
            direction: Direction::Outbound as u8,
            close_wait_ns: 0,
        }
    }

    #[test]
    fn a_close_out_of_close_wait_carries_its_end() {
        let mut close = event(EventKind::Close, "c", 80, 10);
        assert!(close.close_wait_end().is_none(), "no CLOSE_WAIT, no close_wait_end");
        close.close_wait_ns = 7;
        let end = close.close_wait_end().expect("close_wait_end folded into the close");
        assert_eq!((end.kind, end.value, end.close_wait_ns), (EventKind::CloseWaitEnd as u8, 7, 0));
        assert_eq!((end.cookie, end.ts_ns), (close.cookie, close.ts_ns));
        let mut open = event(EventKind::Open, "c", 80, 10);
        open.close_wait_ns = 7;
        assert!(open.close_wait_end().is_none(), "only close records carry it");
    }

    fn decoder() -> Decoder {
        Decoder::new(ResetReasons::default())
    }

    #[test]
    fn endpoints_fold_past_the_cap_and_count() {
        let mut a = Aggregator::new(2, Duration::from_secs(600), "0", "k");
        let mut d = decoder();
        for port in 1..=5 {
            a.observe(&mut d, &event(EventKind::Open, "c", port, 0));
        }
        let text = a.render(0, 0, 0);
        assert!(text.contains(r#"endpoint="10.0.0.1:1""#));
        assert!(text.contains(r#"endpoint="10.0.0.1:2""#));
        assert!(!text.contains(r#"endpoint="10.0.0.1:3""#));
        assert!(text.contains(r#"sockprobe_tcp_connections_opened_total{comm="c",container="",direction="outbound",endpoint="other"} 3"#), "{text}");
        assert!(
            text.contains(r#"sockprobe_series_overflow_total{metric="sockprobe_tcp_connections_opened_total"} 3"#),
            "{text}"
        );
    }

    #[test]
    fn gone_processes_expire() {
        let mut a = Aggregator::new(10, Duration::from_millis(1), "0", "k");
        let mut d = decoder();
        a.observe(&mut d, &event(EventKind::Open, "short", 1, 0));
        a.observe(&mut d, &event(EventKind::Close, "short", 1, 0));
        assert!(a.render(1_000_000, 0, 0).contains(r#"comm="short""#), "not idle for longer than the ttl yet");
        let text = a.render(5_000_000, 0, 0);
        assert!(!text.contains("short"), "{text}");
        // And it comes back cleanly.
        a.observe(&mut d, &event(EventKind::Open, "short", 1, 6_000_000));
        assert!(a.render(6_500_000, 0, 0).contains(r#"comm="short""#));
    }

    #[test]
    fn close_wait_gauges() {
        let mut a = Aggregator::new(10, Duration::from_secs(600), "0", "k");
        let mut d = decoder();
        a.observe(&mut d, &event(EventKind::Open, "leaky", 7, 0));
        a.observe(&mut d, &event(EventKind::CloseWait, "leaky", 7, 1_000_000_000));
        let text = a.render(4_000_000_000, 0, 0);
        assert!(text.contains(r#"sockprobe_tcp_sockets{comm="leaky",container="",direction="outbound",endpoint="10.0.0.1:7",state="close_wait"} 1"#), "{text}");
        assert!(text.contains(r#"sockprobe_tcp_close_wait_oldest_seconds{comm="leaky",container=""} 3"#), "{text}");
        a.observe(&mut d, &event(EventKind::Close, "leaky", 7, 0));
        let text = a.render(5_000_000_000, 0, 0);
        assert!(!text.contains("state=\"close_wait\""), "{text}");
    }
}
