//! The diagnosis's sliding window: every label set's cumulative [`Tally`],
//! marks of it taken every fifth of the window, and the live sockets counted
//! per label set; [`Window::diagnose`] hands the difference between now and
//! the oldest mark to the rules ([`super::findings`]).
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use probe_common::Closer;
use prometheus::IntGaugeVec;

use super::{
    findings::{Finding, FindingKind, Observed, Report, Row, Thresholds, evaluate},
    series::{SeriesKey, SeriesTable},
};
use crate::identity::{
    clock::{Clock, rfc3339_ns},
    listing::LiveState,
};

/// Marks of each label set's [`Tally`] kept for the window: the oldest is
/// the window's start (see [`Window::mark_if_due`]).
pub const MARKS: usize = 6;

/// Cumulative numbers of one label set, kept beside its metric handles so the
/// window can be taken as a difference of two of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub opened: u64,
    /// Closes by [`Closer`] (index: closer - 1).
    pub closed: [u64; 3],
    /// Closes of connections that carried at most one exchange, by closer.
    pub one_exchange: [u64; 3],
    /// Exchanges summed over closed connections.
    pub exchanges: u64,
    pub unread_closes: u64,
    pub unread_bytes: u64,
    pub resets_received: u64,
    /// Live CLOSE_WAIT sockets; set only in the window's marks (a gauge).
    pub close_wait: u64,
    /// The connection's beginnings and what it lost on the way. 32 bits,
    /// wrapping (a window's difference stays exact): a tally and its six
    /// marks live in every label set.
    pub connect: ConnectTally,
}

/// Connects, their failures and retransmits of one label set, cumulative.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectTally {
    /// connect()s that established, and those slower than the threshold.
    pub connects: u32,
    pub slow_connects: u32,
    pub syn_retransmits: u32,
    /// connect()s that failed, and of them refused, timed out, no local port.
    pub failures: u32,
    pub refused: u32,
    pub timeouts: u32,
    pub no_local_port: u32,
    /// Data segments retransmitted, and sent (counted at close).
    pub retransmits: u32,
    pub segments_out: u32,
    /// A listener's: connections its full accept queue dropped.
    pub listen_drops: u32,
}

impl ConnectTally {
    fn since(&self, base: &ConnectTally) -> ConnectTally {
        ConnectTally {
            connects: self.connects.wrapping_sub(base.connects),
            slow_connects: self.slow_connects.wrapping_sub(base.slow_connects),
            syn_retransmits: self.syn_retransmits.wrapping_sub(base.syn_retransmits),
            failures: self.failures.wrapping_sub(base.failures),
            refused: self.refused.wrapping_sub(base.refused),
            timeouts: self.timeouts.wrapping_sub(base.timeouts),
            no_local_port: self.no_local_port.wrapping_sub(base.no_local_port),
            retransmits: self.retransmits.wrapping_sub(base.retransmits),
            segments_out: self.segments_out.wrapping_sub(base.segments_out),
            listen_drops: self.listen_drops.wrapping_sub(base.listen_drops),
        }
    }
}

/// The last connections closed here after at most one exchange, by cookie.
/// A close with unread bytes may come after its connection's close record
/// (a client that shut down its side first, then closed with the response
/// half read, as java.net.http.HttpClient does): that connection counts for
/// `unread_close`, whose advice fits, and not also for `no_reuse`, whose
/// advice (a bigger pool) does not. The reset follows the close in the same
/// system call, so the last few thousand closes are enough to find it.
#[derive(Default)]
pub struct RecentCookies {
    order: std::collections::VecDeque<u64>,
    cookies: foldhash::HashSet<u64>,
}

/// Cookies remembered at once; the oldest is forgotten first.
const RECENT_COOKIES: usize = 4096;

impl RecentCookies {
    pub fn remember(&mut self, cookie: u64) {
        if cookie == 0 || !self.cookies.insert(cookie) {
            return;
        }
        self.order.push_back(cookie);
        if self.order.len() > RECENT_COOKIES
            && let Some(old) = self.order.pop_front()
        {
            self.cookies.remove(&old);
        }
    }

    /// Whether `cookie` was one of them (then it is forgotten).
    pub fn take(&mut self, cookie: u64) -> bool {
        // Its place in `order` goes when it comes to the front.
        self.cookies.remove(&cookie)
    }
}

impl Tally {
    pub fn closes(&self) -> u64 {
        self.closed.iter().sum()
    }

    pub fn record_close(&mut self, closer: Closer, exchanges: u32) {
        let i = closer as usize - 1;
        self.closed[i] += 1;
        if exchanges <= 1 {
            self.one_exchange[i] += 1;
        }
        self.exchanges += exchanges as u64;
    }

    /// A close counted by [`Tally::record_close`] turned out to leave bytes
    /// unread: it is no longer a one-exchange close of `closer`.
    pub fn unrecord_one_exchange(&mut self, closer: Closer) {
        let i = closer as usize - 1;
        self.one_exchange[i] = self.one_exchange[i].saturating_sub(1);
    }

    /// What happened since `base` (a mark taken earlier).
    pub fn since(&self, base: &Tally) -> Tally {
        let sub3 = |a: [u64; 3], b: [u64; 3]| [0, 1, 2].map(|i| a[i].saturating_sub(b[i]));
        Tally {
            opened: self.opened.saturating_sub(base.opened),
            closed: sub3(self.closed, base.closed),
            one_exchange: sub3(self.one_exchange, base.one_exchange),
            exchanges: self.exchanges.saturating_sub(base.exchanges),
            unread_closes: self.unread_closes.saturating_sub(base.unread_closes),
            unread_bytes: self.unread_bytes.saturating_sub(base.unread_bytes),
            resets_received: self.resets_received.saturating_sub(base.resets_received),
            close_wait: base.close_wait,
            connect: self.connect.since(&base.connect),
        }
    }
}

/// One label set's live sockets, from one walk of them per refresh.
#[derive(Clone, Copy, Default)]
pub struct LiveCounts {
    pub established: u64,
    pub close_wait: u64,
    /// When the oldest CLOSE_WAIT began (monotonic ns); meaningful only
    /// with `close_wait > 0`.
    pub close_wait_since: u64,
    pub closed: u64,
}

impl LiveCounts {
    pub fn by_state(&self) -> [(LiveState, u64); 3] {
        [
            (LiveState::Established, self.established),
            (LiveState::CloseWait, self.close_wait),
            (LiveState::Closed, self.closed),
        ]
    }

    fn close_wait_oldest_s(&self, now_mono_ns: u64) -> f64 {
        if self.close_wait == 0 { 0.0 } else { now_mono_ns.saturating_sub(self.close_wait_since) as f64 / 1e9 }
    }
}

/// The diagnosis as of the last refresh: findings, and every label set's
/// numbers for `sockprobe top`.
#[derive(Clone, Debug)]
pub struct Diagnosis {
    pub report: Report,
    pub rows: Vec<Row>,
}

impl Diagnosis {
    /// Nothing judged yet.
    pub fn empty(window_seconds: u64) -> Diagnosis {
        Diagnosis {
            report: Report { generated: String::new(), window_seconds, observed_seconds: 0, findings: Vec::new() },
            rows: Vec::new(),
        }
    }
}

/// When each mark of the label sets' tallies was taken, the newest at `pos`;
/// the oldest (next after `pos`) starts the window.
pub struct Window {
    thresholds: Thresholds,
    started_ns: Option<u64>,
    marks_at: [u64; MARKS],
    pos: usize,
    /// Findings the `sockprobe_finding` gauge shows now.
    shown: HashSet<(FindingKind, SeriesKey)>,
    latest: Arc<Diagnosis>,
}

impl Window {
    pub fn new(thresholds: Thresholds) -> Window {
        Window {
            thresholds,
            started_ns: None,
            marks_at: [0; MARKS],
            pos: 0,
            shown: HashSet::new(),
            latest: Arc::new(Diagnosis::empty(thresholds.window.as_secs())),
        }
    }

    /// The diagnosis as of the last [`Window::diagnose`].
    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    pub fn latest(&self) -> Arc<Diagnosis> {
        self.latest.clone()
    }

    /// Takes a mark of every label set's tally when one is due (the window's
    /// start moves on by a fifth of the window each time).
    pub fn mark_if_due(
        &mut self,
        now_mono_ns: u64,
        series: &mut SeriesTable,
        live: impl FnOnce() -> HashMap<usize, LiveCounts>,
    ) {
        if self.mark_due(now_mono_ns) {
            self.take_mark(series, &live());
        }
    }

    /// Whether a mark is due now; if so, its place is taken.
    fn mark_due(&mut self, now_mono_ns: u64) -> bool {
        let started = *self.started_ns.get_or_insert(now_mono_ns);
        let every = self.thresholds.window.as_nanos() as u64 / (MARKS as u64 - 1);
        let last = if self.marks_at[self.pos] == 0 { started } else { self.marks_at[self.pos] };
        if now_mono_ns.saturating_sub(last) < every {
            return false;
        }
        self.pos = (self.pos + 1) % MARKS;
        self.marks_at[self.pos] = now_mono_ns;
        true
    }

    fn take_mark(&self, series: &mut SeriesTable, live: &HashMap<usize, LiveCounts>) {
        let pos = self.pos;
        for (slot, s) in series.iter_mut() {
            s.marks[pos] = Tally { close_wait: live.get(&slot).map_or(0, |l| l.close_wait), ..s.tally };
        }
    }

    /// Evaluates the findings over the window, updates `sockprobe_finding`
    /// (`gauge`), and keeps the result for [`Window::latest`].
    pub fn diagnose(
        &mut self,
        now_mono_ns: u64,
        series: &mut SeriesTable,
        live: &HashMap<usize, LiveCounts>,
        gauge: &IntGaugeVec,
        local_ports: u32,
    ) {
        if self.mark_due(now_mono_ns) {
            self.take_mark(series, live);
        }
        let d = &*self;
        let oldest = (d.pos + 1) % MARKS;
        // Until the marks have gone round once, the window starts at start-up
        // (when every tally was zero).
        let (base_at, from_start) = match d.marks_at[oldest] {
            0 => (d.started_ns.unwrap_or(now_mono_ns), true),
            t => (t, false),
        };
        let span_s = now_mono_ns.saturating_sub(base_at) as f64 / 1e9;
        let mut findings: Vec<Finding> = Vec::new();
        let mut standing: HashSet<(FindingKind, SeriesKey)> = HashSet::new();
        let mut rows = Vec::new();
        let base_of = |s: &super::series::Series| if from_start { Tally::default() } else { s.marks[oldest] };
        // Listeners of this host that dropped connections in the window, by
        // the endpoint their clients here dial (a wildcard listener: any).
        let (mut listen_drops, mut wildcard_drops) = (HashMap::<&str, u64>::new(), HashMap::<&str, u64>::new());
        for (_, s) in series.iter() {
            let drops = s.tally.connect.listen_drops.wrapping_sub(base_of(s).connect.listen_drops);
            if drops > 0 {
                let endpoint = s.key.endpoint.as_str();
                let wildcard = endpoint.strip_prefix("0.0.0.0:").or_else(|| endpoint.strip_prefix("[::]:"));
                let (map, key) = match wildcard {
                    Some(port) => (&mut wildcard_drops, port),
                    None => (&mut listen_drops, endpoint),
                };
                *map.entry(key).or_default() += drops as u64;
            }
        }
        for (slot, s) in series.iter() {
            let base = base_of(s);
            let l = live.get(&slot).copied().unwrap_or_default();
            let o = Observed {
                comm: &s.key.proc.comm,
                container: &s.key.proc.container,
                direction: s.key.direction,
                endpoint: &s.key.endpoint,
                pids: &s.pids,
                window: s.tally.since(&base),
                span_s,
                close_wait: l.close_wait,
                close_wait_oldest_s: l.close_wait_oldest_s(now_mono_ns),
                closed_held: l.closed,
                time_wait: s.time_wait.as_ref().map_or(0, |tw| tw.count(now_mono_ns)),
                local_ports,
                endpoint_listen_drops: if s.key.direction == "outbound" {
                    let port = s.key.endpoint.rsplit(':').next().unwrap_or("");
                    listen_drops.get(s.key.endpoint.as_str()).copied().unwrap_or(0)
                        + wildcard_drops.get(port).copied().unwrap_or(0)
                } else {
                    0
                },
            };
            let found = evaluate(&o, &d.thresholds);
            rows.push(Row {
                comm: s.key.proc.comm.clone(),
                container: s.key.proc.container.clone(),
                direction: s.key.direction.to_string(),
                endpoint: s.key.endpoint.clone(),
                opened: s.tally.opened,
                closed: s.tally.closes(),
                exchanges: s.tally.exchanges,
                unread_closes: s.tally.unread_closes,
                resets_received: s.tally.resets_received,
                close_wait: l.close_wait,
                close_wait_oldest_seconds: (l.close_wait_oldest_s(now_mono_ns) * 10.0).round() / 10.0,
                findings: found.iter().map(|f| f.finding.name().to_string()).collect(),
            });
            standing.extend(found.iter().map(|f| (f.finding, s.key.clone())));
            findings.extend(found);
        }
        findings.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.finding.cmp(&b.finding)).then(a.comm.cmp(&b.comm)));
        let labels = |(kind, key): &(FindingKind, SeriesKey)| {
            [
                kind.name().to_string(),
                key.proc.comm.clone(),
                key.proc.container.clone(),
                key.direction.to_string(),
                key.endpoint.clone(),
            ]
        };
        for f in &standing {
            let l = labels(f);
            gauge.with_label_values(&[&l[0], &l[1], &l[2], &l[3], &l[4]]).set(1);
        }
        let d = self;
        for gone in d.shown.iter().filter(|f| !standing.contains(*f)) {
            let l = labels(gone);
            let _ = gauge.remove_label_values(&[&l[0], &l[1], &l[2], &l[3], &l[4]]);
        }
        d.shown = standing;
        let generated = rfc3339_ns(Clock::new().unix_ns(now_mono_ns));
        d.latest = Arc::new(Diagnosis {
            report: Report {
                generated,
                window_seconds: d.thresholds.window.as_secs(),
                observed_seconds: span_s.round() as u64,
                findings,
            },
            rows,
        });
    }
}
