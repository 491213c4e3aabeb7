//! How a program reaches kernel memory and its per-socket state.
//!
//! BTF-typed programs (tp_btf, fentry/fexit) get `sk` as a typed pointer:
//! they load its fields directly (the JIT inlines each load; the offsets are
//! constants the verifier reads from the frozen [`crate::globals::LAYOUT`]).
//! kprobes see a plain address: every read is a `bpf_probe_read_kernel` call.
//!
//! Per-socket state lives in one of three stores, one for all programs of a
//! run ([`crate::globals::STATE_STORE`]), since they must share it: the
//! cookie table ([`crate::cookie_table`], the default; BTF hooks only), an
//! array slot found from the socket's cookie; socket-local storage (BTF
//! hooks only), a pointer chase from `sk` freed with the socket; or the LRU
//! hash, a hash lookup with LRU bookkeeping per event, the one kprobes can
//! use.
use aya_ebpf::{
    bindings::{BPF_ANY, BPF_SK_STORAGE_GET_F_CREATE},
    helpers::generated::{bpf_sk_storage_get, bpf_skc_to_tcp_sock},
};
use probe_common::{Counter, Field, NO_OFFSET, SockState, StateStore};

use crate::{
    cookie_table as table, globals, kernel,
    maps::{self, SOCK_STORAGE, SOCKETS},
};

/// What a new state starts from: the helpers copy it from here, sparing the
/// program a stack buffer of `size_of::<SockState>()` bytes (96) to clear and copy.
static EMPTY: SockState = unsafe { core::mem::zeroed() };

pub trait Access {
    /// BTF-typed programs, which may call socket helpers (cookies).
    const TYPED: bool;
    /// Reads `T` at `base + field.offset`, or `default` when the kernel has
    /// no such field. `base` must be the program's `sk` (or null).
    fn read<T: Copy>(base: *const u8, field: Field, default: T) -> T;
    /// `sk` as a `struct tcp_sock`, for [`Access::read_tp`] (null if it is none).
    fn tcp(sk: *const u8) -> *const u8;
    /// Reads a member of the `tcp_sock` [`Access::tcp`] returned, or `default`.
    fn read_tp<T: Copy>(tp: *const u8, field: Field, default: T) -> T;
    /// Reads a `struct tcp_sock` member of `sk`, or `default`.
    #[inline(always)]
    fn read_tcp<T: Copy>(sk: *const u8, field: Field, default: T) -> T {
        Self::read_tp(Self::tcp(sk), field, default)
    }
    fn get(sk: *const u8) -> Option<*mut SockState>;
    /// A zeroed state for `sk`, whose cookie is `cookie` (0 where the hook
    /// cannot ask): created, or at a socket's rebirth reset.
    fn put(sk: *const u8, cookie: u64) -> Option<*mut SockState>;
    fn remove(sk: *const u8);
    /// State is keyed by the socket's cookie (the cookie table).
    fn keyed_by_cookie() -> bool;
}

/// kprobes: probe reads and the LRU hash.
pub struct Untyped;

impl Access for Untyped {
    const TYPED: bool = false;

    #[inline(always)]
    fn read<T: Copy>(base: *const u8, field: Field, default: T) -> T {
        kernel::probe_read(base, field, default)
    }

    #[inline(always)]
    fn tcp(sk: *const u8) -> *const u8 {
        sk
    }

    #[inline(always)]
    fn read_tp<T: Copy>(tp: *const u8, field: Field, default: T) -> T {
        kernel::probe_read(tp, field, default)
    }

    #[inline(always)]
    fn get(sk: *const u8) -> Option<*mut SockState> {
        SOCKETS.get_ptr_mut(sk as u64)
    }

    #[inline(always)]
    fn put(sk: *const u8, _cookie: u64) -> Option<*mut SockState> {
        if SOCKETS.insert(sk as u64, &EMPTY, BPF_ANY as u64).is_err() {
            maps::count(Counter::StateInsertFailed);
            return None;
        }
        SOCKETS.get_ptr_mut(sk as u64)
    }

    #[inline(always)]
    fn remove(sk: *const u8) {
        let _ = SOCKETS.remove(sk as u64);
    }

    #[inline(always)]
    fn keyed_by_cookie() -> bool {
        false
    }
}

/// tp_btf and fentry/fexit: direct loads, and socket-local storage when
/// userspace chose it.
pub struct Typed;

#[inline(always)]
fn socket_local() -> bool {
    globals::state_store_is(StateStore::SocketLocal)
}

/// The cookie table: the socket's cookie is its slot's key.
#[inline(always)]
fn cookie_table() -> bool {
    globals::state_store_is(StateStore::CookieTable)
}

#[inline(always)]
fn storage_get(sk: *const u8, init: *const SockState, flags: u64) -> Option<*mut SockState> {
    let map = (&raw const SOCK_STORAGE).cast_mut().cast();
    let p = unsafe { bpf_sk_storage_get(map, sk as *mut _, init as *mut _, flags) } as *mut SockState;
    if p.is_null() { None } else { Some(p) }
}

impl Access for Typed {
    const TYPED: bool = true;

    #[inline(always)]
    fn read<T: Copy>(base: *const u8, field: Field, default: T) -> T {
        if field.offset == NO_OFFSET {
            return default;
        }
        // A faulting load yields zero (the JIT's exception table), like a
        // failed probe read.
        unsafe { core::ptr::read_volatile(base.add(field.offset as usize) as *const T) }
    }

    /// The verifier lets a typed `sk` reach only `struct sock`; the helper
    /// hands back the same socket typed as `tcp_sock` (or null if it is not
    /// one), whose members are then plain loads instead of probe reads.
    #[inline(always)]
    fn tcp(sk: *const u8) -> *const u8 {
        unsafe { bpf_skc_to_tcp_sock(sk as *mut _) as *const u8 }
    }

    #[inline(always)]
    fn read_tp<T: Copy>(tp: *const u8, field: Field, default: T) -> T {
        if tp.is_null() || field.offset == NO_OFFSET {
            return default;
        }
        unsafe { core::ptr::read_volatile(tp.add(field.offset as usize) as *const T) }
    }

    #[inline(always)]
    fn get(sk: *const u8) -> Option<*mut SockState> {
        if cookie_table() {
            return table::find(kernel::adopted_cookie::<Self>(sk));
        }
        if socket_local() { storage_get(sk, core::ptr::null(), 0) } else { Untyped::get(sk) }
    }

    #[inline(always)]
    fn put(sk: *const u8, cookie: u64) -> Option<*mut SockState> {
        if cookie_table() {
            return table::claim(cookie, &EMPTY);
        }
        if !socket_local() {
            return Untyped::put(sk, cookie);
        }
        let Some(p) = storage_get(sk, &raw const EMPTY, BPF_SK_STORAGE_GET_F_CREATE as u64) else {
            maps::count(Counter::StateInsertFailed);
            return None;
        };
        // Every state gets a cookie at birth (tp_btf and fentry read it), so
        // a zero cookie means the storage was created just now.
        unsafe {
            if (*p).cookie == 0 {
                maps::count(Counter::StatesCreated);
            } else {
                *p = EMPTY;
            }
        }
        Some(p)
    }

    /// Socket storage goes with the socket; only the count is kept here.
    #[inline(always)]
    fn remove(sk: *const u8) {
        if cookie_table() {
            return table::release(kernel::adopted_cookie::<Self>(sk));
        }
        if !socket_local() {
            return Untyped::remove(sk);
        }
        if storage_get(sk, core::ptr::null(), 0).is_some() {
            maps::count(Counter::StatesFreed);
        }
    }

    #[inline(always)]
    fn keyed_by_cookie() -> bool {
        cookie_table()
    }
}
