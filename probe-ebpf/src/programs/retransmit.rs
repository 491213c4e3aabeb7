//! Retransmitted segments, SYNs included.
use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::{access::Typed, handlers};

/// `tcp:tcp_retransmit_skb(sk, skb, err)` (newer kernels): fires on failures too.
#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tp_tcp_retransmit_skb_err(ctx: BtfTracePointContext) -> i32 {
    let err: i32 = ctx.arg(2);
    if err == 0 {
        handlers::on_retransmit::<Typed>(ctx.arg(0), ctx.arg(1));
    }
    0
}

/// `tcp:tcp_retransmit_skb(sk, skb)` before: only retransmits that went out.
#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tp_tcp_retransmit_skb(ctx: BtfTracePointContext) -> i32 {
    handlers::on_retransmit::<Typed>(ctx.arg(0), ctx.arg(1));
    0
}
