//! The .deb under a real systemd: a Debian bookworm guest (debootstrap,
//! cached under target/kernels) boots Debian's 6.12 kernel in QEMU with
//! systemd as PID 1, installs the package with `apt install ./…deb` and
//! checks, from a oneshot unit, what users would: the service runs as a
//! dynamic user with exactly the unit's capabilities, counts a scenario's
//! unread closes as the guest's kernel does (TCPAbortOnClose), comes back
//! after a restart and an upgrade, logs no warning, leaves no program
//! loaded when stopped, stops on remove, keeps its config until purge.
//! Each check is a line `@@ship NAME ok|FAIL DETAIL` on the serial console.
use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{bootstrap, cargo, kernels, workspace_root};

const SUITE: &str = "bookworm";
/// What the guest needs besides minbase: systemd as init, curl for
/// /metrics, bpftool to see loaded programs, iproute2 for `ss`.
const INCLUDE: &str = "systemd,systemd-sysv,dbus,iproute2,curl,bpftool,init-system-helpers";

/// The rootfs, made once (about a minute) and cached as a gzipped cpio.
fn rootfs(dir: &Path) -> Result<PathBuf> {
    let packed = dir.join(format!("rootfs-{SUITE}-systemd.cpio.gz"));
    if packed.exists() {
        return Ok(packed);
    }
    bootstrap::apt_install(&["debootstrap".into(), "cpio".into(), "qemu-system-x86".into()])?;
    let tree = dir.join(format!("rootfs-{SUITE}-systemd"));
    let _ = std::fs::remove_dir_all(&tree);
    println!("ship: debootstrap {SUITE} (about a minute)");
    let status = Command::new("debootstrap")
        .args(["--variant=minbase", &format!("--include={INCLUDE}"), SUITE])
        .arg(&tree)
        .arg(mirror())
        .stdout(Stdio::null())
        .status()
        .context("debootstrap")?;
    if !status.success() {
        bail!("debootstrap {SUITE} failed");
    }
    // Nothing to configure on a serial console; no getty waiting for it.
    let _ = std::fs::remove_file(tree.join("etc/systemd/system/getty.target.wants/getty@tty1.service"));
    std::fs::write(tree.join("etc/hostname"), "ship-guest\n")?;
    let tmp = packed.with_extension("tmp");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("find . | cpio -o -H newc --quiet | gzip -1 > '{}'", tmp.display()))
        .current_dir(&tree)
        .status()?;
    if !status.success() {
        bail!("packing the rootfs failed");
    }
    std::fs::rename(&tmp, &packed)?;
    let _ = std::fs::remove_dir_all(&tree);
    Ok(packed)
}

/// The mirror apt already uses here.
fn mirror() -> String {
    let sources = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default()
        + &std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    sources
        .lines()
        .find_map(|l| {
            let l = l.trim();
            let url = l.strip_prefix("URIs:").or_else(|| l.strip_prefix("deb "))?.split_whitespace().next()?;
            (!url.contains("security")).then(|| url.to_string())
        })
        .unwrap_or_else(|| "http://deb.debian.org/debian".into())
}

/// Runs inside the guest, as a oneshot unit, its output on the console.
const CHECK: &str = include_str!("guest-check.sh");

const CHECK_UNIT: &str = "[Unit]
Description=sockprobe package checks
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/opt/ship/check.sh
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
[Install]
WantedBy=multi-user.target
";

/// Builds the package (lintian-checked) and its revision 2, boots the guest,
/// prints each check; (passed, failed).
pub fn check_package() -> Result<(usize, usize)> {
    // Kept apart: cargo-deb empties target/debian when it builds again.
    let ship = workspace_root().join("target/ship");
    std::fs::create_dir_all(&ship)?;
    let deb = ship.join("sockprobe.deb");
    std::fs::copy(crate::package::package()?, &deb)?;
    let upgrade = upgrade_deb()?;
    let checks = run(&[deb, upgrade])?;
    for c in &checks {
        println!("ship: {} {} {}", if c.ok { "ok    " } else { "FAILED" }, c.name, c.detail);
    }
    let passed = checks.iter().filter(|c| c.ok).count();
    Ok((passed, checks.len() - passed + usize::from(checks.is_empty())))
}

/// One check's verdict.
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// Boots the guest with `debs` (the package, then the same at revision 2
/// for the upgrade) and returns the checks it reported.
pub fn run(debs: &[PathBuf; 2]) -> Result<Vec<Check>> {
    let dir = workspace_root().join("target/kernels");
    std::fs::create_dir_all(&dir)?;
    let base = rootfs(&dir).context("the guest's rootfs")?;
    let vmlinuz = kernels::kernel("6.12", &dir).context("Debian's 6.12 kernel")?;
    let mut overlay = kernels::Cpio::new();
    overlay.file("opt/ship/check.sh", CHECK.as_bytes(), 0o755);
    overlay.file("etc/systemd/system/sockprobe-ship-check.service", CHECK_UNIT.as_bytes(), 0o644);
    overlay.symlink(
        "etc/systemd/system/multi-user.target.wants/sockprobe-ship-check.service",
        "/etc/systemd/system/sockprobe-ship-check.service",
    );
    // No getty on the console: without udev (not in minbase) systemd would
    // wait 90 s for the device first.
    overlay.symlink("etc/systemd/system/serial-getty@ttyS0.service", "/dev/null");
    for (deb, name) in debs.iter().zip(["sockprobe.deb", "sockprobe-upgrade.deb"]) {
        overlay.file(
            &format!("opt/ship/{name}"),
            &std::fs::read(deb).with_context(|| format!("{}", deb.display()))?,
            0o644,
        );
    }
    let peer = workspace_root().join("target/release/sockprobe-peer");
    overlay.file("opt/ship/sockprobe-peer", &std::fs::read(&peer).context("sockprobe-peer")?, 0o755);
    // The kernel unpacks concatenated archives in order, but finds no
    // archive after a gzipped one: the (uncompressed) overlay goes first;
    // the base's entries for directories that exist by then are skipped.
    let initramfs = dir.join("ship-initramfs.cpio");
    let mut all = overlay.finish();
    all.extend_from_slice(&std::fs::read(&base).with_context(|| format!("{}", base.display()))?);
    std::fs::write(&initramfs, all)?;
    boot(&vmlinuz, &initramfs, Duration::from_secs(900))
}

fn boot(vmlinuz: &Path, initramfs: &Path, timeout: Duration) -> Result<Vec<Check>> {
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "qemu64", "-smp", "2", "-m", "2048", "-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 panic=-1 quiet lockdown=none rdinit=/lib/systemd/systemd"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("qemu-system-x86_64 (Debian qemu-system-x86)")?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut checks = Vec::new();
    let mut ended = false;
    while let Some(left) = timeout.checked_sub(started.elapsed()) {
        let Ok(line) = rx.recv_timeout(left) else { break };
        let line = line.trim_end_matches('\r').to_string();
        println!("  | {line}");
        let _ = std::io::stdout().flush();
        // Console control sequences may precede the marker on its line.
        if let Some((_, rest)) = line.split_once("@@ship ") {
            let mut words = rest.splitn(3, ' ');
            let (name, verdict) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
            checks.push(Check { name: name.into(), ok: verdict == "ok", detail: words.next().unwrap_or("").into() });
        } else if line.contains("@@ship-end") {
            ended = true;
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    if !ended {
        checks.push(Check {
            name: "guest-finished".into(),
            ok: false,
            detail: format!("no @@ship-end within {timeout:?}"),
        });
    }
    Ok(checks)
}

/// The package at revision 2, for the upgrade check.
pub fn upgrade_deb() -> Result<PathBuf> {
    let out_dir = workspace_root().join("target/ship/upgrade");
    std::fs::create_dir_all(&out_dir)?;
    let status = cargo()
        .args(["deb", "-p", "probe-user", "--no-build", "--deb-revision", "2", "--output"])
        .arg(&out_dir)
        .env("PATH", bootstrap::path_with_cargo_bin())
        .status()
        .context("cargo deb --deb-revision 2")?;
    if !status.success() {
        bail!("cargo deb --deb-revision 2 failed");
    }
    std::fs::read_dir(&out_dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("-2_amd64.deb"))
        .context("no revision 2 .deb")
}
