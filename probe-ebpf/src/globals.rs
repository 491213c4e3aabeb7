//! The read-only globals userspace fills in at load time
//! (`EbpfLoader::override_global`, probe-user's kernel/loader.rs), each under
//! the name probe-common gives it (`*_GLOBAL`). Read-only, so the verifier
//! knows their values and prunes the branches not taken (an older kernel
//! never sees a socket-storage call it could not verify). Every read is
//! volatile, so the compiler cannot fold in the placeholders below.
use probe_common::{IO_RECV, IO_SEND, KernelLayout, StateStore};

/// Field offsets and enum values from this kernel's BTF (`LAYOUT_GLOBAL`).
#[unsafe(no_mangle)]
pub static LAYOUT: KernelLayout = KernelLayout::ZERO;

/// Where per-socket state lives (`STATE_STORE_GLOBAL`, a [`StateStore`]).
#[unsafe(no_mangle)]
pub static STATE_STORE: u32 = StateStore::LruHash as u32;

/// The cookie table's slot count minus one (`TABLE_MASK_GLOBAL`).
#[unsafe(no_mangle)]
pub static TABLE_MASK: u32 = 0;

/// `TRACE_ALL_GLOBAL`: 1 for `sockprobe trace`, which shows every `open` as
/// it happens and the bytes of each connection; 0 for the daemon, whose
/// metrics need neither, so an ordinary connection costs it one record (its
/// `close`), only the direction of I/O that counts turns is watched
/// ([`TURNS_AT_SENDS`]) and an I/O that is no turn costs a lookup at most.
#[unsafe(no_mangle)]
pub static TRACE_ALL: u32 = 0;

/// `TURNS_AT_SENDS_GLOBAL`: 1 where every send, `sendfile` and `splice`
/// included, goes through `sendmsg` (6.5+), so turns are counted at sends,
/// which are far fewer than receives for the same conversation (a client
/// reading a 16 MiB response in 8 KiB reads makes 2 048 receives against the
/// server's few hundred sends); the daemon then does not watch receives at
/// all. 0: counted at receives.
#[unsafe(no_mangle)]
pub static TURNS_AT_SENDS: u32 = 0;

/// Reads one member of [`LAYOUT`].
macro_rules! layout {
    ($($field:ident).+) => {
        unsafe { core::ptr::read_volatile(&raw const crate::globals::LAYOUT.$($field).+) }
    };
}
pub(crate) use layout;

#[inline(always)]
pub fn state_store_is(store: StateStore) -> bool {
    unsafe { core::ptr::read_volatile(&raw const STATE_STORE) == store as u32 }
}

#[inline(always)]
pub fn table_mask() -> u32 {
    unsafe { core::ptr::read_volatile(&raw const TABLE_MASK) }
}

#[inline(always)]
pub fn trace_all() -> bool {
    unsafe { core::ptr::read_volatile(&raw const TRACE_ALL) != 0 }
}

/// The direction of the I/O turns are counted at.
#[inline(always)]
pub fn turn_io() -> u8 {
    if unsafe { core::ptr::read_volatile(&raw const TURNS_AT_SENDS) } != 0 { IO_SEND } else { IO_RECV }
}
