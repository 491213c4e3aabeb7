//! The daemon's second step: a raw kernel [`Event`] becomes a [`Decoded`]
//! one, its labels resolved from identity's caches (the `container` of its
//! cgroup, its direction where the kernel side did not know it, the name of
//! a reset's reason), so that the aggregator after it only counts. Listings
//! get their holders' containers here too ([`Decoder::label_listing`]).
use std::{net::IpAddr, sync::Arc};

use probe_common::{Direction, Event, EventKind};

use crate::{
    identity::{
        LocalPorts,
        cgroup::{CgroupPaths, Lookup, Tree},
        container_of,
        k8s::PodNames,
        listing::Listing,
    },
    kernel::layout::ResetReasons,
};

/// A kernel event and its labels.
#[derive(Debug, Clone)]
pub struct Decoded<'a> {
    pub ev: &'a Event,
    pub kind: EventKind,
    /// Inbound or outbound (never unknown: inferred where the kernel did not know).
    pub direction: Direction,
    /// The `container` label of the owner's cgroup.
    pub container: Arc<str>,
    /// The `reason` label (`reset_sent` only).
    pub reason: Option<Arc<str>>,
}

/// `ip:port`, IPv6 as `[addr]:port` (the `endpoint` label).
pub fn endpoint_label(addr: &IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// The `direction` label.
pub fn direction_label(d: Direction) -> &'static str {
    match d {
        Direction::Inbound => "inbound",
        // Unknown never leaves the decoder.
        Direction::Outbound | Direction::Unknown => "outbound",
    }
}

/// `container` labels cached by cgroup id.
const MAX_CACHED_CONTAINERS: usize = 4096;
/// Events parked while the cgroup walker looks for a new id: past this
/// many, the event thread walks the tree itself (memory stays bounded; the
/// ring buffer waits meanwhile).
const MAX_PARKED: usize = 65_536;

pub struct Decoder {
    cgroups: CgroupPaths,
    /// `container` label per cgroup id (ids are never reused while the host runs).
    containers: foldhash::HashMap<u64, Arc<str>>,
    pods: PodNames,
    reasons: ResetReasons,
    /// Reason names by the kernel's value: a handful (an enum of the kernel's).
    reason_names: foldhash::HashMap<u32, Arc<str>>,
    ports: LocalPorts,
    /// The label of a cgroup not found: shared, not allocated per event.
    no_container: Arc<str>,
    /// Events waiting for a walk of the cgroup tree, in order ([`Decoder::feed`]).
    parked: std::collections::VecDeque<Event>,
}

impl Decoder {
    pub fn new(reasons: ResetReasons) -> Decoder {
        Decoder {
            cgroups: CgroupPaths::new(),
            containers: Default::default(),
            pods: Default::default(),
            reasons,
            reason_names: Default::default(),
            ports: LocalPorts::default(),
            no_container: Arc::from(""),
            parked: Default::default(),
        }
    }

    /// Walks the cgroup tree on a thread of its own from now on: give each
    /// tree that comes back on the channel to [`Decoder::install`], and the
    /// events to [`Decoder::feed`].
    pub fn walk_cgroups_off_thread(&mut self) -> tokio::sync::mpsc::Receiver<Tree> {
        self.cgroups.scan_off_thread()
    }

    /// Hands `ev`, decoded, to `sink`, in order: an event of a cgroup no walk
    /// has seen yet waits (parked, with every event after it) for the
    /// walker's tree, so the event thread never walks it itself.
    pub fn feed(&mut self, ev: &Event, sink: &mut dyn FnMut(&Decoded<'_>)) {
        if self.parked.len() >= MAX_PARKED {
            log::warn!("{MAX_PARKED} events waited for the cgroup walker: walking on the event thread");
            let tree = self.cgroups.walk_here();
            self.install(tree, sink);
            // Still waiting (ids seen after that walk): labelled as not found.
            while self.parked.len() >= MAX_PARKED / 2
                && let Some(p) = self.parked.pop_front()
            {
                if let Some(d) = self.decode(&p) {
                    sink(&d);
                }
            }
        }
        if self.parked.is_empty() {
            match self.try_decode(ev) {
                Some(Some(d)) => return sink(&d),
                Some(None) => return,
                None => {}
            }
        }
        self.parked.push_back(*ev);
    }

    /// A walk's tree: the parked events whose cgroups it names (or shows
    /// gone) go to `sink`, in order, until one waits for another walk.
    pub fn install(&mut self, tree: Tree, sink: &mut dyn FnMut(&Decoded<'_>)) {
        self.cgroups.install(tree);
        self.unpark(sink);
    }

    /// A tree a listing walked: it names the cgroups it holds, parked events
    /// of those go on; ids that wait for the walker keep waiting for it (this
    /// walk may have begun before they were seen).
    pub fn refresh_cgroups(&mut self, tree: Tree, sink: &mut dyn FnMut(&Decoded<'_>)) {
        self.cgroups.refresh(tree);
        self.unpark(sink);
    }

    /// The parked events whose cgroups are told now, in order, until one
    /// still waits.
    fn unpark(&mut self, sink: &mut dyn FnMut(&Decoded<'_>)) {
        while let Some(ev) = self.parked.front().copied() {
            match self.try_decode(&ev) {
                None => break,
                Some(d) => {
                    self.parked.pop_front();
                    if let Some(d) = d {
                        sink(&d);
                    }
                }
            }
        }
    }

    /// Where the cgroup tree is walked from (for a walk on another thread).
    pub fn cgroup_root(&self) -> Option<std::path::PathBuf> {
        self.cgroups.root()
    }

    /// Events waiting for the cgroup walker.
    pub fn parked(&self) -> usize {
        self.parked.len()
    }

    /// `None` while its cgroup waits for a walk; `Some(None)` for a kind this
    /// build does not know.
    fn try_decode<'a>(&mut self, ev: &'a Event) -> Option<Option<Decoded<'a>>> {
        let container = self.try_container(ev.owner.cgroup_id)?;
        Some(self.decoded(ev, container))
    }

    /// Names Kubernetes containers through the API (DaemonSet mode).
    pub fn set_pods(&mut self, pods: PodNames) {
        self.pods = pods;
    }

    /// Listening ports found by a listing: they tell the direction of
    /// sockets whose birth the kernel side did not see (identity::direction).
    pub fn set_ports(&mut self, ports: LocalPorts) {
        self.ports = ports;
    }

    /// The event with its labels; `None` for a kind this build does not
    /// know. A cgroup a walk in flight has still to find is labelled as not
    /// found: the daemon uses [`Decoder::feed`], which waits for it.
    pub fn decode<'a>(&mut self, ev: &'a Event) -> Option<Decoded<'a>> {
        let container = self.container(ev.owner.cgroup_id);
        self.decoded(ev, container)
    }

    fn decoded<'a>(&mut self, ev: &'a Event, container: Arc<str>) -> Option<Decoded<'a>> {
        let kind = EventKind::from_u8(ev.kind)?;
        let reason = (kind == EventKind::ResetSent).then(|| self.reason(ev.reason));
        Some(Decoded {
            ev,
            kind,
            direction: self.ports.resolve(Direction::from_u8(ev.direction), ev.sport),
            container,
            reason,
        })
    }

    /// Fills in each listed socket's `container` label.
    pub fn label_listing(&mut self, listing: &mut Listing) {
        for s in &mut listing.sockets {
            s.holder.container = self.container(s.holder.cgroup_id);
        }
        for q in &mut listing.accept_queues {
            q.holder.container = self.container(q.holder.cgroup_id);
        }
    }

    /// The `container` label of a cgroup id (not found: none).
    fn container(&mut self, cgroup_id: u64) -> Arc<str> {
        self.try_container(cgroup_id).unwrap_or_else(|| self.no_container.clone())
    }

    /// The `container` label of a cgroup id; `None` while a walk is to tell.
    fn try_container(&mut self, cgroup_id: u64) -> Option<Arc<str>> {
        if let Some(c) = self.containers.get(&cgroup_id) {
            return Some(c.clone());
        }
        // Unknown ids (a cgroup created and gone between walks) are not cached.
        let path = match self.cgroups.lookup(cgroup_id) {
            Lookup::Found(path) => path,
            Lookup::Unknown => return Some(self.no_container.clone()),
            Lookup::Pending => return None,
        };
        let c: Arc<str> = self.pods.resolve(&container_of(&path)).into();
        // A pod the API has not named yet may be named at the next refresh.
        if !c.starts_with("/k8s/pod-") {
            if self.containers.len() >= MAX_CACHED_CONTAINERS {
                // Bounded whatever the churn of cgroups: start over.
                self.containers.clear();
            }
            self.containers.insert(cgroup_id, c.clone());
        }
        Some(c)
    }

    fn reason(&mut self, value: u32) -> Arc<str> {
        if let Some(name) = self.reason_names.get(&value) {
            return name.clone();
        }
        let name: Arc<str> = self.reasons.name(value).into();
        // Values come from the kernel's enum; the bound only guards a bug.
        if self.reason_names.len() < 1024 {
            self.reason_names.insert(value, name.clone());
        }
        name
    }
}

#[cfg(test)]
mod tests {
    use probe_common::AF_INET;

    use super::*;

    #[test]
    fn labels() {
        assert_eq!(endpoint_label(&"10.0.0.1".parse().unwrap(), 80), "10.0.0.1:80");
        assert_eq!(endpoint_label(&"::1".parse().unwrap(), 443), "[::1]:443");
        assert_eq!(direction_label(Direction::Unknown), "outbound");
    }

    #[test]
    fn events_get_their_labels() {
        let mut ev: Event = unsafe { std::mem::zeroed() };
        ev.kind = EventKind::ResetSent as u8;
        ev.family = AF_INET;
        ev.reason = probe_common::REASON_UNKNOWN;
        ev.direction = Direction::Inbound as u8;
        let mut decoder = Decoder::new(ResetReasons::default());
        let d = decoder.decode(&ev).expect("a known kind");
        assert_eq!(d.kind, EventKind::ResetSent);
        assert_eq!(d.direction, Direction::Inbound);
        assert_eq!(d.reason.as_deref(), Some("unknown"));
        ev.kind = EventKind::UnreadClose as u8;
        assert!(decoder.decode(&ev).expect("a known kind").reason.is_none());
        ev.kind = 99;
        assert!(decoder.decode(&ev).is_none());
    }

    /// With the walker thread, an event of a cgroup no walk has seen waits,
    /// with every event after it, for the walker's tree; then all go, in
    /// order. The event path never walks.
    #[test]
    fn events_of_a_new_cgroup_wait_for_the_walker_in_order() {
        let Some(root) = crate::identity::cgroup::cgroup2_mount() else {
            eprintln!("skipped: no cgroup2 mount here");
            return;
        };
        let own = crate::identity::cgroup::proc_cgroup(std::process::id()).expect("own cgroup");
        let id = crate::identity::cgroup::cgroup_id(&root, &own).expect("own cgroup id");
        let mut decoder = Decoder::new(ResetReasons::default());
        let mut trees = decoder.walk_cgroups_off_thread();
        let mut ev: Event = unsafe { std::mem::zeroed() };
        ev.kind = EventKind::Open as u8;
        ev.family = AF_INET;
        let mut seen = Vec::new();
        for cookie in 1..=3 {
            ev.cookie = cookie;
            // The first of a new cgroup, then one of the root cgroup (known
            // once walked), then the new cgroup again.
            ev.owner.cgroup_id = if cookie == 2 { 0 } else { id };
            decoder.feed(&ev, &mut |d| seen.push(d.ev.cookie));
        }
        assert!(seen.is_empty(), "nothing before the walk: {seen:?}");
        assert_eq!(decoder.parked(), 3);
        let tree = trees.blocking_recv().expect("the walker's tree");
        assert!(tree.contains_key(&id));
        decoder.install(tree, &mut |d| seen.push(d.ev.cookie));
        assert_eq!(seen, [1, 2, 3], "in order");
        ev.cookie = 4;
        decoder.feed(&ev, &mut |d| seen.push(d.ev.cookie));
        assert_eq!(seen, [1, 2, 3, 4], "known now: straight through");
    }
}
