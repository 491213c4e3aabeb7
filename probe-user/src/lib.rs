//! sockprobe: per-process TCP connection hygiene from eBPF.
//!
//! The folders follow the data path, and dependencies run one way only:
//!
//! ```text
//! kernel ──► decode ──► aggregate ──► export
//!              ▲            ▲
//!              └─ identity ─┘            cmd/ on top of all
//! ```
//!
//! - [`kernel`]: the probe table, loading and attaching, the layout from
//!   BTF, raw records off the ring buffer, kernel counters.
//! - [`decode`]: raw records into names, addresses, times and labels.
//! - [`identity`]: who a socket belongs to (cgroups, containers, Kubernetes
//!   pods, the live-socket listing, directions); serves decode and aggregate.
//! - [`aggregate`]: events into metric families with bounded cardinality.
//! - [`export`]: the HTTP server and its pages.
//! - [`cmd`]: `run`, `trace`, `check`, wiring the above.
//! - [`fuzzing`]: the fuzz targets' entry points, on top like `cmd`.
//! - [`http_client`]: one bounded GET (Kubernetes API, a daemon asked by
//!   `doctor`/`top`), below identity like [`error`].
//!
//! Nothing points back up: kernel imports none of the others, decode only
//! kernel and identity, identity only kernel, aggregate neither export nor
//! cmd. `tests/architecture.rs` checks it. See docs/architecture.md.
pub mod aggregate;
pub mod cmd;
pub mod config;
pub mod decode;
pub mod error;
pub mod export;
pub mod fuzzing;
pub mod http_client;
pub mod identity;
pub mod kernel;

pub use error::Error;
