//! Who and where a socket belongs to: processes, cgroups, containers,
//! Kubernetes pods, and the live-socket listing. Serves [`crate::decode`]
//! and [`crate::aggregate`]; depends on neither.
pub mod cgroup;
pub mod clock;
pub mod container;
pub mod direction;
pub mod k8s;
pub mod language;
pub mod listing;

pub use clock::{Clock, rfc3339_ns};
pub use container::container_of;
pub use direction::LocalPorts;
