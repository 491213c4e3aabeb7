//! Live sockets as the kernel lists them, every network namespace at once:
//! who holds each, in which state, which side of the connection this host
//! is. Two sources write the same records ([`SocketEntry`]): the
//! socket-listing iterator ([`iterator`]), or where it does not load,
//! sock_diag inside each namespace ([`sock_diag`]). [`Source::list`] takes
//! one pass from either; `cmd::listing` runs it off the event path and
//! applies it, at start-up and at each reconcile.
pub mod iterator;
pub mod sock_diag;

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::{Duration, Instant},
};

use probe_common::{AF_INET, Direction, ListenerKey, Owner, SocketEntry, TcpStates, entry_flags};

use super::direction::LocalPorts;

/// Where one pass reads its records from.
pub enum Source {
    /// A fresh run of the socket-listing iterator (reading it runs it).
    Iterator(std::fs::File),
    /// The fallback: sock_diag entered into each network namespace.
    SockDiag,
}

/// One pass and what it cost.
pub struct Listed {
    pub listing: Listing,
    /// CPU time of the listing thread, the kernel's pass included.
    pub cpu: Duration,
    /// The cgroup tree, walked on the same thread right after, so the
    /// holders' containers are named without a walk on the event thread.
    pub cgroups: Option<super::cgroup::Tree>,
}

/// Distinct sockets one pass keeps (~150 bytes each in memory): past it,
/// sockets are counted and said, not looked at. Records of a socket already
/// kept (another fd, a repeat) cost nothing, so no number of fds reaches it;
/// only this many live connections, which cost their holders' kernel memory
/// first.
pub const MAX_SOCKETS: usize = 1 << 18;

impl Source {
    /// Lists every socket. Blocking: run it off the event path. Records are
    /// applied as they stream in, never collected whole.
    pub fn list(self, states: &TcpStates) -> Result<Listed, String> {
        let (started, cpu) = (Instant::now(), thread_cpu());
        let mut builder = Builder::new(*states);
        match self {
            Source::Iterator(file) => {
                iterator::for_each_entry(file, |e| builder.add(e)).map_err(|e| format!("socket listing: {e}"))?;
            }
            Source::SockDiag => sock_diag::list_by_namespace(states)
                .map_err(|e| format!("socket listing (sock_diag): {e}"))?
                .iter()
                .for_each(|e| builder.add(e)),
        }
        let mut listing = builder.finish();
        listing.took = started.elapsed();
        if listing.unseen > 0 {
            log::warn!("socket listing: {} sockets past the first {MAX_SOCKETS} not looked at", listing.unseen);
        }
        Ok(Listed { listing, cpu: thread_cpu().saturating_sub(cpu), cgroups: None })
    }
}

/// CPU time this thread has used (user + system).
fn thread_cpu() -> Duration {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// The states sockprobe reports live sockets in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LiveState {
    Established,
    CloseWait,
    /// The connection is over (reset, timed out) but a process still holds
    /// the socket's fd: invisible to `ss`, still counting toward its fd limit.
    Closed,
}

impl LiveState {
    /// The `state` label.
    pub fn label(self) -> &'static str {
        match self {
            LiveState::Established => "established",
            LiveState::CloseWait => "close_wait",
            LiveState::Closed => "closed",
        }
    }
}

/// The process holding a socket's fd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    /// The `container` label, filled in by the decoder before the listing
    /// is applied (empty until then).
    pub container: Arc<str>,
}

/// A live connection and the process holding it.
#[derive(Debug, Clone)]
pub struct FoundSocket {
    pub cookie: u64,
    pub netns: u32,
    pub state: LiveState,
    pub saddr: IpAddr,
    pub sport: u16,
    pub daddr: IpAddr,
    pub dport: u16,
    pub direction: Direction,
    pub holder: Holder,
}

/// Listeners whose accept queue one pass reports; past it they are counted
/// as unseen (`sockprobe_listing_unseen_sockets`).
pub const MAX_ACCEPT_QUEUES: usize = 4096;

/// A listener's accept queue: connections the kernel completed that the
/// process has not accept()ed yet, against its backlog.
#[derive(Debug, Clone)]
pub struct AcceptQueue {
    pub addr: IpAddr,
    pub port: u16,
    pub waiting: u32,
    /// Connections it dropped since it listened (`sk_drops`; 0 on sock_diag).
    pub drops: u32,
    pub backlog: u32,
    pub holder: Holder,
}

/// One pass over every task's sockets.
#[derive(Debug, Default)]
pub struct Listing {
    pub sockets: Vec<FoundSocket>,
    /// Listening sockets and their owners, as the kernel side keys them:
    /// the sockets they accept later start with this owner.
    pub listeners: Vec<(ListenerKey, Owner)>,
    /// Each listening socket's accept queue, as the kernel holds it now.
    pub accept_queues: Vec<AcceptQueue>,
    /// Listening ports and the ephemeral range, to tell directions by.
    pub ports: LocalPorts,
    /// Records of a socket already listed (an fd shared by fork or passed
    /// over a Unix socket, where the kernel side did not drop it): the first
    /// holder is kept.
    pub shared: usize,
    /// Sockets past [`MAX_SOCKETS`], not looked at.
    pub unseen: usize,
    /// Records read (sockets, listeners' queued connections, repeats).
    pub records: usize,
    /// The pass, the kernel's part included.
    pub took: Duration,
}

impl Listing {
    /// Sorts a whole pass's records at once (tests, fuzzing). `states` is
    /// this kernel's numbering.
    pub fn from_entries(entries: &[SocketEntry], states: &TcpStates) -> Listing {
        let mut builder = Builder::new(*states);
        entries.iter().for_each(|e| builder.add(e));
        builder.finish()
    }
}

/// A listing built record by record, as a pass streams: memory grows with
/// distinct sockets (up to [`MAX_SOCKETS`]), never with records.
pub struct Builder {
    states: TcpStates,
    listing: Listing,
    seen: HashSet<u64>,
    listeners: HashSet<ListenerKey>,
    /// Queued connections are inbound whatever the ports say; the rest are
    /// told apart once every listener is known (a socket may stream in
    /// before its listener).
    queued: Vec<bool>,
}

impl Builder {
    pub fn new(states: TcpStates) -> Builder {
        Builder {
            states,
            listing: Listing::default(),
            seen: HashSet::new(),
            listeners: HashSet::new(),
            queued: Vec::new(),
        }
    }

    pub fn add(&mut self, e: &SocketEntry) {
        self.listing.records += 1;
        let (states, queued) = (&self.states, e.flags & entry_flags::QUEUED != 0);
        if e.state as u32 == states.listen && !queued {
            let key = ListenerKey { netns: e.netns, port: e.sport, _pad: 0, addr: e.saddr };
            if self.listeners.insert(key) {
                let owner = Owner { cgroup_id: e.cgroup_id, tgid: e.tgid, _pad: 0, comm: e.comm };
                self.listing.listeners.push((key, owner));
            }
            // One per listening socket (SO_REUSEPORT: several per key; the
            // kernel side writes each socket once a pass).
            if self.listing.accept_queues.len() >= MAX_ACCEPT_QUEUES {
                self.listing.unseen += 1;
            } else {
                self.listing.accept_queues.push(AcceptQueue {
                    addr: ip_addr(e.family, &e.saddr),
                    port: e.sport,
                    waiting: e.accept_queue,
                    drops: e.listen_drops,
                    backlog: e.accept_backlog,
                    holder: Holder {
                        pid: e.tgid,
                        comm: comm_str(&e.comm),
                        cgroup_id: e.cgroup_id,
                        container: "".into(),
                    },
                });
            }
            return;
        }
        let state = match e.state as u32 {
            s if s == states.established => LiveState::Established,
            s if s == states.close_wait => LiveState::CloseWait,
            // Never connected sockets are CLOSE too: a remote port tells
            // a connection that was.
            s if s == states.close && e.dport != 0 && !queued => LiveState::Closed,
            _ => return,
        };
        if e.cookie == 0 {
            return;
        }
        if self.seen.contains(&e.cookie) {
            self.listing.shared += 1;
            return;
        }
        if self.listing.sockets.len() >= MAX_SOCKETS {
            self.listing.unseen += 1;
            return;
        }
        self.seen.insert(e.cookie);
        self.queued.push(queued);
        self.listing.sockets.push(FoundSocket {
            cookie: e.cookie,
            netns: e.netns,
            state,
            saddr: ip_addr(e.family, &e.saddr),
            sport: e.sport,
            daddr: ip_addr(e.family, &e.daddr),
            dport: e.dport,
            direction: Direction::Inbound,
            holder: Holder { pid: e.tgid, comm: comm_str(&e.comm), cgroup_id: e.cgroup_id, container: "".into() },
        });
    }

    pub fn finish(self) -> Listing {
        let mut listing = self.listing;
        listing.ports = LocalPorts::with_listening(listing.listeners.iter().map(|(k, _)| (k.netns, k.port)));
        for (s, queued) in listing.sockets.iter_mut().zip(self.queued) {
            if !queued {
                s.direction = listing.ports.infer(Some(s.netns), s.sport);
            }
        }
        listing
    }
}

/// An address as the kernel records it (IPv4 in the first 4 bytes).
pub fn ip_addr(family: u16, raw: &[u8; 16]) -> IpAddr {
    if family == AF_INET {
        return IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]));
    }
    // A dual-stack socket (Java's, by default) talking to an IPv4 peer: the
    // peer is that IPv4 address, one endpoint whichever socket reached it.
    let v6 = Ipv6Addr::from(*raw);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// A NUL-padded `comm` as text.
pub fn comm_str(raw: &[u8]) -> String {
    let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_ipv4_mapped_address_is_its_ipv4_address() {
        let mut raw = [0u8; 16];
        raw[10..12].copy_from_slice(&[0xff, 0xff]);
        raw[12..].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(super::ip_addr(AF_INET6, &raw), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(super::ip_addr(AF_INET6, &Ipv6Addr::LOCALHOST.octets()), IpAddr::V6(Ipv6Addr::LOCALHOST));
        // ::127.0.0.1 (IPv4-compatible, deprecated) is not mapped: it stays IPv6.
        let mut compat = [0u8; 16];
        compat[12..].copy_from_slice(&[127, 0, 0, 1]);
        assert!(super::ip_addr(AF_INET6, &compat).is_ipv6());
    }

    use probe_common::AF_INET6;

    use super::*;

    const STATES: TcpStates = TcpStates::LINUX;

    fn entry(cookie: u64, netns: u32, state: u32, sport: u16, dport: u16, name: &str) -> SocketEntry {
        let mut e: SocketEntry = unsafe { std::mem::zeroed() };
        e.cookie = cookie;
        e.netns = netns;
        e.state = state as u8;
        e.sport = sport;
        e.dport = dport;
        e.family = AF_INET;
        e.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        e.daddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        e.tgid = cookie as u32;
        e.comm[..name.len()].copy_from_slice(name.as_bytes());
        e
    }

    #[test]
    fn states_directions_and_listeners_per_namespace() {
        let entries = [
            // Two namespaces, a server on 127.0.0.1:8080 in each.
            entry(1, 100, STATES.listen, 8080, 0, "srv-a"),
            entry(2, 200, STATES.listen, 8080, 0, "srv-b"),
            entry(3, 100, STATES.established, 8080, 40000, "srv-a"),
            entry(4, 100, STATES.established, 40000, 8080, "client"),
            // Port 8080 listens in namespace 100 only: in 300 it is a client's.
            entry(5, 300, STATES.close_wait, 8080, 9000, "leaky"),
            entry(6, 300, STATES.close, 41000, 80, "leaky"),
            // Never connected: no remote port, not a "closed" connection.
            entry(7, 300, STATES.close, 0, 0, "fresh"),
            entry(8, 100, STATES.fin_wait2, 40001, 8080, "client"),
        ];
        let l = Listing::from_entries(&entries, &STATES);
        assert_eq!(l.listeners.len(), 2);
        assert_eq!(l.listeners[0].0.netns, 100);
        assert_eq!(l.listeners[1].0.netns, 200);
        assert_eq!(&l.listeners[1].1.comm[..5], b"srv-b");
        let by = |c: u64| l.sockets.iter().find(|s| s.cookie == c);
        assert_eq!(by(3).unwrap().direction, Direction::Inbound);
        assert_eq!(by(4).unwrap().direction, Direction::Outbound);
        assert_eq!(by(5).unwrap().state, LiveState::CloseWait);
        assert_eq!(by(5).unwrap().direction, Direction::Inbound, "8080 not ephemeral, no listener in ns 300");
        assert_eq!(by(6).unwrap().state, LiveState::Closed);
        assert_eq!(by(6).unwrap().holder.comm, "leaky");
        assert!(by(7).is_none() && by(8).is_none() && by(1).is_none());
        assert_eq!(l.sockets.len(), 4);
    }

    /// A pass streams: a socket may come before its listener, a listener's
    /// fds repeat, and past the cap sockets are counted, not kept.
    #[test]
    fn records_stream_in_any_order_and_past_the_cap_are_counted() {
        let mut b = Builder::new(STATES);
        b.add(&entry(3, 100, STATES.established, 8080, 40000, "srv"));
        b.add(&entry(1, 100, STATES.listen, 8080, 0, "srv"));
        b.add(&entry(1, 100, STATES.listen, 8080, 0, "srv"));
        let l = b.finish();
        assert_eq!(l.listeners.len(), 1, "one listener however many fds");
        assert_eq!(l.sockets[0].direction, Direction::Inbound, "its listener came later");
        assert_eq!(l.records, 3);

        let mut b = Builder::new(STATES);
        for cookie in 1..=MAX_SOCKETS as u64 + 10 {
            b.add(&entry(cookie, 100, STATES.established, 40000, 80, "many"));
        }
        b.add(&entry(1, 100, STATES.established, 40000, 80, "many"));
        let l = b.finish();
        assert_eq!((l.sockets.len(), l.unseen, l.shared), (MAX_SOCKETS, 10, 1));
    }

    #[test]
    fn shared_sockets_are_listed_once_and_queued_ones_are_inbound() {
        let mut queued = entry(9, 100, STATES.established, 8080, 40002, "srv-a");
        queued.flags = entry_flags::QUEUED;
        let mut v6 = entry(10, 100, STATES.established, 40003, 443, "client");
        v6.family = AF_INET6;
        v6.daddr = Ipv6Addr::LOCALHOST.octets();
        let entries = [
            entry(3, 100, STATES.established, 40000, 80, "a"),
            entry(3, 100, STATES.established, 40000, 80, "b"),
            queued,
            v6,
        ];
        let l = Listing::from_entries(&entries, &STATES);
        assert_eq!(l.shared, 1);
        assert_eq!(l.sockets.len(), 3);
        assert_eq!(l.sockets[0].holder.comm, "a", "the first holder is kept");
        assert_eq!(l.sockets[1].direction, Direction::Inbound);
        assert_eq!(l.sockets[2].daddr, IpAddr::V6(Ipv6Addr::LOCALHOST));
    }
}
