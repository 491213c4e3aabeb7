//! What every eBPF object of this crate needs besides its programs (the
//! sockprobe object and the benchmark's floor): a panic handler, and a
//! GPL-compatible licence, which the socket cookie and tracing helpers require.

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
