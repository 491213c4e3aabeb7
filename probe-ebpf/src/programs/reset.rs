//! Resets sent and received.
use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use probe_common::REASON_UNKNOWN;

use crate::{access::Typed, handlers};

/// `tcp:tcp_send_reset(sk, skb, reason)`, 6.10+. `skb == NULL`: an active reset.
#[btf_tracepoint(function = "tcp_send_reset")]
pub fn tp_tcp_send_reset_reason(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    let skb: *const u8 = ctx.arg(1);
    let reason: u32 = ctx.arg(2);
    handlers::on_reset_sent::<Typed>(sk, skb.is_null(), reason);
    0
}

/// `tcp:tcp_send_reset(sk, skb)` before 6.10: no reason.
#[btf_tracepoint(function = "tcp_send_reset")]
pub fn tp_tcp_send_reset(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    let skb: *const u8 = ctx.arg(1);
    handlers::on_reset_sent::<Typed>(sk, skb.is_null(), REASON_UNKNOWN);
    0
}

/// `tcp:tcp_receive_reset(sk)`, first line of `tcp_reset()`.
#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn tp_tcp_receive_reset(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    handlers::on_reset_received::<Typed>(sk);
    0
}
