//! Reading kernel memory at offsets that userspace resolved from BTF.
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel,
    bpf_probe_read_kernel_buf,
};
use probe_common::{AF_INET, AF_INET6, Field, KernelLayout, NO_OFFSET, Owner, SockState};

/// Filled in by userspace with `EbpfLoader::override_global`.
#[unsafe(no_mangle)]
pub static LAYOUT: KernelLayout = KernelLayout::ZERO;

/// Reads one member of [`LAYOUT`]; volatile so the compiler cannot fold the
/// placeholder values in.
macro_rules! layout {
    ($($field:ident).+) => {
        unsafe { core::ptr::read_volatile(&raw const crate::kernel::LAYOUT.$($field).+) }
    };
}
pub(crate) use layout;

/// Reads `T` at `base + field.offset`, or `default` when the field is absent
/// or unreadable. No `Option` on purpose: LLVM leaves the payload of `None`
/// undefined, and the verifier rejects reading such registers.
#[inline(always)]
pub fn read<T: Copy>(base: *const u8, field: Field, default: T) -> T {
    if field.offset == NO_OFFSET || base.is_null() {
        return default;
    }
    match unsafe { bpf_probe_read_kernel(base.add(field.offset as usize) as *const T) } {
        Ok(v) => v,
        Err(_) => default,
    }
}

/// A member that may be a bitfield (e.g. `sk_shutdown` before 6.5).
#[inline(always)]
pub fn read_bits(base: *const u8, field: Field) -> u32 {
    let word = read::<u16>(base, field, 0) as u32;
    if field.bits >= 16 {
        return word;
    }
    (word >> (field.shift & 15)) & ((1u32 << (field.bits & 15)) - 1)
}

#[inline(always)]
pub fn is_tcp(sk: *const u8) -> bool {
    let family = read::<u16>(sk, layout!(skc_family), 0);
    if family != AF_INET && family != AF_INET6 {
        return false;
    }
    read_bits(sk, layout!(sk_protocol)) == layout!(ipproto_tcp)
}

#[inline(always)]
pub fn sk_shutdown(sk: *const u8) -> u32 {
    read_bits(sk, layout!(sk_shutdown))
}

/// Bytes received in order but not read by the application: `rcv_nxt - copied_seq`,
/// minus the FIN's sequence number when the peer's FIN is in (see kernel-notes §2).
#[inline(always)]
pub fn unread_bytes(sk: *const u8, fin_received: bool) -> u32 {
    let rcv_nxt = read::<u32>(sk, layout!(tcp_rcv_nxt), 0);
    let copied = read::<u32>(sk, layout!(tcp_copied_seq), 0);
    let diff = rcv_nxt.wrapping_sub(copied);
    if fin_received { diff.saturating_sub(1) } else { diff }
}

#[inline(always)]
pub fn sk_state(sk: *const u8) -> u32 {
    read::<u8>(sk, layout!(skc_state), 0) as u32
}

/// The cgroup the socket was created in (accepted sockets inherit the
/// listener's). Used only when no process-context owner is known.
#[inline(always)]
pub fn sk_cgroup_id(sk: *const u8) -> u64 {
    let cgroup = read::<u64>(sk, layout!(sk_cgroup), 0);
    let kn = read::<u64>(cgroup as *const u8, layout!(cgroup_kn), 0);
    read::<u64>(kn as *const u8, layout!(kernfs_node_id), 0)
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
    let leader = read::<u64>(task, layout!(task_group_leader), task as u64);
    let comm = layout!(task_comm);
    if comm.offset != NO_OFFSET {
        let src = (leader as *const u8).wrapping_add(comm.offset as usize);
        if unsafe { bpf_probe_read_kernel_buf(src, &mut owner.comm) }.is_err() {
            owner.comm = [0; 16];
        }
    }
}

/// Fills addresses and ports. `skc_num` is zeroed when the port is released,
/// so the source port comes from `inet_sport`.
#[inline(always)]
pub fn read_endpoints(sk: *const u8, st: &mut SockState) {
    let family = read::<u16>(sk, layout!(skc_family), 0);
    st.family = family;
    if family == AF_INET {
        let d = read::<[u8; 4]>(sk, layout!(skc_daddr), [0; 4]);
        let s = read::<[u8; 4]>(sk, layout!(skc_rcv_saddr), [0; 4]);
        st.daddr = [0; 16];
        st.saddr = [0; 16];
        st.daddr[..4].copy_from_slice(&d);
        st.saddr[..4].copy_from_slice(&s);
    } else {
        st.daddr = read::<[u8; 16]>(sk, layout!(skc_v6_daddr), [0; 16]);
        st.saddr = read::<[u8; 16]>(sk, layout!(skc_v6_rcv_saddr), [0; 16]);
    }
    st.dport = u16::from_be(read::<u16>(sk, layout!(skc_dport), 0));
    st.sport = u16::from_be(read::<u16>(sk, layout!(inet_sport), 0));
}
