//! TCP state transitions: births, CLOSE_WAIT, closes, aborts.
use aya_ebpf::{
    macros::{btf_tracepoint, fentry, kprobe},
    programs::{BtfTracePointContext, FEntryContext, ProbeContext},
};

use super::cookie_of;
use crate::{
    access::{Typed, Untyped},
    handlers, kernel,
};

/// `sock:inet_sock_set_state(sk, oldstate, newstate)`, 4.16+.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn tp_inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    let old: i32 = ctx.arg(1);
    let new: i32 = ctx.arg(2);
    handlers::on_state_change::<Typed>(sk, old as u32, new as u32, || cookie_of(sk));
    0
}

/// Fallback: `tcp_set_state(sk, state)` entry; the old state is still in `sk`.
/// Misses a child's LISTEN→SYN_RECV (set by `inet_sk_set_state`).
#[fentry(function = "tcp_set_state")]
pub fn fentry_tcp_set_state(ctx: FEntryContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    let new: i32 = ctx.arg(1);
    handlers::on_state_change::<Typed>(sk, kernel::sk_state::<Typed>(sk), new as u32, || cookie_of(sk));
    0
}

#[kprobe]
pub fn kprobe_tcp_set_state(ctx: ProbeContext) -> u32 {
    let (Some(sk), Some(new)) = (ctx.arg::<*const u8>(0), ctx.arg::<i32>(1)) else { return 0 };
    handlers::on_state_change::<Untyped>(sk, kernel::sk_state::<Untyped>(sk), new as u32, || 0);
    0
}
