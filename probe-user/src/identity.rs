//! Who a socket belongs to, in words: wall-clock times, cgroup paths and the
//! `container` label derived from them.
use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Converts `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) to Unix time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    offset_ns: i128,
}

fn clock_ns(id: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

impl Clock {
    pub fn new() -> Clock {
        Clock { offset_ns: clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC) }
    }

    pub fn unix_ns(&self, monotonic_ns: u64) -> i128 {
        monotonic_ns as i128 + self.offset_ns
    }

    pub fn monotonic_now_ns() -> u64 {
        clock_ns(libc::CLOCK_MONOTONIC) as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// RFC 3339 in UTC with nanoseconds: `2026-11-21T23:04:05.123456789Z`.
pub fn rfc3339_ns(unix_ns: i128) -> String {
    let secs = unix_ns.div_euclid(1_000_000_000) as i64;
    let nanos = unix_ns.rem_euclid(1_000_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z", sod / 3600, sod / 60 % 60, sod % 60)
}

/// Maps cgroup ids (the cgroup v2 directory's inode number) to paths.
pub struct CgroupPaths {
    root: Option<PathBuf>,
    cache: HashMap<u64, String>,
    last_scan: Option<Instant>,
}

impl CgroupPaths {
    pub fn new() -> CgroupPaths {
        CgroupPaths { root: cgroup2_mount(), cache: HashMap::new(), last_scan: None }
    }

    /// Path relative to the cgroup v2 root (`/` for the root), if known.
    pub fn path(&mut self, id: u64) -> Option<String> {
        if id == 0 {
            return None;
        }
        if let Some(p) = self.cache.get(&id) {
            return Some(p.clone());
        }
        // New cgroups appear all the time; rescan, but not on every miss.
        let due = self.last_scan.is_none_or(|t| t.elapsed() > Duration::from_millis(500));
        if due {
            self.rescan();
        }
        self.cache.get(&id).cloned()
    }

    fn rescan(&mut self) {
        self.last_scan = Some(Instant::now());
        let Some(root) = self.root.clone() else { return };
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else { continue };
            let rel = dir.strip_prefix(&root).map(|p| format!("/{}", p.display())).unwrap_or_default();
            self.cache.insert(meta.ino(), rel);
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
}

impl Default for CgroupPaths {
    fn default() -> Self {
        CgroupPaths::new()
    }
}

/// The id of the cgroup at `path` under the cgroup2 mount `root` (the
/// directory's inode), as `bpf_get_current_cgroup_id()` reports it.
pub fn cgroup_id(root: &Path, path: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(root.join(path.trim_start_matches('/'))).ok().map(|m| m.ino())
}

/// Where cgroup2 is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid hosts).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// The `container` label for a cgroup path (see docs/metrics.md, "container").
pub fn container_of(path: &str) -> String {
    if path.is_empty() || path == "/" {
        return String::new();
    }
    // Some runtimes join components with ':' (`...pod<uid>.slice:cri-containerd:<id>`).
    let parts: Vec<&str> = path.split(['/', ':']).filter(|p| !p.is_empty()).collect();
    // Kubernetes: a pod<uid> component, then the container's scope or id.
    if let Some(i) = parts.iter().position(|p| pod_uid(p).is_some()) {
        let uid = pod_uid(parts[i]).unwrap_or_default();
        let id = parts[i + 1..].iter().find_map(|c| container_id(c)).unwrap_or_default();
        return if id.is_empty() { format!("/k8s/pod-{uid}") } else { format!("/k8s/pod-{uid}/{}", &id[..12]) };
    }
    // Docker and other runtimes outside Kubernetes.
    for (i, p) in parts.iter().enumerate() {
        if let Some(id) = container_id(p) {
            let is_docker = p.starts_with("docker-") || parts.get(i.wrapping_sub(1)) == Some(&"docker");
            let runtime = if is_docker { "docker" } else { runtime_of(p) };
            return format!("/{runtime}/{}", &id[..12]);
        }
    }
    // systemd: cut below the unit (a service's own sub-cgroups are the service).
    let dirs: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if let Some(i) = dirs.iter().position(|p| p.ends_with(".service") || p.ends_with(".scope")) {
        return format!("/{}", dirs[..=i].join("/"));
    }
    format!("/{}", dirs.join("/"))
}

fn runtime_of(component: &str) -> &'static str {
    if component.starts_with("cri-containerd-") {
        "containerd"
    } else if component.starts_with("crio-") {
        "crio"
    } else if component.starts_with("libpod-") {
        "podman"
    } else {
        "container"
    }
}

/// `kubepods-burstable-pod1b2c..._slice` / `pod1b2c-...` → the pod UID with dashes.
fn pod_uid(component: &str) -> Option<String> {
    let c = component.strip_suffix(".slice").unwrap_or(component);
    let start = c.rfind("pod")?;
    if start > 0 && !c[..start].ends_with('-') {
        return None;
    }
    let uid = c[start + 3..].replace('_', "-");
    let ok = uid.len() == 36 && uid.chars().all(|ch| ch.is_ascii_hexdigit() || ch == '-');
    ok.then_some(uid)
}

/// A 64-hex container id inside `docker-<id>.scope`, `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, `libpod-<id>.scope` or a bare `<id>`.
fn container_id(component: &str) -> Option<String> {
    let c = component.strip_suffix(".scope").unwrap_or(component);
    let id = c.rsplit('-').next()?;
    (id.len() == 64 && id.chars().all(|ch| ch.is_ascii_hexdigit())).then(|| id.to_string())
}

/// Reads a file under /proc, for tests and the start-up scan.
pub fn proc_comm(pid: u32) -> Option<String> {
    let s = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("comm")).ok()?;
    Some(s.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_ns(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339_ns(1_795_820_645_123_456_789), "2026-11-27T23:04:05.123456789Z");
        assert_eq!(rfc3339_ns(951_782_400_000_000_001), "2000-02-29T00:00:00.000000001Z");
    }

    #[test]
    fn containers() {
        assert_eq!(container_of("/"), "");
        assert_eq!(container_of("/system.slice/nginx.service"), "/system.slice/nginx.service");
        assert_eq!(container_of("/system.slice/nginx.service/worker"), "/system.slice/nginx.service");
        assert_eq!(container_of(&format!("/system.slice/docker-{ID}.scope")), "/docker/0123456789ab");
        assert_eq!(container_of(&format!("/docker/{ID}")), "/docker/0123456789ab");
        assert_eq!(
            container_of(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_0000_1111_2222_333344445555.slice/cri-containerd-{ID}.scope"
            )),
            "/k8s/pod-1b2c3d4e-0000-1111-2222-333344445555/0123456789ab"
        );
        assert_eq!(
            container_of(&format!("/kubepods/besteffort/pod1b2c3d4e-0000-1111-2222-333344445555/{ID}")),
            "/k8s/pod-1b2c3d4e-0000-1111-2222-333344445555/0123456789ab"
        );
        assert_eq!(container_of(&format!("/machine.slice/libpod-{ID}.scope")), "/podman/0123456789ab");
        assert_eq!(
            container_of(&format!(
                "/kubepods.slice/kubepods-pod1b2c3d4e_0000_1111_2222_333344445555.slice/crio-{ID}.scope"
            )),
            "/k8s/pod-1b2c3d4e-0000-1111-2222-333344445555/0123456789ab"
        );
        assert_eq!(
            container_of(&format!(
                "/system.slice/containerd.service/kubepods-besteffort-pod1b2c3d4e_0000_1111_2222_333344445555.slice:cri-containerd:{ID}"
            )),
            "/k8s/pod-1b2c3d4e-0000-1111-2222-333344445555/0123456789ab"
        );
        assert_eq!(
            container_of("/user.slice/user-0.slice/session-3.scope"),
            "/user.slice/user-0.slice/session-3.scope"
        );
        assert_eq!(container_of("/process_api/abc"), "/process_api/abc");
    }
}
