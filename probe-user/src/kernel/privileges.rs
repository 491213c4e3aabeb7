//! Whether this process may load and attach tracing programs.
use crate::error::Error;

const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// What the daemon may use once its sockets are bound: load and attach
/// (BPF, PERFMON), read other users' executables for their language
/// (SYS_PTRACE), and the fallback listing's setns and /proc/*/fd (SYS_ADMIN,
/// DAC_READ_SEARCH): which listing works is known only after loading, when
/// the daemon has threads, and a capability set is per thread.
pub const DAEMON_KEEPS: u64 =
    1 << CAP_BPF | 1 << CAP_PERFMON | 1 << CAP_SYS_PTRACE | 1 << CAP_SYS_ADMIN | 1 << CAP_DAC_READ_SEARCH;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Drops every capability but [`DAEMON_KEEPS`] from the effective,
/// permitted, inheritable, ambient and bounding sets, for good. Run it while
/// the process has one thread (capabilities are per thread; the threads
/// started later inherit the reduced sets). A process holding nothing more
/// (the unit's dynamic user, the DaemonSet) is left as is. Returns the
/// dropped mask.
pub fn keep_only(keep: u64) -> Result<u64, String> {
    let held = effective_caps() | permitted_caps();
    let extra = held & !keep;
    if extra == 0 {
        return Ok(0);
    }
    let threads = std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0);
    if threads != 1 {
        return Err(format!("{threads} threads already: capabilities are per thread, not dropped"));
    }
    let last: u32 =
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(40);
    // SAFETY: prctl and capget/capset with structs we own, of the sizes the
    // kernel's version-3 ABI takes.
    unsafe {
        libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
        for cap in (0..=last.min(63)).filter(|c| keep & (1 << c) == 0) {
            // Needs CAP_SETPCAP, dropped below with the rest.
            libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0);
        }
        let header = CapHeader { version: CAPABILITY_VERSION_3, pid: 0 };
        let mut data = [CapData::default(); 2];
        if libc::syscall(libc::SYS_capget, &header, data.as_mut_ptr()) != 0 {
            return Err(format!("capget: {}", std::io::Error::last_os_error()));
        }
        for (i, d) in data.iter_mut().enumerate() {
            let mask = (keep >> (32 * i)) as u32;
            d.effective &= mask;
            d.permitted &= mask;
            d.inheritable = 0;
        }
        if libc::syscall(libc::SYS_capset, &header, data.as_ptr()) != 0 {
            return Err(format!("capset: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(extra)
}

fn permitted_caps() -> u64 {
    status_mask("CapPrm:")
}

/// Effective capability mask of this process.
pub fn effective_caps() -> u64 {
    status_mask("CapEff:")
}

/// A capability mask of `/proc/self/status` (of the calling thread's group
/// leader's view: the same for every thread of a process that never changed
/// one thread alone).
fn status_mask(field: &str) -> u64 {
    std::fs::read_to_string("/proc/thread-self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
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
