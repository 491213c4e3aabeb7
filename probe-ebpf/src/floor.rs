//! The benchmark's floor: empty `tp_btf` programs on the tracepoints
//! sockprobe uses, so `cargo xtask bench` can tell what merely running a
//! program on each event costs from what sockprobe's work costs.
#![no_std]
#![no_main]

mod object;

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn floor_inet_sock_set_state(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "sock_send_length")]
pub fn floor_sock_send_length(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "sock_recv_length")]
pub fn floor_sock_recv_length(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "tcp_send_reset")]
pub fn floor_tcp_send_reset(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn floor_tcp_receive_reset(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "tcp_destroy_sock")]
pub fn floor_tcp_destroy_sock(_ctx: BtfTracePointContext) -> i32 {
    0
}
