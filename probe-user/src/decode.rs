//! Kernel [`Event`] records turned into what users read: names, addresses,
//! wall-clock times, the container label, the direction.
use std::net::IpAddr;

use probe_common::{AF_INET, Closer, Direction, Event, EventKind};
use serde::Serialize;

use crate::{
    identity::{Clock, LocalPorts, cgroup::CgroupPaths, container_of, k8s::PodNames, rfc3339_ns},
    kernel::layout::ResetReasons,
};

/// One event as `sockprobe trace` prints it (docs/metrics.md, "Events").
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub ts: String,
    /// The event kind; printed as its name under `event`.
    #[serde(rename = "event", serialize_with = "kind_name")]
    pub kind: EventKind,
    pub pid: u32,
    pub comm: String,
    pub container: String,
    pub cookie: u64,
    pub family: &'static str,
    pub saddr: String,
    pub sport: u16,
    pub daddr: String,
    pub dport: u16,
    pub direction: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ns: Option<u64>,
    /// Who ended the connection (`close` only): local, peer, reset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closer: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_out: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exchanges: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unread_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_ns: Option<u64>,
}

fn kind_name<S: serde::Serializer>(kind: &EventKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.name())
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
        // Unknown never reaches here after LocalPorts::resolve.
        Direction::Outbound | Direction::Unknown => "outbound",
    }
}

pub use crate::identity::sockets::{comm_str, ip_addr};

/// `container` labels cached by cgroup id.
const MAX_CACHED_CONTAINERS: usize = 4096;

pub struct Decoder {
    clock: Clock,
    cgroups: CgroupPaths,
    /// `container` label per cgroup id (ids are never reused while the host runs).
    containers: foldhash::HashMap<u64, String>,
    pods: PodNames,
    reasons: ResetReasons,
    ports: LocalPorts,
}

impl Decoder {
    pub fn new(reasons: ResetReasons) -> Decoder {
        Decoder {
            clock: Clock::new(),
            cgroups: CgroupPaths::new(),
            containers: Default::default(),
            pods: Default::default(),
            reasons,
            ports: LocalPorts::default(),
        }
    }

    /// The `container` label of a cgroup id.
    pub fn container(&mut self, cgroup_id: u64) -> String {
        if let Some(c) = self.containers.get(&cgroup_id) {
            return c.clone();
        }
        // Unknown ids (a cgroup created and gone between scans) are not cached.
        let Some(path) = self.cgroups.path(cgroup_id) else { return String::new() };
        let c = self.pods.resolve(&container_of(&path));
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

    /// Names Kubernetes containers through the API (DaemonSet mode).
    pub fn set_pods(&mut self, pods: PodNames) {
        self.pods = pods;
    }

    /// Listening ports found by a scan: they tell the direction of sockets
    /// whose birth the kernel side did not see (identity::direction).
    pub fn set_ports(&mut self, ports: LocalPorts) {
        self.ports = ports;
    }

    pub fn reason_name(&self, value: u32) -> String {
        self.reasons.name(value)
    }

    /// The event's direction, inferred where the kernel side did not know it.
    pub fn direction(&self, ev: &Event) -> Direction {
        self.ports.resolve(Direction::from_u8(ev.direction), ev.sport)
    }

    pub fn decode(&mut self, ev: &Event) -> Option<Record> {
        let kind = EventKind::from_u8(ev.kind)?;
        let mut r = Record {
            ts: rfc3339_ns(self.clock.unix_ns(ev.ts_ns)),
            kind,
            pid: ev.owner.tgid,
            comm: comm_str(&ev.owner.comm),
            container: self.container(ev.owner.cgroup_id),
            cookie: ev.cookie,
            family: if ev.family == AF_INET { "ipv4" } else { "ipv6" },
            saddr: ip_addr(ev.family, &ev.saddr).to_string(),
            sport: ev.sport,
            daddr: ip_addr(ev.family, &ev.daddr).to_string(),
            dport: ev.dport,
            direction: direction_label(self.direction(ev)),
            duration_ns: None,
            closer: None,
            bytes_in: None,
            bytes_out: None,
            exchanges: None,
            unread_bytes: None,
            reason: None,
            age_ns: None,
        };
        match kind {
            EventKind::Close => {
                r.duration_ns = Some(ev.value);
                r.closer = Closer::from_u8(ev.closer).map(Closer::name);
                r.bytes_in = Some(ev.bytes_in);
                r.bytes_out = Some(ev.bytes_out);
                r.exchanges = Some(ev.exchanges);
            }
            EventKind::UnreadClose => r.unread_bytes = Some(ev.value),
            EventKind::ResetSent => r.reason = Some(self.reasons.name(ev.reason)),
            EventKind::CloseWaitEnd => r.age_ns = Some(ev.value),
            EventKind::Open | EventKind::ResetReceived | EventKind::CloseWait => {}
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(endpoint_label(&"10.0.0.1".parse().unwrap(), 80), "10.0.0.1:80");
        assert_eq!(endpoint_label(&"::1".parse().unwrap(), 443), "[::1]:443");
        assert_eq!(comm_str(b"curl\0\0\0\0"), "curl");
        let mut raw = [0u8; 16];
        raw[..4].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(ip_addr(AF_INET, &raw).to_string(), "127.0.0.1");
    }

    #[test]
    fn records_name_their_event() {
        let mut ev: Event = unsafe { std::mem::zeroed() };
        ev.kind = EventKind::UnreadClose as u8;
        ev.family = AF_INET;
        ev.value = 42;
        ev.direction = Direction::Outbound as u8;
        let rec = Decoder::new(ResetReasons::default()).decode(&ev).expect("a known kind");
        let json = serde_json::to_value(&rec).unwrap();
        assert_eq!(json["event"], "unread_close");
        assert_eq!(json["unread_bytes"], 42);
        assert_eq!(json["direction"], "outbound");
        assert!(json.get("reason").is_none());
        ev.kind = 99;
        assert!(Decoder::new(ResetReasons::default()).decode(&ev).is_none());
    }
}
