//! `cargo xtask kernels`: sockprobe on other kernels, for real.
//!
//! Boots Debian's cloud kernel packages under QEMU (TCG) with an initramfs
//! that holds busybox, `ip`, sockprobe, sockprobe-peer and the scenario test
//! binary at fixed paths under [`GUEST_BIN`] (not their host paths: the
//! guest mounts a tmpfs on /tmp, which would hide a clone's build tree
//! there); `SOCKPROBE_BIN` and `SOCKPROBE_PEER_BIN` tell the tests. Inside:
//! `sockprobe check --json`, then every privileged scenario. Prints per
//! kernel which probes attached and which scenario passed; the table goes to
//! target/kernels/report.md.
use std::{
    collections::BTreeSet,
    fmt::Write as _,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{bootstrap, cargo, workspace_root};

#[derive(clap::Args, Debug, Clone)]
pub struct KernelArgs {
    /// Kernel series to boot (Debian cloud images): repeatable; default 6.1 and 6.12.
    #[arg(long = "kernel")]
    kernels: Vec<String>,
    /// Give up on a guest after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// Run only the scenarios whose name contains this (e.g. one test while
    /// checking that a kernel's verifier takes a changed program).
    #[arg(long, default_value = "privileged_", value_parser = scenario_filter)]
    filter: String,
}

fn scenario_filter(s: &str) -> Result<String, String> {
    // It lands in the guest's shell script.
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(s.to_string())
    } else {
        Err("letters, digits and _ only".into())
    }
}

/// Debian package of the newest cloud image of a series, e.g. 6.1 →
/// linux-image-6.1.0-NN-cloud-amd64.
fn package_for(series: &str) -> Result<String> {
    let out = Command::new("apt-cache")
        .args(["search", "--names-only", &format!("^linux-image-{}", series.replace('.', "\\."))])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.ends_with("-cloud-amd64") && !n.contains("unsigned") && !n.contains("dbg"))
        .filter(|n| {
            // 6.1 must not match 6.12.
            let rest = &n["linux-image-".len()..];
            rest.strip_prefix(series).is_some_and(|r| r.starts_with(['.', '-', '+']))
        })
        .map(str::to_string)
        .collect();
    names.sort_by_key(|n| version_key(n));
    names.pop().with_context(|| format!("no Debian cloud kernel package for {series} (apt-get update?)"))
}

fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse().ok()).collect()
}

/// Debian's newest cloud kernel of `series` (6.1, 6.12), fetched once into
/// `dir`: its vmlinuz.
pub fn kernel(series: &str, dir: &Path) -> Result<PathBuf> {
    fetch_kernel(&package_for(series)?, dir)
}

/// Downloads and unpacks the package; returns the vmlinuz path.
fn fetch_kernel(package: &str, dir: &Path) -> Result<PathBuf> {
    let root = dir.join(package);
    let boot = root.join("boot");
    if let Some(v) = find_vmlinuz(&boot) {
        return Ok(v);
    }
    std::fs::create_dir_all(&root)?;
    let status = Command::new("apt-get").args(["download", package]).current_dir(dir).status()?;
    if !status.success() {
        bail!("apt-get download {package} failed");
    }
    let deb = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(package) && n.ends_with(".deb")))
        .context("downloaded .deb not found")?;
    let status = Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root).status()?;
    if !status.success() {
        bail!("dpkg-deb -x {} failed", deb.display());
    }
    find_vmlinuz(&boot).context("no vmlinuz in the package")
}

fn find_vmlinuz(boot: &Path) -> Option<PathBuf> {
    std::fs::read_dir(boot)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("vmlinuz")))
}

/// A newc cpio archive, written by hand (no cpio needed).
pub struct Cpio {
    out: Vec<u8>,
    ino: u32,
    dirs: BTreeSet<String>,
    files: BTreeSet<String>,
}

impl Cpio {
    pub fn new() -> Cpio {
        Cpio { out: Vec::new(), ino: 1, dirs: BTreeSet::new(), files: BTreeSet::new() }
    }

    pub fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.node(name, mode, data, (0, 0));
    }

    /// One archive member; `rdev` for device nodes.
    pub fn node(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        let name = name.trim_start_matches('/');
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.ino += 1;
        self.out.extend_from_slice(header.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
        self.out.extend_from_slice(data);
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    pub fn dir(&mut self, path: &str) {
        let path = path.trim_start_matches('/').trim_end_matches('/');
        let mut acc = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            if self.dirs.insert(acc.clone()) {
                let a = acc.clone();
                self.entry(&a, 0o040755, &[]);
            }
        }
    }

    pub fn file(&mut self, path: &str, data: &[u8], mode: u32) {
        if let Some((parent, _)) = path.trim_start_matches('/').rsplit_once('/') {
            self.dir(parent);
        }
        self.entry(path, 0o100000 | mode, data);
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        if let Some((parent, _)) = path.trim_start_matches('/').rsplit_once('/') {
            self.dir(parent);
        }
        self.entry(path, 0o120777, target.as_bytes());
    }

    /// A host binary at `guest_path`, with the shared libraries it needs
    /// (at their host paths).
    pub fn binary(&mut self, path: &Path, guest_path: &str) -> Result<()> {
        let data = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
        self.file(guest_path, &data, 0o755);
        let ldd = Command::new("ldd").arg(path).output()?;
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            let lib = match line.split_once("=>") {
                Some((_, rhs)) => rhs.split_whitespace().next(),
                None => line.split_whitespace().next().filter(|l| l.starts_with('/')),
            };
            let Some(lib) = lib.filter(|l| l.starts_with('/')) else { continue };
            if !self.files.insert(lib.to_string()) {
                continue;
            }
            let bytes = std::fs::read(std::fs::canonicalize(lib)?)?;
            self.file(lib, &bytes, 0o755);
        }
        Ok(())
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.out
    }
}

/// Where the guest finds what it runs.
const GUEST_BIN: &str = "/opt/sockprobe";

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
# iproute2's ip (netns) must win over busybox's applet.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmp /tmp
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs run /run
mkdir -p /run/netns /var /sys/fs/cgroup
ln -s /run /var/run
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
ip link set lo up
for m in x_tables ip_tables iptable_filter xt_tcpudp xt_statistic xt_length; do insmod /lib/modules/nf/$m.ko || echo "@@insmod $m failed"; done
export SOCKPROBE_BIN=@SOCKPROBE@ SOCKPROBE_PEER_BIN=@PEER@
echo "@@kernel $(uname -r)"
@SOCKPROBE@ check --json > /run/check.json
echo "@@check-end rc=$?"
echo "@@check-json $(cat /run/check.json)"
SOCKPROBE_TEST_TIME_SCALE=20 @SCENARIOS@ --include-ignored --test-threads=1 @FILTER@ 2>&1
echo "@@tests-end rc=$?"
# The daemon: unread closes in /metrics against the guest's TCPAbortOnClose.
abort_on_close() {
  awk '/^TcpExt:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "TCPAbortOnClose") c = i; h = 1; next } print $c }' /proc/net/netstat
}
unread_metric() {
  wget -q -O - http://127.0.0.1:9741/metrics | awk '/^sockprobe_tcp_unread_closes_total[{]comm="vm-client"/ { s += $2 } END { print s + 0 }'
}
@SOCKPROBE@ run --log.level warn &
SP=$!
i=0; until wget -q -O /dev/null http://127.0.0.1:9741/healthz 2>/dev/null; do sleep 1; i=$((i+1)); [ $i -gt 300 ] && break; done
before=$(abort_on_close)
@PEER@ --name vm-server server --listen 127.0.0.1:8080 --response 5000 --connections 5 > /dev/null &
sleep 1
@PEER@ --name vm-client client --connect 127.0.0.1:8080 --response 5000 --read 100 --connections 5
delta=$(( $(abort_on_close) - before ))
i=0; until [ "$(unread_metric)" = "$delta" ] || [ $i -gt 60 ]; do sleep 1; i=$((i+1)); done
got=$(unread_metric)
if [ "$got" = "$delta" ] && [ "$delta" -gt 0 ]; then r=ok; else r="FAILED (metric $got, TCPAbortOnClose delta $delta)"; fi
echo "test daemon_unread_closes_metric_matches_kernel_counter ... $r"
kill $SP; wait $SP 2>/dev/null
# Again with fentry/fexit refused: the kprobe fallbacks carry app I/O and closes.
echo "@@pass kprobe"
SOCKPROBE_SKIP_HOOKS=fentry,fexit @SOCKPROBE@ check | grep -E "kprobe|result"
SOCKPROBE_SKIP_HOOKS=fentry,fexit SOCKPROBE_TEST_TIME_SCALE=20 @SCENARIOS@ --include-ignored --test-threads=1 @FILTER@ 2>&1
echo "@@kprobe-tests-end rc=$?"
poweroff -f
"#;

struct Outcome {
    kernel: String,
    probes: Vec<(String, String, String)>,
    tests: Vec<(String, bool)>,
    check_ok: bool,
    /// Where per-socket state lives, as `sockprobe check --json` says.
    state: String,
}

fn scenario_binary() -> Result<PathBuf> {
    let out = cargo()
        .args(["test", "--release", "-p", "probe-user", "--test", "scenarios", "--no-run", "--message-format=json"])
        .stderr(Stdio::inherit())
        .output()
        .context("build the scenario tests")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("\"executable\":\"") && l.contains("scenarios"))
        .filter_map(|l| l.split("\"executable\":\"").nth(1)?.split('"').next().map(PathBuf::from))
        .next_back()
        .context("scenario test binary not found")
}

fn build_initramfs(dir: &Path, filter: &str) -> Result<PathBuf> {
    let root = workspace_root();
    let sockprobe = root.join("target/release/sockprobe");
    let peer = root.join("target/release/sockprobe-peer");
    let scenarios = scenario_binary()?;
    let mut cpio = Cpio::new();
    for d in ["proc", "sys", "tmp", "run", "dev", "etc", "sbin", "usr/bin", "usr/sbin", "root"] {
        cpio.dir(d);
    }
    // The kernel opens /dev/console for init before anything is mounted.
    cpio.node("dev/console", 0o020600, &[], (5, 1));
    cpio.file("bin/busybox", &std::fs::read("/bin/busybox").context("busybox-static")?, 0o755);
    let guest = |name: &str| format!("{GUEST_BIN}/{name}");
    let init = INIT
        .replace("@SOCKPROBE@", &guest("sockprobe"))
        .replace("@PEER@", &guest("sockprobe-peer"))
        .replace("@SCENARIOS@", &guest("scenarios"))
        .replace("@FILTER@", filter);
    cpio.file("init", init.as_bytes(), 0o755);
    cpio.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n", 0o644);
    for (bin, name) in [(&sockprobe, "sockprobe"), (&peer, "sockprobe-peer"), (&scenarios, "scenarios")] {
        cpio.binary(bin, &guest(name))?;
    }
    cpio.binary(Path::new("/usr/sbin/ip"), "/usr/sbin/ip")?;
    cpio.symlink("sbin/ip", "/usr/sbin/ip");
    // iptables (legacy: the guest gets x_tables modules, not nf_tables) and
    // the matches the scenarios use, loaded by dlopen.
    cpio.binary(Path::new("/usr/sbin/xtables-legacy-multi"), "/usr/sbin/xtables-legacy-multi")?;
    cpio.symlink("usr/sbin/iptables", "/usr/sbin/xtables-legacy-multi");
    for ext in XTABLES_EXTENSIONS {
        let path = format!("{XTABLES_DIR}/{ext}.so");
        cpio.binary(Path::new(&path), &path).with_context(|| format!("{path} (Debian iptables)"))?;
    }
    let path = dir.join("initramfs.cpio");
    std::fs::write(&path, cpio.finish())?;
    Ok(path)
}

const XTABLES_DIR: &str = "/usr/lib/x86_64-linux-gnu/xtables";
const XTABLES_EXTENSIONS: [&str; 4] = ["libxt_standard", "libxt_tcp", "libxt_statistic", "libxt_length"];

/// Netfilter modules the scenarios' iptables rules need, in load order
/// (each after what it depends on); the guest's init insmods them.
const NETFILTER_MODULES: [&str; 6] =
    ["x_tables", "ip_tables", "iptable_filter", "xt_tcpudp", "xt_statistic", "xt_length"];

/// `initramfs` with the kernel's netfilter modules appended as a second
/// cpio archive (the kernel unpacks concatenated archives in turn), at
/// /lib/modules/nf/NAME.ko, decompressed (6.12's are .ko.xz).
fn with_modules(initramfs: &Path, vmlinuz: &Path, dir: &Path) -> Result<PathBuf> {
    let root = vmlinuz.parent().and_then(Path::parent).context("the package's root")?;
    let mut cpio = Cpio::new();
    for name in NETFILTER_MODULES {
        let Some(found) = find_file(&root.join("lib/modules"), &[format!("{name}.ko"), format!("{name}.ko.xz")]) else {
            bail!("{name}.ko not in {}", root.display());
        };
        let data = if found.extension().is_some_and(|e| e == "xz") {
            let out = Command::new("xz").arg("-dc").arg(&found).output().context("xz (Debian xz-utils)")?;
            if !out.status.success() {
                bail!("xz -dc {} failed", found.display());
            }
            out.stdout
        } else {
            std::fs::read(&found)?
        };
        cpio.file(&format!("lib/modules/nf/{name}.ko"), &data, 0o644);
    }
    let mut bytes = std::fs::read(initramfs)?;
    bytes.extend_from_slice(&cpio.finish());
    let name = format!("initramfs-{}.cpio", root.file_name().and_then(|n| n.to_str()).unwrap_or("kernel"));
    let path = dir.join(name);
    std::fs::write(&path, bytes)?;
    Ok(path)
}

/// The first file under `dir` (recursively) named one of `names`.
fn find_file(dir: &Path, names: &[String]) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, names) {
                return Some(found);
            }
        } else if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| names.iter().any(|w| w == n)) {
            return Some(path);
        }
    }
    None
}

/// Boots, retrying once if the guest never reaches /init: TCG occasionally
/// hangs in early boot.
fn boot(vmlinuz: &Path, initramfs: &Path, timeout: Duration) -> Result<Outcome> {
    let first = boot_once(vmlinuz, initramfs, timeout)?;
    if !first.kernel.is_empty() {
        return Ok(first);
    }
    println!("  (guest never reached /init; retrying once)");
    boot_once(vmlinuz, initramfs, timeout)
}

fn boot_once(vmlinuz: &Path, initramfs: &Path, timeout: Duration) -> Result<Outcome> {
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "qemu64", "-smp", "2", "-m", "1024", "-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 panic=-1 quiet lockdown=none rdinit=/init"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("qemu-system-x86_64 (Debian qemu-system-x86)")?;
    let started = Instant::now();
    let mut out =
        Outcome { kernel: String::new(), probes: Vec::new(), tests: Vec::new(), check_ok: false, state: String::new() };
    let mut pass = "";
    let mut pending: Option<String> = None;
    let mut finished = false;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    /// /init prints `@@kernel` within seconds when the boot works.
    const REACH_INIT: Duration = Duration::from_secs(180);
    loop {
        if out.kernel.is_empty() && started.elapsed() > REACH_INIT {
            break;
        }
        let left = timeout.checked_sub(started.elapsed()).unwrap_or_default();
        let left = if out.kernel.is_empty() { left.min(REACH_INIT) } else { left };
        let Ok(line) = rx.recv_timeout(left.max(Duration::from_millis(1))) else { break };
        let line = line.trim_end_matches('\r').to_string();
        println!("  | {line}");
        let _ = std::io::stdout().flush();
        // Console control sequences may precede the marker on its line.
        if let Some((_, k)) = line.split_once("@@kernel ") {
            out.kernel = k.to_string();
        } else if let Some(rc) = line.strip_prefix("@@check-end rc=") {
            out.check_ok = rc == "0";
        } else if let Some(json) = line.strip_prefix("@@check-json ") {
            read_check(json, &mut out);
        } else if line == "@@pass kprobe" {
            pass = " (kprobe fallbacks)";
        } else if let Some((name, result)) = line.strip_prefix("test ").and_then(|t| t.split_once(" ... ")) {
            match test_result(result) {
                Some(ok) => out.tests.push((format!("{name}{pass}"), ok)),
                // A test's own output (a daemon's log) came first: its
                // result follows on a line of its own.
                None => pending = Some(format!("{name}{pass}")),
            }
        } else if let Some(ok) = test_result(&line).filter(|_| pending.is_some()) {
            out.tests.push((pending.take().unwrap_or_default(), ok));
        } else if line.starts_with("@@kprobe-tests-end") {
            finished = true;
            break;
        }
    }
    // A scenario that began and never ended (the guest timed out in it) is
    // a failure, and so is a guest that stopped before the scenarios did.
    if let Some(name) = pending.take() {
        out.tests.push((format!("{name} (never finished)"), false));
    }
    if !finished && !out.kernel.is_empty() {
        out.tests.push(("the guest ran every scenario to the end".into(), false));
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(out)
}

/// libtest's verdict word, when `text` is one.
fn test_result(text: &str) -> Option<bool> {
    match text.trim() {
        "ok" => Some(true),
        "FAILED" => Some(false),
        _ => None,
    }
}

/// Probes and the state store from `sockprobe check --json`.
fn read_check(json: &str, out: &mut Outcome) {
    let report: serde_json::Value = match serde_json::from_str(json) {
        Ok(v) => v,
        Err(e) => {
            out.state = format!("unreadable `sockprobe check --json` ({e})");
            out.check_ok = false;
            return;
        }
    };
    for p in report["probes"].as_array().into_iter().flatten() {
        let text = |k: &str| p[k].as_str().unwrap_or("").to_string();
        let status = match (text("result").as_str(), text("reason")) {
            ("standby", _) => "available (standby)".to_string(),
            (result, reason) if reason.is_empty() => result.to_string(),
            (result, reason) => format!("{result}: {reason}"),
        };
        out.probes.push((text("feature"), text("probe"), status));
    }
    let store = &report["state_store"];
    out.state = match (store["chosen"].as_str(), store["reason"].as_str()) {
        (Some(chosen), None) => format!("per-socket state: {chosen} (default)"),
        (Some(chosen), Some(why)) => format!(
            "per-socket state: {chosen}; {} unavailable: {why}",
            store["default"].as_str().unwrap_or("the default")
        ),
        (None, _) => format!("no state store reported: {}", report["result"].as_str().unwrap_or("")),
    };
    if let Some(turns) = report["exchanges_counted_at"].as_str() {
        out.state.push_str(&format!("; exchanges counted at {turns}"));
    }
}

impl KernelArgs {
    /// Every scenario on one kernel series.
    pub fn all_scenarios_on(series: &str) -> Self {
        Self { kernels: vec![series.into()], timeout: 900, filter: "privileged_".into() }
    }
}

pub fn run(args: &KernelArgs) -> Result<()> {
    let (passed, failed) = matrix(args)?;
    if failed > 0 || passed == 0 {
        bail!("some kernel failed a scenario or its check");
    }
    Ok(())
}

/// Boots each kernel series and runs the scenarios; (passed, failed) over
/// all guests, a failed `sockprobe check` counting as a failure.
pub fn matrix(args: &KernelArgs) -> Result<(usize, usize)> {
    bootstrap::apt_install(&["qemu-system-x86".into(), "busybox-static".into(), "xz-utils".into()])?;
    let dir = workspace_root().join("target/kernels");
    std::fs::create_dir_all(&dir)?;
    let initramfs = build_initramfs(&dir, &args.filter)?;
    let series: Vec<String> =
        if args.kernels.is_empty() { vec!["6.1".into(), "6.12".into()] } else { args.kernels.clone() };
    let mut report = String::new();
    let (mut total_passed, mut total_failed) = (0, 0);
    for s in &series {
        let package = package_for(s)?;
        println!("== {package}");
        let vmlinuz = fetch_kernel(&package, &dir)?;
        let initramfs = with_modules(&initramfs, &vmlinuz, &dir)?;
        let out = boot(&vmlinuz, &initramfs, Duration::from_secs(args.timeout))?;
        let passed = out.tests.iter().filter(|(_, ok)| *ok).count();
        total_passed += passed;
        total_failed += out.tests.len() - passed + usize::from(!out.check_ok || out.tests.is_empty());
        let _ =
            writeln!(report, "\n### {} ({package})\n", if out.kernel.is_empty() { s.as_str() } else { &out.kernel });
        let _ = writeln!(report, "`sockprobe check`: {}; {}\n", if out.check_ok { "ok" } else { "FAILED" }, out.state);
        let _ = writeln!(report, "| feature | probe | result |\n|---|---|---|");
        for (f, hooks, status) in &out.probes {
            let _ = writeln!(report, "| {f} | {hooks} | {} |", status.replace('|', "/"));
        }
        let _ = writeln!(report, "\n| scenario | result |\n|---|---|");
        for (name, ok) in &out.tests {
            let _ = writeln!(report, "| {name} | {} |", if *ok { "pass" } else { "FAIL" });
        }
        println!(
            "== {s}: check {}, {passed}/{} scenarios passed",
            if out.check_ok { "ok" } else { "FAILED" },
            out.tests.len()
        );
    }
    std::fs::write(dir.join("report.md"), &report)?;
    println!("{report}\n(written to {})", dir.join("report.md").display());
    Ok((total_passed, total_failed))
}
