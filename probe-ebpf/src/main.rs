//! sockprobe's kernel programs.
//!
//! Every hook funnels into one handler in [`handlers`]; the files under
//! `programs/` only adapt a hook's arguments (tp_btf, fentry/fexit, kprobe).
//! Userspace decides at start-up which of them to load (its probe table).
#![no_std]
// Compare-and-swap (the cookie table): the BPF target's atomics offer none.
#![allow(internal_features)]
#![feature(core_intrinsics)]
#![no_main]
// Map keys and values go to aya's helpers by reference: the helper reads them
// from the program's stack, where one copy is what the verifier checks.
#![allow(clippy::needless_borrows_for_generic_args)]

mod access;
mod cookie_table;
mod globals;
mod handlers;
mod kernel;
mod maps;
mod object;
mod programs;
