//! The cookie table: per-socket state in a preallocated array, a socket's
//! slot found from its cookie (a counter the kernel hands out once per
//! socket, never reused; a socket sockprobe did not see born and nothing
//! asked a cookie for is keyed by its address, as the listing names it).
//! Home slot `cookie & mask` (cookies are consecutive: neighbours in time
//! take neighbouring slots), a mix of the bits for addresses, then the next
//! [`TABLE_PROBES`] - 1 (linear probing). An array lookup is inlined by the
//! verifier into an address computation, so finding a state is a load and
//! a compare; claiming one is a compare-and-swap of its cookie; freeing
//! it, a store. No hashing, no bucket locks, no LRU lists, no allocation:
//! what the hash map spent most of a short connection's time on.
//!
//! Freed slots leave holes, so a miss looks at every probe slot. When all
//! of them are taken, one occupant gives its slot up, counted: a socket
//! keyed by address first (it predates sockprobe), else the oldest-born
//! (smallest cookie). This is also what reclaims a slot whose socket's
//! destroy was never seen.
use core::intrinsics::{AtomicOrdering, atomic_cxchg};

use probe_common::{Counter, SockState, TABLE_PROBES};

use crate::maps::{self, STATE_TABLE};

/// Slot count minus one, filled in by userspace (read-only: the verifier
/// knows it).
#[unsafe(no_mangle)]
pub static TABLE_MASK: u32 = 0;

/// Addresses (kernel pointers have the top bit set) share their low bits
/// (slab objects are aligned): mixed. Cookies are used as they are.
#[inline(always)]
fn home(key: u64) -> u32 {
    if key >> 63 != 0 { (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32 } else { key as u32 }
}

#[inline(always)]
fn slot(home: u32, k: u32) -> Option<*mut SockState> {
    let mask = unsafe { core::ptr::read_volatile(&raw const TABLE_MASK) };
    STATE_TABLE.get_ptr_mut(home.wrapping_add(k) & mask)
}

/// Eviction order: addresses (top bit set) before cookies, older cookies first.
#[inline(always)]
fn eviction_rank(key: u64) -> u64 {
    key.wrapping_add(1 << 63)
}

/// Sets the slot's key from `old` to `new` if no other CPU changed it
/// first (BPF_CMPXCHG; the target's `AtomicU64` offers no compare-and-swap).
#[inline(always)]
fn swap_key(p: *mut SockState, old: u64, new: u64) -> bool {
    unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::AcqRel }, { AtomicOrdering::Relaxed }>(&raw mut (*p).cookie, old, new)
    }
    .1
}

/// The state of the socket with this cookie.
#[inline(always)]
pub fn find(cookie: u64) -> Option<*mut SockState> {
    if cookie == 0 {
        return None;
    }
    let home = home(cookie);
    for k in 0..TABLE_PROBES {
        let p = slot(home, k)?;
        if unsafe { (*p).cookie } == cookie {
            return Some(p);
        }
    }
    None
}

/// A zeroed state for the socket with this cookie: its own slot again (a
/// rebirth), else the first free one, else the oldest-born occupant's.
#[inline(always)]
pub fn claim(cookie: u64, empty: &SockState) -> Option<*mut SockState> {
    if cookie == 0 {
        maps::count(Counter::StateInsertFailed);
        return None;
    }
    // Stops at the socket's own slot or the first free one: a state further
    // along (its socket reborn after an earlier slot was freed) is left to
    // eviction.
    let mut oldest: Option<(*mut SockState, u64)> = None;
    let home = home(cookie);
    for k in 0..TABLE_PROBES {
        let Some(p) = slot(home, k) else { break };
        let held = unsafe { (*p).cookie };
        if held == cookie {
            return Some(reset(p, cookie, empty));
        }
        if held == 0 {
            // Another CPU may claim it first: then the next slot.
            if swap_key(p, 0, cookie) {
                maps::count(Counter::StatesCreated);
                return Some(reset(p, cookie, empty));
            }
            continue;
        }
        if oldest.is_none_or(|(_, c)| eviction_rank(held) < eviction_rank(c)) {
            oldest = Some((p, held));
        }
    }
    if let Some((p, held)) = oldest {
        if swap_key(p, held, cookie) {
            maps::count(Counter::StatesEvicted);
            return Some(reset(p, cookie, empty));
        }
    }
    maps::count(Counter::StateInsertFailed);
    None
}

/// Clears everything but the cookie, which names the slot's owner throughout.
#[inline(always)]
fn reset(p: *mut SockState, cookie: u64, empty: &SockState) -> *mut SockState {
    unsafe { *p = SockState { cookie, ..*empty } };
    p
}

/// Frees the slot of the socket with this cookie, if it has one.
#[inline(always)]
pub fn release(cookie: u64) {
    if let Some(p) = find(cookie) {
        if swap_key(p, cookie, 0) {
            maps::count(Counter::StatesFreed);
        }
    }
}
