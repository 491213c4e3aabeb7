//! sockprobe: per-process TCP connection hygiene from eBPF.
//!
//! The folders follow the daemon's path, and dependencies run one way only:
//!
//! ```text
//! kernel ──► decode ──► aggregate ──► export
//!              ▲            ▲
//!              └─ identity ─┘            cmd/ on top of all
//! ```
//!
//! - [`kernel`]: the probe table, loading and attaching, the layout from
//!   BTF, raw records off the ring buffer, kernel counters, the development
//!   knobs (read once, in `main`).
//! - [`decode`]: each raw record's labels resolved (container, direction,
//!   reset reason) from identity's caches; the aggregator gets them ready.
//! - [`identity`]: who a socket belongs to (cgroups, containers, Kubernetes
//!   pods, directions) and the socket listing's two sources; serves decode
//!   and aggregate.
//! - [`aggregate`]: decoded events into metric families with bounded
//!   cardinality, and the diagnosis window and its rules.
//! - [`export`]: the HTTP server and its pages.
//! - [`cmd`]: `run`, `trace`, `check`, `doctor`, `top`, wiring the above; the
//!   shared start-up and the socket listing (run and applied) live there.
//! - [`fuzzing`]: the fuzz targets' entry points, on top like `cmd`.
//! - [`config`]: the daemon's settings, from flags and the config file.
//! - [`http_client`]: one bounded GET (a daemon asked by `doctor`/`top`,
//!   a Prometheus asked by `doctor --prometheus`), below identity like [`error`].
//! - [`priority`]: every thread but the event thread yields to it, below
//!   identity like [`error`].
//!
//! Nothing points back up: kernel imports only error; identity only
//! http_client (and error); decode kernel and identity; aggregate kernel,
//! identity and decode; export those and aggregate; config kernel, identity
//! and aggregate; cmd all of them, and fuzzing cmd too.
//! `tests/architecture.rs` checks it on every `crate::` path.
//! See docs/architecture.md.
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
pub mod priority;

pub use error::Error;
