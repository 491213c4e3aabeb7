//! What sockprobe does on each kind of kernel event, independent of the hook
//! that delivered it. All `#[inline(always)]`: the verifier must see the
//! BTF-typed `sk` of each program, and BPF-to-BPF calls would lose it.
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::bpf_ktime_get_ns,
    maps::ring_buf::RingBufEntry,
};
use probe_common::{
    Closer, Counter, Direction, Event, EventKind, IO_RECV, IO_SEND, Owner, REASON_UNKNOWN, SHUTDOWN_MASK, SockState,
    Transition, classify, event_flags, flags, transition::direction_from, turns,
};

use crate::{
    access::Access,
    globals,
    kernel::{self, layout},
    maps::{self, EVENTS, LISTENERS, RecvMemo},
};

/// `MSG_PEEK` (uapi): peeked bytes stay queued, so they are not I/O yet.
const MSG_PEEK: u64 = 2;

#[inline(always)]
fn now() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

/// Creates (or at birth, replaces) the state of `sk`.
#[inline(always)]
fn new_state<A: Access>(sk: *const u8, cookie: u64, direction: Direction) -> Option<*mut SockState> {
    let st = unsafe { &mut *A::put(sk, cookie)? };
    st.cookie = cookie;
    st.direction = direction as u8;
    Some(st)
}

#[inline(always)]
fn emit<A: Access>(sk: *const u8, st: &SockState, kind: EventKind, value: u64, reason: u32, ts: u64) {
    emit_with::<A>(sk, st, kind, value, reason, ts, 0, 0, 0);
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn emit_with<A: Access>(
    sk: *const u8,
    st: &SockState,
    kind: EventKind,
    value: u64,
    reason: u32,
    ts: u64,
    close_wait_ns: u64,
    closer: u8,
    event_flags: u8,
) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        maps::count(Counter::EventsLost);
        return;
    };
    let ev = entry.as_mut_ptr();
    unsafe {
        (*ev).ts_ns = ts;
        (*ev).cookie = st.cookie;
        (*ev).value = value;
        (*ev).bytes_in = st.bytes_in;
        (*ev).bytes_out = st.bytes_out;
        kernel::copy_owner(&mut (*ev).owner, &st.owner);
        if st.owner.tgid == 0 {
            (*ev).owner.cgroup_id = kernel::sk_cgroup_id(sk);
        }
        (*ev).exchanges = st.exchanges;
        (*ev).reason = reason;
        kernel::write_endpoints::<A>(sk, &mut *ev);
        (*ev).kind = kind as u8;
        (*ev).direction = st.direction;
        (*ev).closer = closer;
        (*ev).flags = event_flags;
        (*ev)._pad = [0; 2];
        (*ev).connect_us = st.connect_us;
        (*ev).close_wait_ns = close_wait_ns;
    }
    submit(entry);
}

/// Wakes the reader only when the ring is filling up: a wakeup is an
/// irq_work (a self-IPI, a VM exit under virtualization), and asking the ring
/// how full it is reads positions other CPUs write, so that is asked only
/// every [`FILL_CHECK_EVERY`]th record on a CPU. Userspace polls on a short
/// timer for the rest.
#[inline(always)]
fn submit(entry: RingBufEntry<Event>) {
    let check = maps::count(Counter::EventsSubmitted).is_multiple_of(FILL_CHECK_EVERY);
    let wake = check && EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_BYTES;
    entry.submit(if wake { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP } as u64);
}

const FILL_CHECK_EVERY: u64 = 64;
/// Queued bytes past which a submit wakes the reader.
const WAKEUP_BYTES: u64 = 128 * 1024;

/// The owner is known now: emit an `open` that waited for it.
#[inline(always)]
fn flush_pending_open<A: Access>(sk: *const u8, st: &mut SockState) {
    if st.flags & flags::OPEN_PENDING != 0 {
        st.flags &= !flags::OPEN_PENDING;
        report_open::<A>(sk, st);
    }
}

#[inline(always)]
fn report_open<A: Access>(sk: *const u8, st: &mut SockState) {
    st.flags |= flags::OPEN_REPORTED;
    emit::<A>(sk, st, EventKind::Open, 0, REASON_UNKNOWN, now());
}

#[inline(always)]
fn take_owner<A: Access>(sk: *const u8, st: &mut SockState) {
    kernel::capture_owner(&mut st.owner);
    flush_pending_open::<A>(sk, st);
}

/// `inet_sock_set_state` (or `tcp_set_state` entry): `old` is still in `sk`.
/// What each transition means is decided by [`classify`] (probe-common,
/// unit-tested on the host); this only acts on it.
#[inline(always)]
pub fn on_state_change<A: Access>(sk: *const u8, old: u32, new: u32, cookie: impl Fn() -> u64) {
    let states = layout!(states);
    let transition = classify(old, new, &states);
    // Births check the protocol (SCTP and MPTCP share this tracepoint); a
    // socket already tracked is known to be TCP.
    let st = match transition {
        // FIN_WAIT1→FIN_WAIT2 and the like change nothing sockprobe reports.
        Transition::Ignore | Transition::Other => return,
        Transition::Listen | Transition::ListenerClosed => {
            on_listener::<A>(sk, transition == Transition::Listen);
            return;
        }
        Transition::Connect => {
            if !kernel::is_tcp::<A>(sk) {
                return;
            }
            // Process context, a new life for this sk. The owner is taken
            // here even if the first I/O would name it too: a connection that
            // never sends (held idle until the peer closes it) has no other
            // process-context moment before its CLOSE_WAIT record.
            let Some(st) = new_state::<A>(sk, cookie(), Direction::Outbound) else { return };
            let st = unsafe { &mut *st };
            kernel::capture_owner(&mut st.owner);
            // Until ESTABLISHED, the birth is the connect()'s start.
            st.birth_ns = now();
            st
        }
        // The cookie table keys a child by the cookie it has from ESTABLISHED
        // on: before 6.x `inet_csk_clone_lock` copies the request's cookie
        // into the child after this event, undoing any asked for here.
        Transition::Accept if A::keyed_by_cookie() => return,
        Transition::Accept => {
            let Some(st) = born_inbound::<A>(sk, cookie) else { return };
            st
        }
        Transition::Established if A::keyed_by_cookie() && old == states.syn_recv => {
            let Some(st) = born_inbound::<A>(sk, cookie) else { return };
            st
        }
        // A connection already over (its close record sent) reaching CLOSE:
        // its state matters only when close() aborts it with unread bytes
        // (a RST follows), so the common case spares the lookup.
        // Only a connect() seen from its start is a failure to report.
        Transition::ConnectFailed => match A::get(sk) {
            Some(st) => unsafe { &mut *st },
            None => return,
        },
        Transition::Closed { was_open: false, fin_received, .. }
            if kernel::sk_shutdown::<A>(sk) as u8 != SHUTDOWN_MASK
                || kernel::unread_bytes::<A>(sk, fin_received) == 0 =>
        {
            return;
        }
        _ => match A::get(sk) {
            Some(st) => unsafe { &mut *st },
            None => {
                if !kernel::is_tcp::<A>(sk) {
                    return;
                }
                // Established before we attached: track it from here on.
                let adopted = kernel::adopted_cookie::<A>(sk);
                let Some(st) = new_state::<A>(sk, adopted, direction_from(old, &states)) else { return };
                unsafe { &mut *st }
            }
        },
    };

    // Only transitions that report read the clock.
    match transition {
        // A connection's age runs from here, as the contract says. The
        // lookup is also the second chance of an inbound child whose birth
        // (in softirq) the kernel skipped or the map refused: it adopts it.
        // The daemon hears of the connection at its second exchange or its
        // close (see `on_io`); only `trace` shows it open here.
        Transition::Established => {
            let t = now();
            if old == states.syn_sent && st.birth_ns != 0 {
                st.connect_us = (t.saturating_sub(st.birth_ns) / 1000).clamp(1, u32::MAX as u64) as u32;
            }
            st.birth_ns = t;
            // Counted at sends, a server's turn is a send after its
            // application read: the mark starts at what it has read when the
            // handshake completes (nothing). A client needs no start: its
            // first send counts as the asker's anyway.
            if globals::turn_io() == IO_SEND && old == states.syn_recv {
                st.turn_mark = kernel::turn_signal::<A>(A::tcp(sk), IO_SEND);
            }
            if globals::trace_all() {
                if st.owner.tgid != 0 {
                    report_open::<A>(sk, st);
                } else {
                    st.flags |= flags::OPEN_PENDING;
                }
            }
        }
        // Why, in the socket's errno: ECONNREFUSED (a RST), ETIMEDOUT, an
        // ICMP error; 0 when the process gave up or no local port was free.
        Transition::ConnectFailed => {
            let t = now();
            let waited = if st.birth_ns != 0 { t.saturating_sub(st.birth_ns) } else { 0 };
            let err = A::read::<i32>(sk, layout!(sk_err), 0);
            st.birth_ns = 0;
            // close() or shutdown() during the handshake: the process gave up.
            let gave_up = kernel::sk_shutdown::<A>(sk) as u8 == SHUTDOWN_MASK;
            let closer = if gave_up { Closer::Local as u8 } else { 0 };
            emit_with::<A>(sk, st, EventKind::ConnectFailed, waited, err as u32, t, 0, closer, 0);
        }
        Transition::PeerClosed => {
            let t = now();
            st.close_wait_ns = t;
            emit::<A>(sk, st, EventKind::CloseWait, 0, REASON_UNKNOWN, t);
        }
        // close() and shutdown() run in the owner's context: the closer is current.
        Transition::LocalClose { from_close_wait } => {
            take_owner::<A>(sk, st);
            let closer = if from_close_wait { Closer::Peer } else { Closer::Local };
            emit_close::<A>(sk, st, from_close_wait, closer);
        }
        Transition::Closed { was_open, from_close_wait, fin_received } => {
            // An abort from close() is recognised by sk_shutdown == SHUTDOWN_MASK,
            // set by __tcp_close before it; a RST received in softirq leaves it unset.
            if kernel::sk_shutdown::<A>(sk) as u8 == SHUTDOWN_MASK {
                if was_open {
                    take_owner::<A>(sk, st);
                }
                let unread = kernel::unread_bytes::<A>(sk, fin_received);
                if unread > 0 {
                    st.pending_unread = unread;
                    st.flags |= flags::ABORT_PENDING;
                }
            }
            if was_open {
                emit_close::<A>(sk, st, from_close_wait, Closer::Reset);
            }
        }
        _ => {}
    }
}

/// A listener's child (if TCP) gets its state, and its listener's owner:
/// born in softirq, it has no other; the first I/O names the process that
/// accepted it. The child carries its listener's port, and its listener's
/// local address until SYN_RECV is over (docs/architecture.md): the exact
/// key, else the wildcard one.
#[inline(always)]
fn born_inbound<A: Access>(sk: *const u8, cookie: impl Fn() -> u64) -> Option<&'static mut SockState> {
    if !kernel::is_tcp::<A>(sk) {
        return None;
    }
    let st = unsafe { &mut *new_state::<A>(sk, cookie(), Direction::Inbound)? };
    if let Some(owner) = listener_of::<A>(sk) {
        kernel::copy_owner(&mut st.owner, owner);
    }
    Some(st)
}

/// The owner of the listener whose port `sk` has, if one is known: the
/// exact address's, else the wildcard's.
#[inline(always)]
fn listener_of<A: Access>(sk: *const u8) -> Option<&'static Owner> {
    let mut key = kernel::listener_key::<A>(sk, kernel::sport::<A>(sk));
    match unsafe { LISTENERS.get(&key) } {
        Some(o) => Some(o),
        None => {
            kernel::write16(&mut key.addr, [0, 0]);
            unsafe { LISTENERS.get(&key) }
        }
    }
}

/// The connection ends: one `close` record, once. Leaving CLOSE_WAIT, it
/// carries the CLOSE_WAIT age too (userspace splits it in two).
#[inline(always)]
fn emit_close<A: Access>(sk: *const u8, st: &mut SockState, from_close_wait: bool, closer: Closer) {
    if st.flags & flags::CLOSED != 0 {
        return;
    }
    flush_pending_open::<A>(sk, st);
    st.flags |= flags::CLOSED;
    // A request since the last turn, never answered (or its answer never
    // read): it started an exchange too, as the contract counts them. Counted
    // at receives, that is a client's send since its last receive; at sends,
    // a server's read since its last send, or a request it never read.
    let asker = if globals::turn_io() == IO_RECV { Direction::Outbound } else { Direction::Inbound };
    if st.direction == asker as u8 && request_since_turn::<A>(sk, st, from_close_wait) {
        st.exchanges += 1;
    }
    let t = now();
    let duration = if st.birth_ns != 0 { t.saturating_sub(st.birth_ns) } else { 0 };
    let close_wait =
        if from_close_wait && st.close_wait_ns != 0 { t.saturating_sub(st.close_wait_ns).max(1) } else { 0 };
    st.close_wait_ns = 0;
    let folded = st.birth_ns != 0 && st.flags & flags::OPEN_REPORTED == 0;
    let ev_flags = if folded { event_flags::OPEN_FOLDED } else { 0 };
    // `reason` carries no reset reason on a close: the data segments sent,
    // the share the retransmit records are taken of.
    let segs_out = A::read_tcp::<u32>(sk, layout!(tcp_data_segs_out), 0);
    emit_with::<A>(sk, st, EventKind::Close, duration, segs_out, t, close_wait, closer as u8, ev_flags);
}

/// Whether the asking side has asked since its last turn (see `emit_close`;
/// `fin_received`: the peer's FIN is in, and is no unread data).
#[inline(always)]
fn request_since_turn<A: Access>(sk: *const u8, st: &SockState, fin_received: bool) -> bool {
    let tp = A::tcp(sk);
    if globals::turn_io() == IO_RECV {
        return kernel::turn_signal::<A>(tp, IO_RECV) != st.turn_mark;
    }
    // At sends: data that arrived after what the last send had read, read
    // since or not. The FIN is no data, though reading it (end of file)
    // moves `copied_seq` by one.
    let rcv_nxt = A::read_tp::<u32>(tp, layout!(tcp_rcv_nxt), 0);
    rcv_nxt.wrapping_sub(fin_received as u32) != st.turn_mark
}

/// listen() (process context) or a listener's close.
#[inline(always)]
fn on_listener<A: Access>(sk: *const u8, listening: bool) {
    if !kernel::is_tcp::<A>(sk) {
        return;
    }
    let key = kernel::listener_key::<A>(sk, kernel::sport::<A>(sk));
    if listening {
        let mut owner = Owner { cgroup_id: 0, tgid: 0, _pad: 0, comm: [0; 16] };
        kernel::capture_owner(&mut owner);
        let _ = LISTENERS.insert(&key, &owner, 0);
    } else {
        let _ = LISTENERS.remove(&key);
    }
}

/// `tcp_send_reset`. `active` = no incoming segment (skb NULL): we chose to reset.
#[inline(always)]
pub fn on_reset_sent<A: Access>(sk: *const u8, active: bool, reason: u32) {
    if sk.is_null() {
        return;
    }
    let Some(st) = A::get(sk) else { return };
    let st = unsafe { &mut *st };
    if st.flags & flags::ABORT_PENDING != 0 {
        st.flags &= !flags::ABORT_PENDING;
        let abort_on_close = layout!(rst_abort_on_close);
        // Kernels without reasons (or 6.10/6.11, which report 0) rely on the
        // close-path signature alone.
        let is_abort =
            reason == REASON_UNKNOWN || abort_on_close == REASON_UNKNOWN || reason == abort_on_close || reason == 0;
        if active && is_abort {
            emit::<A>(sk, st, EventKind::UnreadClose, st.pending_unread as u64, reason, now());
        }
    }
    emit::<A>(sk, st, EventKind::ResetSent, 0, reason, now());
}

/// `tcp_retransmit_skb`: rare by nature (a loss, a timeout), so one record
/// each; `skb` says how many segments went again.
#[inline(always)]
pub fn on_retransmit<A: Access>(sk: *const u8, skb: *const u8) {
    if sk.is_null() {
        return;
    }
    let Some(st) = A::get(sk) else { return };
    let cb = layout!(skb_cb);
    let segs = if cb.offset == probe_common::NO_OFFSET || skb.is_null() {
        1
    } else {
        kernel::probe_read::<u16>(skb.wrapping_add(cb.offset as usize), layout!(tcp_skb_gso_segs), 1).max(1)
    };
    let syn = kernel::sk_state::<A>(sk) == layout!(states.syn_sent);
    let flags = if syn { event_flags::SYN } else { 0 };
    emit_with::<A>(sk, unsafe { &*st }, EventKind::Retransmit, segs as u64, REASON_UNKNOWN, now(), 0, 0, flags);
}

#[inline(always)]
pub fn on_reset_received<A: Access>(sk: *const u8) {
    let Some(st) = A::get(sk) else { return };
    emit::<A>(sk, unsafe { &*st }, EventKind::ResetReceived, 0, REASON_UNKNOWN, now());
}

#[inline(always)]
pub fn on_destroy<A: Access>(sk: *const u8) {
    A::remove(sk);
}

/// An application `send`/`recv` on `sk` returned `ret`. Process context.
///
/// Exchanges are counted on one direction of I/O alone ([`turn_io`]): an
/// I/O that finds the socket has carried data the other way since the last
/// one (the other way's data segments moved) is a turn of the conversation.
/// An exchange starts at each turn towards the side that asks: a client's
/// send after it received (and its first send), a server's receive after it
/// sent (and its first receive); counted at a server's sends, a turn is its
/// response to a request it received. The other direction (attached only
/// for `trace`) just counts bytes.
#[inline(always)]
pub fn on_io<A: Access>(sk: *const u8, dir: u8, ret: i64, msg_flags: u64) {
    if ret <= 0 || (dir == IO_RECV && msg_flags & MSG_PEEK != 0) {
        return;
    }
    let at_turns = dir == globals::turn_io();
    // One helper call for the `tcp_sock` members read below.
    let tp = if at_turns { A::tcp(sk) } else { core::ptr::null() };
    // Not TCP (a UNIX or UDP socket: these tracepoints fire for every socket).
    if A::TYPED && at_turns && tp.is_null() {
        return;
    }
    let other_way = kernel::turn_signal::<A>(tp, dir);
    // `trace` counts every receive's bytes, so it never skips one.
    let memo = if A::TYPED && at_turns && dir == IO_RECV && !globals::trace_all() {
        Memo::of::<A>(sk, tp, other_way)
    } else {
        Memo::NONE
    };
    if memo.unchanged {
        return;
    }
    let st = match A::get(sk) {
        Some(st) => st,
        None => {
            if !kernel::is_tcp::<A>(sk) {
                return;
            }
            // Born before the probes (or its birth missed): a socket on a
            // listening port was accepted; any other's side stays unknown here.
            let direction = if listener_of::<A>(sk).is_some() { Direction::Inbound } else { Direction::Unknown };
            let Some(st) = new_state::<A>(sk, kernel::adopted_cookie::<A>(sk), direction) else { return };
            st
        }
    };
    let st = unsafe { &mut *st };
    if globals::trace_all() {
        if dir == IO_SEND {
            st.bytes_out += ret as u64;
        } else {
            st.bytes_in += ret as u64;
        }
    }
    if !at_turns {
        return;
    }
    // The side that asks: a client counted at its sends, a server at its
    // receives (unknown for a socket adopted here: see `turns::judge`).
    let known = st.direction != Direction::Unknown as u8;
    let asks = known && (dir == IO_RECV) == (st.direction == Direction::Inbound as u8);
    let first = st.flags & flags::TURN_IO_SEEN == 0;
    let verdict = turns::judge(other_way, st.turn_mark, first, asks);
    // Most I/O continues the last: nothing changes. Until the socket
    // carries data the other way, the memo answers its receives on this
    // CPU. (Not kept at turns: request/response traffic, all turns, would
    // only pay for it.)
    if !verdict.turn {
        memo.keep::<A>(sk);
        return;
    }
    st.turn_mark = other_way;
    st.flags |= flags::TURN_IO_SEEN;
    // A turn. Owners change hands at turns, if at all (accept, fd passing).
    if st.owner.tgid != kernel::current_tgid() {
        take_owner::<A>(sk, st);
    }
    if verdict.exchange {
        st.exchanges += 1;
        // A connection reused: long-lived enough for the daemon to show it
        // open now (a one-exchange connection is reported by its close).
        if st.exchanges == 2 && st.birth_ns != 0 && st.flags & flags::OPEN_REPORTED == 0 {
            report_open::<A>(sk, st);
        }
    }
}

/// A receive's slot in [`maps::RECV_MEMO`] and what the socket shows now.
/// `snd_nxt` joins `data_segs_out` because it starts at a random ISN in
/// each life of a socket (`tcp_disconnect` zeroes `data_segs_out`), so a
/// memo never speaks for another life, nor for another socket at the same
/// address; a FIN moves it too. It is read only when the rest matches: its
/// cache line is often another CPU's (the other end's softirq wrote it).
struct Memo {
    slot: *mut RecvMemo,
    tp: *const u8,
    data_segs_out: u32,
    /// The socket has sent nothing since its last receive on this CPU.
    unchanged: bool,
}

impl Memo {
    const NONE: Memo = Memo { slot: core::ptr::null_mut(), tp: core::ptr::null(), data_segs_out: 0, unchanged: false };

    #[inline(always)]
    fn of<A: Access>(sk: *const u8, tp: *const u8, data_segs_out: u32) -> Memo {
        // Both ports share the socket's first cache line, which recvmsg touched.
        let local_port = A::read::<u16>(sk, layout!(skc_num), 0);
        let Some(slot) = maps::recv_memo(local_port, kernel::dport::<A>(sk)) else { return Memo::NONE };
        let seen = unsafe { &*slot };
        let unchanged = seen.sk == sk as u64
            && seen.data_segs_out == data_segs_out
            && seen.snd_nxt == A::read_tp::<u32>(tp, layout!(tcp_snd_nxt), 0);
        Memo { slot, tp, data_segs_out, unchanged }
    }

    #[inline(always)]
    fn keep<A: Access>(&self, sk: *const u8) {
        if !self.slot.is_null() {
            let snd_nxt = A::read_tp::<u32>(self.tp, layout!(tcp_snd_nxt), 0);
            // Per-CPU slot: no other writer.
            unsafe { *self.slot = RecvMemo { sk: sk as u64, data_segs_out: self.data_segs_out, snd_nxt } };
        }
    }
}

/// `tcp_close` entry (fallback kernels): the closing task is current.
#[inline(always)]
pub fn on_close_entry<A: Access>(sk: *const u8) {
    let Some(st) = A::get(sk) else { return };
    take_owner::<A>(sk, unsafe { &mut *st });
}

pub use probe_common::IO_RECV as RECV;
pub use probe_common::IO_SEND as SEND;
