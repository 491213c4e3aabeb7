//! The live-socket listing: a BPF iterator over every task's files
//! (`iter/task_file`, 5.8+; `bpf_sock_from_file`, 5.11+). It sees every
//! network namespace at once, which sock_diag (the caller's namespace only)
//! cannot, and names each socket's holder without reading `/proc`. One
//! [`SocketEntry`] per TCP socket, written at its first fd (a socket held
//! by a million fds is still one record: [`LISTED`]); for a listener, also
//! one per connection waiting in its accept queue (no fd yet, so no other
//! holder), walked once per listener.
use aya_ebpf::helpers::{
    bpf_probe_read_kernel_buf,
    generated::{bpf_seq_write, bpf_sock_from_file},
};
use probe_common::{SocketEntry, entry_flags};

use crate::{
    access::{Access, Typed, Untyped},
    kernel::{self, layout, probe_read},
    maps::{LISTED, ListedKey},
};

/// Longest accept queue walked per listener (the rest are left to events).
const MAX_QUEUED: u32 = 64;

/// `struct bpf_iter__task_file`: `meta`, `task`, `fd`, `file` at 0, 8, 16, 24.
/// The context of an iterator program is ABI (programs compiled against any
/// kernel's headers access it at these offsets), unlike kernel structs; so
/// is `struct bpf_iter_meta` behind `meta`: `seq`, `session_id`, `seq_num`.
#[repr(C)]
struct TaskFileCtx {
    meta: *const *mut u8,
    task: *const u8,
    fd: u32,
    file: *mut u8,
}

#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task_file")]
pub fn iter_task_file_sockets(ctx: *mut core::ffi::c_void) -> i32 {
    let ctx = unsafe { &*(ctx as *const TaskFileCtx) };
    let (task, file) = (ctx.task, ctx.file);
    if task.is_null() || file.is_null() {
        return 0;
    }
    let sock = unsafe { bpf_sock_from_file(file.cast()) } as *const u8;
    if sock.is_null() {
        return 0;
    }
    let sk = Typed::read::<u64>(sock, layout!(socket_sk), 0) as *const u8;
    if sk.is_null() || !kernel::is_tcp::<Typed>(sk) {
        return 0;
    }
    let seq = unsafe { *ctx.meta };
    // One pass is one session: a later read of a fresh iterator fd gets another.
    let session = unsafe { *(ctx.meta as *const u64).add(1) };
    let key = ListedKey { session, sk: sk as u64 };
    if !first_sight(&key) {
        return 0;
    }
    let mut entry: SocketEntry = unsafe { core::mem::zeroed() };
    holder(task, &mut entry);
    endpoints::<Typed>(sk, &mut entry);
    // Newer verifiers treat a socket reached from a file as untrusted, which
    // no helper accepts: the cookie is read, not generated.
    entry.cookie = kernel::adopted_cookie::<Typed>(sk);
    let listening = entry.state as u32 == layout!(states.listen);
    if listening {
        entry.accept_queue = <Untyped as Access>::read::<u32>(sk, layout!(sk_ack_backlog), 0);
        entry.accept_backlog = <Untyped as Access>::read::<u32>(sk, layout!(sk_max_ack_backlog), 0);
        entry.listen_drops = <Untyped as Access>::read::<u32>(sk, layout!(sk_drops), 0);
    }
    if !write(seq, &entry) {
        unsee(&key);
        return 0;
    }
    if listening {
        // The queued records keep the listener's two numbers: userspace
        // reads them from listeners only (clearing them here cost 6.1's
        // verifier its state pruning in the walk).
        queued(seq, sk, &mut entry, &key);
    }
    0
}

/// The read's buffer filled: the kernel drops what this call wrote and shows
/// the same file again at the next read, which must not find the socket
/// already seen (else one socket is lost per ~400 records).
#[inline(always)]
fn unsee(key: &ListedKey) {
    let _ = LISTED.remove(key);
}

/// Whether this pass meets `sk` for the first time (another fd of a socket
/// already written is skipped).
#[inline(always)]
fn first_sight(key: &ListedKey) -> bool {
    if unsafe { LISTED.get(key) }.is_some() {
        return false;
    }
    // A full map evicts its least recent key: at worst a repeat record.
    let _ = LISTED.insert(key, &1, 0);
    true
}

/// Connections a listener has not accepted yet: walked through its accept
/// queue, with probe reads (their sockets are not typed pointers here).
/// Leaves at the first record that does not fit: nothing is carried through
/// the loop, which 6.1's verifier could not afford (a flag carried through
/// it made the program "too large").
#[inline(always)]
fn queued(seq: *mut u8, listener: *const u8, entry: &mut SocketEntry, key: &ListedKey) {
    let mut req = probe_read::<u64>(listener, layout!(icsk_accept_head), 0);
    for _ in 0..MAX_QUEUED {
        if req == 0 {
            break;
        }
        let child = probe_read::<u64>(req as *const u8, layout!(request_sock_sk), 0) as *const u8;
        // The cookie exists if anything asked for it (our birth probes did).
        let cookie = probe_read::<u64>(child, layout!(skc_cookie), 0);
        if !child.is_null() && cookie != 0 {
            endpoints::<Untyped>(child, entry);
            entry.cookie = cookie;
            entry.flags = entry_flags::QUEUED;
            if !write(seq, entry) {
                unsee(key);
                return;
            }
        }
        req = probe_read::<u64>(req as *const u8, layout!(request_sock_next), 0);
    }
}

/// Whether the record fit the read's buffer.
#[inline(always)]
fn write(seq: *mut u8, entry: &SocketEntry) -> bool {
    unsafe {
        bpf_seq_write(seq.cast(), (entry as *const SocketEntry).cast_mut().cast(), size_of::<SocketEntry>() as u32) == 0
    }
}

/// The process holding the fd: tgid, its leader's comm, its cgroup v2 id.
#[inline(always)]
fn holder(task: *const u8, entry: &mut SocketEntry) {
    entry.tgid = probe_read::<u32>(task, layout!(task_tgid), 0);
    let leader = probe_read::<u64>(task, layout!(task_group_leader), task as u64);
    let comm = layout!(task_comm);
    let src = (leader as *const u8).wrapping_add(comm.offset as usize);
    if unsafe { bpf_probe_read_kernel_buf(src, &mut entry.comm) }.is_err() {
        kernel::write16(&mut entry.comm, [0, 0]);
    }
    let cgroups = probe_read::<u64>(task, layout!(task_cgroups), 0);
    let cgroup = probe_read::<u64>(cgroups as *const u8, layout!(css_set_dfl_cgrp), 0);
    let kn = probe_read::<u64>(cgroup as *const u8, layout!(cgroup_kn), 0);
    entry.cgroup_id = probe_read::<u64>(kn as *const u8, layout!(kernfs_node_id), 0);
}

#[inline(always)]
fn endpoints<A: Access>(sk: *const u8, entry: &mut SocketEntry) {
    let family = A::read::<u16>(sk, layout!(skc_family), 0);
    entry.family = family;
    entry.state = A::read::<u8>(sk, layout!(skc_state), 0);
    entry.netns = kernel::netns(sk);
    kernel::write16(&mut entry.daddr, kernel::remote_addr::<A>(sk, family));
    kernel::write16(&mut entry.saddr, kernel::local_addr::<A>(sk, family));
    entry.dport = kernel::dport::<A>(sk);
    // A probe read even for the typed fd socket: the verifier distrusts it,
    // so the helper behind a typed `tcp_sock` read refuses it.
    entry.sport = kernel::sport::<Untyped>(sk);
}
