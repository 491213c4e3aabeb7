//! Kernel [`Event`] records turned into what users read: names, addresses,
//! wall-clock times, the container label.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use probe_common::{AF_INET, Direction, Event, EventKind};
use serde::Serialize;

use crate::{
    identity::{CgroupPaths, Clock, container_of, rfc3339_ns},
    layout::ResetReasons,
};

/// One event as `sockprobe trace` prints it (contract.md, "Events").
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub ts: String,
    pub event: &'static str,
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
    /// Internal: the event kind, not printed (`event` carries its name).
    #[serde(skip)]
    pub kind: Option<EventKind>,
}

impl Record {
    /// `ip:port` of the service side (contract.md, label `endpoint`).
    pub fn endpoint(&self) -> String {
        if self.direction == "inbound" {
            endpoint_label(&self.saddr, self.sport)
        } else {
            endpoint_label(&self.daddr, self.dport)
        }
    }
}

/// `ip:port`, IPv6 as `[addr]:port`.
pub fn endpoint_label(addr: &str, port: u16) -> String {
    if addr.contains(':') { format!("[{addr}]:{port}") } else { format!("{addr}:{port}") }
}

pub fn parse_event(bytes: &[u8]) -> Option<Event> {
    if bytes.len() < size_of::<Event>() {
        return None;
    }
    // SAFETY: length checked; Event is plain old data.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const Event) })
}

pub fn comm_str(comm: &[u8]) -> String {
    let end = comm.iter().position(|&c| c == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

pub fn addr_string(family: u16, raw: &[u8; 16]) -> String {
    if family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3])).to_string()
    } else {
        IpAddr::V6(Ipv6Addr::from(*raw)).to_string()
    }
}

/// Local ports the kernel picks for `connect()`: a socket whose direction we
/// did not see being born is outbound when its local port is in this range.
pub fn ephemeral_ports() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

pub struct Decoder {
    clock: Clock,
    cgroups: CgroupPaths,
    /// `container` label per cgroup id (ids are never reused while the host runs).
    containers: crate::fasthash::FastMap<u64, String>,
    pods: crate::k8s::PodNames,
    reasons: ResetReasons,
    ephemeral: (u16, u16),
}

impl Decoder {
    pub fn new(reasons: ResetReasons) -> Decoder {
        Decoder {
            clock: Clock::new(),
            cgroups: CgroupPaths::new(),
            containers: Default::default(),
            pods: Default::default(),
            reasons,
            ephemeral: ephemeral_ports(),
        }
    }

    pub fn container(&mut self, cgroup_id: u64) -> String {
        if let Some(c) = self.containers.get(&cgroup_id) {
            return c.clone();
        }
        // Unknown ids (a cgroup created and gone between scans) are not cached.
        let Some(path) = self.cgroups.path(cgroup_id) else { return String::new() };
        let c = self.pods.resolve(&container_of(&path));
        // A pod the API has not named yet may be named at the next refresh.
        if !c.starts_with("/k8s/pod-") {
            self.containers.insert(cgroup_id, c.clone());
        }
        c
    }

    /// Names Kubernetes containers through the API (DaemonSet mode).
    pub fn set_pods(&mut self, pods: crate::k8s::PodNames) {
        self.pods = pods;
    }

    pub fn reason_name(&self, value: u32) -> String {
        self.reasons.name(value)
    }

    pub fn direction(&self, raw: u8, sport: u16) -> &'static str {
        match Direction::from_u8(raw) {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
            Direction::Unknown if (self.ephemeral.0..=self.ephemeral.1).contains(&sport) => "outbound",
            Direction::Unknown => "inbound",
        }
    }

    pub fn decode(&mut self, ev: &Event) -> Option<Record> {
        let kind = EventKind::from_u8(ev.kind)?;
        let mut r = Record {
            ts: rfc3339_ns(self.clock.unix_ns(ev.ts_ns)),
            event: kind.name(),
            pid: ev.owner.tgid,
            comm: comm_str(&ev.owner.comm),
            container: self.container(ev.owner.cgroup_id),
            cookie: ev.cookie,
            family: if ev.family == AF_INET { "ipv4" } else { "ipv6" },
            saddr: addr_string(ev.family, &ev.saddr),
            sport: ev.sport,
            daddr: addr_string(ev.family, &ev.daddr),
            dport: ev.dport,
            direction: self.direction(ev.direction, ev.sport),
            duration_ns: None,
            bytes_in: None,
            bytes_out: None,
            exchanges: None,
            unread_bytes: None,
            reason: None,
            age_ns: None,
            kind: Some(kind),
        };
        match kind {
            EventKind::Close => {
                r.duration_ns = Some(ev.value);
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
