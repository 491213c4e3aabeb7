//! cgroup ids (what the kernel side records) to cgroup v2 paths.
use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Ids a fresh rescan did not find (a cgroup already gone), remembered so
/// that their events do not rescan each time; bounded.
const MAX_UNRESOLVED: usize = 1024;
/// How long an unresolved id is not looked for again.
const RETRY_UNRESOLVED: Duration = Duration::from_secs(1);

/// Maps cgroup ids (the cgroup v2 directory's inode number) to paths.
pub struct CgroupPaths {
    root: Option<PathBuf>,
    /// The tree as of the last rescan: bounded by the cgroups that exist.
    cache: HashMap<u64, String>,
    unresolved: HashMap<u64, Instant>,
}

impl CgroupPaths {
    pub fn new() -> CgroupPaths {
        CgroupPaths { root: cgroup2_mount(), cache: HashMap::new(), unresolved: HashMap::new() }
    }

    /// Path relative to the cgroup v2 root (`/` for the root), if known.
    pub fn path(&mut self, id: u64) -> Option<String> {
        if id == 0 {
            return None;
        }
        if let Some(p) = self.cache.get(&id) {
            return Some(p.clone());
        }
        // A process had to be in the cgroup to make the event, so a rescan
        // now finds it, unless it is gone already; those are not looked for
        // again at every event.
        if self.unresolved.get(&id).is_some_and(|t| t.elapsed() < RETRY_UNRESOLVED) {
            return None;
        }
        self.rescan();
        let found = self.cache.get(&id).cloned();
        if found.is_none() {
            if self.unresolved.len() >= MAX_UNRESOLVED {
                self.unresolved.clear();
            }
            self.unresolved.insert(id, Instant::now());
        }
        found
    }

    fn rescan(&mut self) {
        let Some(root) = self.root.clone() else { return };
        self.cache.clear();
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

/// The cgroup v2 path of a process (`0::` line of /proc/<pid>/cgroup).
pub fn proc_cgroup(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("0::")).map(str::to_string)
}
