//! sockprobe's kernel programs.
//!
//! Every hook funnels into one handler in [`handlers`]; the files under
//! `programs/` only adapt a hook's arguments (tp_btf, fentry/fexit, kprobe).
//! Userspace decides at start-up which of them to load (its probe table).
#![no_std]
#![no_main]

mod access;
mod handlers;
mod kernel;
mod maps;
mod programs;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL-compatible: the socket cookie and tracing helpers require it.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
