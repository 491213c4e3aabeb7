//! The metric families of docs/metrics.md, registered once.
use probe_common::EventKind;
use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, core::Collector};

/// Labels of the per-process families.
pub const PROC: [&str; 2] = ["comm", "container"];

/// Per-connection counters; index into [`Families::counters`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    Opened,
    UnreadCloses,
    UnreadBytes,
    ResetsReceived,
    Retransmits,
    SynRetransmits,
}

impl Count {
    pub const ALL: [Count; 6] = [
        Count::Opened,
        Count::UnreadCloses,
        Count::UnreadBytes,
        Count::ResetsReceived,
        Count::Retransmits,
        Count::SynRetransmits,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Count::Opened => "sockprobe_tcp_connections_opened_total",
            Count::UnreadCloses => "sockprobe_tcp_unread_closes_total",
            Count::UnreadBytes => "sockprobe_tcp_unread_bytes_total",
            Count::ResetsReceived => "sockprobe_tcp_resets_received_total",
            Count::Retransmits => "sockprobe_tcp_retransmits_total",
            Count::SynRetransmits => "sockprobe_tcp_syn_retransmits_total",
        }
    }

    pub fn help(self) -> &'static str {
        match self {
            Count::Opened => "TCP connections that reached ESTABLISHED.",
            Count::UnreadCloses => {
                "close() while unread bytes were still queued, so the kernel reset the connection (TcpExt TCPAbortOnClose, per process)."
            }
            Count::UnreadBytes => "Bytes thrown away by closes with unread data.",
            Count::ResetsReceived => "RSTs received on the process's connections.",
            Count::Retransmits => {
                "Segments retransmitted on the process's connections (the kernel's TcpRetransSegs, per process and endpoint; SYNs not included)."
            }
            Count::SynRetransmits => {
                "SYNs of the process's connect()s sent again: no answer in time (the peer's SYN queue or accept queue, or the network)."
            }
        }
    }
}

/// Per-connection histograms; index into [`Families::histograms`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spread {
    Duration,
    Exchanges,
    CloseWaitDuration,
    ConnectDuration,
}

impl Spread {
    pub const ALL: [Spread; 4] =
        [Spread::Duration, Spread::Exchanges, Spread::CloseWaitDuration, Spread::ConnectDuration];

    pub fn name(self) -> &'static str {
        match self {
            Spread::Duration => "sockprobe_tcp_connection_duration_seconds",
            Spread::Exchanges => "sockprobe_tcp_connection_exchanges",
            Spread::CloseWaitDuration => "sockprobe_tcp_close_wait_duration_seconds",
            Spread::ConnectDuration => "sockprobe_tcp_connect_duration_seconds",
        }
    }

    pub fn help(self) -> &'static str {
        match self {
            Spread::Duration => "Time from ESTABLISHED to the application's close.",
            Spread::Exchanges => "Request/response exchanges a connection carried before it closed (its reuse).",
            Spread::CloseWaitDuration => "Time from the peer's FIN to the process's close.",
            Spread::ConnectDuration => "Time connect() took to establish a connection (SYN_SENT to ESTABLISHED).",
        }
    }

    pub fn buckets(self) -> &'static [f64] {
        match self {
            Spread::Duration => {
                &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0]
            }
            Spread::Exchanges => &[1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 1000.0],
            Spread::CloseWaitDuration => &[0.001, 0.01, 0.1, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0],
            // Past 0.5 s the bounds fall between Linux's SYN retransmits (1 s,
            // then doubling): each bucket is one more lost SYN.
            Spread::ConnectDuration => {
                &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.5, 3.5, 7.5, 15.5]
            }
        }
    }
}

pub const RESETS_SENT: &str = "sockprobe_tcp_resets_sent_total";
pub const RESETS_SENT_HELP: &str = "RSTs this host sent on the process's connections, by kernel reason.";
pub const CONNECT_FAILURES: &str = "sockprobe_tcp_connect_failures_total";
pub const CONNECT_FAILURES_HELP: &str = "connect() calls that got no connection, by reason: refused (a RST answered the SYN), timeout (no answer), unreachable (an ICMP error), no_local_port (EADDRNOTAVAIL: every local port to that endpoint in use), aborted (the process gave up first), other.";
pub const CLOSED: &str = "sockprobe_tcp_connections_closed_total";
pub const CLOSED_HELP: &str = "TCP connections that left ESTABLISHED/CLOSE_WAIT for good, by who ended them: local (this process closed first), peer (the peer's FIN came first), reset (a RST ended it).";

/// The family an event first lands in: the `metric` label of
/// `sockprobe_series_overflow_total` when its label set is folded.
pub fn family_of(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Open => Count::Opened.name(),
        EventKind::Close => CLOSED,
        EventKind::UnreadClose => Count::UnreadCloses.name(),
        EventKind::ResetSent => RESETS_SENT,
        EventKind::ResetReceived => Count::ResetsReceived.name(),
        EventKind::CloseWait | EventKind::CloseWaitEnd => Spread::CloseWaitDuration.name(),
        EventKind::ConnectFailed => CONNECT_FAILURES,
        EventKind::Retransmit => Count::Retransmits.name(),
    }
}

pub struct Families {
    /// Every family but the per-connection ones, which live in
    /// [`super::cells`] and render beside these (`super::exposition`).
    registry: Registry,
    pub sockets: IntGaugeVec,
    pub close_wait_oldest: GaugeVec,
    pub listen_queue: IntGaugeVec,
    pub listen_queue_max: IntGaugeVec,
    pub listen_overflows: IntCounterVec,
    /// The size of this host's (the daemon's namespace's) ip_local_port_range.
    pub local_port_range: IntGauge,
    pub build_info: IntGaugeVec,
    pub probe_attached: IntGaugeVec,
    pub events_lost: IntCounter,
    pub untracked_sockets: IntCounter,
    pub evicted_sockets: IntCounter,
    pub tracked_sockets: IntGauge,
    /// The last listing pass: records the kernel handed over, distinct
    /// sockets kept, sockets past the cap.
    pub listing_records: IntGauge,
    pub listing_sockets: IntGauge,
    pub listing_unseen: IntGauge,
    pub listing_duration: prometheus::Gauge,
    pub series_overflow: IntCounterVec,
    /// 1 while a diagnosis finding stands.
    pub finding: IntGaugeVec,
    /// TIME_WAIT sockets, estimated from local-first closes of the last 60 s.
    pub time_wait: IntGaugeVec,
    /// Remote addresses the Kubernetes watches name now.
    pub kubernetes_named: IntGauge,
    /// 1 per container the Kubernetes API names: its pod and workload.
    pub workload_info: IntGaugeVec,
    /// 1 per process with a standing finding: its language.
    pub process_info: IntGaugeVec,
}

fn register<C: Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    r.register(Box::new(c.clone())).expect("metric names are unique");
    c
}

impl Default for Families {
    fn default() -> Self {
        Families::new()
    }
}

impl Families {
    pub fn new() -> Families {
        let r = Registry::new();
        let vec = |name: &str, help: &str, labels: &[&str]| {
            register(&r, IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
        };
        let gauges = |name: &str, help: &str, labels: &[&str]| {
            register(&r, IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
        };
        Families {
            sockets: gauges(
                "sockprobe_tcp_sockets",
                "Open TCP sockets by state, now.",
                &["comm", "container", "direction", "endpoint", "state"],
            ),
            close_wait_oldest: register(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "sockprobe_tcp_close_wait_oldest_seconds",
                        "Age of the process's oldest socket in CLOSE_WAIT (peer closed, process has not).",
                    ),
                    &PROC,
                )
                .expect("valid metric"),
            ),
            listen_queue: gauges(
                "sockprobe_tcp_listen_queue",
                "Connections a listener has completed that the process has not accepted yet, at the last listing.",
                &["comm", "container", "endpoint"],
            ),
            listen_queue_max: gauges(
                "sockprobe_tcp_listen_queue_max",
                "A listener's backlog: its accept queue's length limit (listen()'s, capped by somaxconn).",
                &["comm", "container", "endpoint"],
            ),
            listen_overflows: vec(
                "sockprobe_tcp_listen_overflows_total",
                "Connections a listener dropped because its accept queue was full (SYNs and handshake ACKs; the kernel's ListenDrops, per listener), counted from the listing (--metrics.reconcile-interval).",
                &["comm", "container", "endpoint"],
            ),
            local_port_range: register(
                &r,
                IntGauge::new(
                    "sockprobe_local_port_range_size",
                    "Local ports connect() may pick (net.ipv4.ip_local_port_range, in the daemon's network namespace): the ceiling of connections to one endpoint, TIME_WAIT included.",
                )
                .expect("valid metric"),
            ),
            build_info: gauges(
                "sockprobe_build_info",
                "sockprobe version and the kernel it runs on; always 1.",
                &["version", "kernel"],
            ),
            probe_attached: gauges("sockprobe_probe_attached", "1 if the probe is attached, 0 if not.", &["probe"]),
            events_lost: register(
                &r,
                IntCounter::new(
                    "sockprobe_events_lost_total",
                    "Events the kernel side could not hand over (ring buffer full).",
                )
                .expect("valid metric"),
            ),
            untracked_sockets: register(
                &r,
                IntCounter::new(
                    "sockprobe_untracked_sockets_total",
                    "Sockets the kernel side could not start following (its socket map refused the state).",
                )
                .expect("valid metric"),
            ),
            evicted_sockets: register(
                &r,
                IntCounter::new(
                    "sockprobe_evicted_sockets_total",
                    "Sockets the kernel side stopped following to make room (every cookie-table slot they could take was full).",
                )
                .expect("valid metric"),
            ),
            tracked_sockets: register(
                &r,
                IntGauge::new("sockprobe_tracked_sockets", "Sockets held in kernel state now.").expect("valid metric"),
            ),
            listing_records: register(
                &r,
                IntGauge::new(
                    "sockprobe_listing_records",
                    "Records the last listing of every process's sockets read (one per socket, plus repeats).",
                )
                .expect("valid metric"),
            ),
            listing_sockets: register(
                &r,
                IntGauge::new(
                    "sockprobe_listing_sockets",
                    "Connections (established, CLOSE_WAIT, over but held) the last listing found, each once however many fds hold it.",
                )
                .expect("valid metric"),
            ),
            listing_unseen: register(
                &r,
                IntGauge::new(
                    "sockprobe_listing_unseen_sockets",
                    "Connections the last listing did not look at: past its cap of distinct sockets.",
                )
                .expect("valid metric"),
            ),
            listing_duration: register(
                &r,
                prometheus::Gauge::new(
                    "sockprobe_listing_duration_seconds",
                    "How long the last listing of every process's sockets took (the kernel's pass included).",
                )
                .expect("valid metric"),
            ),
            series_overflow: vec(
                "sockprobe_series_overflow_total",
                "Label sets folded into endpoint=\"other\" by the per-process endpoint cap.",
                &["metric"],
            ),
            time_wait: gauges(
                "sockprobe_tcp_time_wait_sockets",
                "Sockets in TIME_WAIT now, estimated from events: connections this host closed first in the last 60 s (each holds its local port for that 4-tuple that long).",
                &["comm", "container", "direction", "endpoint"],
            ),
            kubernetes_named: register(
                &r,
                IntGauge::new(
                    "sockprobe_kubernetes_named_addresses",
                    "Remote addresses the Kubernetes watches name now (svc/, pod/, node/ endpoints); 0 without Kubernetes or with --kubernetes.name-endpoints=false.",
                )
                .expect("valid metric"),
            ),
            workload_info: gauges(
                "sockprobe_workload_info",
                "1 for each container the Kubernetes API names (label container), with its namespace, pod and workload (the pod's controller; a Deployment's ReplicaSet as the Deployment).",
                &["container", "namespace", "pod", "workload_kind", "workload"],
            ),
            process_info: gauges(
                "sockprobe_process_info",
                "1 for each process (comm, container) with a standing finding: the language its executable is written in, and the runtime's version where known (the advice of sockprobe doctor --prometheus).",
                &["comm", "container", "language", "language_version"],
            ),
            finding: gauges(
                "sockprobe_finding",
                "1 while a diagnosis finding stands for the process and endpoint (absent otherwise); see /api/v1/findings for evidence and advice.",
                &["finding", "comm", "container", "direction", "endpoint"],
            ),
            registry: r,
        }
    }

    pub fn registry(&self) -> Registry {
        self.registry.clone()
    }
}
