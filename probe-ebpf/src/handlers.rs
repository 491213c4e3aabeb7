//! What sockprobe does on each kind of kernel event, independent of the hook
//! that delivered it. All `#[inline(always)]`: the verifier must see the
//! BTF-typed `sk` of each program, and BPF-to-BPF calls would lose it.
use aya_ebpf::{
    bindings::{BPF_ANY, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_ktime_get_ns,
};
use probe_common::{
    Counter, Direction, Event, EventKind, IO_RECV, IO_SEND, Owner, REASON_UNKNOWN, SHUTDOWN_MASK, SockState, flags,
};

use crate::{
    kernel::{self, layout},
    maps::{self, EVENTS, LISTENERS, SOCKETS},
};

/// `MSG_PEEK` (uapi): peeked bytes stay queued, so they are not I/O yet.
const MSG_PEEK: u64 = 2;

#[inline(always)]
fn now() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn key(sk: *const u8) -> u64 {
    sk as u64
}

/// Creates (or at birth, replaces) the state of `sk`.
#[inline(always)]
fn new_state(sk: *const u8, cookie: u64, direction: Direction) -> Option<*mut SockState> {
    let st = SockState {
        cookie,
        birth_ns: 0,
        close_wait_ns: 0,
        bytes_in: 0,
        bytes_out: 0,
        owner: Owner { cgroup_id: 0, tgid: 0, _pad: 0, comm: [0; 16] },
        exchanges: 0,
        pending_unread: 0,
        saddr: [0; 16],
        daddr: [0; 16],
        sport: 0,
        dport: 0,
        family: 0,
        direction: direction as u8,
        last_io: 0,
        flags: 0,
        state: 0,
        _pad: [0; 6],
    };
    if SOCKETS.insert(key(sk), &st, BPF_ANY as u64).is_err() {
        maps::count(Counter::StateInsertFailed);
        return None;
    }
    SOCKETS.get_ptr_mut(key(sk))
}

#[inline(always)]
fn emit(sk: *const u8, st: &SockState, kind: EventKind, value: u64, reason: u32) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        maps::count(Counter::EventsLost);
        return;
    };
    let ev = entry.as_mut_ptr();
    unsafe {
        (*ev).ts_ns = now();
        (*ev).cookie = st.cookie;
        (*ev).value = value;
        (*ev).bytes_in = st.bytes_in;
        (*ev).bytes_out = st.bytes_out;
        (*ev).owner = st.owner;
        if st.owner.tgid == 0 {
            (*ev).owner.cgroup_id = kernel::sk_cgroup_id(sk);
        }
        (*ev).exchanges = st.exchanges;
        (*ev).reason = reason;
        (*ev).saddr = st.saddr;
        (*ev).daddr = st.daddr;
        (*ev).sport = st.sport;
        (*ev).dport = st.dport;
        (*ev).family = st.family;
        (*ev).kind = kind as u8;
        (*ev).direction = st.direction;
    }
    // Waking the reader costs an irq_work per event; let data pile up and
    // wake only past a threshold. Userspace also polls on a short timer.
    let pending = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let flags = if pending >= WAKEUP_BYTES { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP };
    entry.submit(flags as u64);
}

/// Queued bytes past which a submit wakes the reader (~500 events).
const WAKEUP_BYTES: u64 = 64 * 1024;

/// The owner is known now: emit an `open` that waited for it.
#[inline(always)]
fn flush_pending_open(sk: *const u8, st: &mut SockState) {
    if st.flags & flags::OPEN_PENDING != 0 {
        st.flags &= !flags::OPEN_PENDING;
        emit(sk, st, EventKind::Open, 0, REASON_UNKNOWN);
    }
}

#[inline(always)]
fn take_owner(sk: *const u8, st: &mut SockState) {
    kernel::capture_owner(&mut st.owner);
    flush_pending_open(sk, st);
}

/// `inet_sock_set_state` (or `tcp_set_state` entry): `old` is still in `sk`.
#[inline(always)]
pub fn on_state_change(sk: *const u8, old: u32, new: u32, cookie: impl Fn() -> u64) {
    let s = layout!(states);
    // Births check the protocol (SCTP and MPTCP share this tracepoint); a
    // socket already in the map is known to be TCP.
    if new == s.listen || (old == s.listen && new != s.syn_recv) {
        on_listener(sk, new == s.listen);
        return;
    }
    let st = if old == s.close && new == s.syn_sent {
        if !kernel::is_tcp(sk) {
            return;
        }
        // connect(): process context, a new life for this sk.
        let Some(st) = new_state(sk, cookie(), Direction::Outbound) else { return };
        let st = unsafe { &mut *st };
        kernel::capture_owner(&mut st.owner);
        st
    } else if old == s.listen && new == s.syn_recv {
        if !kernel::is_tcp(sk) {
            return;
        }
        // A child socket born in softirq: it starts with its listener's owner;
        // the first I/O names the process that accepted it.
        let Some(st) = new_state(sk, cookie(), Direction::Inbound) else { return };
        let st = unsafe { &mut *st };
        kernel::read_endpoints(sk, st);
        if let Some(owner) = unsafe { LISTENERS.get(st.sport as u32) } {
            st.owner = *owner;
        }
        st
    } else if new == s.syn_sent || old == s.close {
        return;
    } else {
        match SOCKETS.get_ptr_mut(key(sk)) {
            Some(st) => unsafe { &mut *st },
            None => {
                if !kernel::is_tcp(sk) {
                    return;
                }
                // Established before we attached: track it from here on.
                let dir = if old == s.syn_sent {
                    Direction::Outbound
                } else if old == s.syn_recv {
                    Direction::Inbound
                } else {
                    Direction::Unknown
                };
                let Some(st) = new_state(sk, cookie(), dir) else { return };
                let st = unsafe { &mut *st };
                kernel::read_endpoints(sk, st);
                st
            }
        }
    };

    let t = now();
    if new == s.established {
        st.birth_ns = t;
        kernel::read_endpoints(sk, st);
        st.flags |= flags::OPENED;
        if st.owner.tgid != 0 {
            emit(sk, st, EventKind::Open, 0, REASON_UNKNOWN);
        } else {
            st.flags |= flags::OPEN_PENDING;
        }
    }

    // close() and shutdown() run in the owner's context: the closer is current.
    // An abort from close() is recognised by sk_shutdown == SHUTDOWN_MASK, set by
    // __tcp_close before it; a RST received in softirq leaves it unset.
    let closing = new == s.close && kernel::sk_shutdown(sk) as u8 == SHUTDOWN_MASK;
    let leaving_open = old == s.established || old == s.close_wait;
    if (old == s.established && new == s.fin_wait1)
        || (old == s.close_wait && new == s.last_ack)
        || (leaving_open && closing)
    {
        take_owner(sk, st);
    }

    if closing {
        let fin_in = old == s.close_wait || old == s.closing || old == s.last_ack;
        let unread = kernel::unread_bytes(sk, fin_in);
        if unread > 0 {
            st.pending_unread = unread;
            st.flags |= flags::ABORT_PENDING;
        }
    }

    if new == s.close_wait {
        st.close_wait_ns = t;
        emit(sk, st, EventKind::CloseWait, 0, REASON_UNKNOWN);
    } else if old == s.close_wait && st.close_wait_ns != 0 {
        let age = t.saturating_sub(st.close_wait_ns);
        st.close_wait_ns = 0;
        emit(sk, st, EventKind::CloseWaitEnd, age, REASON_UNKNOWN);
    }

    if leaving_open && (new == s.fin_wait1 || new == s.last_ack || new == s.close) && st.flags & flags::CLOSED == 0 {
        flush_pending_open(sk, st);
        st.flags |= flags::CLOSED;
        let duration = if st.birth_ns != 0 { t.saturating_sub(st.birth_ns) } else { 0 };
        emit(sk, st, EventKind::Close, duration, REASON_UNKNOWN);
    }
    st.state = new as u8;
}

/// listen() (process context) or a listener's close.
#[inline(always)]
fn on_listener(sk: *const u8, listening: bool) {
    if !kernel::is_tcp(sk) {
        return;
    }
    let port = u16::from_be(kernel::read::<u16>(sk, layout!(inet_sport), 0)) as u32;
    if listening {
        let mut owner = Owner { cgroup_id: 0, tgid: 0, _pad: 0, comm: [0; 16] };
        kernel::capture_owner(&mut owner);
        let _ = LISTENERS.insert(port, &owner, 0);
    } else {
        let _ = LISTENERS.remove(port);
    }
}

/// `tcp_send_reset`. `active` = no incoming segment (skb NULL): we chose to reset.
#[inline(always)]
pub fn on_reset_sent(sk: *const u8, active: bool, reason: u32) {
    if sk.is_null() {
        return;
    }
    let Some(st) = SOCKETS.get_ptr_mut(key(sk)) else { return };
    let st = unsafe { &mut *st };
    if st.flags & flags::ABORT_PENDING != 0 {
        st.flags &= !flags::ABORT_PENDING;
        let abort_on_close = layout!(rst_abort_on_close);
        // Kernels without reasons (or 6.10/6.11, which report 0) rely on the
        // close-path signature alone.
        let is_abort =
            reason == REASON_UNKNOWN || abort_on_close == REASON_UNKNOWN || reason == abort_on_close || reason == 0;
        if active && is_abort {
            emit(sk, st, EventKind::UnreadClose, st.pending_unread as u64, reason);
        }
    }
    emit(sk, st, EventKind::ResetSent, 0, reason);
}

#[inline(always)]
pub fn on_reset_received(sk: *const u8) {
    let Some(st) = SOCKETS.get_ptr_mut(key(sk)) else { return };
    emit(sk, unsafe { &*st }, EventKind::ResetReceived, 0, REASON_UNKNOWN);
}

#[inline(always)]
pub fn on_destroy(sk: *const u8) {
    let _ = SOCKETS.remove(key(sk));
}

/// An application `send`/`recv` on `sk` returned `ret`. Process context.
#[inline(always)]
pub fn on_io(sk: *const u8, dir: u8, ret: i64, msg_flags: u64, cookie: impl Fn() -> u64) {
    if ret <= 0 || (dir == IO_RECV && msg_flags & MSG_PEEK != 0) {
        return;
    }
    let st = match SOCKETS.get_ptr_mut(key(sk)) {
        Some(st) => st,
        None => {
            if !kernel::is_tcp(sk) {
                return;
            }
            let Some(st) = new_state(sk, cookie(), Direction::Unknown) else { return };
            kernel::read_endpoints(sk, unsafe { &mut *st });
            st
        }
    };
    let st = unsafe { &mut *st };
    if st.owner.tgid != kernel::current_tgid() {
        take_owner(sk, st);
    }
    // An exchange starts at the first request: a client's send after a
    // receive, a server's receive after a send.
    let starts_exchange = (st.direction == Direction::Outbound as u8 && dir == IO_SEND)
        || (st.direction == Direction::Inbound as u8 && dir == IO_RECV);
    if starts_exchange && st.last_io != dir {
        st.exchanges += 1;
    }
    st.last_io = dir;
    if dir == IO_SEND {
        st.bytes_out += ret as u64;
    } else {
        st.bytes_in += ret as u64;
    }
}

/// `tcp_close` entry (fallback kernels): the closing task is current.
#[inline(always)]
pub fn on_close_entry(sk: *const u8) {
    let Some(st) = SOCKETS.get_ptr_mut(key(sk)) else { return };
    take_owner(sk, unsafe { &mut *st });
}

pub use probe_common::IO_RECV as RECV;
pub use probe_common::IO_SEND as SEND;
