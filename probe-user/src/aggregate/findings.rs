//! Diagnosis: the rules that turn a window of the aggregates into named
//! bugs, per process x endpoint x direction (docs/diagnosis.md). Pure logic:
//! [`super::window`] feeds it [`Tally`]s and live-socket numbers; the advice
//! is [`super::advice`]'s; the language of each process is filled in by
//! whoever can read executables (export, cmd).
use std::{collections::BTreeMap, time::Duration};

use probe_common::Closer;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::advice::advice;
pub use super::window::Tally;
use crate::identity::language::Languages;

/// When a finding stands (docs/diagnosis.md; `[diagnosis]` in the config).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    /// The sliding window the numbers are taken over.
    pub window: Duration,
    /// Connections closed in the window before reuse is judged
    /// (`no_reuse`, `peer_closes`): below it, the rate is not meaningful.
    pub min_connections: u64,
    /// Unread closes in the window for `unread_close`.
    pub min_unread_closes: u64,
    /// Sockets in CLOSE_WAIT (or over but held) for `close_wait_leak`
    /// (`closed_fd_leak`)...
    pub min_held_sockets: u64,
    /// ...the oldest of them at least this old.
    pub close_wait_age: Duration,
    /// Resets received in the window for `resets_received`.
    pub min_resets: u64,
    /// A connect() slower than this is slow (`slow_connect`: most of the
    /// window's are).
    pub slow_connect: Duration,
    /// Share of the data segments sent that went again, for `retransmits`.
    pub retransmit_share: f64,
    /// Share of the local port range that TIME_WAIT sockets to one endpoint
    /// may take before `port_exhaustion`.
    pub port_share: f64,
    /// Failed connect()s in the window for `connect_failures`; also the SYN
    /// retransmits and the connects `slow_connect` needs before it judges.
    pub min_connect_failures: u64,
    /// Retransmitted segments in the window before `retransmits` judges.
    pub min_retransmits: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            window: Duration::from_secs(300),
            min_connections: 10,
            min_unread_closes: 3,
            min_held_sockets: 3,
            close_wait_age: Duration::from_secs(5),
            min_resets: 5,
            slow_connect: Duration::from_millis(200),
            retransmit_share: 0.02,
            port_share: 0.5,
            min_connect_failures: 3,
            min_retransmits: 10,
        }
    }
}

/// Share of the window's closes past which a reuse finding stands.
pub const MOST: f64 = 0.5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    UnreadClose,
    CloseWaitLeak,
    ClosedFdLeak,
    NoReuse,
    PeerCloses,
    ResetsReceived,
    SlowConnect,
    ConnectFailures,
    ListenOverflow,
    PortExhaustion,
    Retransmits,
}

impl FindingKind {
    pub const ALL: [FindingKind; 11] = [
        FindingKind::UnreadClose,
        FindingKind::CloseWaitLeak,
        FindingKind::ClosedFdLeak,
        FindingKind::NoReuse,
        FindingKind::PeerCloses,
        FindingKind::ResetsReceived,
        FindingKind::SlowConnect,
        FindingKind::ConnectFailures,
        FindingKind::ListenOverflow,
        FindingKind::PortExhaustion,
        FindingKind::Retransmits,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FindingKind::UnreadClose => "unread_close",
            FindingKind::CloseWaitLeak => "close_wait_leak",
            FindingKind::ClosedFdLeak => "closed_fd_leak",
            FindingKind::NoReuse => "no_reuse",
            FindingKind::PeerCloses => "peer_closes",
            FindingKind::ResetsReceived => "resets_received",
            FindingKind::SlowConnect => "slow_connect",
            FindingKind::ConnectFailures => "connect_failures",
            FindingKind::ListenOverflow => "listen_overflow",
            FindingKind::PortExhaustion => "port_exhaustion",
            FindingKind::Retransmits => "retransmits",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Critical,
}

/// One diagnosis, as `/api/v1/findings` and `sockprobe doctor` show it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Finding {
    pub finding: FindingKind,
    pub severity: Severity,
    pub comm: String,
    pub container: String,
    pub direction: String,
    pub endpoint: String,
    pub pids: Vec<u32>,
    /// `go`, `python`, `java`, `node`, ... or `unknown`.
    pub language: String,
    /// The runtime's version where the executable says (Go's buildinfo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language_version: Option<String>,
    pub evidence: BTreeMap<String, Value>,
    pub summary: String,
    pub advice: String,
}

/// A process x endpoint x direction as the window saw it.
pub struct Observed<'a> {
    pub comm: &'a str,
    pub container: &'a str,
    pub direction: &'a str,
    pub endpoint: &'a str,
    pub pids: &'a [u32],
    /// The window's numbers ([`Tally::since`] the oldest mark).
    pub window: Tally,
    /// Seconds the window actually covers (shorter right after start).
    pub span_s: f64,
    pub close_wait: u64,
    pub close_wait_oldest_s: f64,
    /// Sockets whose connection is over but whose fd is still held.
    pub closed_held: u64,
    /// TIME_WAIT sockets now (estimated), and the local ports there are.
    pub time_wait: u64,
    pub local_ports: u32,
    /// Outbound: what a listener of this host on the endpoint dropped in
    /// the window (its accept queue was full).
    pub endpoint_listen_drops: u64,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

fn round(v: f64) -> Value {
    json!((v * 1000.0).round() / 1000.0)
}

/// The findings that stand for `o`.
pub fn evaluate(o: &Observed, t: &Thresholds) -> Vec<Finding> {
    let w = &o.window;
    let closes = w.closes();
    let per_s = |n: u64| round(n as f64 / o.span_s.max(1.0));
    let exchanges_per_connection = round(ratio(w.exchanges, closes));
    let outbound = o.direction == "outbound";
    let mut out = Vec::new();
    let mut add = |kind: FindingKind, severity: Severity, evidence: Vec<(&'static str, Value)>, summary: String| {
        out.push(Finding {
            finding: kind,
            severity,
            comm: o.comm.to_string(),
            container: o.container.to_string(),
            direction: o.direction.to_string(),
            endpoint: o.endpoint.to_string(),
            pids: o.pids.to_vec(),
            language: "unknown".into(),
            language_version: None,
            evidence: evidence.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            summary,
            advice: advice(kind, outbound, "unknown").to_string(),
        });
    };

    if w.unread_closes >= t.min_unread_closes {
        let share = ratio(w.unread_closes, closes);
        add(
            FindingKind::UnreadClose,
            if share >= MOST { Severity::Critical } else { Severity::Warning },
            vec![
                ("unread_closes", json!(w.unread_closes)),
                ("unread_bytes", json!(w.unread_bytes)),
                ("connections_closed", json!(closes)),
                ("unread_close_share", round(share)),
                ("unread_closes_per_second", per_s(w.unread_closes)),
            ],
            format!(
                "{} closed {} of {} connections to {} with {} bytes still unread: each was reset instead of reused",
                o.comm, w.unread_closes, closes, o.endpoint, w.unread_bytes
            ),
        );
    }

    let age = t.close_wait_age.as_secs_f64();
    if o.close_wait >= t.min_held_sockets && o.close_wait_oldest_s >= age {
        let growing = o.close_wait > w.close_wait;
        add(
            FindingKind::CloseWaitLeak,
            if growing && o.close_wait >= 2 * t.min_held_sockets { Severity::Critical } else { Severity::Warning },
            vec![
                ("close_wait_sockets", json!(o.close_wait)),
                ("close_wait_oldest_seconds", round(o.close_wait_oldest_s)),
                ("close_wait_sockets_at_window_start", json!(w.close_wait)),
                ("growing", json!(growing)),
            ],
            format!(
                "{} holds {} sockets to {} that the peer closed (CLOSE_WAIT), the oldest for {:.0} s{}",
                o.comm,
                o.close_wait,
                o.endpoint,
                o.close_wait_oldest_s,
                if growing { format!(", up from {} at the window's start", w.close_wait) } else { String::new() }
            ),
        );
    }

    if o.closed_held >= t.min_held_sockets {
        add(
            FindingKind::ClosedFdLeak,
            Severity::Warning,
            vec![("closed_sockets_held", json!(o.closed_held))],
            format!(
                "{} still holds {} sockets to {} whose connection is over (reset or timed out)",
                o.comm, o.closed_held, o.endpoint
            ),
        );
    }

    let local = Closer::Local as usize - 1;
    let peer = Closer::Peer as usize - 1;
    // Closed here, after one exchange, with nothing unread (an unread close
    // is a reset, not a local close). Clients only: a server closing after
    // one request may be timing out a client that never reused (a leak), and
    // a server without keep-alive shows as its clients' `peer_closes`.
    let one_local = w.one_exchange[local];
    if outbound && one_local >= t.min_connections && ratio(one_local, closes) >= MOST {
        add(
            FindingKind::NoReuse,
            Severity::Warning,
            vec![
                ("connections_closed", json!(closes)),
                ("closed_here_after_one_exchange", json!(one_local)),
                ("exchanges_per_connection", exchanges_per_connection.clone()),
                ("connections_per_second", per_s(closes)),
            ],
            format!(
                "{} closed {} of {} connections to {} after a single exchange: a new connection (and handshake) per request",
                o.comm, one_local, closes, o.endpoint
            ),
        );
    }

    // Only a client can act on a server that ends its connections.
    let one_peer = w.one_exchange[peer];
    if outbound && one_peer >= t.min_connections && ratio(one_peer, closes) >= MOST {
        add(
            FindingKind::PeerCloses,
            Severity::Warning,
            vec![
                ("connections_closed", json!(closes)),
                ("closed_by_peer_after_one_exchange", json!(one_peer)),
                ("exchanges_per_connection", exchanges_per_connection),
                ("connections_per_second", per_s(closes)),
            ],
            format!(
                "{} ends {} of {}'s {} connections to it after a single exchange",
                o.endpoint, one_peer, o.comm, closes
            ),
        );
    }

    connection_findings(o, t, &mut add);

    if w.resets_received >= t.min_resets {
        add(
            FindingKind::ResetsReceived,
            Severity::Warning,
            vec![
                ("resets_received", json!(w.resets_received)),
                ("resets_received_per_second", per_s(w.resets_received)),
                ("connections_closed", json!(closes)),
            ],
            format!(
                "{} received {} resets on its connections {} {}",
                o.comm,
                w.resets_received,
                if outbound { "to" } else { "from clients of" },
                o.endpoint
            ),
        );
    }
    out
}

/// How the connections begin and what they lose: `slow_connect`,
/// `connect_failures`, `listen_overflow`, `port_exhaustion`, `retransmits`.
fn connection_findings(
    o: &Observed,
    t: &Thresholds,
    add: &mut impl FnMut(FindingKind, Severity, Vec<(&'static str, Value)>, String),
) {
    let c = &o.window.connect;
    let (connects, slow, syn_retrans) = (c.connects as u64, c.slow_connects as u64, c.syn_retransmits as u64);
    let failures = c.failures as u64;
    let outbound = o.direction == "outbound";
    let per_s = |n: u64| round(n as f64 / o.span_s.max(1.0));
    let attempts = connects + failures;
    let median_slow = connects >= t.min_connect_failures && slow * 2 > connects;
    let syns_lost = syn_retrans >= t.min_connect_failures && syn_retrans * 10 >= attempts;
    if outbound && (median_slow || syns_lost) {
        let cause = if o.endpoint_listen_drops > 0 {
            format!(
                "its listener on this host dropped {} connections (accept queue full: see listen_overflow)",
                o.endpoint_listen_drops
            )
        } else {
            "no listener on this host overflowed: the network or the peer's SYN or accept queue".to_string()
        };
        add(
            FindingKind::SlowConnect,
            Severity::Warning,
            vec![
                ("connects", json!(connects)),
                ("slow_connects", json!(slow)),
                ("slow_connect_seconds", round(t.slow_connect.as_secs_f64())),
                ("syn_retransmits", json!(syn_retrans)),
                ("local_listener_overflows", json!(o.endpoint_listen_drops)),
            ],
            format!(
                "{}'s connects to {} are slow: {} of {} took over {} ms, {} SYNs sent again; {}",
                o.comm,
                o.endpoint,
                slow,
                connects,
                t.slow_connect.as_millis(),
                syn_retrans,
                cause
            ),
        );
    }
    if outbound && failures >= t.min_connect_failures {
        let other = failures.saturating_sub((c.refused + c.timeouts + c.no_local_port) as u64);
        add(
            FindingKind::ConnectFailures,
            if failures > connects { Severity::Critical } else { Severity::Warning },
            vec![
                ("connect_failures", json!(failures)),
                ("refused", json!(c.refused)),
                ("timeout", json!(c.timeouts)),
                ("no_local_port", json!(c.no_local_port)),
                ("other", json!(other)),
                ("connects", json!(connects)),
                ("connect_failures_per_second", per_s(failures)),
            ],
            format!(
                "{} failed {} of {} connects to {}: {} refused (nothing listens), {} timed out (no answer), {} without a free local port, {} other",
                o.comm, failures, attempts, o.endpoint, c.refused, c.timeouts, c.no_local_port, other
            ),
        );
    }
    let drops = c.listen_drops as u64;
    if !outbound && drops > 0 {
        add(
            FindingKind::ListenOverflow,
            Severity::Critical,
            vec![("listen_overflows", json!(drops)), ("listen_overflows_per_second", per_s(drops))],
            format!(
                "{}'s listener on {} dropped {} connections: its accept queue was full (the process does not accept() fast enough, or its backlog is small)",
                o.comm, o.endpoint, drops
            ),
        );
    }
    let no_port = c.no_local_port as u64;
    let ports = o.local_ports.max(1) as f64;
    let crowded = o.local_ports > 0 && o.time_wait as f64 >= t.port_share * ports;
    if outbound && (no_port > 0 || crowded) {
        add(
            FindingKind::PortExhaustion,
            if no_port > 0 { Severity::Critical } else { Severity::Warning },
            vec![
                ("time_wait_sockets", json!(o.time_wait)),
                ("local_port_range", json!(o.local_ports)),
                ("time_wait_share", round(o.time_wait as f64 / ports)),
                ("no_local_port_failures", json!(no_port)),
            ],
            format!(
                "{} holds {} local ports in TIME_WAIT to {} ({} in the range){}",
                o.comm,
                o.time_wait,
                o.endpoint,
                o.local_ports,
                if no_port > 0 {
                    format!(", and {no_port} connects found no free port (EADDRNOTAVAIL)")
                } else {
                    String::new()
                }
            ),
        );
    }
    let (retrans, sent) = (c.retransmits as u64, c.segments_out as u64);
    // Segments sent are counted at close: a long connection's retransmits
    // may come before its segments do, so the share is of at least those.
    let share = ratio(retrans, sent.max(retrans));
    if retrans >= t.min_retransmits && share >= t.retransmit_share {
        add(
            FindingKind::Retransmits,
            if share >= 0.1 { Severity::Critical } else { Severity::Warning },
            vec![
                ("retransmits", json!(retrans)),
                ("segments_sent", json!(sent)),
                ("retransmit_share", round(share)),
                ("retransmits_per_second", per_s(retrans)),
            ],
            format!(
                "{:.1}% of the segments {} sent {} {} were lost and sent again ({} of {}): packet loss on the way, not an application bug",
                share * 100.0,
                o.comm,
                if outbound { "to" } else { "to clients of" },
                o.endpoint,
                retrans,
                sent
            ),
        );
    }
}

/// Fills in each finding's language (from its first pid whose executable
/// tells) and the advice in that language's terms.
pub fn localize(findings: &mut [Finding], mut language_of: impl FnMut(u32) -> Option<(String, Option<String>)>) {
    for f in findings {
        if let Some((language, version)) = f.pids.iter().find_map(|&pid| language_of(pid)) {
            f.advice = advice(f.finding, f.direction == "outbound", &language).to_string();
            f.language = language;
            f.language_version = version;
        }
    }
}

/// How long a report waits for the languages of the processes it names (a
/// hostile executable may sit on a stalled filesystem): whatever is not told
/// by then is `unknown`.
pub const LANGUAGE_WAIT: Duration = Duration::from_secs(2);

/// [`localize`] from `languages`: the pids the findings name are asked for
/// (most are told already: the resolver saw each pid early) and waited for
/// up to [`LANGUAGE_WAIT`].
pub async fn localize_from(findings: &mut [Finding], languages: &Languages) {
    let pids: Vec<u32> = findings.iter().flat_map(|f| f.pids.iter().copied()).collect();
    languages.told(&pids, LANGUAGE_WAIT).await;
    localize(findings, |pid| languages.get(pid).flatten().map(|l| (l.name.to_string(), l.version)));
}

/// The findings document (`GET /api/v1/findings`, `sockprobe doctor --json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub generated: String,
    pub window_seconds: u64,
    /// What the window covers so far (less than `window_seconds` after start-up).
    #[serde(default)]
    pub observed_seconds: u64,
    pub findings: Vec<Finding>,
}

/// One process x endpoint x direction with its cumulative numbers
/// (`GET /api/v1/connections`, what `sockprobe top` shows as rates).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Row {
    pub comm: String,
    pub container: String,
    pub direction: String,
    pub endpoint: String,
    pub opened: u64,
    pub closed: u64,
    pub exchanges: u64,
    pub unread_closes: u64,
    pub resets_received: u64,
    pub close_wait: u64,
    pub close_wait_oldest_seconds: f64,
    pub findings: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(window: Tally) -> Observed<'static> {
        Observed {
            comm: "c",
            container: "",
            direction: "outbound",
            endpoint: "10.0.0.1:80",
            pids: &[1],
            window,
            span_s: 60.0,
            close_wait: 0,
            close_wait_oldest_s: 0.0,
            closed_held: 0,
            time_wait: 0,
            local_ports: 28232,
            endpoint_listen_drops: 0,
        }
    }

    fn kinds(o: &Observed) -> Vec<FindingKind> {
        evaluate(o, &Thresholds::default()).iter().map(|f| f.finding).collect()
    }

    #[test]
    fn a_healthy_client_raises_nothing() {
        // 1000 requests over 5 connections, closed at the end by the client.
        let mut t = Tally::default();
        for _ in 0..5 {
            t.record_close(Closer::Local, 200);
        }
        assert!(kinds(&observed(t)).is_empty());
    }

    #[test]
    fn one_exchange_per_connection_closed_here_is_no_reuse_closed_there_is_peer_closes() {
        let mut here = Tally::default();
        let mut there = Tally::default();
        for _ in 0..50 {
            here.record_close(Closer::Local, 1);
            there.record_close(Closer::Peer, 1);
        }
        assert_eq!(kinds(&observed(here)), [FindingKind::NoReuse]);
        assert_eq!(kinds(&observed(there)), [FindingKind::PeerCloses]);
        // Judged on the client's side only.
        assert!(kinds(&Observed { direction: "inbound", ..observed(there) }).is_empty());
        assert!(kinds(&Observed { direction: "inbound", ..observed(here) }).is_empty());
    }

    #[test]
    fn too_few_connections_are_not_judged() {
        let mut t = Tally::default();
        for _ in 0..9 {
            t.record_close(Closer::Local, 1);
        }
        assert!(kinds(&observed(t)).is_empty());
    }

    #[test]
    fn unread_closes_and_close_wait() {
        let mut t = Tally { unread_closes: 20, unread_bytes: 20 << 10, ..Tally::default() };
        for _ in 0..20 {
            t.record_close(Closer::Reset, 1);
        }
        let f = evaluate(&observed(t), &Thresholds::default());
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].finding, f[0].severity), (FindingKind::UnreadClose, Severity::Critical));
        let cw = Observed { close_wait: 4, close_wait_oldest_s: 6.0, ..observed(Tally::default()) };
        assert_eq!(kinds(&cw), [FindingKind::CloseWaitLeak]);
        let young = Observed { close_wait: 4, close_wait_oldest_s: 1.0, ..observed(Tally::default()) };
        assert!(kinds(&young).is_empty());
    }

    fn connects(c: super::super::window::ConnectTally) -> Tally {
        Tally { connect: c, ..Tally::default() }
    }

    #[test]
    fn connection_findings_stand_for_the_faulty_case_only() {
        use super::super::window::ConnectTally;
        let healthy = ConnectTally { connects: 100, segments_out: 10_000, retransmits: 20, ..Default::default() };
        assert!(kinds(&observed(connects(healthy))).is_empty(), "0.2% retransmitted, fast connects");
        // Most connects slow, or many SYNs lost.
        let slow = ConnectTally { connects: 10, slow_connects: 6, ..Default::default() };
        assert_eq!(kinds(&observed(connects(slow))), [FindingKind::SlowConnect]);
        let lost = ConnectTally { connects: 20, syn_retransmits: 3, ..Default::default() };
        assert_eq!(kinds(&observed(connects(lost))), [FindingKind::SlowConnect]);
        let few = ConnectTally { connects: 40, syn_retransmits: 3, ..Default::default() };
        assert!(kinds(&observed(connects(few))).is_empty(), "3 lost SYNs in 40 connects");
        // A local listener that overflowed is named as the cause.
        let f = evaluate(&Observed { endpoint_listen_drops: 7, ..observed(connects(slow)) }, &Thresholds::default());
        assert!(f[0].summary.contains("dropped 7"), "{}", f[0].summary);
        let failed = ConnectTally { connects: 1, failures: 4, refused: 3, timeouts: 1, ..Default::default() };
        let f = evaluate(&observed(connects(failed)), &Thresholds::default());
        assert_eq!((f[0].finding, f[0].severity), (FindingKind::ConnectFailures, Severity::Critical));
        assert_eq!((f[0].evidence["refused"].clone(), f[0].evidence["timeout"].clone()), (json!(3), json!(1)));
        // A listener's drops: on its inbound label set only.
        let dropped = ConnectTally { listen_drops: 2, ..Default::default() };
        assert!(kinds(&observed(connects(dropped))).is_empty());
        let inbound = Observed { direction: "inbound", ..observed(connects(dropped)) };
        assert_eq!(kinds(&inbound), [FindingKind::ListenOverflow]);
        // Ports: any EADDRNOTAVAIL, or TIME_WAIT past half the range.
        let no_port = ConnectTally { failures: 1, no_local_port: 1, connects: 50, ..Default::default() };
        assert_eq!(kinds(&observed(connects(no_port))), [FindingKind::PortExhaustion]);
        let crowded = Observed { time_wait: 15_000, ..observed(Tally::default()) };
        assert_eq!(kinds(&crowded), [FindingKind::PortExhaustion]);
        let busy = Observed { time_wait: 10_000, ..observed(Tally::default()) };
        assert!(kinds(&busy).is_empty(), "a third of the range");
        let lossy = ConnectTally { segments_out: 1000, retransmits: 50, ..Default::default() };
        assert_eq!(kinds(&observed(connects(lossy))), [FindingKind::Retransmits]);
        let rare = ConnectTally { segments_out: 0, retransmits: 5, ..Default::default() };
        assert!(kinds(&observed(connects(rare))).is_empty(), "under min_retransmits");
    }

    #[test]
    fn advice_speaks_the_language() {
        let mut f = evaluate(
            &Observed { close_wait: 4, close_wait_oldest_s: 6.0, ..observed(Tally::default()) },
            &Thresholds::default(),
        );
        localize(&mut f, |_| Some(("go".into(), Some("go1.22".into()))));
        assert!(f[0].advice.contains("defer resp.Body.Close()"), "{}", f[0].advice);
        assert_eq!(f[0].language, "go");
    }

    #[test]
    fn since_subtracts_and_keeps_the_mark_gauge() {
        let mut a = Tally { opened: 10, close_wait: 7, ..Tally::default() };
        a.record_close(Closer::Peer, 3);
        let base = Tally { opened: 4, close_wait: 2, ..Tally::default() };
        let d = a.since(&base);
        assert_eq!((d.opened, d.closes(), d.exchanges, d.close_wait), (6, 1, 3, 2));
    }
}
