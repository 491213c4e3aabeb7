//! Maps shared by all programs. Sizes are the defaults; userspace sets them at load.
use aya_ebpf::{
    btf_maps::SkStorage,
    macros::{btf_map, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use probe_common::{
    COUNTER_SLOTS, Counter, DEFAULT_MAX_SOCKETS, DEFAULT_RING_BUFFER_BYTES, ListenerKey, Owner, SockState,
};

/// Per-socket state keyed by `struct sock *` (see `store`). LRU so a missed
/// destroy cannot leak. Shrunk to one entry when socket storage is used.
#[map(name = "SOCKETS")]
pub static SOCKETS: LruHashMap<u64, SockState> = LruHashMap::with_max_entries(DEFAULT_MAX_SOCKETS, 0);

/// Per-socket state in slots indexed by socket cookie (see `table`). Sized
/// by userspace; one slot when another store is used.
#[map(name = "STATE_TABLE")]
pub static STATE_TABLE: Array<SockState> = Array::with_max_entries(1, 0);

/// Per-socket state in socket-local storage (see `store`).
#[btf_map(name = "SOCK_STORAGE")]
pub static SOCK_STORAGE: SkStorage<SockState> = SkStorage::new();

#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BUFFER_BYTES, 0);

#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Owner of each listening socket (by namespace, address and port), captured
/// at listen() (process context): accepted sockets start with it, so idle
/// accepted connections have an owner before their first I/O.
#[map(name = "LISTENERS")]
pub static LISTENERS: HashMap<ListenerKey, Owner> = HashMap::with_max_entries(8192, 0);

/// Sockets the current listing pass has written, keyed by the pass
/// (`bpf_iter_meta.session_id`) and the socket: every fd of one socket
/// (dup, fork, SCM_RIGHTS) shares its `struct file`, so one record per
/// socket however many fds hold it. LRU: a pass with more distinct sockets
/// than this may write one twice (userspace drops the repeat by cookie); an
/// earlier pass's keys age out without anyone clearing them.
#[map(name = "LISTED")]
pub static LISTED: LruHashMap<ListedKey, u8> = LruHashMap::with_max_entries(LISTED_SLOTS, 0);

pub const LISTED_SLOTS: u32 = 16_384;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ListedKey {
    pub session: u64,
    pub sk: u64,
}

/// kprobe fallback: `tcp_{send,recv}msg` arguments stashed from entry to return,
/// keyed by pid_tgid.
#[map(name = "IO_ARGS")]
pub static IO_ARGS: HashMap<u64, IoArgs> = HashMap::with_max_entries(16_384, 0);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct IoArgs {
    pub sk: u64,
    pub flags: u64,
}

/// What the last receives on this CPU found, per socket (direct-mapped by
/// the socket's ports): a receive that finds its socket has sent nothing
/// since returns here, without the per-socket state's hash lookup (the
/// costliest part of a receive that is no turn: streaming responses).
#[map(name = "RECV_MEMO")]
pub static RECV_MEMO: PerCpuArray<RecvMemo> = PerCpuArray::with_max_entries(RECV_MEMO_SLOTS, 0);

pub const RECV_MEMO_SLOTS: u32 = 64;

/// A socket as its last receive left it: its state had seen the
/// conversation up to `data_segs_out`, and `snd_nxt` tells the life (each
/// starts at a random ISN) and any FIN since.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RecvMemo {
    pub sk: u64,
    pub data_segs_out: u32,
    pub snd_nxt: u32,
}

/// The slot of a connection with these ports (host order): one of them is
/// ephemeral, so connections to one server spread over the slots. (The
/// verifier allows no arithmetic on the socket's address.)
#[inline(always)]
pub fn recv_memo(local_port: u16, remote_port: u16) -> Option<*mut RecvMemo> {
    RECV_MEMO.get_ptr_mut((local_port ^ remote_port) as u32 & (RECV_MEMO_SLOTS - 1))
}

/// Adds one to this CPU's `counter`; returns the new value.
#[inline(always)]
pub fn count(counter: Counter) -> u64 {
    match COUNTERS.get_ptr_mut(counter as u32) {
        // Per-CPU slot: no other writer.
        Some(slot) => unsafe {
            *slot += 1;
            *slot
        },
        None => 0,
    }
}
