//! sockprobe: per-process TCP connection hygiene from eBPF.
//!
//! Data path: kernel hooks (probe-ebpf) → per-socket state in an LRU map →
//! events on a ring buffer → [`events::Decoder`] → `trace` output or metrics.
//! See docs/architecture.md.
pub mod btf;
pub mod check;
pub mod config;
pub mod daemon;
pub mod error;
pub mod events;
pub mod fasthash;
pub mod http;
pub mod identity;
pub mod k8s;
pub mod layout;
pub mod metrics;
pub mod privileges;
pub mod probes;
pub mod scan;
pub mod shutdown;
pub mod stream;
pub mod trace;
pub mod web_config;

pub use error::Error;
