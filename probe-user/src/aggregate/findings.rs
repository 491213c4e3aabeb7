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
}

impl FindingKind {
    pub const ALL: [FindingKind; 6] = [
        FindingKind::UnreadClose,
        FindingKind::CloseWaitLeak,
        FindingKind::ClosedFdLeak,
        FindingKind::NoReuse,
        FindingKind::PeerCloses,
        FindingKind::ResetsReceived,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FindingKind::UnreadClose => "unread_close",
            FindingKind::CloseWaitLeak => "close_wait_leak",
            FindingKind::ClosedFdLeak => "closed_fd_leak",
            FindingKind::NoReuse => "no_reuse",
            FindingKind::PeerCloses => "peer_closes",
            FindingKind::ResetsReceived => "resets_received",
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
