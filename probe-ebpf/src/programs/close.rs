//! `tcp_close` entry: names the task that dropped the last reference, on
//! kernels that allow fentry or kprobes. Optional: the state-change path
//! recognises closes without it.
use aya_ebpf::{
    macros::{fentry, kprobe},
    programs::{FEntryContext, ProbeContext},
};

use crate::{
    access::{Typed, Untyped},
    handlers,
};

#[fentry(function = "tcp_close")]
pub fn fentry_tcp_close(ctx: FEntryContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    handlers::on_close_entry::<Typed>(sk);
    0
}

#[kprobe]
pub fn kprobe_tcp_close(ctx: ProbeContext) -> u32 {
    if let Some(sk) = ctx.arg::<*const u8>(0) {
        handlers::on_close_entry::<Untyped>(sk);
    }
    0
}
