//! The daemon's second step: a raw kernel [`Event`] becomes a [`Decoded`]
//! one, its labels resolved from identity's caches (the `container` of its
//! cgroup, its direction where the kernel side did not know it, the name of
//! a reset's reason), so that the aggregator after it only counts. Listings
//! get their holders' containers here too ([`Decoder::label_listing`]).
use std::{net::IpAddr, sync::Arc};

use probe_common::{Direction, Event, EventKind};

use crate::{
    identity::{LocalPorts, cgroup::CgroupPaths, container_of, k8s::PodNames, listing::Listing},
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
        }
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

    /// The event with its labels; `None` for a kind this build does not know.
    pub fn decode<'a>(&mut self, ev: &'a Event) -> Option<Decoded<'a>> {
        let kind = EventKind::from_u8(ev.kind)?;
        let reason = (kind == EventKind::ResetSent).then(|| self.reason(ev.reason));
        Some(Decoded {
            ev,
            kind,
            direction: self.ports.resolve(Direction::from_u8(ev.direction), ev.sport),
            container: self.container(ev.owner.cgroup_id),
            reason,
        })
    }

    /// Fills in each listed socket's `container` label.
    pub fn label_listing(&mut self, listing: &mut Listing) {
        for s in &mut listing.sockets {
            s.holder.container = self.container(s.holder.cgroup_id);
        }
    }

    /// The `container` label of a cgroup id.
    fn container(&mut self, cgroup_id: u64) -> Arc<str> {
        if let Some(c) = self.containers.get(&cgroup_id) {
            return c.clone();
        }
        // Unknown ids (a cgroup created and gone between scans) are not cached.
        let Some(path) = self.cgroups.path(cgroup_id) else { return self.no_container.clone() };
        let c: Arc<str> = self.pods.resolve(&container_of(&path)).into();
        // A pod the API has not named yet may be named at the next refresh.
        if !c.starts_with("/k8s/pod-") {
            if self.containers.len() >= MAX_CACHED_CONTAINERS {
                // Bounded whatever the churn of cgroups: start over.
                self.containers.clear();
            }
            self.containers.insert(cgroup_id, c.clone());
        }
        c
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
}
