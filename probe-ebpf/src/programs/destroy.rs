//! End of a socket's life: drop its state.
use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::{access::Typed, handlers};

/// `tcp:tcp_destroy_sock(sk)`, 4.15+.
#[btf_tracepoint(function = "tcp_destroy_sock")]
pub fn tp_tcp_destroy_sock(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    handlers::on_destroy::<Typed>(sk);
    0
}
