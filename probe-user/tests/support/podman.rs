//! Real containers (Debian's podman, no registry): an image imported from a
//! tarball of busybox and the static Go test program under many names, run
//! with runc, `--network none` (a network namespace of its own) and explicit
//! ulimits (docs/development.md says why).
use std::{path::Path, process::Command, sync::OnceLock};

use super::{TcpRow, parse_tcp_table, tcpext_counter};

/// Names the Go program answers to inside the image (its comm there).
const NAMES: &[&str] = &[
    "c1-srv",
    "c1-leaky",
    "c2-srv",
    "c2-leaky",
    "c3a-srv",
    "c3a-cli",
    "c3b-srv",
    "c3b-cli",
    "c4-srv",
    "c4-unread",
    "c5-srv",
    "c5-leaky",
    "c6-srv",
    "c6-leaky",
    "c7-srv",
    "c7-vsrv",
    "c7-victim",
    "c8-srv",
    "c8-leaky",
    "c8-unread",
];

const IMAGE: &str = "localhost/sockprobe-test:latest";

fn podman(args: &[&str]) -> String {
    let out = Command::new("podman").args(args).output().unwrap_or_else(|e| panic!("podman {args:?}: {e}"));
    assert!(
        out.status.success(),
        "podman {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A fresh rootfs under the tests' temporary directory, filled by `fill`
/// (given the work directory and the rootfs), imported as `image`.
fn import_rootfs(work: &str, image: &str, fill: impl FnOnce(&Path, &Path)) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(work);
    let root = dir.join("rootfs");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("bin")).unwrap();
    fill(&dir, &root);
    let tar = dir.join("rootfs.tar");
    let status = Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&tar).arg(".").status().unwrap();
    assert!(status.success(), "tar failed");
    podman(&["import", "-q", tar.to_str().unwrap(), image]);
}

/// Builds and imports the image once per test binary.
pub fn image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| import_rootfs("podman", IMAGE, build_test_rootfs));
    IMAGE
}

/// busybox and the static Go test program under every name of [`NAMES`].
fn build_test_rootfs(dir: &Path, root: &Path) {
    let go = root.join("bin/gohttp");
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&go)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/go/gohttp.go"))
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", dir.join("cache"))
        .env("GOPATH", dir.join("gopath"))
        .env("GO111MODULE", "off")
        .status()
        .expect("go (Debian golang-go)");
    assert!(status.success(), "static go build failed");
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static");
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    for name in NAMES {
        std::os::unix::fs::symlink("gohttp", root.join("bin").join(name)).unwrap();
    }
}

const DAEMON_IMAGE: &str = "localhost/sockprobe-daemon-test:latest";

/// An image of the sockprobe binary under test, with the shared libraries
/// it links (ldd's list) and nothing else; built once per test binary.
pub fn daemon_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| import_rootfs("podman-daemon", DAEMON_IMAGE, build_daemon_rootfs));
    DAEMON_IMAGE
}

fn build_daemon_rootfs(_: &Path, root: &Path) {
    let binary = *super::SOCKPROBE;
    std::fs::copy(binary, root.join("bin/sockprobe")).expect("copy sockprobe");
    let ldd = Command::new("ldd").arg(binary).output().expect("ldd");
    for lib in String::from_utf8_lossy(&ldd.stdout).split_whitespace().filter(|w| w.starts_with('/')) {
        let to = root.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(lib, &to).unwrap_or_else(|e| panic!("copy {lib}: {e}"));
    }
    for d in ["run/sockprobe", "etc/sockprobe", "sys", "proc", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
}

/// `podman run` flags of the daemon as the DaemonSet runs it: no
/// capability but BPF and PERFMON, a read-only root, 256 MiB and 1 CPU, the
/// host's BTF and cgroups read-only, `/run/sockprobe` from `run_dir` (the
/// API socket, reachable from the host).
pub fn daemonset_flags(run_dir: &std::path::Path, seccomp: Option<&str>) -> Vec<String> {
    let mut flags: Vec<String> = [
        "--cap-drop=all",
        "--cap-add=CAP_BPF",
        "--cap-add=CAP_PERFMON",
        "--read-only",
        "--memory=256m",
        "--cpus=1",
        "--pid=host",
        "-v=/sys/kernel/btf:/sys/kernel/btf:ro",
        "-v=/sys/fs/cgroup:/sys/fs/cgroup:ro",
    ]
    .map(String::from)
    .to_vec();
    flags.push(format!("-v={}:/run/sockprobe", run_dir.display()));
    if let Some(profile) = seccomp {
        flags.push(format!("--security-opt=seccomp={profile}"));
    }
    flags
}

/// A running container; removed on drop.
pub struct Container {
    pub id: String,
    /// Host pid of its first process.
    pub pid: u32,
}

impl Container {
    /// Runs `script` under busybox sh; `extra` are more `podman run` flags.
    pub fn run(script: &str, extra: &[&str]) -> Container {
        Container::run_image(image(), &["/bin/sh", "-c", script], extra)
    }

    /// Runs `argv` in `image`; `extra` are more `podman run` flags.
    pub fn run_image(image: &str, argv: &[&str], extra: &[&str]) -> Container {
        let nofile = {
            let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) };
            format!("nofile={0}:{0}", l.rlim_max.min(1 << 20))
        };
        let mut args = vec!["--runtime", "runc", "run", "-d", "--network", "none", "--ulimit", &nofile];
        args.extend(["--ulimit", "nproc=4096:4096"]);
        args.extend(extra);
        args.push(image);
        args.extend(argv);
        let id = podman(&args);
        let pid = podman(&["inspect", "-f", "{{.State.Pid}}", &id]).parse().expect("container pid");
        Container { id, pid }
    }

    /// The `container` label sockprobe gives it.
    pub fn label(&self) -> String {
        format!("/podman/{}", &self.id[..12])
    }

    /// Runs a command inside, detached.
    pub fn exec(&self, argv: &[&str]) {
        let mut args = vec!["exec", "-d", &self.id];
        args.extend(argv);
        podman(&args);
    }

    /// Runs a command inside to its end.
    pub fn exec_wait(&self, argv: &[&str]) {
        let mut args = vec!["exec", &self.id];
        args.extend(argv);
        podman(&args);
    }

    fn in_netns(&self, argv: &[&str]) -> String {
        let out = Command::new("nsenter")
            .args(["-t", &self.pid.to_string(), "-n"])
            .args(argv)
            .output()
            .expect("nsenter (util-linux)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ss` inside: sockets in `state` (ss's name, e.g. close-wait) held by `comm`.
    pub fn ss_count(&self, state: &str, comm: &str) -> usize {
        let needle = format!("((\"{comm}\",");
        self.in_netns(&["ss", "-tanpH", "state", state]).lines().filter(|l| l.contains(&needle)).count()
    }

    /// The container's TCP table.
    pub fn tcp_table(&self) -> Vec<TcpRow> {
        parse_tcp_table(&self.in_netns(&["cat", "/proc/net/tcp", "/proc/net/tcp6"]))
    }

    /// A TcpExt counter of the container's network namespace.
    pub fn tcpext(&self, counter: &str) -> u64 {
        tcpext_counter(&self.in_netns(&["cat", "/proc/net/netstat"]), counter)
    }

    /// Its memory cgroup (v1 or v2): limit, highest charge, OOM kills.
    pub fn memory(&self) -> (u64, u64, u64) {
        let own = std::fs::read_to_string(format!("/proc/{}/cgroup", self.pid)).unwrap_or_default();
        let (dir, v2) = match own.lines().find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string())) {
            Some(p) => (Path::new("/sys/fs/cgroup/memory").join(p.trim_start_matches('/')), false),
            None => {
                let p = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap_or("/");
                (Path::new("/sys/fs/cgroup").join(p.trim_start_matches('/')), true)
            }
        };
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        let number = |f: &str| read(f).trim().parse().unwrap_or(0);
        let events = read(if v2 { "memory.events" } else { "memory.oom_control" });
        let kills = events.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|v| v.trim().parse().ok());
        if v2 {
            (number("memory.max"), number("memory.peak"), kills.unwrap_or(0))
        } else {
            (number("memory.limit_in_bytes"), number("memory.max_usage_in_bytes"), kills.unwrap_or(0))
        }
    }

    pub fn remove(&self) {
        podman(&["rm", "-f", "-t", "0", &self.id]);
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman").args(["rm", "-f", "-t", "0", &self.id]).output();
    }
}
