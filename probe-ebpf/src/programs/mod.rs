//! Program entry points, one file per kernel event. Each program only adapts
//! its hook's arguments and calls the shared handler; userspace's probe table
//! (probe-user/src/kernel/probe_table.rs) decides which of them this kernel gets.
mod close;
mod destroy;
mod io;
mod listing;
mod reset;
mod retransmit;
mod state;

use aya_ebpf::helpers::bpf_get_socket_cookie;

/// Socket cookie (as `ss -e` shows it). tp_btf and fentry only: kprobes and
/// classic tracepoints may not call the helper, and get 0.
#[inline(always)]
fn cookie_of(sk: *const u8) -> u64 {
    unsafe { bpf_get_socket_cookie(sk as *mut _) }
}
