//! Decoded events (their labels resolved by `decode`) counted into the
//! metrics of docs/metrics.md, with bounded cardinality: at most N `endpoint`
//! values per (comm, container), the rest folded into `endpoint="other"`,
//! and label sets of processes gone for a while expired.
//!
//! [`families`] registers the metric families, [`series`] keeps the label
//! sets and their indexes, [`live`] the sockets open now, [`window`] the
//! diagnosis's sliding window, judged by [`findings`]' rules with
//! [`advice`]'s prose; [`Aggregator`] ties them to the event stream, the
//! listings and the scrape.
pub mod advice;
pub mod cells;
pub mod exposition;
pub mod families;
pub mod findings;
pub mod live;
pub mod series;
pub mod time_wait;
pub mod window;

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
    time::Duration,
};

use probe_common::{Closer, Direction, Event, EventKind, event_flags};

pub use self::series::{Limits, OTHER_COMM, OTHER_ENDPOINT, UNKNOWN_COMM};
pub use self::window::Diagnosis;
use self::{
    families::{Count, Families, Spread, family_of},
    findings::Thresholds,
    live::LiveSockets,
    series::{ProcKey, RawKey, SeriesKey, SeriesTable},
    window::{LiveCounts, RecentCookies, Window},
};
use crate::{
    decode::{Decoded, direction_label, endpoint_label},
    identity::{
        k8s::{EndpointNames, PodNames},
        listing::{FoundSocket, Listing, LiveState, comm_str, ip_addr},
    },
};

/// A pid's language and its version, if known yet.
type LanguageOf = dyn Fn(u32) -> Option<(String, Option<String>)> + Send;

pub struct Aggregator {
    f: Families,
    ttl: Duration,
    series: SeriesTable,
    live: LiveSockets,
    /// Label sets the gauges show now, to remove those that go.
    shown_sockets: HashSet<(SeriesKey, LiveState)>,
    shown_time_wait: HashSet<SeriesKey>,
    shown_oldest: HashSet<ProcKey>,
    /// Listeners the accept-queue gauges show now: (comm, container, endpoint).
    shown_queues: HashSet<[String; 3]>,
    /// Each listener's drops at the last listing (the counter's deltas);
    /// `None` until the first listing, which takes the baseline.
    listen_drops: Option<HashMap<[String; 3], u64>>,
    /// While a listing is being taken: when it began, and the sockets whose
    /// close was seen since (the listing may still show them).
    listing: Option<(u64, HashSet<u64>)>,
    window: Window,
    /// Local one-exchange closes an unread close may still follow.
    one_shots: RecentCookies,
    /// Closes that counted their connection's open: a late `open` record of
    /// the same connection is not counted again.
    folded_closes: RecentCookies,
    /// Told of each pid new to a label set (the language resolver).
    on_new_pid: Option<Box<dyn FnMut(u32) + Send>>,
    /// Kubernetes names of remote addresses, and the generation the raw-key
    /// index was built under.
    names: Option<(EndpointNames, u64)>,
    /// Kubernetes names of containers, and the generation `workload_info` shows.
    pods: Option<(PodNames, u64)>,
    /// The language of a pid, if known yet (`process_info`).
    language_of: Option<Box<LanguageOf>>,
    /// `process_info` label sets shown now.
    shown_processes: HashSet<[String; 4]>,
}

/// Why a connect() got no connection (the `reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectFailure {
    Refused,
    Timeout,
    Unreachable,
    NoLocalPort,
    Aborted,
    Other,
}

impl ConnectFailure {
    /// From a `connect_failed` record: the socket's errno (uapi numbers)
    /// and whether the process had closed it.
    pub fn of(ev: &Event) -> ConnectFailure {
        const ENETDOWN: u32 = 100;
        const ENETUNREACH: u32 = 101;
        const ETIMEDOUT: u32 = 110;
        const ECONNREFUSED: u32 = 111;
        const EHOSTDOWN: u32 = 112;
        const EHOSTUNREACH: u32 = 113;
        match ev.reason {
            ECONNREFUSED => ConnectFailure::Refused,
            ETIMEDOUT => ConnectFailure::Timeout,
            ENETDOWN | ENETUNREACH | EHOSTDOWN | EHOSTUNREACH => ConnectFailure::Unreachable,
            0 if ev.closer == Closer::Local as u8 => ConnectFailure::Aborted,
            // connect() found no free local port (EADDRNOTAVAIL) and put the
            // socket back to CLOSE itself: no error on the socket, no close.
            0 => ConnectFailure::NoLocalPort,
            _ => ConnectFailure::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ConnectFailure::Refused => "refused",
            ConnectFailure::Timeout => "timeout",
            ConnectFailure::Unreachable => "unreachable",
            ConnectFailure::NoLocalPort => "no_local_port",
            ConnectFailure::Aborted => "aborted",
            ConnectFailure::Other => "other",
        }
    }
}

/// What `/metrics` encodes, for the exporter.
#[derive(Clone)]
pub struct Exported {
    pub registry: prometheus::Registry,
    /// The per-connection families' label sets.
    pub cells: cells::CellsIndex,
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
            shown_time_wait: HashSet::new(),
            shown_oldest: HashSet::new(),
            shown_queues: HashSet::new(),
            listen_drops: None,
            listing: None,
            on_new_pid: None,
            one_shots: RecentCookies::default(),
            folded_closes: RecentCookies::default(),
            window: Window::new(Thresholds::default()),
            names: None,
            pods: None,
            language_of: None,
            shown_processes: HashSet::new(),
        }
    }

    /// Containers named by the Kubernetes API: `sockprobe_workload_info`.
    pub fn set_pod_names(&mut self, pods: PodNames) {
        self.pods = Some((pods, u64::MAX));
    }

    /// Where `sockprobe_process_info` learns a process's language.
    pub fn set_language_of(&mut self, f: impl Fn(u32) -> Option<(String, Option<String>)> + Send + 'static) {
        self.language_of = Some(Box::new(f));
    }

    /// Outbound endpoints named by Kubernetes objects (`svc/<ns>/<name>:<port>`...).
    pub fn set_endpoint_names(&mut self, names: EndpointNames) {
        self.names = Some((names, u64::MAX));
    }

    /// The `endpoint` label: a remote address Kubernetes names by its name,
    /// else `ip:port`; inbound endpoints (local) as they are.
    fn endpoint_label(&self, inbound: bool, addr: &IpAddr, port: u16) -> String {
        if !inbound
            && let Some((names, _)) = &self.names
            && let Some(name) = names.name(addr)
        {
            return format!("{name}:{port}");
        }
        endpoint_label(addr, port)
    }

    /// Calls `f` with each pid new to a label set (cheap and non-blocking, please).
    pub fn on_new_pid(&mut self, f: impl FnMut(u32) + Send + 'static) {
        self.on_new_pid = Some(Box::new(f));
    }

    /// Diagnosis thresholds and window (default: [`Thresholds::default`]).
    pub fn set_thresholds(&mut self, thresholds: Thresholds) {
        self.window = Window::new(thresholds);
    }

    pub fn set_probe(&self, probe: &str, attached: bool) {
        self.f.probe_attached.with_label_values(&[probe]).set(attached as i64);
    }

    /// The slot of the event's label set: one hash lookup on the kernel's
    /// identity; labels are built only for a new one.
    fn slot_of(&mut self, d: &Decoded<'_>, kind: EventKind) -> usize {
        let ev = d.ev;
        let inbound = d.direction == Direction::Inbound;
        let (addr, port) = if inbound { (ev.saddr, ev.sport) } else { (ev.daddr, ev.dport) };
        let raw = RawKey { comm: ev.owner.comm, cgroup_id: ev.owner.cgroup_id, inbound, family: ev.family, addr, port };
        if let Some((names, built_under)) = &mut self.names {
            // One atomic load an event: new names, new labels from now on.
            let now = names.generation();
            if now != *built_under {
                *built_under = now;
                self.series.forget_raw_keys();
            }
        }
        if let Some(slot) = self.series.by_raw(&raw) {
            return slot;
        }
        let proc = ProcKey::new(&comm_str(&ev.owner.comm), d.container.to_string());
        let endpoint = self.endpoint_label(inbound, &ip_addr(ev.family, &addr), port);
        let overflow = &self.f.series_overflow;
        self.series.slot(ev.ts_ns, proc, direction_label(d.direction), endpoint, Some(raw), || {
            overflow.with_label_values(&[family_of(kind)]).inc()
        })
    }

    /// Accounts one decoded kernel event.
    pub fn observe(&mut self, d: &Decoded<'_>) {
        let (ev, kind) = (d.ev, d.kind);
        // A folded open is the connection's first sign: its label set
        // overflows, if at all, as an open.
        let slot = self.slot_of(d, if ev.open_folded() { EventKind::Open } else { kind });
        let Some(s) = self.series.get_mut(slot) else { return };
        s.last_seen_ns = s.last_seen_ns.max(ev.ts_ns);
        if s.saw_pid(ev.owner.tgid)
            && let Some(hook) = self.on_new_pid.as_mut()
        {
            hook(ev.owner.tgid);
        }
        let (cells, tally) = (&s.cells, &mut s.tally);
        // The kernel side decides "opened" on two CPUs at once when a reset
        // ends a connection while its second exchange is reported: an `open`
        // record and a close that folds the open may both come, in either
        // order. Each connection is opened once here.
        let late_open = kind == EventKind::Open && self.folded_closes.take(ev.cookie);
        let mut opens = false;
        match kind {
            EventKind::Open if late_open => {}
            EventKind::Open => {
                opens = true;
                tally.opened += 1;
                cells.add(Count::Opened, 1);
            }
            EventKind::Close => {
                // An ordinary connection's only record: its open too.
                let opened = self.live.get(ev.cookie).is_some_and(|l| l.opened);
                if ev.open_folded() && !opened {
                    opens = true;
                    tally.opened += 1;
                    cells.add(Count::Opened, 1);
                    self.folded_closes.remember(ev.cookie);
                }
                // Every close the kernel side emits says who ended it.
                let closer = Closer::from_u8(ev.closer).unwrap_or(Closer::Reset);
                tally.record_close(closer, ev.exchanges);
                if closer == Closer::Local && ev.exchanges <= 1 {
                    self.one_shots.remember(ev.cookie);
                }
                if closer == Closer::Local {
                    s.time_wait.get_or_insert_default().add(ev.ts_ns, 1);
                }
                cells.close(closer);
                if ev.value > 0 {
                    cells.observe(Spread::Duration, ev.value as f64 / 1e9);
                }
                cells.observe(Spread::Exchanges, ev.exchanges as f64);
            }
            EventKind::UnreadClose => {
                if self.one_shots.take(ev.cookie) {
                    tally.unrecord_one_exchange(Closer::Local);
                    // Reset after its FIN: it never reached TIME_WAIT.
                    if let Some(tw) = s.time_wait.as_mut() {
                        tw.add(ev.ts_ns, -1);
                    }
                }
                tally.unread_closes += 1;
                tally.unread_bytes += ev.value;
                cells.add(Count::UnreadCloses, 1);
                cells.add(Count::UnreadBytes, ev.value);
            }
            EventKind::ResetReceived => {
                tally.resets_received += 1;
                cells.add(Count::ResetsReceived, 1);
            }
            EventKind::CloseWaitEnd => cells.observe(Spread::CloseWaitDuration, ev.value as f64 / 1e9),
            EventKind::ConnectFailed => {
                let reason = ConnectFailure::of(ev);
                let c = &mut tally.connect;
                c.failures = c.failures.wrapping_add(1);
                match reason {
                    ConnectFailure::Refused => c.refused = c.refused.wrapping_add(1),
                    ConnectFailure::Timeout => c.timeouts = c.timeouts.wrapping_add(1),
                    ConnectFailure::NoLocalPort => c.no_local_port = c.no_local_port.wrapping_add(1),
                    _ => {}
                }
                cells.connect_failed(reason.name());
            }
            EventKind::Retransmit => {
                let segs = ev.value.min(u32::MAX as u64) as u32;
                let c = &mut tally.connect;
                if ev.flags & event_flags::SYN != 0 {
                    c.syn_retransmits = c.syn_retransmits.wrapping_add(segs);
                    cells.add(Count::SynRetransmits, ev.value);
                } else {
                    c.retransmits = c.retransmits.wrapping_add(segs);
                    cells.add(Count::Retransmits, ev.value);
                }
            }
            EventKind::ResetSent | EventKind::CloseWait => {}
        }
        // The connect() of a connection, once: with the record that opens it.
        if opens && ev.connect_us > 0 && d.direction == Direction::Outbound {
            let c = &mut tally.connect;
            c.connects = c.connects.wrapping_add(1);
            if u128::from(ev.connect_us) * 1000 > self.window.thresholds().slow_connect.as_nanos() {
                c.slow_connects = c.slow_connects.wrapping_add(1);
            }
            cells.observe(Spread::ConnectDuration, ev.connect_us as f64 / 1e6);
        }
        if kind == EventKind::Close {
            tally.connect.segments_out = tally.connect.segments_out.wrapping_add(ev.reason);
        }
        if let Some(reason) = &d.reason {
            cells.reset_sent(reason);
        }
        match kind {
            EventKind::Open if late_open => {}
            EventKind::Open => self.live.track_open(ev.cookie, slot, ev.ts_ns),
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
    pub fn apply_listing(&mut self, listing: &Listing, now: u64) -> Reconciled {
        let (listed_at, closed) = self.listing.take().unwrap_or((now, HashSet::new()));
        self.f.listing_records.set(listing.records as i64);
        self.f.listing_sockets.set(listing.sockets.len() as i64);
        self.f.listing_unseen.set(listing.unseen as i64);
        self.f.listing_duration.set(listing.took.as_secs_f64());
        self.show_accept_queues(listing, now);
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
                    self.adopt(s, now);
                    r.adopted += 1;
                }
            }
        }
        r
    }

    /// The accept-queue gauges, as the listing found them: a listener gone
    /// since the last one leaves them. Several sockets on one endpoint
    /// (SO_REUSEPORT) add up.
    fn show_accept_queues(&mut self, listing: &Listing, now_ns: u64) {
        self.f.local_port_range.set(listing.ports.ephemeral_count() as i64);
        let mut now: HashMap<[String; 3], (i64, i64, u64)> = HashMap::new();
        for q in &listing.accept_queues {
            let key = [q.holder.comm.clone(), q.holder.container.to_string(), endpoint_label(&q.addr, q.port)];
            let e = now.entry(key).or_default();
            e.0 += q.waiting as i64;
            e.1 += q.backlog as i64;
            e.2 += q.drops as u64;
        }
        let before = self.listen_drops.take();
        let mut drops = HashMap::with_capacity(now.len());
        for (key, (waiting, backlog, dropped)) in &now {
            let labels = [key[0].as_str(), key[1].as_str(), key[2].as_str()];
            self.f.listen_queue.with_label_values(&labels).set(*waiting);
            self.f.listen_queue_max.with_label_values(&labels).set(*backlog);
            // The kernel counts per listening socket, since its listen():
            // the counter grows by what each pass adds (all of it for a
            // listener new since the last, or restarted). The first pass
            // only takes the baseline: drops before the daemon are not news.
            let last = before.as_ref().map(|b| b.get(key));
            let new = match last {
                Some(Some(last)) if dropped >= last => dropped - last,
                Some(Some(_)) | Some(None) => *dropped,
                None => 0,
            };
            if new > 0 || matches!(last, Some(Some(_))) {
                self.f.listen_overflows.with_label_values(&labels).inc_by(new);
            }
            if new > 0 {
                // For the diagnosis: the listener's inbound label set.
                let proc = ProcKey::new(&key[0], key[1].clone());
                let overflow = &self.f.series_overflow;
                let slot =
                    self.series.slot(now_ns, proc, direction_label(Direction::Inbound), key[2].clone(), None, || {
                        overflow.with_label_values(&[Count::Opened.name()]).inc()
                    });
                if let Some(s) = self.series.get_mut(slot) {
                    s.last_seen_ns = s.last_seen_ns.max(now_ns);
                    let d = &mut s.tally.connect.listen_drops;
                    *d = d.wrapping_add(new.min(u32::MAX as u64) as u32);
                }
            }
            drops.insert(key.clone(), *dropped);
        }
        self.listen_drops = Some(drops);
        for gone in self.shown_queues.iter().filter(|k| !now.contains_key(*k)) {
            let labels = [gone[0].as_str(), gone[1].as_str(), gone[2].as_str()];
            let _ = self.f.listen_queue.remove_label_values(&labels);
            let _ = self.f.listen_queue_max.remove_label_values(&labels);
            let _ = self.f.listen_overflows.remove_label_values(&labels);
        }
        self.shown_queues = now.into_keys().collect();
    }

    /// Tracks a socket the events did not announce.
    fn adopt(&mut self, s: &FoundSocket, now_mono_ns: u64) {
        let (addr, port) = match s.direction {
            Direction::Inbound => (&s.saddr, s.sport),
            _ => (&s.daddr, s.dport),
        };
        let proc = ProcKey::new(&s.holder.comm, s.holder.container.to_string());
        let endpoint = self.endpoint_label(s.direction == Direction::Inbound, addr, port);
        let overflow = &self.f.series_overflow;
        let slot = self.series.slot(now_mono_ns, proc, direction_label(s.direction), endpoint, None, || {
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
        let live = live_by_slot(&self.live);
        self.expire(now_mono_ns, &live);
        if let Some((names, _)) = &self.names {
            self.f.kubernetes_named.set(names.len() as i64);
        }
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
        let mut time_wait = HashMap::new();
        for (_, s) in self.series.iter() {
            if let Some(n) = s.time_wait.as_ref().map(|tw| tw.count(now_mono_ns)).filter(|n| *n > 0) {
                time_wait.insert(s.key.clone(), n as i64);
            }
        }
        for (key, n) in &time_wait {
            let labels = [&key.proc.comm, &key.proc.container, key.direction, &key.endpoint];
            self.f.time_wait.with_label_values(&labels).set(*n);
        }
        for gone in self.shown_time_wait.iter().filter(|k| !time_wait.contains_key(*k)) {
            let _ = self.f.time_wait.remove_label_values(&[
                &gone.proc.comm,
                &gone.proc.container,
                gone.direction,
                &gone.endpoint,
            ]);
        }
        self.shown_time_wait = time_wait.into_keys().collect();
        self.shown_sockets = sockets.into_keys().collect();
        self.shown_oldest = oldest.into_keys().collect();
        let ports = self.f.local_port_range.get().max(0) as u32;
        self.window.diagnose(now_mono_ns, &mut self.series, &live, &self.f.finding, ports);
        self.refresh_info();
    }

    /// The info metrics the cluster report joins on: workloads (when the
    /// pods changed) and the language of each process with a finding.
    fn refresh_info(&mut self) {
        if let Some((pods, shown)) = &mut self.pods {
            let now = pods.generation();
            if now != *shown {
                *shown = now;
                self.f.workload_info.reset();
                for n in pods.all() {
                    self.f
                        .workload_info
                        .with_label_values(&[&n.label, &n.namespace, &n.pod, &n.workload_kind, &n.workload])
                        .set(1);
                }
            }
        }
        let Some(language_of) = &self.language_of else { return };
        let mut processes = HashSet::new();
        for f in &self.window.latest().report.findings {
            let language = f.pids.iter().rev().find_map(|pid| language_of(*pid));
            let (name, version) = language.unwrap_or_else(|| ("unknown".into(), None));
            processes.insert([f.comm.clone(), f.container.clone(), name, version.unwrap_or_default()]);
        }
        for p in processes.iter().filter(|p| !self.shown_processes.contains(*p)) {
            self.f.process_info.with_label_values(&[&p[0], &p[1], &p[2], &p[3]]).set(1);
        }
        for gone in self.shown_processes.iter().filter(|p| !processes.contains(*p)) {
            let _ = self.f.process_info.remove_label_values(&[&gone[0], &gone[1], &gone[2], &gone[3]]);
        }
        self.shown_processes = processes;
    }

    /// The registry to encode (`/metrics`), and the self-metrics that the
    /// exporter keeps up to date itself.
    pub fn exported(&self) -> Exported {
        Exported {
            registry: self.f.registry(),
            cells: self.series.index(),
            events_lost: self.f.events_lost.clone(),
            untracked_sockets: self.f.untracked_sockets.clone(),
            evicted_sockets: self.f.evicted_sockets.clone(),
            tracked_sockets: self.f.tracked_sockets.clone(),
        }
    }

    /// Takes a mark of every label set's tally when one is due (the window's
    /// start moves on by a fifth of the window each time). Call it often.
    pub fn mark_if_due(&mut self, now_mono_ns: u64) {
        let live = &self.live;
        self.window.mark_if_due(now_mono_ns, &mut self.series, || live_by_slot(live));
    }

    /// The diagnosis as of the last [`Aggregator::refresh`].
    pub fn diagnosis(&self) -> Arc<Diagnosis> {
        self.window.latest()
    }

    /// Forgets processes with no live socket and no event for `ttl`, and
    /// their label sets in every family.
    fn expire(&mut self, now_mono_ns: u64, live: &HashMap<usize, LiveCounts>) {
        let idle_since = now_mono_ns.saturating_sub(self.ttl.as_nanos() as u64);
        // Their cells leave the renders' index with them.
        self.series.expire(idle_since, |slot| live.contains_key(&slot));
    }
}

/// The live sockets counted per label set, by state: the one walk of them
/// (there may be 100 000s) per refresh.
fn live_by_slot(live: &LiveSockets) -> HashMap<usize, LiveCounts> {
    let mut out: HashMap<usize, LiveCounts> = HashMap::new();
    for l in live.iter() {
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

#[cfg(test)]
mod tests {
    use probe_common::{AF_INET, Direction, Event, Owner, REASON_UNKNOWN};

    use super::*;
    use crate::{decode::Decoder, kernel::layout::ResetReasons};

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
            _pad: [0; 2],
            connect_us: 0,
            close_wait_ns: 0,
        }
    }

    fn limits(max_endpoints: usize) -> Limits {
        Limits { max_endpoints, ..Limits::DEFAULT }
    }

    fn render(a: &mut Aggregator, now: u64) -> String {
        a.refresh(now);
        let e = a.exported();
        exposition::to_string(&e.cells.snapshot(), &e.registry)
    }

    fn decoder() -> Decoder {
        Decoder::new(ResetReasons::default())
    }

    fn observe(a: &mut Aggregator, d: &mut Decoder, ev: &Event) {
        a.observe(&d.decode(ev).expect("a known kind"));
    }

    /// A reset ending a connection while its second exchange is reported:
    /// an `open` record and a close folding the open, in either order (the
    /// wrong-password flood test saw 3 of 94 140 connections opened twice).
    #[test]
    fn a_connection_is_opened_once_whatever_the_order_of_its_records() {
        let mut a = Aggregator::new(limits(10), Duration::from_secs(600), "0", "k");
        let mut d = decoder();
        let folded_close = |port: u16| {
            let mut ev = event(EventKind::Close, "c", port, 2);
            ev.flags = probe_common::event_flags::OPEN_FOLDED;
            ev
        };
        // Open first, then the folded close; the folded close first, then the open.
        observe(&mut a, &mut d, &event(EventKind::Open, "c", 1, 1));
        observe(&mut a, &mut d, &folded_close(1));
        observe(&mut a, &mut d, &folded_close(2));
        observe(&mut a, &mut d, &event(EventKind::Open, "c", 2, 3));
        // An ordinary one: its close alone.
        observe(&mut a, &mut d, &folded_close(3));
        let text = render(&mut a, 4);
        let opened = |port: u16| {
            let series = format!(
                "sockprobe_tcp_connections_opened_total{{comm=\"c\",container=\"\",direction=\"outbound\",endpoint=\"10.0.0.1:{port}\"}} 1"
            );
            assert!(text.contains(&series), "{series} in\n{text}");
        };
        opened(1);
        opened(2);
        opened(3);
        assert!(!text.contains("sockprobe_tcp_sockets{"), "the late open is no live socket\n{text}");
    }

    #[test]
    fn endpoints_fold_past_the_cap_and_count() {
        let mut a = Aggregator::new(limits(2), Duration::from_secs(600), "0", "k");
        let mut d = decoder();
        for port in 1..=5 {
            observe(&mut a, &mut d, &event(EventKind::Open, "c", port, 0));
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
            Limits { max_endpoints: 10, max_processes: 50, max_series: 60, ..Limits::DEFAULT },
            Duration::from_secs(600),
            "0",
            "k",
        );
        let mut d = decoder();
        for i in 0..2000u32 {
            observe(&mut a, &mut d, &event(EventKind::Open, &format!("n{i}"), 80, 0));
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
            observe(&mut a, &mut d, &event(EventKind::Open, "n1", port, 0));
        }
        assert!(a.series.len() <= 62, "{} label sets", a.series.len());
    }

    /// A client that shuts its side down, then closes with the response half
    /// read (java.net.http.HttpClient): the close record (closed here, one
    /// exchange) comes before the unread close. Those connections are
    /// `unread_close`, not also `no_reuse`; the same closes without unread
    /// bytes are `no_reuse`.
    #[test]
    fn an_unread_close_after_its_close_record_is_not_also_no_reuse() {
        let kinds = |unread: bool| {
            let mut a = Aggregator::new(limits(10), Duration::from_secs(600), "0", "k");
            let mut d = decoder();
            for i in 0..20u64 {
                let mut close = event(EventKind::Close, "java", 443, 1_000 + i);
                close.cookie = 100 + i;
                observe(&mut a, &mut d, &close);
                if unread {
                    let mut u = event(EventKind::UnreadClose, "java", 443, 1_000 + i);
                    u.cookie = 100 + i;
                    observe(&mut a, &mut d, &u);
                }
            }
            a.refresh(2_000_000_000);
            let mut kinds: Vec<&'static str> = a.diagnosis().report.findings.iter().map(|f| f.finding.name()).collect();
            kinds.sort();
            kinds
        };
        assert_eq!(kinds(true), ["unread_close"]);
        assert_eq!(kinds(false), ["no_reuse"]);
    }

    #[test]
    fn gone_processes_expire() {
        let mut a = Aggregator::new(limits(10), Duration::from_millis(1), "0", "k");
        let mut d = decoder();
        observe(&mut a, &mut d, &event(EventKind::Open, "short", 1, 0));
        observe(&mut a, &mut d, &event(EventKind::Close, "short", 1, 0));
        assert!(render(&mut a, 1_000_000).contains(r#"comm="short""#), "not idle for longer than the ttl yet");
        let text = render(&mut a, 5_000_000);
        assert!(!text.contains("short"), "{text}");
        // And it comes back cleanly.
        observe(&mut a, &mut d, &event(EventKind::Open, "short", 1, 6_000_000));
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
            holder: crate::identity::listing::Holder { pid: 1, comm: comm.into(), cgroup_id: 0, container: "".into() },
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
        observe(&mut a, &mut d, &event(EventKind::Open, "gone", 1, 100)); // its close was lost
        observe(&mut a, &mut d, &event(EventKind::Open, "stays", 2, 100));
        a.begin_listing(1_000);
        // While the listing is taken: one opens, one closes.
        observe(&mut a, &mut d, &event(EventKind::Open, "newer", 3, 1_500));
        observe(&mut a, &mut d, &event(EventKind::Open, "closing", 4, 200));
        observe(&mut a, &mut d, &event(EventKind::Close, "closing", 4, 1_600));
        let listing = Listing {
            sockets: vec![
                found(2, "stays", LiveState::Established),
                found(4, "closing", LiveState::Established), // listed before its close
                found(5, "missed", LiveState::CloseWait),    // its open was lost
                found(6, "reset", LiveState::Closed),        // over, fd still held
            ],
            ..Listing::default()
        };
        let r = a.apply_listing(&listing, 2_000);
        assert_eq!(r, Reconciled { dropped: 1, adopted: 2, changed: 0 });
        let text = render(&mut a, 3_000);
        assert!(!gauge(&text, "gone", "established"), "{text}");
        assert!(gauge(&text, "stays", "established") && gauge(&text, "newer", "established"), "{text}");
        assert!(!gauge(&text, "closing", "established"), "a close seen during the listing wins: {text}");
        assert!(gauge(&text, "missed", "close_wait") && gauge(&text, "reset", "closed"), "{text}");
        // The next listing, without the close race: "stays" turned out reset.
        a.begin_listing(4_000);
        let listing = Listing { sockets: vec![found(2, "stays", LiveState::Closed)], ..Listing::default() };
        let r = a.apply_listing(&listing, 5_000);
        assert_eq!(r, Reconciled { dropped: 3, adopted: 0, changed: 1 });
        let text = render(&mut a, 6_000);
        assert!(gauge(&text, "stays", "closed") && !gauge(&text, "stays", "established"), "{text}");
    }

    #[test]
    fn close_wait_gauges() {
        let mut a = Aggregator::new(limits(10), Duration::from_secs(600), "0", "k");
        let mut d = decoder();
        observe(&mut a, &mut d, &event(EventKind::Open, "leaky", 7, 0));
        observe(&mut a, &mut d, &event(EventKind::CloseWait, "leaky", 7, 1_000_000_000));
        let text = render(&mut a, 4_000_000_000);
        assert!(text.contains(r#"sockprobe_tcp_sockets{comm="leaky",container="",direction="outbound",endpoint="10.0.0.1:7",state="close_wait"} 1"#), "{text}");
        assert!(text.contains(r#"sockprobe_tcp_close_wait_oldest_seconds{comm="leaky",container=""} 3"#), "{text}");
        observe(&mut a, &mut d, &event(EventKind::Close, "leaky", 7, 0));
        let text = render(&mut a, 5_000_000_000);
        assert!(!text.contains("state=\"close_wait\""), "{text}");
    }
}
