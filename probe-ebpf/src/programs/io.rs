//! Application send/recv: bytes, exchanges, and the owner of accepted sockets.
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{btf_tracepoint, fexit, kprobe, kretprobe},
    programs::{BtfTracePointContext, FExitContext, ProbeContext, RetProbeContext},
};

use crate::{
    access::{Typed, Untyped},
    handlers::{self, RECV, SEND},
    maps::{IO_ARGS, IoArgs},
};

/// `sock:sock_send_length(sk, ret, flags)`, 6.3+.
#[btf_tracepoint(function = "sock_send_length")]
pub fn tp_sock_send_length(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    let ret: i32 = ctx.arg(1);
    handlers::on_io::<Typed>(sk, SEND, ret as i64, 0);
    0
}

/// `sock:sock_recv_length(sk, ret, flags)`, 6.3+.
#[btf_tracepoint(function = "sock_recv_length")]
pub fn tp_sock_recv_length(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    let ret: i32 = ctx.arg(1);
    let flags: i32 = ctx.arg(2);
    handlers::on_io::<Typed>(sk, RECV, ret as i64, flags as u64);
    0
}

/// Fallback: `tcp_sendmsg(sk, msg, size)` return.
#[fexit(function = "tcp_sendmsg")]
pub fn fexit_tcp_sendmsg(ctx: FExitContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    let ret: i32 = ctx.arg(3);
    handlers::on_io::<Typed>(sk, SEND, ret as i64, 0);
    0
}

/// Fallback: `tcp_recvmsg(sk, msg, len, flags)` return (`addr_len` dropped in 6.x).
#[fexit(function = "tcp_recvmsg")]
pub fn fexit_tcp_recvmsg_4(ctx: FExitContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    let flags: i32 = ctx.arg(3);
    let ret: i32 = ctx.arg(4);
    handlers::on_io::<Typed>(sk, RECV, ret as i64, flags as u64);
    0
}

/// Fallback: `tcp_recvmsg(sk, msg, len, flags, addr_len)` return, 5.19+.
#[fexit(function = "tcp_recvmsg")]
pub fn fexit_tcp_recvmsg(ctx: FExitContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    let flags: i32 = ctx.arg(3);
    let ret: i32 = ctx.arg(5);
    handlers::on_io::<Typed>(sk, RECV, ret as i64, flags as u64);
    0
}

/// Fallback: `tcp_recvmsg(sk, msg, len, nonblock, flags, addr_len)` return, before 5.19.
#[fexit(function = "tcp_recvmsg")]
pub fn fexit_tcp_recvmsg_nonblock(ctx: FExitContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    let flags: i32 = ctx.arg(4);
    let ret: i32 = ctx.arg(6);
    handlers::on_io::<Typed>(sk, RECV, ret as i64, flags as u64);
    0
}

/// kprobe fallback: stash the arguments until the return probe sees `ret`.
#[inline(always)]
fn stash(sk: Option<*const u8>, flags: u64) {
    if let Some(sk) = sk {
        let args = IoArgs { sk: sk as u64, flags };
        let _ = IO_ARGS.insert(bpf_get_current_pid_tgid(), &args, 0);
    }
}

#[inline(always)]
fn unstash(ctx: &RetProbeContext, dir: u8) {
    let id = bpf_get_current_pid_tgid();
    let Some(args) = (unsafe { IO_ARGS.get(id) }).copied() else { return };
    let _ = IO_ARGS.remove(id);
    let ret: i32 = ctx.ret();
    handlers::on_io::<Untyped>(args.sk as *const u8, dir, ret as i64, args.flags);
}

#[kprobe]
pub fn kprobe_tcp_sendmsg(ctx: ProbeContext) -> u32 {
    stash(ctx.arg(0), 0);
    0
}

#[kretprobe]
pub fn kretprobe_tcp_sendmsg(ctx: RetProbeContext) -> u32 {
    unstash(&ctx, SEND);
    0
}

/// `tcp_recvmsg(sk, msg, len, flags, ...)` entry, 5.19+. (The argument index
/// cannot come from a global: the verifier refuses a ctx offset it cannot see.)
#[kprobe]
pub fn kprobe_tcp_recvmsg(ctx: ProbeContext) -> u32 {
    stash(ctx.arg(0), ctx.arg::<i32>(3).unwrap_or(0) as u64);
    0
}

/// `tcp_recvmsg(sk, msg, len, nonblock, flags, addr_len)` entry, before 5.19.
#[kprobe]
pub fn kprobe_tcp_recvmsg_nonblock(ctx: ProbeContext) -> u32 {
    stash(ctx.arg(0), ctx.arg::<i32>(4).unwrap_or(0) as u64);
    0
}

#[kretprobe]
pub fn kretprobe_tcp_recvmsg(ctx: RetProbeContext) -> u32 {
    unstash(&ctx, RECV);
    0
}
