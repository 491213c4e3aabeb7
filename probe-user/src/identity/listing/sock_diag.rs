//! The fallback listing, for kernels where the socket-listing iterator does
//! not load: netlink sock_diag (as `ss` does) inside every network namespace
//! found under `/proc/*/ns/net`, and the holders of the sockets from
//! `/proc/*/fd`. Needs CAP_SYS_ADMIN (setns) and CAP_SYS_PTRACE (other
//! processes' `/proc` entries); sees neither sockets whose connection is over
//! (sock_diag lists hashed sockets only) nor their accept queues' holders.
use std::{
    collections::{BTreeMap, HashMap},
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use probe_common::{SocketEntry, TASK_COMM_LEN, TcpStates};

use crate::identity::cgroup::{cgroup_id, cgroup2_mount, proc_cgroup};

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_DONE: u16 = 3;
const NLMSG_ERROR: u16 = 2;
const IPPROTO_TCP: u8 = 6;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagSocket {
    pub cookie: u64,
    pub state: u8,
    pub family: u8,
    pub saddr: IpAddr,
    pub sport: u16,
    pub daddr: IpAddr,
    pub dport: u16,
    pub inode: u32,
    /// A listener's accept queue and backlog (`idiag_rqueue`, `idiag_wqueue`).
    pub rqueue: u32,
    pub wqueue: u32,
}

/// All TCP sockets of this thread's network namespace in `states` (bit mask
/// of `1 << state`), IPv4 and IPv6.
pub fn tcp_sockets(states: u32) -> io::Result<Vec<DiagSocket>> {
    let mut out = Vec::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        dump(family, states, &mut out)?;
    }
    Ok(out)
}

fn dump(family: u8, states: u32, out: &mut Vec<DiagSocket>) -> io::Result<()> {
    // SAFETY: plain socket(2); ownership moves into OwnedFd at once.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };

    // nlmsghdr (16) + inet_diag_req_v2 (56).
    let mut req = [0u8; 72];
    req[0..4].copy_from_slice(&72u32.to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req[16] = family;
    req[17] = IPPROTO_TCP;
    req[20..24].copy_from_slice(&states.to_ne_bytes());
    // SAFETY: sending a fully initialised buffer.
    if unsafe { libc::send(fd.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }

    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: recv into our buffer, length bounded.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if let Some(end) = parse_messages(&buf[..n as usize], out) {
            return end;
        }
    }
}

/// One datagram of netlink messages: sockets into `out`; `Some` once the
/// dump ends (done, or an error the kernel reports), `None` for more.
pub fn parse_messages(mut msgs: &[u8], out: &mut Vec<DiagSocket>) -> Option<io::Result<()>> {
    while msgs.len() >= 16 {
        let len = u32::from_ne_bytes(msgs[0..4].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(msgs[4..6].try_into().ok()?);
        if len < 16 || len > msgs.len() {
            return None;
        }
        match kind {
            NLMSG_DONE => return Some(Ok(())),
            NLMSG_ERROR => {
                let errno = msgs.get(16..20).map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap_or([0; 4])));
                return Some(Err(io::Error::from_raw_os_error(errno.checked_neg().unwrap_or(0))));
            }
            _ => {
                if let Some(s) = parse_diag_msg(&msgs[16..len]) {
                    out.push(s);
                }
            }
        }
        msgs = msgs.get((len + 3) & !3..).unwrap_or(&[]);
    }
    None
}

/// `struct inet_diag_msg`: family, state, timer, retrans, id (48), expires,
/// rqueue, wqueue, uid, inode.
fn parse_diag_msg(m: &[u8]) -> Option<DiagSocket> {
    if m.len() < 72 {
        return None;
    }
    let family = m[0];
    let state = m[1];
    let id = &m[4..52];
    let sport = u16::from_be_bytes([id[0], id[1]]);
    let dport = u16::from_be_bytes([id[2], id[3]]);
    let addr = |b: &[u8]| -> IpAddr {
        if family == libc::AF_INET as u8 {
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&b[..16]).unwrap()))
        }
    };
    let cookie_lo = u32::from_ne_bytes(id[40..44].try_into().ok()?) as u64;
    let cookie_hi = u32::from_ne_bytes(id[44..48].try_into().ok()?) as u64;
    let rqueue = u32::from_ne_bytes(m[56..60].try_into().ok()?);
    let wqueue = u32::from_ne_bytes(m[60..64].try_into().ok()?);
    let inode = u32::from_ne_bytes(m[68..72].try_into().ok()?);
    Some(DiagSocket {
        cookie: cookie_hi << 32 | cookie_lo,
        state,
        family,
        saddr: addr(&id[4..20]),
        sport,
        daddr: addr(&id[20..36]),
        dport,
        inode,
        rqueue,
        wqueue,
    })
}

/// The process holding a socket's fd.
#[derive(Debug, Clone)]
struct ProcHolder {
    pid: u32,
    comm: String,
    cgroup_id: u64,
}

/// Socket inode → holding process, from every `/proc/<pid>/fd`. Threads share
/// the table, so only thread-group leaders are listed.
fn socket_holders() -> HashMap<u32, ProcHolder> {
    let cgroup_root = cgroup2_mount();
    let mut holders = HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else { return holders };
    for entry in procs.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        let mut holder: Option<ProcHolder> = None;
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else { continue };
            let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u32>().ok())
            else {
                continue;
            };
            let h = holder.get_or_insert_with(|| ProcHolder {
                pid,
                comm: std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .map(|s| s.trim_end().to_string())
                    .unwrap_or_default(),
                cgroup_id: proc_cgroup(pid).and_then(|path| cgroup_id(cgroup_root.as_deref()?, &path)).unwrap_or(0),
            });
            holders.entry(inode).or_insert_with(|| h.clone());
        }
    }
    holders
}

/// `net:[4026531840]` → 4026531840.
fn netns_inode(link: &str) -> Option<u32> {
    link.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// Every network namespace a process is in, with one process in it.
fn namespaces() -> BTreeMap<u32, u32> {
    let mut out = BTreeMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else { return out };
    for entry in procs.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(link) = std::fs::read_link(entry.path().join("ns/net")) else { continue };
        if let Some(ns) = link.to_str().and_then(netns_inode) {
            out.entry(ns).or_insert(pid);
        }
    }
    out
}

/// The TCP sockets of the namespace `pid` is in, listed from a thread that
/// enters it (and ends with it, so no other thread changes namespace).
fn sockets_in_namespace_of(pid: u32, states: u32) -> io::Result<Vec<DiagSocket>> {
    std::thread::spawn(move || {
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
        // SAFETY: setns on a namespace fd we own; affects this thread only.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        tcp_sockets(states)
    })
    .join()
    .map_err(|_| io::Error::other("namespace listing thread panicked"))?
}

/// Every TCP socket of every network namespace, as the iterator would list
/// them (those in ESTABLISHED, CLOSE_WAIT and LISTEN).
pub fn list_by_namespace(states: &TcpStates) -> io::Result<Vec<SocketEntry>> {
    let mask = 1u32 << states.established | 1 << states.close_wait | 1 << states.listen;
    let holders = socket_holders();
    let mut entries = Vec::new();
    let mut first_error = None;
    for (netns, pid) in namespaces() {
        let socks = match sockets_in_namespace_of(pid, mask) {
            Ok(s) => s,
            Err(e) => {
                first_error.get_or_insert(e);
                continue;
            }
        };
        // Connections not accepted yet have no fd (inode 0): their holder is
        // the listener's.
        let listeners: HashMap<u16, &ProcHolder> = socks
            .iter()
            .filter(|s| s.state as u32 == states.listen)
            .filter_map(|s| Some((s.sport, holders.get(&s.inode).filter(|_| s.inode != 0)?)))
            .collect();
        for s in socks {
            let (holder, queued) = match holders.get(&s.inode).filter(|_| s.inode != 0) {
                Some(h) => (h, false),
                None => match listeners.get(&s.sport) {
                    Some(h) if s.state as u32 == states.established => (*h, true),
                    _ => continue,
                },
            };
            entries.push(entry(&s, netns, holder, queued));
        }
    }
    match (entries.is_empty(), first_error) {
        (true, Some(e)) => Err(e),
        _ => Ok(entries),
    }
}

fn entry(s: &DiagSocket, netns: u32, h: &ProcHolder, queued: bool) -> SocketEntry {
    let mut comm = [0u8; TASK_COMM_LEN];
    let n = h.comm.len().min(TASK_COMM_LEN - 1);
    comm[..n].copy_from_slice(&h.comm.as_bytes()[..n]);
    let raw = |a: &IpAddr| match a {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            b
        }
        IpAddr::V6(v6) => v6.octets(),
    };
    SocketEntry {
        cookie: s.cookie,
        cgroup_id: h.cgroup_id,
        netns,
        tgid: h.pid,
        comm,
        saddr: raw(&s.saddr),
        daddr: raw(&s.daddr),
        sport: s.sport,
        dport: s.dport,
        family: s.family as u16,
        state: s.state,
        flags: if queued { probe_common::entry_flags::QUEUED } else { 0 },
        accept_queue: if queued { 0 } else { s.rqueue },
        accept_backlog: if queued { 0 } else { s.wqueue },
        // sock_diag does not report a listener's drops.
        listen_drops: 0,
        _pad: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_links() {
        assert_eq!(netns_inode("net:[4026531840]"), Some(4026531840));
        assert_eq!(netns_inode("mnt:[4026531840]"), None);
    }

    #[test]
    fn lists_a_listening_socket_of_ours_with_its_holder() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let listen = 10; // Linux's TCP_LISTEN, for this test only
        let socks = tcp_sockets(1 << listen).expect("sock_diag dump");
        let me = socks.iter().find(|s| s.sport == port).expect("our listener in the dump");
        assert_eq!(me.state, listen as u8);
        assert_ne!(me.cookie, 0);
        assert_eq!(socket_holders().get(&me.inode).map(|o| o.pid), Some(std::process::id()));
    }
}
