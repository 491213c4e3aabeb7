//! cgroup ids (what the kernel side records) to cgroup v2 paths. Finding an
//! id's path means walking the cgroup tree (thousands of directories on a
//! busy node, more if a tenant makes them), so the daemon walks it on a
//! thread of its own ([`CgroupPaths::scan_off_thread`]) and its event thread
//! parks the events that wait for a new id (`decode`), never the walk.
use std::{
    collections::{HashMap, HashSet},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::mpsc as std_mpsc,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

/// Ids a fresh rescan did not find (a cgroup already gone), remembered so
/// that their events do not rescan each time; bounded.
const MAX_UNRESOLVED: usize = 1024;
/// How long an unresolved id is not looked for again.
const RETRY_UNRESOLVED: Duration = Duration::from_secs(1);

/// The cgroup tree: id (the directory's inode number) to path.
pub type Tree = HashMap<u64, String>;

/// What is known of an id.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Found(String),
    /// Looked for by a walk that began after it was seen: gone.
    Unknown,
    /// A walk is under way (off-thread) that will tell.
    Pending,
}

/// Maps cgroup ids to paths, from the last walk of the tree.
pub struct CgroupPaths {
    root: Option<PathBuf>,
    /// The tree as of the last walk: bounded by the cgroups that exist.
    tree: Tree,
    unresolved: HashMap<u64, Instant>,
    /// With a walker thread: where to ask, what is asked.
    walker: Option<Walker>,
}

struct Walker {
    ask: std_mpsc::SyncSender<()>,
    /// A walk asked for and not yet installed.
    in_flight: bool,
    /// Ids waiting for the walk in flight, and those seen after it was asked
    /// for (it may have begun before they existed: they wait for the next).
    waiting: HashSet<u64>,
    late: HashSet<u64>,
}

impl CgroupPaths {
    pub fn new() -> CgroupPaths {
        CgroupPaths { root: cgroup2_mount(), tree: Tree::new(), unresolved: HashMap::new(), walker: None }
    }

    /// From now on, walks happen on a thread of their own: a new id is
    /// [`Lookup::Pending`] until the walk's tree comes back on the returned
    /// channel and is given to [`CgroupPaths::install`].
    pub fn scan_off_thread(&mut self) -> mpsc::Receiver<Tree> {
        let (ask, asked) = std_mpsc::sync_channel::<()>(1);
        let (done, trees) = mpsc::channel(1);
        let root = self.root.clone();
        let spawned = crate::priority::spawn("sockprobe-cgroups", move || {
            while asked.recv().is_ok() {
                if done.blocking_send(walk_from(root.as_deref())).is_err() {
                    return;
                }
            }
        });
        match spawned {
            Ok(_) => {
                self.walker = Some(Walker { ask, in_flight: false, waiting: HashSet::new(), late: HashSet::new() })
            }
            Err(e) => log::warn!("cannot start the cgroup walker, walking on the event thread: {e}"),
        }
        trees
    }

    /// Path relative to the cgroup v2 root (`/` for the root), if known;
    /// with no walker thread, walks now if needed.
    pub fn lookup(&mut self, id: u64) -> Lookup {
        if id == 0 {
            return Lookup::Unknown;
        }
        if let Some(p) = self.tree.get(&id) {
            return Lookup::Found(p.clone());
        }
        // A process had to be in the cgroup to make the event, so a walk
        // now finds it, unless it is gone already; those are not looked for
        // again at every event.
        if self.unresolved.get(&id).is_some_and(|t| t.elapsed() < RETRY_UNRESOLVED) {
            return Lookup::Unknown;
        }
        let Some(w) = self.walker.as_mut() else {
            self.tree = walk_from(self.root.as_deref());
            return match self.tree.get(&id) {
                Some(p) => Lookup::Found(p.clone()),
                None => {
                    self.forget(id);
                    Lookup::Unknown
                }
            };
        };
        if !w.in_flight {
            // Full means a walk is asked for already: it will do.
            let _ = w.ask.try_send(());
            w.in_flight = true;
            w.waiting.insert(id);
        } else if !w.waiting.contains(&id) {
            w.late.insert(id);
        }
        Lookup::Pending
    }

    /// A tree walked elsewhere (a listing's thread), of unknown age against
    /// the ids waiting for the walker: it answers new lookups, not those.
    pub fn refresh(&mut self, tree: Tree) {
        self.tree = tree;
    }

    /// The walker's tree. Ids it should have found and did not are gone;
    /// ids seen after it was asked for get another walk.
    pub fn install(&mut self, tree: Tree) {
        self.tree = tree;
        let Some(w) = self.walker.as_mut() else { return };
        w.in_flight = false;
        let waiting: Vec<u64> = w.waiting.drain().collect();
        let late: Vec<u64> = w.late.drain().filter(|id| !self.tree.contains_key(id)).collect();
        for id in waiting {
            if !self.tree.contains_key(&id) {
                self.forget(id);
            }
        }
        let w = self.walker.as_mut().expect("checked");
        if !late.is_empty() {
            let _ = w.ask.try_send(());
            w.in_flight = true;
            w.waiting.extend(late);
        }
    }

    /// Whether a walk is asked for and not installed yet.
    pub fn walking(&self) -> bool {
        self.walker.as_ref().is_some_and(|w| w.in_flight)
    }

    /// The root to walk from, for a walk elsewhere (a listing's thread).
    pub fn root(&self) -> Option<PathBuf> {
        self.root.clone()
    }

    /// The tree walked now, on this thread.
    pub fn walk_here(&self) -> Tree {
        walk_from(self.root.as_deref())
    }

    fn forget(&mut self, id: u64) {
        if self.unresolved.len() >= MAX_UNRESOLVED {
            self.unresolved.clear();
        }
        self.unresolved.insert(id, Instant::now());
    }
}

/// [`walk`] from `root` if there is a cgroup2 mount; empty otherwise.
pub fn walk_from(root: Option<&Path>) -> Tree {
    root.map(walk).unwrap_or_default()
}

/// Every cgroup under `root`: its id and its path relative to `root`.
pub fn walk(root: &Path) -> Tree {
    let mut tree = Tree::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&dir) else { continue };
        let rel = dir.strip_prefix(root).map(|p| format!("/{}", p.display())).unwrap_or_default();
        tree.insert(meta.ino(), rel);
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    tree
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
