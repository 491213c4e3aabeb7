//! `#[repr(C)]` types shared by sockprobe's kernel programs and its userspace.
//!
//! Nothing here describes the kernel's own structures: their offsets and enum
//! values are resolved from the running kernel's BTF at start-up and handed to
//! the kernel side in [`KernelLayout`].
#![no_std]

// The derives for clap (userspace) and the host tests need std.
#[cfg(any(feature = "user", test))]
extern crate std;

/// Name of the global that carries [`KernelLayout`] into the eBPF object.
pub const LAYOUT_GLOBAL: &str = "LAYOUT";
/// Per-socket state in an LRU hash keyed by the kernel's `struct sock *`
/// (used when [`StateStore::LruHash`] is chosen).
pub const SOCKETS_MAP: &str = "SOCKETS";
/// Per-socket state in a table of slots indexed by socket cookie (used when
/// [`StateStore::CookieTable`] is chosen; one slot otherwise).
pub const STATE_TABLE_MAP: &str = "STATE_TABLE";
/// Name of the global that carries the cookie table's slot count minus one.
pub const TABLE_MASK_GLOBAL: &str = "TABLE_MASK";
/// Slots in each of the two windows a state may take (probe-ebpf/src/cookie_table.rs).
pub const TABLE_PROBES: u32 = 8;

/// Slots of the cookie table for `max_sockets` states: twice as many,
/// rounded up to a power of two (slots are picked by mask), so that at
/// `max_sockets` live sockets at most half the slots are taken and probing
/// stays short.
pub const fn table_slots(max_sockets: u32) -> u32 {
    let want = if max_sockets < 1 { 2 } else { max_sockets as u64 * 2 };
    let slots = want.next_power_of_two();
    if slots > 1 << 30 { 1 << 30 } else { slots as u32 }
}

/// Ring buffer of [`Event`]s.
pub const EVENTS_MAP: &str = "EVENTS";
/// Per-CPU counters indexed by [`Counter`].
pub const COUNTERS_MAP: &str = "COUNTERS";
/// Owner of each listening socket ([`Owner`] by [`ListenerKey`]).
pub const LISTENERS_MAP: &str = "LISTENERS";
/// The iterator program that lists every task's TCP sockets ([`SocketEntry`]).
pub const SOCKET_ITER_PROGRAM: &str = "iter_task_file_sockets";
/// Name of the global that says where per-socket state lives ([`StateStore`]).
pub const STATE_STORE_GLOBAL: &str = "STATE_STORE";
/// Name of the global that asks for every event (1, `sockprobe trace`): an
/// `open` record at ESTABLISHED and bytes counted on every send and receive.
/// At 0 (the daemon) an ordinary connection costs one record, its `close`
/// (docs/architecture.md, "One record per connection").
pub const TRACE_ALL_GLOBAL: &str = "TRACE_ALL";
/// Name of the global that says where exchanges are counted: 1 at sends
/// (kernels whose splice and sendfile go through `sendmsg`, 6.5+), 0 at
/// receives (docs/architecture.md, "Where turns are counted").
pub const TURNS_AT_SENDS_GLOBAL: &str = "TURNS_AT_SENDS";

/// Default number of sockets with state (`--probe.max-sockets`): the size
/// of [`SOCKETS_MAP`], or half the slots of [`STATE_TABLE_MAP`].
pub const DEFAULT_MAX_SOCKETS: u32 = 131_072;
/// Default size of [`EVENTS_MAP`] in bytes (`--probe.ring-buffer-bytes`).
pub const DEFAULT_RING_BUFFER_BYTES: u32 = 8 << 20;

/// Where the kernel side keeps per-socket state, chosen by userspace at load
/// (`--probe.state-store`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(clap::ValueEnum, serde::Deserialize))]
#[cfg_attr(feature = "user", serde(rename_all = "kebab-case"))]
pub enum StateStore {
    /// LRU hash keyed by `struct sock *`: works from every hook, kprobes included.
    #[cfg_attr(feature = "user", value(name = "lru"), serde(rename = "lru"))]
    LruHash = 0,
    /// Socket-local storage: no hashing, freed with the socket. BTF-typed
    /// hooks only (tp_btf, fentry/fexit; 5.11+).
    SocketLocal = 1,
    /// A preallocated array of slots indexed by socket cookie: no locks, no
    /// allocation, no hash map. BTF-typed hooks only (they can ask for a
    /// socket's cookie).
    #[default]
    CookieTable = 2,
}

impl StateStore {
    /// As `--probe.state-store` spells it.
    pub fn name(self) -> &'static str {
        match self {
            StateStore::LruHash => "lru",
            StateStore::SocketLocal => "socket-local",
            StateStore::CookieTable => "cookie-table",
        }
    }
}

/// Marks an offset the running kernel does not have.
pub const NO_OFFSET: u32 = u32::MAX;
/// Marks a reset whose reason the kernel does not report.
pub const REASON_UNKNOWN: u32 = u32::MAX;

/// Where to read a struct member: byte offset, plus bit position for bitfields.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Field {
    pub offset: u32,
    /// Bit shift inside the 16-bit word at `offset` (0 for whole fields).
    pub shift: u16,
    /// Width in bits (8, 16, 32 ... for whole fields).
    pub bits: u16,
}

impl Field {
    pub const MISSING: Field = Field { offset: NO_OFFSET, shift: 0, bits: 0 };

    pub const fn present(&self) -> bool {
        self.offset != NO_OFFSET
    }
}

/// TCP states as this kernel numbers them (`TCP_ESTABLISHED` ...).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpStates {
    pub established: u32,
    pub syn_sent: u32,
    pub syn_recv: u32,
    pub fin_wait1: u32,
    pub fin_wait2: u32,
    pub time_wait: u32,
    pub close: u32,
    pub close_wait: u32,
    pub last_ack: u32,
    pub listen: u32,
    pub closing: u32,
}

impl TcpStates {
    /// Linux's numbering as it has always been: only for tests and for
    /// input the kernel did not make (fuzzing). sockprobe itself uses the
    /// running kernel's numbers, read from BTF.
    pub const LINUX: TcpStates = TcpStates {
        established: 1,
        syn_sent: 2,
        syn_recv: 3,
        fin_wait1: 4,
        fin_wait2: 5,
        time_wait: 6,
        close: 7,
        close_wait: 8,
        last_ack: 9,
        listen: 10,
        closing: 11,
    };
}

/// Everything the kernel programs need to know about the running kernel's
/// layout, resolved from `/sys/kernel/btf/vmlinux` at start-up.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelLayout {
    // struct sock / sock_common
    pub skc_family: Field,
    pub skc_state: Field,
    pub skc_daddr: Field,
    pub skc_rcv_saddr: Field,
    pub skc_dport: Field,
    /// The local port, host order (zeroed when the port is released).
    pub skc_num: Field,
    pub skc_v6_daddr: Field,
    pub skc_v6_rcv_saddr: Field,
    pub sk_protocol: Field,
    pub sk_shutdown: Field,
    /// A listener's accept queue now, and its backlog (`listen()`'s, capped
    /// by somaxconn).
    pub sk_ack_backlog: Field,
    pub sk_max_ack_backlog: Field,
    /// `sock.sk_drops`: on a listener, what `tcp_listendrop()` counted: its
    /// accept-queue overflows (and the rare other drops of a SYN or ACK).
    pub sk_drops: Field,
    /// `sock.sk_err`: why a connect() failed (an errno).
    pub sk_err: Field,
    /// `sk_buff.cb` and `tcp_skb_cb.tcp_gso_segs`: the segments a
    /// retransmitted buffer carries.
    pub skb_cb: Field,
    pub tcp_skb_gso_segs: Field,
    /// `sock.sk_cgrp_data.cgroup` (5.15+ layout); missing on older kernels.
    pub sk_cgroup: Field,
    pub cgroup_kn: Field,
    pub kernfs_node_id: Field,
    /// `sock.__sk_common.skc_net.net` and `net.ns.inum`: the network namespace.
    pub sk_net: Field,
    pub net_ns_inum: Field,
    /// `sock.__sk_common.skc_cookie` (set once anything asked for the cookie).
    pub skc_cookie: Field,
    // struct inet_sock
    pub inet_sport: Field,
    // struct inet_connection_sock / request_sock: a listener's accept queue
    pub icsk_accept_head: Field,
    pub request_sock_next: Field,
    pub request_sock_sk: Field,
    // struct socket
    pub socket_sk: Field,
    // struct tcp_sock
    pub tcp_rcv_nxt: Field,
    pub tcp_copied_seq: Field,
    /// Data segments sent (4.6+): what a receive compares to tell a turn.
    pub tcp_data_segs_out: Field,
    /// Data segments received (4.6+): what a send compares to tell a turn.
    pub tcp_data_segs_in: Field,
    /// Next sequence number to send: starts at a random ISN in each life of
    /// a socket, so a receive memo of one life never matches another.
    pub tcp_snd_nxt: Field,
    // struct task_struct
    pub task_group_leader: Field,
    pub task_comm: Field,
    pub task_tgid: Field,
    /// `task_struct.cgroups`, `css_set.dfl_cgrp`: a task's cgroup v2.
    pub task_cgroups: Field,
    pub css_set_dfl_cgrp: Field,
    pub states: TcpStates,
    /// `SK_RST_REASON_TCP_ABORT_ON_CLOSE`, or [`REASON_UNKNOWN`].
    pub rst_abort_on_close: u32,
    /// `IPPROTO_TCP`.
    pub ipproto_tcp: u32,
}

impl KernelLayout {
    pub const ZERO: KernelLayout = KernelLayout {
        skc_family: Field::MISSING,
        skc_state: Field::MISSING,
        skc_daddr: Field::MISSING,
        skc_rcv_saddr: Field::MISSING,
        skc_dport: Field::MISSING,
        skc_num: Field::MISSING,
        skc_v6_daddr: Field::MISSING,
        skc_v6_rcv_saddr: Field::MISSING,
        sk_protocol: Field::MISSING,
        sk_shutdown: Field::MISSING,
        sk_ack_backlog: Field::MISSING,
        sk_max_ack_backlog: Field::MISSING,
        sk_drops: Field::MISSING,
        sk_err: Field::MISSING,
        skb_cb: Field::MISSING,
        tcp_skb_gso_segs: Field::MISSING,
        sk_cgroup: Field::MISSING,
        cgroup_kn: Field::MISSING,
        kernfs_node_id: Field::MISSING,
        sk_net: Field::MISSING,
        net_ns_inum: Field::MISSING,
        skc_cookie: Field::MISSING,
        inet_sport: Field::MISSING,
        icsk_accept_head: Field::MISSING,
        request_sock_next: Field::MISSING,
        request_sock_sk: Field::MISSING,
        socket_sk: Field::MISSING,
        tcp_rcv_nxt: Field::MISSING,
        tcp_copied_seq: Field::MISSING,
        tcp_data_segs_out: Field::MISSING,
        tcp_data_segs_in: Field::MISSING,
        tcp_snd_nxt: Field::MISSING,
        task_group_leader: Field::MISSING,
        task_comm: Field::MISSING,
        task_tgid: Field::MISSING,
        task_cgroups: Field::MISSING,
        css_set_dfl_cgrp: Field::MISSING,
        states: TcpStates {
            established: 0,
            syn_sent: 0,
            syn_recv: 0,
            fin_wait1: 0,
            fin_wait2: 0,
            time_wait: 0,
            close: 0,
            close_wait: 0,
            last_ack: 0,
            listen: 0,
            closing: 0,
        },
        rst_abort_on_close: REASON_UNKNOWN,
        ipproto_tcp: 0,
    };
}

pub mod transition;
pub mod turns;
pub use transition::{Transition, classify};

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
/// `SHUTDOWN_MASK` (RCV_SHUTDOWN | SEND_SHUTDOWN), a uapi-stable define.
pub const SHUTDOWN_MASK: u8 = 3;
pub const TASK_COMM_LEN: usize = 16;

#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Unknown = 0,
    /// This host called `connect()`.
    Outbound = 1,
    /// Accepted from a listener.
    Inbound = 2,
}

impl Direction {
    pub fn from_u8(v: u8) -> Direction {
        match v {
            1 => Direction::Outbound,
            2 => Direction::Inbound,
            _ => Direction::Unknown,
        }
    }
}

/// Direction of an application I/O event.
pub const IO_SEND: u8 = 1;
pub const IO_RECV: u8 = 2;

/// [`SockState::flags`] bits.
pub mod flags {
    /// `open` waits for the first process-context event to know its owner.
    pub const OPEN_PENDING: u8 = 1 << 0;
    /// The `close` event was emitted.
    pub const CLOSED: u8 = 1 << 1;
    /// `close()` moved the socket to CLOSE with unread bytes: a RST follows.
    pub const ABORT_PENDING: u8 = 1 << 2;
    /// An `open` record went out for this connection.
    pub const OPEN_REPORTED: u8 = 1 << 3;
    /// The process has done, on this connection, the I/O that turns are
    /// counted at (a receive, or a send: [`super::TURNS_AT_SENDS_GLOBAL`]).
    pub const TURN_IO_SEEN: u8 = 1 << 4;
}

/// [`Event::flags`] bits.
pub mod event_flags {
    /// On a `close`: no `open` record went out for this connection, born
    /// while watched; the close stands for its open too.
    pub const OPEN_FOLDED: u8 = 1 << 0;
    /// On a `retransmit`: the segment is a connect()'s SYN.
    pub const SYN: u8 = 1 << 1;
}

/// Process that owns a socket, captured only in process context.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub cgroup_id: u64,
    pub tgid: u32,
    pub _pad: u32,
    /// Thread-group leader's comm, NUL-padded.
    pub comm: [u8; TASK_COMM_LEN],
}

/// A listening socket's identity: its network namespace, local address
/// (zero for a wildcard bind) and port, so listeners on the same port in two
/// namespaces, or on two addresses, stay apart.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenerKey {
    /// `net.ns.inum` of the socket's network namespace.
    pub netns: u32,
    pub port: u16,
    pub _pad: u16,
    /// IPv4 in the first 4 bytes, or IPv6; all zero for 0.0.0.0 / [::].
    pub addr: [u8; 16],
}

/// [`SocketEntry::flags`] bits.
pub mod entry_flags {
    /// Listed from a listener's accept queue: not yet accepted, so no fd;
    /// its holder is the listener's.
    pub const QUEUED: u8 = 1 << 0;
}

/// One TCP socket held by a process, as the socket-listing iterator writes
/// it: every task's fds, whatever their network namespace.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SocketEntry {
    pub cookie: u64,
    /// The holder's cgroup v2 id.
    pub cgroup_id: u64,
    pub netns: u32,
    /// The holder's process id (thread-group id).
    pub tgid: u32,
    /// The holder's thread-group leader's comm.
    pub comm: [u8; TASK_COMM_LEN],
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// Host byte order.
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    /// Kernel TCP state.
    pub state: u8,
    pub flags: u8,
    /// A listener's: connections waiting for accept(), its backlog, and
    /// the connections it dropped so far (`sk_drops`).
    pub accept_queue: u32,
    pub accept_backlog: u32,
    pub listen_drops: u32,
    pub _pad: u32,
}

/// Per-socket state, in the cookie table, socket-local storage or the LRU
/// hash ([`StateStore`]).
/// Only what the socket itself does not keep: endpoints are read from the
/// socket when a record goes out.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SockState {
    pub cookie: u64,
    /// `bpf_ktime_get_ns()` at ESTABLISHED; 0 when the socket predates us.
    pub birth_ns: u64,
    /// When the peer's FIN moved it to CLOSE_WAIT; 0 otherwise.
    pub close_wait_ns: u64,
    /// Bytes received and sent, counted only for `sockprobe trace`.
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub owner: Owner,
    pub exchanges: u32,
    /// Unread bytes at the `close()` that moved the socket to CLOSE.
    pub pending_unread: u32,
    /// What the last I/O that counts turns saw of the other direction:
    /// counted at receives, `data_segs_out` (a receive that finds it moved
    /// follows a send of this socket's, a turn of the conversation); counted
    /// at sends, `copied_seq` (a send that finds it moved follows a read by
    /// the application). Either moves only by this socket's own application's
    /// doing, never by the peer's, so no ordering of the events can hide a
    /// turn (docs/architecture.md, "Where turns are counted").
    pub turn_mark: u32,
    pub direction: u8,
    pub flags: u8,
    pub _pad: [u8; 2],
    /// An outbound connection's connect(), SYN_SENT to ESTABLISHED, in µs
    /// (saturating); 0 when not seen. Reported with its `open`.
    pub connect_us: u32,
    pub _pad2: u32,
}

#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Open = 1,
    Close = 2,
    UnreadClose = 3,
    ResetSent = 4,
    ResetReceived = 5,
    CloseWait = 6,
    CloseWaitEnd = 7,
    /// A connect() that got no connection: `reason` is the socket's errno
    /// (0: given up by the process, `closer` local, or no local port),
    /// `value` its time in SYN_SENT.
    ConnectFailed = 8,
    /// Segments retransmitted (`value`); [`event_flags::SYN`] for a SYN.
    Retransmit = 9,
}

impl EventKind {
    pub const ALL: [EventKind; 9] = [
        EventKind::Open,
        EventKind::Close,
        EventKind::UnreadClose,
        EventKind::ResetSent,
        EventKind::ResetReceived,
        EventKind::CloseWait,
        EventKind::CloseWaitEnd,
        EventKind::ConnectFailed,
        EventKind::Retransmit,
    ];

    pub fn from_u8(v: u8) -> Option<EventKind> {
        Self::ALL.into_iter().find(|k| *k as u8 == v)
    }

    /// The name used in `sockprobe trace` output and `--event` filters.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Open => "open",
            EventKind::Close => "close",
            EventKind::UnreadClose => "unread_close",
            EventKind::ResetSent => "reset_sent",
            EventKind::ResetReceived => "reset_received",
            EventKind::CloseWait => "close_wait",
            EventKind::CloseWaitEnd => "close_wait_end",
            EventKind::ConnectFailed => "connect_failed",
            EventKind::Retransmit => "retransmit",
        }
    }
}

/// One record on the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    pub cookie: u64,
    /// duration_ns (close), unread_bytes (unread_close), age_ns (close_wait_end).
    pub value: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub owner: Owner,
    pub exchanges: u32,
    /// Raw `enum sk_rst_reason` value, or [`REASON_UNKNOWN`]; on a
    /// `connect_failed` the socket's errno; on a `close` the data segments
    /// sent (the retransmit share's denominator).
    pub reason: u32,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub kind: u8,
    pub direction: u8,
    /// On a `close`: who ended the connection ([`Closer`]); else 0.
    pub closer: u8,
    /// [`event_flags`] bits.
    pub flags: u8,
    pub _pad: [u8; 2],
    /// On an `open` (or a `close` standing for it) of an outbound
    /// connection: its connect() in µs, 0 if not seen.
    pub connect_us: u32,
    /// On a `close` out of CLOSE_WAIT: how long the socket sat there (at
    /// least 1), else 0. Saves the kernel a second record for `close_wait_end`.
    pub close_wait_ns: u64,
}

impl Event {
    /// A `close` that also stands for the connection's `open`.
    pub fn open_folded(&self) -> bool {
        self.kind == EventKind::Close as u8 && self.flags & event_flags::OPEN_FOLDED != 0
    }

    /// The `close_wait_end` folded into a `close` record, if any.
    pub fn close_wait_end(&self) -> Option<Event> {
        if self.kind != EventKind::Close as u8 || self.close_wait_ns == 0 {
            return None;
        }
        Some(Event {
            kind: EventKind::CloseWaitEnd as u8,
            value: self.close_wait_ns,
            close_wait_ns: 0,
            closer: 0,
            flags: 0,
            ..*self
        })
    }
}

/// Who ended a connection (the `closer` label), from its state changes.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closer {
    /// This process closed first (ESTABLISHED→FIN_WAIT1).
    Local = 1,
    /// The peer's FIN came first (CLOSE_WAIT→LAST_ACK).
    Peer = 2,
    /// A RST ended it, sent or received (→CLOSE from an open state).
    Reset = 3,
}

impl Closer {
    pub const ALL: [Closer; 3] = [Closer::Local, Closer::Peer, Closer::Reset];

    pub fn from_u8(v: u8) -> Option<Closer> {
        Self::ALL.into_iter().find(|c| *c as u8 == v)
    }

    /// The `closer` label.
    pub fn name(self) -> &'static str {
        match self {
            Closer::Local => "local",
            Closer::Peer => "peer",
            Closer::Reset => "reset",
        }
    }
}

/// Indexes into the per-CPU [`COUNTERS_MAP`].
#[repr(u32)]
#[derive(Clone, Copy, Debug)]
pub enum Counter {
    /// Ring buffer full: an event could not be handed over.
    EventsLost = 0,
    /// The socket map refused an insert.
    StateInsertFailed = 1,
    /// Socket-local or cookie-table states created / freed: their
    /// difference is the number tracked now (neither store is cheap to
    /// enumerate from userspace).
    StatesCreated = 2,
    StatesFreed = 3,
    /// Records handed to the ring buffer (paces the kernel side's checks of
    /// how full the ring is).
    EventsSubmitted = 4,
    /// Cookie-table states given up to make room (every slot a socket may
    /// take was full): a socket there keyed by address, else the
    /// oldest-born, loses its state.
    StatesEvicted = 5,
}

pub const COUNTER_SLOTS: u32 = 6;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_table_has_twice_the_slots_as_a_power_of_two() {
        assert_eq!(table_slots(131_072), 262_144);
        assert_eq!(table_slots(1024), 2048);
        assert_eq!(table_slots(1000), 2048);
        assert_eq!(table_slots(0), 2);
        assert_eq!(table_slots(u32::MAX), 1 << 30, "capped");
        assert_eq!(StateStore::default(), StateStore::CookieTable);
    }

    #[test]
    fn a_close_out_of_close_wait_carries_its_end() {
        let mut close: Event = unsafe { core::mem::zeroed() };
        close.kind = EventKind::Close as u8;
        close.cookie = 9;
        close.ts_ns = 10;
        assert!(close.close_wait_end().is_none(), "no CLOSE_WAIT, no close_wait_end");
        close.close_wait_ns = 7;
        let end = close.close_wait_end().expect("close_wait_end folded into the close");
        assert_eq!((end.kind, end.value, end.close_wait_ns), (EventKind::CloseWaitEnd as u8, 7, 0));
        assert_eq!((end.cookie, end.ts_ns), (close.cookie, close.ts_ns));
        let mut open = close;
        open.kind = EventKind::Open as u8;
        assert!(open.close_wait_end().is_none(), "only close records carry it");
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, `#[repr(C)]`, no padding-dependent invariants.
    unsafe impl aya::Pod for super::KernelLayout {}
    unsafe impl aya::Pod for super::SockState {}
    unsafe impl aya::Pod for super::Owner {}
    unsafe impl aya::Pod for super::ListenerKey {}
}
