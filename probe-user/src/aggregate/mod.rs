//! Events turned into the metrics of docs/metrics.md, with bounded
//! cardinality: at most N `endpoint` values per (comm, container), the rest
//! folded into `endpoint="other"`, and label sets of processes gone for a
//! while expired.
//!
//! [`families`] registers the metric families, [`series`] keeps the label
//! sets and their indexes, [`live`] the sockets open now; [`Aggregator`]
//! ties them to the event stream and the scrape.
pub mod families;
pub mod findings;
pub mod live;
pub mod series;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use probe_common::{Closer, Direction, Event, EventKind};
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec};

pub use self::series::{Limits, OTHER_COMM, OTHER_ENDPOINT, UNKNOWN_COMM};
use self::{
    families::{Count, Families, Spread, family_of},
    findings::{Finding, FindingKind, Observed, Report, Row, Tally, Thresholds},
    live::LiveSockets,
    series::{MARKS, ProcKey, RawKey, SeriesKey, SeriesTable},
};
use crate::{
    decode::{Decoder, comm_str, direction_label, endpoint_label, ip_addr},
    identity::{
        clock::{Clock, rfc3339_ns},
        sockets::{FoundSocket, Listing, LiveState},
    },
};

fn counter<'a>(slot: &'a mut Option<IntCounter>, vec: &IntCounterVec, labels: &[&str]) -> &'a IntCounter {
    slot.get_or_insert_with(|| vec.with_label_values(labels))
}

fn histogram<'a>(slot: &'a mut Option<Histogram>, vec: &HistogramVec, labels: &[&str]) -> &'a Histogram {
    slot.get_or_insert_with(|| vec.with_label_values(labels))
}

pub struct Aggregator {
    f: Families,
    ttl: Duration,
    series: SeriesTable,
    live: LiveSockets,
    /// Label sets the gauges show now, to remove those that go.
    shown_sockets: HashSet<(SeriesKey, LiveState)>,
    shown_oldest: HashSet<ProcKey>,
    /// While a listing is being taken: when it began, and the sockets whose
    /// close was seen since (the listing may still show them).
    listing: Option<(u64, HashSet<u64>)>,
    diagnosis: DiagnosisState,
    /// Told of each pid new to a label set (the language resolver).
    on_new_pid: Option<Box<dyn FnMut(u32) + Send>>,
}

/// The diagnosis's window: when each mark of the label sets' tallies was
/// taken, the newest at `pos`; the oldest (next after `pos`) starts the window.
struct DiagnosisState {
    thresholds: Thresholds,
    started_ns: Option<u64>,
    marks_at: [u64; MARKS],
    pos: usize,
    /// Findings the `sockprobe_finding` gauge shows now.
    shown: HashSet<(FindingKind, SeriesKey)>,
    latest: Arc<Diagnosis>,
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

/// One label set's live sockets, from one walk of them per refresh.
#[derive(Clone, Copy, Default)]
struct LiveCounts {
    established: u64,
    close_wait: u64,
    /// When the oldest CLOSE_WAIT began (monotonic ns); meaningful only
    /// with `close_wait > 0`.
    close_wait_since: u64,
    closed: u64,
}

impl LiveCounts {
    fn by_state(&self) -> [(LiveState, u64); 3] {
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

/// What `/metrics` encodes, for the exporter.
#[derive(Clone)]
pub struct Exported {
    pub registry: prometheus::Registry,
    pub events_lost: prometheus::IntCounter,
    pub untracked_sockets: prometheus::IntCounter,
    pub evicted_sockets: prometheus::IntCounter,
    pub tracked_sockets: prometheus::IntGauge,
}

/// What applying a listing changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Tracked sockets the listing did not show: their close was missed.
    pub dropped: usize,
    /// Listed sockets not tracked yet: older than sockprobe, or their open missed.
    pub adopted: usize,
    /// Tracked sockets whose state the listing corrects (e.g. to `closed`).
    pub changed: usize,
}

impl Aggregator {
    pub fn new(limits: Limits, ttl: Duration, version: &str, kernel: &str) -> Aggregator {
        let f = Families::new();
        f.build_info.with_label_values(&[version, kernel]).set(1);
        Aggregator {
            f,
            ttl,
            series: SeriesTable::new(limits),
            live: LiveSockets::default(),
            shown_sockets: HashSet::new(),
            shown_oldest: HashSet::new(),
            listing: None,
            on_new_pid: None,
            diagnosis: DiagnosisState {
                thresholds: Thresholds::default(),
                started_ns: None,
                marks_at: [0; MARKS],
                pos: 0,
                shown: HashSet::new(),
                latest: Arc::new(Diagnosis::empty(Thresholds::default().window.as_secs())),
            },
        }
    }

    /// Calls `f` with each pid new to a label set (cheap and non-blocking, please).
    pub fn on_new_pid(&mut self, f: impl FnMut(u32) + Send + 'static) {
        self.on_new_pid = Some(Box::new(f));
    }

    /// Diagnosis thresholds and window (default: [`Thresholds::default`]).
    pub fn set_thresholds(&mut self, thresholds: Thresholds) {
        self.diagnosis.thresholds = thresholds;
    }

    pub fn set_probe(&self, probe: &str, attached: bool) {
        self.f.probe_attached.with_label_values(&[probe]).set(attached as i64);
    }

    /// The slot of the event's label set: one hash lookup on the kernel's
    /// identity; labels are built only for a new one.
    fn slot_of(&mut self, decoder: &mut Decoder, ev: &Event, kind: EventKind) -> usize {
        let direction = decoder.direction(ev);
        let inbound = direction == Direction::Inbound;
        let (addr, port) = if inbound { (ev.saddr, ev.sport) } else { (ev.daddr, ev.dport) };
        let raw = RawKey { comm: ev.owner.comm, cgroup_id: ev.owner.cgroup_id, inbound, family: ev.family, addr, port };
        if let Some(slot) = self.series.by_raw(&raw) {
            return slot;
        }
        let proc = ProcKey::new(&comm_str(&ev.owner.comm), decoder.container(ev.owner.cgroup_id));
        let endpoint = endpoint_label(&ip_addr(ev.family, &addr), port);
        let overflow = &self.f.series_overflow;
        self.series.slot(ev.ts_ns, proc, direction_label(direction), endpoint, Some(raw), || {
            overflow.with_label_values(&[family_of(kind)]).inc()
        })
    }

    /// Accounts one kernel event.
    pub fn observe(&mut self, decoder: &mut Decoder, ev: &Event) {
        let Some(kind) = EventKind::from_u8(ev.kind) else { return };
        // A folded open is the connection's first sign: its label set
        // overflows, if at all, as an open.
        let slot = self.slot_of(decoder, ev, if ev.open_folded() { EventKind::Open } else { kind });
        let f = &self.f;
        let Some(s) = self.series.get_mut(slot) else { return };
        s.last_seen_ns = s.last_seen_ns.max(ev.ts_ns);
        if s.saw_pid(ev.owner.tgid)
            && let Some(hook) = self.on_new_pid.as_mut()
        {
            hook(ev.owner.tgid);
        }
        let labels =
            [s.key.proc.comm.as_str(), s.key.proc.container.as_str(), s.key.direction, s.key.endpoint.as_str()];
        let mut count = |c: Count, by: u64| {
            counter(&mut s.counters[c as usize], &f.counters[c as usize], &labels).inc_by(by);
        };
        let tally = &mut s.tally;
        match kind {
            EventKind::Open => {
                tally.opened += 1;
                count(Count::Opened, 1);
            }
            EventKind::Close => {
                // An ordinary connection's only record: its open too.
                if ev.open_folded() {
                    tally.opened += 1;
                    count(Count::Opened, 1);
                }
                // Every close the kernel side emits says who ended it.
                let closer = Closer::from_u8(ev.closer).unwrap_or(Closer::Reset);
                tally.record_close(closer, ev.exchanges);
                let [c, k, d, e] = labels;
                s.closed[closer as usize - 1]
                    .get_or_insert_with(|| f.closed.with_label_values(&[c, k, d, e, closer.name()]))
                    .inc();
            }
            EventKind::UnreadClose => {
                tally.unread_closes += 1;
                tally.unread_bytes += ev.value;
                count(Count::UnreadCloses, 1);
                count(Count::UnreadBytes, ev.value);
            }
            EventKind::ResetReceived => {
                tally.resets_received += 1;
                count(Count::ResetsReceived, 1);
            }
            EventKind::ResetSent | EventKind::CloseWait | EventKind::CloseWaitEnd => {}
        }
        let mut observe = |h: Spread, v: f64| {
            histogram(&mut s.histograms[h as usize], &f.histograms[h as usize], &labels).observe(v);
        };
        match kind {
            EventKind::Close => {
                if ev.value > 0 {
                    observe(Spread::Duration, ev.value as f64 / 1e9);
                }
                observe(Spread::Exchanges, ev.exchanges as f64);
            }
            EventKind::CloseWaitEnd => observe(Spread::CloseWaitDuration, ev.value as f64 / 1e9),
            _ => {}
        }
        if kind == EventKind::ResetSent {
            match s.resets_sent.iter().find(|(r, _, _)| *r == ev.reason) {
                Some((_, _, c)) => c.inc(),
                None => {
                    let name = decoder.reason_name(ev.reason);
                    let c = f.resets_sent.with_label_values(&[labels[0], labels[1], labels[2], labels[3], &name]);
                    c.inc();
                    s.resets_sent.push((ev.reason, name, c));
                }
            }
        }
        match kind {
            EventKind::Open => self.live.track(ev.cookie, slot, LiveState::Established, ev.ts_ns),
            EventKind::CloseWait => self.live.track(ev.cookie, slot, LiveState::CloseWait, ev.ts_ns),
            EventKind::Close => {
                self.live.untrack(ev.cookie);
                if let Some((_, closed)) = self.listing.as_mut() {
                    closed.insert(ev.cookie);
                }
            }
            _ => {}
        }
    }

    /// A listing of every socket is about to be taken (at `now`, monotonic ns).
    pub fn begin_listing(&mut self, now: u64) {
        self.listing = Some((now, HashSet::new()));
    }

    /// Brings the live sockets in line with a listing begun with
    /// [`Aggregator::begin_listing`]: a socket that still exists anywhere
    /// stays, one that is gone goes, and one the events missed is adopted.
    pub fn apply_listing(&mut self, decoder: &mut Decoder, listing: &Listing, now: u64) -> Reconciled {
        let (listed_at, closed) = self.listing.take().unwrap_or((now, HashSet::new()));
        let listed: HashSet<u64> = listing.sockets.iter().map(|s| s.cookie).collect();
        let mut r = Reconciled { dropped: self.live.drop_unlisted(&listed, listed_at), ..Reconciled::default() };
        for s in &listing.sockets {
            match self.live.get(s.cookie) {
                Some(l) if l.state == s.state => {}
                // A CLOSE_WAIT entry or a close may be on its way in the ring buffer.
                Some(l) if l.tracked_since > listed_at => {}
                Some(l) => {
                    let slot = l.slot;
                    self.live.track(s.cookie, slot, s.state, now);
                    r.changed += 1;
                }
                // Closed while the listing was taken: it is gone, or it is
                // held after a reset and the next listing finds it.
                None if closed.contains(&s.cookie) => {}
                None => {
                    self.adopt(decoder, s, now);
                    r.adopted += 1;
                }
            }
        }
        r
    }

    /// Tracks a socket the events did not announce.
    fn adopt(&mut self, decoder: &mut Decoder, s: &FoundSocket, now_mono_ns: u64) {
        let (addr, port) = match s.direction {
            Direction::Inbound => (&s.saddr, s.sport),
            _ => (&s.daddr, s.dport),
        };
        let proc = ProcKey::new(&s.holder.comm, decoder.container(s.holder.cgroup_id));
        let overflow = &self.f.series_overflow;
        let slot =
            self.series.slot(now_mono_ns, proc, direction_label(s.direction), endpoint_label(addr, port), None, || {
                overflow.with_label_values(&[Count::Opened.name()]).inc()
            });
        self.live.track(s.cookie, slot, s.state, now_mono_ns);
    }

    /// Brings the gauges up to date and expires stale label sets; the
    /// exposition is encoded elsewhere, from [`Aggregator::registry`], so
    /// encoding never holds up the event path. Gauges are set, not reset and
    /// rebuilt, so a scrape running meanwhile never sees them empty.
    pub fn refresh(&mut self, now_mono_ns: u64) {
        // The one walk of the live sockets (there may be 100 000s); the rest
        // works per label set.
        let live = self.live_by_slot();
        self.expire(now_mono_ns, &live);
        let mut sockets: HashMap<(SeriesKey, LiveState), i64> = HashMap::new();
        let mut oldest: HashMap<ProcKey, u64> = HashMap::new();
        for (slot, counts) in &live {
            let Some(s) = self.series.get(*slot) else { continue };
            for (state, n) in counts.by_state().into_iter().filter(|(_, n)| *n > 0) {
                *sockets.entry((s.key.clone(), state)).or_default() += n as i64;
            }
            if counts.close_wait > 0 {
                let o = oldest.entry(s.key.proc.clone()).or_insert(counts.close_wait_since);
                *o = (*o).min(counts.close_wait_since);
            }
        }
        for ((key, state), n) in &sockets {
            let labels = [&key.proc.comm, &key.proc.container, key.direction, &key.endpoint, state.label()];
            self.f.sockets.with_label_values(&labels).set(*n);
        }
        for gone in self.shown_sockets.iter().filter(|k| !sockets.contains_key(*k)) {
            let (key, state) = gone;
            let labels = [&key.proc.comm, &key.proc.container, key.direction, &key.endpoint, state.label()];
            let _ = self.f.sockets.remove_label_values(&labels);
        }
        for (key, since) in &oldest {
            let age = now_mono_ns.saturating_sub(*since) as f64 / 1e9;
            self.f.close_wait_oldest.with_label_values(&[&key.comm, &key.container]).set(age);
        }
        for gone in self.shown_oldest.iter().filter(|k| !oldest.contains_key(*k)) {
            let _ = self.f.close_wait_oldest.remove_label_values(&[&gone.comm, &gone.container]);
        }
        self.shown_sockets = sockets.into_keys().collect();
        self.shown_oldest = oldest.into_keys().collect();
        self.diagnose(now_mono_ns, &live);
    }

    /// The registry to encode (`/metrics`), and the self-metrics that the
    /// exporter keeps up to date itself.
    pub fn exported(&self) -> Exported {
        Exported {
            registry: self.f.registry(),
            events_lost: self.f.events_lost.clone(),
            untracked_sockets: self.f.untracked_sockets.clone(),
            evicted_sockets: self.f.evicted_sockets.clone(),
            tracked_sockets: self.f.tracked_sockets.clone(),
        }
    }

    /// Takes a mark of every label set's tally when one is due (the window's
    /// start moves on by a fifth of the window each time). Call it often.
    pub fn mark_if_due(&mut self, now_mono_ns: u64) {
        if self.mark_due(now_mono_ns) {
            let live = self.live_by_slot();
            self.take_mark(&live);
        }
    }

    /// Whether a mark is due now; if so, its place is taken.
    fn mark_due(&mut self, now_mono_ns: u64) -> bool {
        let d = &mut self.diagnosis;
        let started = *d.started_ns.get_or_insert(now_mono_ns);
        let every = d.thresholds.window.as_nanos() as u64 / (MARKS as u64 - 1);
        let last = if d.marks_at[d.pos] == 0 { started } else { d.marks_at[d.pos] };
        if now_mono_ns.saturating_sub(last) < every {
            return false;
        }
        d.pos = (d.pos + 1) % MARKS;
        d.marks_at[d.pos] = now_mono_ns;
        true
    }

    fn take_mark(&mut self, live: &HashMap<usize, LiveCounts>) {
        let pos = self.diagnosis.pos;
        for (slot, s) in self.series.iter_mut() {
            s.marks[pos] = Tally { close_wait: live.get(&slot).map_or(0, |l| l.close_wait), ..s.tally };
        }
    }

    /// The live sockets counted per label set, by state.
    fn live_by_slot(&self) -> HashMap<usize, LiveCounts> {
        let mut out: HashMap<usize, LiveCounts> = HashMap::new();
        for l in self.live.iter() {
            let c = out.entry(l.slot).or_default();
            match l.state {
                LiveState::Established => c.established += 1,
                LiveState::CloseWait => {
                    c.close_wait_since =
                        if c.close_wait == 0 { l.close_wait_since } else { c.close_wait_since.min(l.close_wait_since) };
                    c.close_wait += 1;
                }
                LiveState::Closed => c.closed += 1,
            }
        }
        out
    }

    /// Evaluates the findings over the window, updates `sockprobe_finding`,
    /// and keeps the result for [`Aggregator::diagnosis`].
    fn diagnose(&mut self, now_mono_ns: u64, live: &HashMap<usize, LiveCounts>) {
        if self.mark_due(now_mono_ns) {
            self.take_mark(live);
        }
        let d = &self.diagnosis;
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
        for (slot, s) in self.series.iter() {
            let base = if from_start { Tally::default() } else { s.marks[oldest] };
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
            };
            let found = findings::evaluate(&o, &d.thresholds);
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
            self.f.finding.with_label_values(&[&l[0], &l[1], &l[2], &l[3], &l[4]]).set(1);
        }
        let d = &mut self.diagnosis;
        for gone in d.shown.iter().filter(|f| !standing.contains(*f)) {
            let l = labels(gone);
            let _ = self.f.finding.remove_label_values(&[&l[0], &l[1], &l[2], &l[3], &l[4]]);
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

    /// The diagnosis as of the last [`Aggregator::refresh`].
    pub fn diagnosis(&self) -> Arc<Diagnosis> {
        self.diagnosis.latest.clone()
    }

    /// Forgets processes with no live socket and no event for `ttl`, and
    /// their label sets in every family.
    fn expire(&mut self, now_mono_ns: u64, live: &HashMap<usize, LiveCounts>) {
        let idle_since = now_mono_ns.saturating_sub(self.ttl.as_nanos() as u64);
        for s in self.series.expire(idle_since, |slot| live.contains_key(&slot)) {
            let l = s.labels();
            for (handle, vec) in s.counters.iter().zip(&self.f.counters) {
                if handle.is_some() {
                    let _ = vec.remove_label_values(&l);
                }
            }
            for (handle, vec) in s.histograms.iter().zip(&self.f.histograms) {
                if handle.is_some() {
                    let _ = vec.remove_label_values(&l);
                }
            }
            for (handle, closer) in s.closed.iter().zip(Closer::ALL) {
                if handle.is_some() {
                    let _ = self.f.closed.remove_label_values(&[l[0], l[1], l[2], l[3], closer.name()]);
                }
            }
            for (_, reason, _) in &s.resets_sent {
                let _ = self.f.resets_sent.remove_label_values(&[l[0], l[1], l[2], l[3], reason]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use probe_common::{AF_INET, Direction, Owner, REASON_UNKNOWN};

    use super::*;
    use crate::kernel::layout::ResetReasons;

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
            closer: if kind == EventKind::Close { probe_common::Closer::Local as u8 } else { 0 },
            flags: 0,
            _pad: [0; 6],
            close_wait_ns: 0,
        }
    }

    fn limits(max_endpoints: usize) -> Limits {
        Limits { max_endpoints, max_processes: 1000, max_series: 20_000 }
    }

    fn render(a: &mut Aggregator, now: u64) -> String {
        a.refresh(now);
        families::encode(&a.exported().registry)
    }

    fn decoder() -> Decoder {
        Decoder::new(ResetReasons::default())
    }

    #[test]
    fn endpoints_fold_past_the_cap_and_count() {
        let mut a = Aggregator::new(limits(2), Duration::from_secs(600), "0", "k");
        let mut d = decoder();
        for port in 1..=5 {
            a.observe(&mut d, &event(EventKind::Open, "c", port, 0));
        }
        let text = render(&mut a, 0);
        assert!(text.contains(r#"endpoint="10.0.0.1:1""#));
        assert!(text.contains(r#"endpoint="10.0.0.1:2""#));
        assert!(!text.contains(r#"endpoint="10.0.0.1:3""#));
        assert!(text.contains(r#"sockprobe_tcp_connections_opened_total{comm="c",container="",direction="outbound",endpoint="other"} 3"#), "{text}");
        assert!(
            text.contains(r#"sockprobe_series_overflow_total{metric="sockprobe_tcp_connections_opened_total"} 3"#),
            "{text}"
        );
    }

    /// A process renaming itself before each connection: pairs stop at the
    /// cap, the rest is one `comm="other"` label set, and the folding counted.
    #[test]
    fn renamed_processes_fold_past_the_caps() {
        let mut a = Aggregator::new(
            Limits { max_endpoints: 10, max_processes: 50, max_series: 60 },
            Duration::from_secs(600),
            "0",
            "k",
        );
        let mut d = decoder();
        for i in 0..2000u32 {
            a.observe(&mut d, &event(EventKind::Open, &format!("n{i}"), 80, 0));
        }
        let text = render(&mut a, 0);
        let opened: Vec<&str> =
            text.lines().filter(|l| l.starts_with("sockprobe_tcp_connections_opened_total{")).collect();
        assert_eq!(opened.len(), 51, "50 pairs and one folded label set");
        assert!(text.contains(r#"sockprobe_tcp_connections_opened_total{comm="other",container="",direction="outbound",endpoint="10.0.0.1:80"} 1950"#), "{text}");
        assert!(
            text.contains(r#"sockprobe_series_overflow_total{metric="sockprobe_tcp_connections_opened_total"} 1950"#),
            "{text}"
        );
        assert!(a.series.len() <= 60 && a.series.raw_keys() <= 4 * 60);
        // Past the series cap, even a known pair's new endpoint folds into the catch-all.
        for port in 1..=100 {
            a.observe(&mut d, &event(EventKind::Open, "n1", port, 0));
        }
        assert!(a.series.len() <= 62, "{} label sets", a.series.len());
    }

    #[test]
    fn gone_processes_expire() {
        let mut a = Aggregator::new(limits(10), Duration::from_millis(1), "0", "k");
        let mut d = decoder();
        a.observe(&mut d, &event(EventKind::Open, "short", 1, 0));
        a.observe(&mut d, &event(EventKind::Close, "short", 1, 0));
        assert!(render(&mut a, 1_000_000).contains(r#"comm="short""#), "not idle for longer than the ttl yet");
        let text = render(&mut a, 5_000_000);
        assert!(!text.contains("short"), "{text}");
        // And it comes back cleanly.
        a.observe(&mut d, &event(EventKind::Open, "short", 1, 6_000_000));
        assert!(render(&mut a, 6_500_000).contains(r#"comm="short""#));
    }

    fn found(cookie: u64, comm: &str, state: LiveState) -> FoundSocket {
        FoundSocket {
            cookie,
            netns: 1,
            state,
            saddr: "127.0.0.1".parse().unwrap(),
            sport: 40000,
            daddr: "10.0.0.1".parse().unwrap(),
            dport: 80,
            direction: Direction::Outbound,
            holder: crate::identity::sockets::Holder { pid: 1, comm: comm.into(), cgroup_id: 0 },
        }
    }

    fn gauge(text: &str, comm: &str, state: &str) -> bool {
        text.lines().any(|l| {
            l.starts_with("sockprobe_tcp_sockets{")
                && l.contains(&format!("comm=\"{comm}\""))
                && l.contains(&format!("state=\"{state}\""))
        })
    }

    /// The reconcile: what exists anywhere stays, what is gone goes, what the
    /// events missed is adopted, and the events that raced the listing win.
    #[test]
    fn listings_reconcile_without_racing_the_events() {
        let mut a = Aggregator::new(limits(10), Duration::from_secs(600), "0", "k");
        let mut d = decoder();
        a.observe(&mut d, &event(EventKind::Open, "gone", 1, 100)); // its close was lost
        a.observe(&mut d, &event(EventKind::Open, "stays", 2, 100));
        a.begin_listing(1_000);
        // While the listing is taken: one opens, one closes.
        a.observe(&mut d, &event(EventKind::Open, "newer", 3, 1_500));
        a.observe(&mut d, &event(EventKind::Open, "closing", 4, 200));
        a.observe(&mut d, &event(EventKind::Close, "closing", 4, 1_600));
        let listing = Listing {
            sockets: vec![
                found(2, "stays", LiveState::Established),
                found(4, "closing", LiveState::Established), // listed before its close
                found(5, "missed", LiveState::CloseWait),    // its open was lost
                found(6, "reset", LiveState::Closed),        // over, fd still held
            ],
            ..Listing::default()
        };
        let r = a.apply_listing(&mut d, &listing, 2_000);
        assert_eq!(r, Reconciled { dropped: 1, adopted: 2, changed: 0 });
        let text = render(&mut a, 3_000);
        assert!(!gauge(&text, "gone", "established"), "{text}");
        assert!(gauge(&text, "stays", "established") && gauge(&text, "newer", "established"), "{text}");
        assert!(!gauge(&text, "closing", "established"), "a close seen during the listing wins: {text}");
        assert!(gauge(&text, "missed", "close_wait") && gauge(&text, "reset", "closed"), "{text}");
        // The next listing, without the close race: "stays" turned out reset.
        a.begin_listing(4_000);
        let listing = Listing { sockets: vec![found(2, "stays", LiveState::Closed)], ..Listing::default() };
        let r = a.apply_listing(&mut d, &listing, 5_000);
        assert_eq!(r, Reconciled { dropped: 3, adopted: 0, changed: 1 });
        let text = render(&mut a, 6_000);
        assert!(gauge(&text, "stays", "closed") && !gauge(&text, "stays", "established"), "{text}");
    }

    #[test]
    fn close_wait_gauges() {
        let mut a = Aggregator::new(limits(10), Duration::from_secs(600), "0", "k");
        let mut d = decoder();
        a.observe(&mut d, &event(EventKind::Open, "leaky", 7, 0));
        a.observe(&mut d, &event(EventKind::CloseWait, "leaky", 7, 1_000_000_000));
        let text = render(&mut a, 4_000_000_000);
        assert!(text.contains(r#"sockprobe_tcp_sockets{comm="leaky",container="",direction="outbound",endpoint="10.0.0.1:7",state="close_wait"} 1"#), "{text}");
        assert!(text.contains(r#"sockprobe_tcp_close_wait_oldest_seconds{comm="leaky",container=""} 3"#), "{text}");
        a.observe(&mut d, &event(EventKind::Close, "leaky", 7, 0));
        let text = render(&mut a, 5_000_000_000);
        assert!(!text.contains("state=\"close_wait\""), "{text}");
    }
}
