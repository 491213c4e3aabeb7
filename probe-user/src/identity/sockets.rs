//! Live sockets as the kernel lists them: netlink sock_diag (as `ss` does),
//! matched to the processes holding them through the socket inodes in
//! `/proc/<pid>/fd`. Used for sockets that predate sockprobe (the start-up
//! scan) and to drop sockets whose close event was lost (the reconcile).
use std::{
    collections::{HashMap, HashSet},
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use probe_common::{Direction, Owner, TASK_COMM_LEN};

use super::{
    cgroup::{cgroup_id, cgroup2_mount, proc_cgroup},
    direction::LocalPorts,
};

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_DONE: u16 = 3;
const NLMSG_ERROR: u16 = 2;
const IPPROTO_TCP: u8 = 6;

/// TCP states as the uapi numbers them for sock_diag (`TCPF_*` bits).
pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_CLOSE_WAIT: u8 = 8;
pub const TCP_LISTEN: u8 = 10;

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
}

/// All TCP sockets in `states` (bit mask of `1 << state`), IPv4 and IPv6.
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
        let mut msgs = &buf[..n as usize];
        while msgs.len() >= 16 {
            let len = u32::from_ne_bytes(msgs[0..4].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes(msgs[4..6].try_into().unwrap());
            if len < 16 || len > msgs.len() {
                break;
            }
            match kind {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    let errno = i32::from_ne_bytes(msgs[16..20].try_into().unwrap_or([0; 4]));
                    return Err(io::Error::from_raw_os_error(-errno));
                }
                _ => {
                    if let Some(s) = parse_diag_msg(&msgs[16..len]) {
                        out.push(s);
                    }
                }
            }
            msgs = &msgs[(len + 3) & !3..];
        }
    }
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
    })
}

/// The process holding a socket's fd.
#[derive(Debug, Clone)]
pub struct Holder {
    pub pid: u32,
    pub comm: String,
    /// cgroup v2 path (`0::` line of /proc/<pid>/cgroup).
    pub cgroup: String,
}

/// Socket inode → holding process, from every `/proc/<pid>/fd`. Threads share
/// the table, so only thread-group leaders are listed.
pub fn socket_holders() -> HashMap<u32, Holder> {
    let mut holders = HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else { return holders };
    for entry in procs.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        let mut holder: Option<Holder> = None;
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
            let h = holder.get_or_insert_with(|| Holder {
                pid,
                comm: proc_comm(pid).unwrap_or_default(),
                cgroup: proc_cgroup(pid).unwrap_or_default(),
            });
            holders.entry(inode).or_insert_with(|| h.clone());
        }
    }
    holders
}

/// A process's name as `/proc/<pid>/comm` has it.
pub fn proc_comm(pid: u32) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(s.trim_end().to_string())
}

/// The states sockprobe reports live sockets in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LiveState {
    Established,
    CloseWait,
}

impl LiveState {
    /// The `state` label.
    pub fn label(self) -> &'static str {
        match self {
            LiveState::Established => "established",
            LiveState::CloseWait => "close_wait",
        }
    }
}

/// A live connection and the process holding it.
#[derive(Debug, Clone)]
pub struct FoundSocket {
    pub cookie: u64,
    pub state: LiveState,
    pub saddr: IpAddr,
    pub sport: u16,
    pub daddr: IpAddr,
    pub dport: u16,
    pub direction: Direction,
    pub holder: Holder,
}

/// What the start-up scan found.
pub struct Listing {
    pub sockets: Vec<FoundSocket>,
    /// Connections no process holds any more (being torn down).
    pub unowned: usize,
    /// Listening ports and their owners, as the kernel side records owners:
    /// sockets they accept later start with this owner (the kernel side
    /// learns it only at `listen()`).
    pub listeners: Vec<(u16, Owner)>,
    /// Ports and the ephemeral range, to tell directions by.
    pub ports: LocalPorts,
}

/// ESTABLISHED and CLOSE_WAIT sockets with their holders, and the listeners.
pub fn list() -> io::Result<Listing> {
    let listen_socks = tcp_sockets(1 << TCP_LISTEN)?;
    let ports = LocalPorts::with_listening(listen_socks.iter().map(|s| s.sport));
    let socks = tcp_sockets(1 << TCP_ESTABLISHED | 1 << TCP_CLOSE_WAIT)?;
    let holders = socket_holders();
    let listeners = owned_listeners(&listen_socks, &holders);
    let mut sockets = Vec::with_capacity(socks.len());
    let mut unowned = 0;
    for s in socks {
        // inode 0: orphaned by its process already (being torn down).
        let Some(holder) = holders.get(&s.inode).filter(|_| s.inode != 0) else {
            unowned += 1;
            continue;
        };
        sockets.push(FoundSocket {
            cookie: s.cookie,
            state: if s.state == TCP_CLOSE_WAIT { LiveState::CloseWait } else { LiveState::Established },
            saddr: s.saddr,
            sport: s.sport,
            daddr: s.daddr,
            dport: s.dport,
            direction: ports.infer(s.sport),
            holder: holder.clone(),
        });
    }
    Ok(Listing { sockets, unowned, listeners, ports })
}

/// Listening ports and their owners (`sockprobe trace`, which does not need
/// the rest of the scan).
pub fn listeners() -> io::Result<(Vec<(u16, Owner)>, LocalPorts)> {
    let listen_socks = tcp_sockets(1 << TCP_LISTEN)?;
    let ports = LocalPorts::with_listening(listen_socks.iter().map(|s| s.sport));
    Ok((owned_listeners(&listen_socks, &socket_holders()), ports))
}

fn owned_listeners(listen_socks: &[DiagSocket], holders: &HashMap<u32, Holder>) -> Vec<(u16, Owner)> {
    let cgroup_root = cgroup2_mount();
    listen_socks
        .iter()
        .filter_map(|s| {
            let holder = holders.get(&s.inode).filter(|_| s.inode != 0)?;
            let mut comm = [0u8; TASK_COMM_LEN];
            let n = holder.comm.len().min(comm.len() - 1);
            comm[..n].copy_from_slice(&holder.comm.as_bytes()[..n]);
            let cgroup_id = cgroup_root.as_deref().and_then(|root| cgroup_id(root, &holder.cgroup)).unwrap_or(0);
            Some((s.sport, Owner { cgroup_id, tgid: holder.pid, _pad: 0, comm }))
        })
        .collect()
}

/// Cookies of every ESTABLISHED or CLOSE_WAIT socket now.
pub fn open_cookies() -> io::Result<HashSet<u64>> {
    Ok(tcp_sockets(1 << TCP_ESTABLISHED | 1 << TCP_CLOSE_WAIT)?.into_iter().map(|s| s.cookie).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_a_listening_socket_of_ours_with_owner() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let socks = tcp_sockets(1 << TCP_LISTEN).expect("sock_diag dump");
        let me = socks.iter().find(|s| s.sport == port).expect("our listener in the dump");
        assert_eq!(me.state, TCP_LISTEN);
        assert_ne!(me.cookie, 0);
        let holders = socket_holders();
        assert_eq!(holders.get(&me.inode).map(|o| o.pid), Some(std::process::id()));
    }
}
