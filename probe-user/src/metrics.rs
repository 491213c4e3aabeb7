//! Events turned into the metrics of contract.md, with bounded cardinality:
//! at most N `endpoint` values per (comm, container), the rest folded into
//! `endpoint="other"`, and label sets of processes gone for a while expired.
use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
    core::Collector,
};
use probe_common::EventKind;

use crate::events::Record;

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
        let counter = |name: &str, help: &str, labels: &[&str]| register(&r, IntCounterVec::new(Opts::new(name, help), labels).unwrap());
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
            resets_received: counter(Family::ResetsReceived.name(), "RSTs received on the process's connections.", &CONN),
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
                IntGaugeVec::new(Opts::new("sockprobe_build_info", "sockprobe version and the kernel it runs on; always 1."), &["version", "kernel"])
                    .unwrap(),
            ),
            probe_attached: register(
                &r,
                IntGaugeVec::new(Opts::new("sockprobe_probe_attached", "1 if the probe is attached, 0 if not."), &["probe"]).unwrap(),
            ),
            events_lost: register(
                &r,
                IntCounter::new("sockprobe_events_lost_total", "Events the kernel side could not hand over (ring buffer full).").unwrap(),
            ),
            tracked_sockets: register(&r, IntGauge::new("sockprobe_tracked_sockets", "Sockets held in kernel state now.").unwrap()),
            series_overflow: register(
                &r,
                IntCounterVec::new(
                    Opts::new("sockprobe_series_overflow_total", "Label sets folded into endpoint=\"other\" by the per-process endpoint cap."),
                    &["metric"],
                )
                .unwrap(),
            ),
            registry: r,
        }
    }

    fn remove(&self, family: Family, labels: &[String]) {
        let l: Vec<&str> = labels.iter().map(String::as_str).collect();
        let _ = match family {
            Family::Opened => self.opened.remove_label_values(&l),
            Family::Closed => self.closed.remove_label_values(&l),
            Family::UnreadCloses => self.unread_closes.remove_label_values(&l),
            Family::UnreadBytes => self.unread_bytes.remove_label_values(&l),
            Family::ResetsSent => self.resets_sent.remove_label_values(&l),
            Family::ResetsReceived => self.resets_received.remove_label_values(&l),
            Family::Duration => self.duration.remove_label_values(&l),
            Family::Exchanges => self.exchanges.remove_label_values(&l),
            Family::CloseWaitDuration => self.close_wait_duration.remove_label_values(&l),
        };
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ProcKey {
    comm: String,
    container: String,
}

#[derive(Default)]
struct ProcState {
    endpoints: HashSet<String>,
    folded: HashSet<(Family, String)>,
    series: HashSet<(Family, Vec<String>)>,
    last_seen: Option<Instant>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

#[derive(Clone, Debug)]
struct LiveSocket {
    key: ProcKey,
    direction: &'static str,
    endpoint: String,
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
    procs: HashMap<ProcKey, ProcState>,
    live: HashMap<u64, LiveSocket>,
    events_lost_seen: u64,
}

impl Aggregator {
    pub fn new(max_endpoints: u32, ttl: Duration, version: &str, kernel: &str) -> Aggregator {
        let f = Families::new();
        f.build_info.with_label_values(&[version, kernel]).set(1);
        Aggregator { f, max_endpoints: max_endpoints as usize, ttl, procs: HashMap::new(), live: HashMap::new(), events_lost_seen: 0 }
    }

    pub fn set_probe(&self, probe: &str, attached: bool) {
        self.f.probe_attached.with_label_values(&[probe]).set(attached as i64);
    }

    fn key(comm: &str, container: &str) -> ProcKey {
        let comm = if comm.is_empty() { UNKNOWN_COMM } else { comm };
        ProcKey { comm: comm.to_string(), container: container.to_string() }
    }

    /// The endpoint label for this process, folded past the cap.
    fn endpoint(&mut self, key: &ProcKey, endpoint: String, family: Family) -> String {
        let p = self.procs.entry(key.clone()).or_default();
        p.last_seen = Some(Instant::now());
        if p.endpoints.contains(&endpoint) {
            return endpoint;
        }
        if p.endpoints.len() < self.max_endpoints {
            p.endpoints.insert(endpoint.clone());
            return endpoint;
        }
        if p.folded.insert((family, endpoint)) {
            self.f.series_overflow.with_label_values(&[family.name()]).inc();
        }
        OTHER_ENDPOINT.to_string()
    }

    fn labels(&mut self, key: &ProcKey, r: &Record, family: Family) -> Vec<String> {
        let endpoint = self.endpoint(key, r.endpoint(), family);
        vec![key.comm.clone(), key.container.clone(), r.direction.to_string(), endpoint]
    }

    fn remember(&mut self, key: &ProcKey, family: Family, labels: &[String]) {
        if let Some(p) = self.procs.get_mut(key) {
            p.series.insert((family, labels.to_vec()));
        }
    }

    pub fn observe(&mut self, r: &Record, ts_mono_ns: u64) {
        let Some(kind) = r.kind else { return };
        let key = Self::key(&r.comm, &r.container);
        let (family, extra) = match kind {
            EventKind::Open => (Family::Opened, None),
            EventKind::Close => (Family::Closed, None),
            EventKind::UnreadClose => (Family::UnreadCloses, None),
            EventKind::ResetSent => (Family::ResetsSent, r.reason.clone()),
            EventKind::ResetReceived => (Family::ResetsReceived, None),
            EventKind::CloseWait => (Family::CloseWaitDuration, None),
            EventKind::CloseWaitEnd => (Family::CloseWaitDuration, None),
        };
        let labels = self.labels(&key, r, family);
        let l: Vec<&str> = labels.iter().map(String::as_str).collect();
        match kind {
            EventKind::Open => {
                self.f.opened.with_label_values(&l).inc();
                self.remember(&key, Family::Opened, &labels);
                self.track(r.cookie, &key, r.direction, &labels[3], LiveState::Established, 0);
            }
            EventKind::Close => {
                self.f.closed.with_label_values(&l).inc();
                if let Some(d) = r.duration_ns.filter(|d| *d > 0) {
                    self.f.duration.with_label_values(&l).observe(d as f64 / 1e9);
                    self.remember(&key, Family::Duration, &labels);
                }
                if let Some(e) = r.exchanges {
                    self.f.exchanges.with_label_values(&l).observe(e as f64);
                    self.remember(&key, Family::Exchanges, &labels);
                }
                self.remember(&key, Family::Closed, &labels);
                if r.cookie != 0 {
                    self.live.remove(&r.cookie);
                }
            }
            EventKind::UnreadClose => {
                self.f.unread_closes.with_label_values(&l).inc();
                self.f.unread_bytes.with_label_values(&l).inc_by(r.unread_bytes.unwrap_or(0));
                self.remember(&key, Family::UnreadCloses, &labels);
                self.remember(&key, Family::UnreadBytes, &labels);
            }
            EventKind::ResetSent => {
                let mut with_reason = labels.clone();
                with_reason.push(extra.unwrap_or_else(|| "unknown".into()));
                let lr: Vec<&str> = with_reason.iter().map(String::as_str).collect();
                self.f.resets_sent.with_label_values(&lr).inc();
                self.remember(&key, Family::ResetsSent, &with_reason);
            }
            EventKind::ResetReceived => {
                self.f.resets_received.with_label_values(&l).inc();
                self.remember(&key, Family::ResetsReceived, &labels);
            }
            EventKind::CloseWait => {
                self.track(r.cookie, &key, r.direction, &labels[3], LiveState::CloseWait, ts_mono_ns);
            }
            EventKind::CloseWaitEnd => {
                if let Some(age) = r.age_ns {
                    self.f.close_wait_duration.with_label_values(&l).observe(age as f64 / 1e9);
                    self.remember(&key, Family::CloseWaitDuration, &labels);
                }
            }
        }
    }

    fn track(&mut self, cookie: u64, key: &ProcKey, direction: &'static str, endpoint: &str, state: LiveState, since: u64) {
        // Kprobe-only kernels report no cookie: no live gauges there.
        if cookie == 0 {
            return;
        }
        let entry = self.live.entry(cookie).or_insert_with(|| LiveSocket {
            key: key.clone(),
            direction,
            endpoint: endpoint.to_string(),
            state,
            close_wait_since: since,
        });
        if state == LiveState::CloseWait {
            entry.state = LiveState::CloseWait;
            entry.close_wait_since = since;
        }
    }

    /// Adds a socket that existed before sockprobe started.
    pub fn add_existing(&mut self, s: ExistingSocket, now_mono_ns: u64) {
        let key = Self::key(&s.comm, &s.container);
        let endpoint = self.endpoint(&key, s.endpoint, Family::Opened);
        self.track(s.cookie, &key, s.direction, &endpoint, s.state, now_mono_ns);
    }

    /// Drops live sockets the kernel no longer has (missed close events).
    pub fn retain_live(&mut self, existing: &HashSet<u64>) {
        self.live.retain(|cookie, _| existing.contains(cookie));
    }

    pub fn live_sockets(&self) -> usize {
        self.live.len()
    }

    /// Recomputes gauges and self-metrics, expires stale label sets, and
    /// renders the exposition.
    pub fn render(&mut self, now_mono_ns: u64, events_lost: u64, tracked_sockets: i64) -> String {
        self.expire();
        self.f.sockets.reset();
        self.f.close_wait_oldest.reset();
        let mut oldest: HashMap<&ProcKey, u64> = HashMap::new();
        for s in self.live.values() {
            self.f.sockets.with_label_values(&[&s.key.comm, &s.key.container, s.direction, &s.endpoint, s.state.label()]).inc();
            if s.state == LiveState::CloseWait {
                let o = oldest.entry(&s.key).or_insert(s.close_wait_since);
                *o = (*o).min(s.close_wait_since);
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
    fn expire(&mut self) {
        let live_keys: HashSet<&ProcKey> = self.live.values().map(|s| &s.key).collect();
        let ttl = self.ttl;
        let gone: Vec<ProcKey> = self
            .procs
            .iter()
            .filter(|(k, p)| !live_keys.contains(k) && p.last_seen.is_none_or(|t| t.elapsed() > ttl))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            if let Some(p) = self.procs.remove(&k) {
                for (family, labels) in &p.series {
                    self.f.remove(*family, labels);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: EventKind, comm: &str, dport: u16) -> Record {
        Record {
            ts: String::new(),
            event: kind.name(),
            pid: 1,
            comm: comm.into(),
            container: String::new(),
            cookie: dport as u64,
            family: "ipv4",
            saddr: "127.0.0.1".into(),
            sport: 40000,
            daddr: "10.0.0.1".into(),
            dport,
            direction: "outbound",
            duration_ns: Some(1_000_000),
            bytes_in: Some(1),
            bytes_out: Some(1),
            exchanges: Some(1),
            unread_bytes: Some(10),
            reason: Some("abort_on_close".into()),
            age_ns: Some(1),
            kind: Some(kind),
            cgroup_id: 0,
            ts_mono_ns: 0,
        }
    }

    #[test]
    fn endpoints_fold_past_the_cap_and_count() {
        let mut a = Aggregator::new(2, Duration::from_secs(600), "0", "k");
        for port in 1..=5 {
            a.observe(&record(EventKind::Open, "c", port), 0);
        }
        let text = a.render(0, 0, 0);
        assert!(text.contains(r#"endpoint="10.0.0.1:1""#));
        assert!(text.contains(r#"endpoint="10.0.0.1:2""#));
        assert!(!text.contains(r#"endpoint="10.0.0.1:3""#));
        assert!(text.contains(r#"sockprobe_tcp_connections_opened_total{comm="c",container="",direction="outbound",endpoint="other"} 3"#), "{text}");
        assert!(text.contains(r#"sockprobe_series_overflow_total{metric="sockprobe_tcp_connections_opened_total"} 3"#), "{text}");
    }

    #[test]
    fn gone_processes_expire() {
        let mut a = Aggregator::new(10, Duration::from_millis(1), "0", "k");
        a.observe(&record(EventKind::Open, "short", 1), 0);
        a.observe(&record(EventKind::Close, "short", 1), 0);
        std::thread::sleep(Duration::from_millis(5));
        let text = a.render(0, 0, 0);
        assert!(!text.contains("short"), "{text}");
    }

    #[test]
    fn close_wait_gauges() {
        let mut a = Aggregator::new(10, Duration::from_secs(600), "0", "k");
        a.observe(&record(EventKind::Open, "leaky", 7), 0);
        a.observe(&record(EventKind::CloseWait, "leaky", 7), 1_000_000_000);
        let text = a.render(4_000_000_000, 0, 0);
        assert!(text.contains(r#"sockprobe_tcp_sockets{comm="leaky",container="",direction="outbound",endpoint="10.0.0.1:7",state="close_wait"} 1"#), "{text}");
        assert!(text.contains(r#"sockprobe_tcp_close_wait_oldest_seconds{comm="leaky",container=""} 3"#), "{text}");
        a.observe(&record(EventKind::Close, "leaky", 7), 0);
        let text = a.render(5_000_000_000, 0, 0);
        assert!(!text.contains("state=\"close_wait\""), "{text}");
    }
}
