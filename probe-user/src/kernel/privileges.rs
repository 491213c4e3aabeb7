//! Whether this process may load and attach tracing programs.
use crate::error::Error;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capability mask of this process.
pub fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

pub fn has(caps: u64, cap: u32) -> bool {
    caps & (1u64 << cap) != 0
}

/// One-line description of what this process holds, for `sockprobe check`.
pub fn describe(caps: u64) -> String {
    let names = [(CAP_SYS_ADMIN, "CAP_SYS_ADMIN"), (CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")];
    let held: Vec<_> = names.iter().filter(|(c, _)| has(caps, *c)).map(|(_, n)| *n).collect();
    let uid = unsafe { libc::geteuid() };
    format!(
        "euid {uid}, holds {}",
        if held.is_empty() { "none of CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN".into() } else { held.join(", ") }
    )
}

pub fn sufficient(caps: u64) -> bool {
    has(caps, CAP_SYS_ADMIN) || (has(caps, CAP_BPF) && has(caps, CAP_PERFMON))
}

pub fn require() -> Result<(), Error> {
    let caps = effective_caps();
    if sufficient(caps) { Ok(()) } else { Err(Error::Privileges(describe(caps))) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_sets() {
        assert!(sufficient(1 << CAP_SYS_ADMIN));
        assert!(sufficient(1 << CAP_BPF | 1 << CAP_PERFMON));
        assert!(!sufficient(1 << CAP_BPF));
        assert!(!sufficient(0));
    }
}
