//! Which side of a connection this host is, when sockprobe did not see the
//! connection being born.
//!
//! The kernel side knows the direction of every connection it saw start:
//! `connect()` (CLOSE→SYN_SENT) is outbound, a child of a listener
//! (LISTEN→SYN_RECV) inbound. It does not know it for sockets older than
//! sockprobe, nor where a fallback probe misses the child's birth. For those,
//! one rule, used by the start-up scan and the decoder alike:
//!
//! 1. the local port is one this host listens on: inbound (it was accepted);
//! 2. else the local port lies in the kernel's ephemeral range
//!    (`net.ipv4.ip_local_port_range`), from which `connect()` picks: outbound;
//! 3. else inbound (a fixed port, its listener gone since).
use std::{collections::HashSet, ops::RangeInclusive};

use probe_common::Direction;

/// The local ports that tell a direction: listening ones (per network
/// namespace) and the ephemeral range.
#[derive(Clone, Debug)]
pub struct LocalPorts {
    ephemeral: RangeInclusive<u16>,
    /// (network namespace, port) of every listener.
    listening: HashSet<(u32, u16)>,
    /// The same ports, any namespace: for events, which carry no namespace.
    listening_anywhere: HashSet<u16>,
}

impl Default for LocalPorts {
    fn default() -> Self {
        LocalPorts { ephemeral: ephemeral_range(), listening: HashSet::new(), listening_anywhere: HashSet::new() }
    }
}

impl LocalPorts {
    /// How many local ports connect() may pick from.
    pub fn ephemeral_count(&self) -> u32 {
        (*self.ephemeral.end() as u32 + 1).saturating_sub(*self.ephemeral.start() as u32)
    }

    /// Listeners as (network namespace, port).
    pub fn with_listening(ports: impl IntoIterator<Item = (u32, u16)>) -> LocalPorts {
        let listening: HashSet<(u32, u16)> = ports.into_iter().collect();
        let listening_anywhere = listening.iter().map(|(_, p)| *p).collect();
        LocalPorts { listening, listening_anywhere, ..LocalPorts::default() }
    }

    /// The direction by the rule above; `netns` where known (else a listener
    /// on that port in any namespace counts).
    pub fn infer(&self, netns: Option<u32>, local_port: u16) -> Direction {
        let listening = match netns {
            Some(ns) => self.listening.contains(&(ns, local_port)),
            None => self.listening_anywhere.contains(&local_port),
        };
        if listening {
            Direction::Inbound
        } else if self.ephemeral.contains(&local_port) {
            Direction::Outbound
        } else {
            Direction::Inbound
        }
    }

    /// The kernel's direction where it knew it, else [`LocalPorts::infer`].
    pub fn resolve(&self, kernel: Direction, local_port: u16) -> Direction {
        match kernel {
            Direction::Unknown => self.infer(None, local_port),
            known => known,
        }
    }
}

/// `net.ipv4.ip_local_port_range` (it also governs IPv6), or the kernel's default.
fn ephemeral_range() -> RangeInclusive<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u16>().ok());
            Some(it.next()??..=it.next()??)
        })
        .unwrap_or(32768..=60999)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_ports_win_over_the_ephemeral_range() {
        let ports = LocalPorts { ephemeral: 32768..=60999, ..LocalPorts::with_listening([(1, 40000), (1, 8080)]) };
        assert_eq!(ports.infer(Some(1), 40000), Direction::Inbound, "a listener on an ephemeral port");
        assert_eq!(ports.infer(Some(2), 40000), Direction::Outbound, "that listener is in another namespace");
        assert_eq!(ports.infer(None, 40000), Direction::Inbound, "namespace unknown: any listener counts");
        assert_eq!(ports.infer(Some(1), 8080), Direction::Inbound);
        assert_eq!(ports.infer(Some(1), 40001), Direction::Outbound);
        assert_eq!(ports.infer(Some(1), 443), Direction::Inbound, "fixed port, listener gone");
        assert_eq!(ports.resolve(Direction::Outbound, 8080), Direction::Outbound, "the kernel's word wins");
        assert_eq!(ports.resolve(Direction::Unknown, 40001), Direction::Outbound);
    }
}
