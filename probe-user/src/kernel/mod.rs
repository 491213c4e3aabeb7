//! The kernel side, seen from userspace: which programs this kernel takes
//! ([`table`], [`loader`]), the layout they read with ([`btf`], [`layout`]),
//! the privileges they need, and what they hand over: raw [`probe_common::Event`]
//! records ([`stream`]) and counters ([`stats`]). Nothing here names a
//! process or formats a label; that is [`crate::decode`]'s job.
pub mod btf;
pub mod knobs;
pub mod layout;

pub mod loader;
pub mod privileges;
pub mod probe_table;
pub mod stats;
pub mod stream;

pub use knobs::DevKnobs;
pub use loader::{Outcome, ProbeSettings, ProbeStatus, Probes, StoreChoice};
pub use probe_table::{Candidate, Feature, Hook, PROBE_TABLE};
pub use stats::KernelStats;
pub use stream::EventStream;

/// The running kernel's release (`uname -r`).
pub fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
