//! Toolchain prerequisites: checked in seconds, installed only when missing.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

const BPF_LINKER_VERSION: &str = "0.13.0";
const NIGHTLY: &str = "nightly";
/// Debian packages the tests use besides the toolchain.
/// (command, package): Go `net/http` programs are the daemon tests' subjects,
/// promtool checks the exposition and the alert rules, a real Prometheus
/// scrapes the daemon, openssl and curl test TLS, systemd-analyze the unit.
const TEST_TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("setpriv", "util-linux"),
    ("ss", "iproute2"),
    ("go", "golang-go"),
    ("promtool", "prometheus"),
    ("prometheus", "prometheus"),
    ("openssl", "openssl"),
    ("curl", "curl"),
    ("systemd-analyze", "systemd"),
    ("nsenter", "util-linux"),
    ("pgrep", "procps"),
    ("wrk", "wrk"),
    // Real containers (docs/development.md): podman with runc, no registry.
    ("podman", "podman"),
    ("runc", "runc"),
    ("conmon", "conmon"),
    // java.net.http.HttpClient as a diagnosis subject.
    ("javac", "default-jdk-headless"),
    // `sockprobe top` is driven in a terminal multiplexer.
    ("tmux", "tmux"),
    // kube-proxy's DNAT rules in a test's network namespace (tests/k8s.rs).
    ("iptables", "iptables"),
];

/// Packages whose file, not command, the tests need: a static busybox for
/// the container image and the QEMU initramfs (the dynamic `busybox`
/// package would not run there); Python's `requests` as a diagnosis subject.
const TEST_PACKAGES: &[&str] = &["busybox-static", "python3-requests"];

pub fn ensure() -> Result<()> {
    let nightly_llvm = ensure_nightly()?;
    ensure_bpf_linker(nightly_llvm)?;
    ensure_test_tools()?;
    Ok(())
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn cargo_bin() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

/// PATH with cargo's bin directory (where bpf-linker is installed) first.
pub fn path_with_cargo_bin() -> std::ffi::OsString {
    let mut paths = vec![cargo_bin()];
    if let Some(p) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(paths).unwrap_or_default()
}

fn is_debian() -> bool {
    Path::new("/etc/debian_version").exists() && which("apt-get").is_some()
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&path_with_cargo_bin()).map(|d| d.join(program)).find(|p| p.is_file())
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0")
}

/// Nightly with rust-src (for `-Z build-std`); returns its LLVM major.
fn ensure_nightly() -> Result<u32> {
    if which("rustup").is_none() {
        bail!(
            "rustup not found: install it (https://rustup.rs), then `rustup toolchain install nightly --component rust-src`"
        );
    }
    let has_nightly = output(Command::new("rustup").args(["toolchain", "list"]))
        .is_some_and(|s| s.lines().any(|l| l.starts_with("nightly")));
    if !has_nightly {
        eprintln!("xtask: installing the nightly toolchain (needed to build the eBPF object)");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            NIGHTLY,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))
        .context("install nightly: run `rustup toolchain install nightly --component rust-src`")?;
    }
    let sysroot =
        output(Command::new("rustc").args([&format!("+{NIGHTLY}"), "--print", "sysroot"])).context("rustc +nightly")?;
    if !Path::new(sysroot.trim()).join("lib/rustlib/src/rust/library/core").exists() {
        eprintln!("xtask: adding rust-src to nightly");
        run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
            .context("add rust-src: run `rustup component add rust-src --toolchain nightly`")?;
    }
    let verbose = output(Command::new("rustc").args([&format!("+{NIGHTLY}"), "-vV"])).context("rustc +nightly -vV")?;
    llvm_major(&verbose).context("cannot read nightly's LLVM version from `rustc +nightly -vV`")
}

fn llvm_major(rustc_vv: &str) -> Option<u32> {
    let v = rustc_vv.lines().find_map(|l| l.strip_prefix("LLVM version: "))?;
    v.split('.').next()?.trim().parse().ok()
}

/// The LLVM major bpf-linker is linked against (from its libLLVM.so.N).
fn bpf_linker_llvm(path: &Path) -> Option<u32> {
    let ldd = output(Command::new("ldd").arg(path))?;
    let lib = ldd.lines().find_map(|l| l.trim().strip_prefix("libLLVM.so."))?;
    lib.split(['.', ' ']).next()?.parse().ok()
}

fn ensure_bpf_linker(llvm: u32) -> Result<()> {
    let current = which("bpf-linker").map(|p| {
        let version = output(Command::new(&p).arg("--version")).unwrap_or_default();
        (version.contains(BPF_LINKER_VERSION), bpf_linker_llvm(&p))
    });
    match current {
        Some((true, Some(major))) if major == llvm => return Ok(()),
        Some((true, None)) => return Ok(()), // statically linked: trust it
        Some((_, Some(major))) if major != llvm => {
            eprintln!("xtask: bpf-linker uses LLVM {major}, nightly uses LLVM {llvm}: rebuilding bpf-linker");
        }
        _ => eprintln!("xtask: installing bpf-linker {BPF_LINKER_VERSION} against LLVM {llvm} (about 3 minutes)"),
    }
    let packages =
        [format!("llvm-{llvm}-dev"), format!("libpolly-{llvm}-dev"), "libzstd-dev".into(), "zlib1g-dev".into()];
    let prefix = PathBuf::from(format!("/usr/lib/llvm-{llvm}"));
    if !prefix.join("bin/llvm-config").exists() {
        apt_install(&packages)?;
    }
    let path =
        std::env::join_paths(std::iter::once(prefix.join("bin")).chain(std::env::split_paths(&path_with_cargo_bin())))?;
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            &format!("llvm-{llvm}"),
            "--force",
        ])
        .env("LLVM_PREFIX", &prefix)
        .env("PATH", path))
    .context("cargo install bpf-linker")?;
    match which("bpf-linker").and_then(|p| bpf_linker_llvm(&p)) {
        Some(major) if major != llvm => bail!("bpf-linker still links LLVM {major}, nightly needs {llvm}"),
        _ => Ok(()),
    }
}

const CARGO_DEB_VERSION: &str = "3.8.0";

/// What `cargo xtask package` needs: cargo-deb, lintian, dpkg-shlibdeps.
pub fn ensure_packaging() -> Result<()> {
    apt_install(&["lintian".into(), "dpkg-dev".into(), "gzip".into()])?;
    let current = which("cargo-deb").and_then(|p| output(Command::new(p).arg("--version")));
    if !current.is_some_and(|v| v.contains(CARGO_DEB_VERSION)) {
        eprintln!("xtask: installing cargo-deb {CARGO_DEB_VERSION} (about 2 minutes)");
        run(Command::new("cargo").args(["install", "cargo-deb", "--locked", "--version", CARGO_DEB_VERSION]))
            .context("cargo install cargo-deb")?;
    }
    Ok(())
}

/// What `cargo xtask image` needs: the musl target and musl-gcc (ring's C
/// parts), podman.
pub fn ensure_musl(target: &str) -> Result<()> {
    apt_install(&["musl-tools".into(), "podman".into(), "runc".into()])?;
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"])).unwrap_or_default();
    if !installed.lines().any(|l| l.trim() == target) {
        run(Command::new("rustup").args(["target", "add", target])).context("rustup target add")?;
    }
    Ok(())
}

/// Python tools the deployment tests use, from PyPI.
const PIP_TOOLS: &[(&str, &str)] = &[("kubernetes-validate", "kubernetes-validate")];

fn ensure_pip_tools() -> Result<()> {
    for (bin, package) in PIP_TOOLS {
        if which(bin).is_none() {
            eprintln!("xtask: pip install {package}");
            run(Command::new("python3").args(["-m", "pip", "install", "--quiet", package]))
                .with_context(|| format!("pip install {package}"))?;
        }
    }
    Ok(())
}

fn ensure_test_tools() -> Result<()> {
    ensure_pip_tools()?;
    apt_install(&TEST_PACKAGES.iter().map(|p| p.to_string()).collect::<Vec<_>>())?;
    let missing: Vec<&str> = TEST_TOOLS
        .iter()
        .filter(|(bin, _)| {
            which(bin).is_none() && !Path::new("/usr/sbin").join(bin).exists() && !Path::new("/sbin").join(bin).exists()
        })
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut pkgs: Vec<String> = missing.iter().map(|s| s.to_string()).collect();
    pkgs.dedup();
    apt_install(&pkgs)
}

pub fn apt_install(packages: &[String]) -> Result<()> {
    let missing: Vec<&String> = packages
        .iter()
        .filter(|p| {
            !output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_some_and(|s| s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ");
    if !is_debian() {
        bail!("not a Debian/Ubuntu system: install the equivalents of [{list}] with your package manager, then rerun");
    }
    if !is_root() {
        bail!("missing packages: run `sudo apt-get install -y {list}`, then rerun");
    }
    eprintln!("xtask: apt-get install {list}");
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    // Recommends would drag in ~170 packages for qemu alone (ffmpeg's libraries among them).
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(missing.iter().map(|s| s.as_str()))
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_llvm_major() {
        assert_eq!(llvm_major("rustc 1.97.0-nightly\nLLVM version: 22.1.4\n"), Some(22));
        assert_eq!(llvm_major("rustc 1.95.0"), None);
    }
}
