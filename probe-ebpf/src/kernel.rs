//! Reading kernel memory at offsets that userspace resolved from BTF.
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel,
    bpf_probe_read_kernel_buf,
};
use probe_common::{AF_INET, AF_INET6, Event, Field, IO_RECV, ListenerKey, NO_OFFSET, Owner, SocketEntry};

use crate::access::Access;

pub(crate) use crate::globals::layout;

/// Reads `T` at `base + field.offset` with a helper call, or `default` when
/// the field is absent or unreadable. For pointers that are not typed (see
/// [`Access`]). No `Option` on purpose: LLVM leaves the payload of `None`
/// undefined, and the verifier rejects reading such registers.
#[inline(always)]
pub fn probe_read<T: Copy>(base: *const u8, field: Field, default: T) -> T {
    if field.offset == NO_OFFSET || base.is_null() {
        return default;
    }
    match unsafe { bpf_probe_read_kernel(base.add(field.offset as usize) as *const T) } {
        Ok(v) => v,
        Err(_) => default,
    }
}

/// A member that may be a bitfield (e.g. `sk_shutdown` before 6.5). The
/// verifier checks typed loads against member bounds, so bitfields, read as
/// the 16-bit word around them, go through a probe read.
#[inline(always)]
pub fn read_bits<A: Access>(base: *const u8, field: Field) -> u32 {
    match (field.bits, field.shift) {
        (8, 0) => A::read::<u8>(base, field, 0) as u32,
        (16, 0) => A::read::<u16>(base, field, 0) as u32,
        (bits, shift) => {
            let word = probe_read::<u16>(base, field, 0) as u32;
            if bits >= 16 {
                return word;
            }
            (word >> (shift & 15)) & ((1u32 << (bits & 15)) - 1)
        }
    }
}

#[inline(always)]
pub fn is_tcp<A: Access>(sk: *const u8) -> bool {
    let family = A::read::<u16>(sk, layout!(skc_family), 0);
    if family != AF_INET && family != AF_INET6 {
        return false;
    }
    read_bits::<A>(sk, layout!(sk_protocol)) == layout!(ipproto_tcp)
}

#[inline(always)]
pub fn sk_shutdown<A: Access>(sk: *const u8) -> u32 {
    read_bits::<A>(sk, layout!(sk_shutdown))
}

/// Bytes received in order but not read by the application: `rcv_nxt - copied_seq`,
/// minus the FIN's sequence number when the peer's FIN is in (docs/kernel-facts.md §2).
#[inline(always)]
pub fn unread_bytes<A: Access>(sk: *const u8, fin_received: bool) -> u32 {
    let tp = A::tcp(sk);
    let rcv_nxt = A::read_tp::<u32>(tp, layout!(tcp_rcv_nxt), 0);
    let copied = A::read_tp::<u32>(tp, layout!(tcp_copied_seq), 0);
    let diff = rcv_nxt.wrapping_sub(copied);
    if fin_received { diff.saturating_sub(1) } else { diff }
}

#[inline(always)]
pub fn sk_state<A: Access>(sk: *const u8) -> u32 {
    A::read::<u8>(sk, layout!(skc_state), 0) as u32
}

/// The cgroup the socket was created in (accepted sockets inherit the
/// listener's). Used only when no process-context owner is known.
#[inline(always)]
pub fn sk_cgroup_id(sk: *const u8) -> u64 {
    let cgroup = probe_read::<u64>(sk, layout!(sk_cgroup), 0);
    let kn = probe_read::<u64>(cgroup as *const u8, layout!(cgroup_kn), 0);
    probe_read::<u64>(kn as *const u8, layout!(kernfs_node_id), 0)
}

#[inline(always)]
pub fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// Makes the current task the socket's owner. Only call from process context.
#[inline(always)]
pub fn capture_owner(owner: &mut Owner) {
    let tgid = current_tgid();
    if owner.tgid == tgid && tgid != 0 {
        return;
    }
    owner.tgid = tgid;
    owner.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let leader = probe_read::<u64>(task, layout!(task_group_leader), task as u64);
    let comm = layout!(task_comm);
    if comm.offset != NO_OFFSET {
        let src = (leader as *const u8).wrapping_add(comm.offset as usize);
        if unsafe { bpf_probe_read_kernel_buf(src, &mut owner.comm) }.is_err() {
            write16(&mut owner.comm, [0, 0]);
        }
    }
}

/// Fills a record's addresses and ports from the socket, which keeps them
/// until it is freed. `skc_num` is zeroed when the port is released, so the
/// source port comes from `inet_sport`.
#[inline(always)]
pub fn write_endpoints<A: Access>(sk: *const u8, ev: &mut Event) {
    let family = A::read::<u16>(sk, layout!(skc_family), 0);
    ev.family = family;
    write16(&mut ev.daddr, remote_addr::<A>(sk, family));
    write16(&mut ev.saddr, local_addr::<A>(sk, family));
    ev.dport = dport::<A>(sk);
    ev.sport = sport::<A>(sk);
}

/// The socket's bound address as two words (IPv4: the first 4 bytes, on
/// this little-endian target).
#[inline(always)]
pub fn local_addr<A: Access>(sk: *const u8, family: u16) -> [u64; 2] {
    if family == AF_INET {
        [A::read::<u32>(sk, layout!(skc_rcv_saddr), 0) as u64, 0]
    } else {
        read_in6::<A>(sk, layout!(skc_v6_rcv_saddr))
    }
}

/// The peer's address, as [`local_addr`].
#[inline(always)]
pub fn remote_addr<A: Access>(sk: *const u8, family: u16) -> [u64; 2] {
    if family == AF_INET {
        [A::read::<u32>(sk, layout!(skc_daddr), 0) as u64, 0]
    } else {
        read_in6::<A>(sk, layout!(skc_v6_daddr))
    }
}

/// The peer's port, host byte order.
#[inline(always)]
pub fn dport<A: Access>(sk: *const u8) -> u16 {
    u16::from_be(A::read::<u16>(sk, layout!(skc_dport), 0))
}

/// What an I/O in direction `dir` compares to tell a turn of the
/// conversation: for a receive, the data segments this socket sent
/// (`tcp_sock.data_segs_out`: they leave only after its application wrote
/// them, `sendfile` and `splice` included); for a send, what its
/// application has read (`copied_seq`). Neither moves when the peer's data
/// merely arrives, so a peer that answers faster than this socket's
/// tracepoint runs cannot move the mark past a turn (the race that
/// `data_segs_in` at sends had: docs/architecture.md, "Where turns are
/// counted").
#[inline(always)]
pub fn turn_signal<A: Access>(tp: *const u8, dir: u8) -> u32 {
    let field = if dir == IO_RECV { layout!(tcp_data_segs_out) } else { layout!(tcp_copied_seq) };
    A::read_tp::<u32>(tp, field, 0)
}

/// The identity of a socket sockprobe did not see born: its cookie if
/// anything asked for one, else its address, which the socket listing uses
/// too (it cannot generate cookies: see docs/kernel-facts.md). Generating a
/// cookie here would leave the listing and the events naming one socket
/// twice. 0 (no identity) for kprobes, which report no cookies.
#[inline(always)]
pub fn adopted_cookie<A: Access>(sk: *const u8) -> u64 {
    if !A::TYPED {
        return 0;
    }
    let cookie = A::read::<u64>(sk, layout!(skc_cookie), 0);
    if cookie != 0 { cookie } else { address_of(sk) }
}

/// `sk`'s address as a plain number. The verifier allows no arithmetic on a
/// typed pointer (the cookie table computes a slot from this), but a copy
/// read back through a probe read is just a number.
#[inline(always)]
pub fn address_of(sk: *const u8) -> u64 {
    let spilled = sk as u64;
    unsafe { bpf_probe_read_kernel(&raw const spilled) }.unwrap_or(0)
}

/// The socket's network namespace (`net.ns.inum`), 0 where BTF lacks it.
#[inline(always)]
pub fn netns(sk: *const u8) -> u32 {
    let net = probe_read::<u64>(sk, layout!(sk_net), 0);
    probe_read::<u32>(net as *const u8, layout!(net_ns_inum), 0)
}

/// Who listens on `sk`: its namespace, local address (zero for a wildcard
/// bind) and port.
#[inline(always)]
pub fn listener_key<A: Access>(sk: *const u8, port: u16) -> ListenerKey {
    let mut key = ListenerKey { netns: netns(sk), port, _pad: 0, addr: [0; 16] };
    write16(&mut key.addr, local_addr::<A>(sk, A::read::<u16>(sk, layout!(skc_family), 0)));
    key
}

/// An `inet_sock` member, which a `tcp_sock` begins with.
#[inline(always)]
pub fn sport<A: Access>(sk: *const u8) -> u16 {
    u16::from_be(A::read_tcp::<u16>(sk, layout!(inet_sport), 0))
}

#[inline(always)]
fn read_in6<A: Access>(sk: *const u8, field: Field) -> [u64; 2] {
    [A::read::<u64>(sk, field, 0), A::read::<u64>(sk, Field { offset: field.offset.wrapping_add(8), ..field }, 0)]
}

/// 16-byte arrays (addresses, `comm`) move as two words: with alignment 1,
/// LLVM would copy them byte by byte or call out to memmove. Every such field
/// sits at an 8-aligned offset of an 8-aligned record, as checked below.
#[inline(always)]
pub fn write16(dst: &mut [u8; 16], words: [u64; 2]) {
    let d = dst.as_mut_ptr() as *mut u64;
    unsafe {
        d.write_volatile(words[0]);
        d.add(1).write_volatile(words[1]);
    }
}

#[inline(always)]
pub fn read16(src: &[u8; 16]) -> [u64; 2] {
    let s = src.as_ptr() as *const u64;
    unsafe { [s.read_volatile(), s.add(1).read_volatile()] }
}

const _: () = {
    use core::mem::{align_of, offset_of};
    assert!(align_of::<probe_common::SockState>() == 8 && align_of::<Event>() == 8 && align_of::<Owner>() == 8);
    assert!(offset_of!(Event, saddr) % 8 == 0 && offset_of!(Event, daddr) % 8 == 0);
    assert!(offset_of!(Owner, comm) % 8 == 0);
    assert!(align_of::<ListenerKey>() == 8 && offset_of!(ListenerKey, addr) % 8 == 0);
    assert!(align_of::<SocketEntry>() == 8 && offset_of!(SocketEntry, saddr) % 8 == 0);
    assert!(offset_of!(SocketEntry, daddr) % 8 == 0 && offset_of!(SocketEntry, comm) % 8 == 0);
};

/// As [`write16`], for an [`Owner`] (its `comm` is a byte array).
#[inline(always)]
pub fn copy_owner(dst: &mut Owner, src: &Owner) {
    dst.cgroup_id = src.cgroup_id;
    dst.tgid = src.tgid;
    write16(&mut dst.comm, read16(&src.comm));
}
