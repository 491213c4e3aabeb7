//! The cookie table: per-socket state in a preallocated array, a socket's
//! slot found from its cookie (a counter the kernel hands out once per
//! socket, never reused; a socket sockprobe did not see born and nothing
//! asked a cookie for is keyed by its address, as the listing names it).
//! Each key may take two windows of [`TABLE_PROBES`] slots: the run from
//! the cookie itself, then slots scattered from a hashed start (see
//! [`slot_index`]). An array lookup is inlined by the verifier into an
//! address computation, so finding a state is a load and a compare;
//! claiming one, and freeing it, a compare-and-swap of its cookie. No
//! jhash and bucket walk, no bucket locks, no LRU lists, no allocation:
//! what the hash map spent most of a short connection's time on.
//!
//! Freed slots leave holes, so a miss looks at all 16 slots. When all of
//! them are taken, one occupant gives its slot up, counted: a socket
//! keyed by address first (it predates sockprobe), else the oldest-born
//! (smallest cookie). This is also what reclaims a slot whose socket's
//! destroy was never seen.
use core::intrinsics::{AtomicOrdering, atomic_cxchg};

use probe_common::{Counter, SockState, TABLE_PROBES};

use crate::{
    globals,
    maps::{self, STATE_TABLE},
};

/// Windows per key, [`TABLE_PROBES`] slots each.
const WINDOWS: u32 = 2;

/// A key's `k`th slot in `window`. The first window is the run of slots
/// from the cookie itself: the cookies of sockets born in a row are
/// consecutive, so they take neighbouring slots, whose cache lines and
/// pages the CPU still holds (hashing every key instead cost 1 300 ns more
/// per churned connection, measured: a cold line and a TLB miss on each of
/// the connection's events). Once the counter has gone round the table,
/// new cookies land on the slots of sockets born that much earlier, full
/// wherever a burst of connections still lives (with that window alone,
/// 1 540 evictions among 54 000 sockets in 262 144 slots). The second
/// window scatters them: from a hashed start, slots 2^32/φ apart (modulo a
/// power of two, multiples of that odd constant lie as far from each other
/// as 8 points can, whatever the table's size), so no run of full slots
/// shorter than an eighth of the table holds all 8 (a second run from a
/// hashed start still lost 55 of 6 000 sockets in the wrap-around test, a
/// hashed stride 1: small strides keep the 8 together).
/// Addresses, whose low bits are alike (aligned slab objects), are
/// scattered in both windows.
#[inline(always)]
fn slot_index(key: u64, window: u32, k: u32) -> u32 {
    if window == 0 && key >> 63 == 0 {
        return (key as u32).wrapping_add(k);
    }
    let start = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32;
    start.wrapping_add(window).wrapping_add(k.wrapping_mul(0x9E37_79B9))
}

#[inline(always)]
fn slot(key: u64, window: u32, k: u32) -> Option<*mut SockState> {
    let mask = globals::table_mask();
    STATE_TABLE.get_ptr_mut(slot_index(key, window, k) & mask)
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
    for w in 0..WINDOWS {
        for k in 0..TABLE_PROBES {
            let p = slot(cookie, w, k)?;
            if unsafe { (*p).cookie } == cookie {
                return Some(p);
            }
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
    for w in 0..WINDOWS {
        for k in 0..TABLE_PROBES {
            let Some(p) = slot(cookie, w, k) else { break };
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
    }
    if let Some((p, held)) = oldest
        && swap_key(p, held, cookie)
    {
        maps::count(Counter::StatesEvicted);
        return Some(reset(p, cookie, empty));
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
    if let Some(p) = find(cookie)
        && swap_key(p, cookie, 0)
    {
        maps::count(Counter::StatesFreed);
    }
}
