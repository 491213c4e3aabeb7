//! `cargo xtask`: set-up, build, run and test sockprobe from a fresh clone.
//!
//! Every command first makes sure the toolchain prerequisites are present
//! (docs/development.md): nightly with rust-src, and bpf-linker built against
//! an LLVM whose major version equals the nightly's. On Debian/Ubuntu missing
//! pieces are installed; elsewhere the exact list is printed.
mod bench;
mod bootstrap;
mod fuzz;
mod guest;
mod kernels;
mod package;
// One HTTP GET and one Prometheus text reader for the tests and the bench.
#[path = "../../probe-user/tests/support/scrape.rs"]
#[allow(dead_code)]
mod scrape;
mod test;

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing to build sockprobe (idempotent).
    Bootstrap,
    /// Build target/release/sockprobe (the eBPF object embedded).
    Build,
    /// Build, then run `sockprobe run` with its defaults (extra args after `--`).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build, then measure overhead and scale side by side (root; see docs/benchmarks.md).
    Bench(bench::BenchArgs),
    /// Build, then boot Debian's 6.1 and 6.12 kernels in QEMU and run the
    /// privileged scenarios inside (see docs/kernels.md).
    Kernels(kernels::KernelArgs),
    /// Build, then install the binary, the systemd unit and a default config
    /// (under --root, default /; see docs/install.md).
    Install {
        #[arg(long, default_value = "/")]
        root: std::path::PathBuf,
    },
    /// Build, then make target/debian/sockprobe_<version>-1_amd64.deb
    /// (cargo-deb; man page and completions generated; lintian-checked).
    Package,
    /// Build the package, then install and run it under systemd in a Debian
    /// guest (QEMU) and report each check (docs/install.md); `cargo xtask
    /// test` runs this too.
    Ship,
    /// Build the static (musl) binary and from it, offline, the image
    /// localhost/sockprobe:latest (podman; docs/install.md).
    Image,
    /// Fuzz the parsers (cargo-fuzz, nightly) and minimize their corpora
    /// (docs/security.md); `cargo xtask test` replays the corpora.
    Fuzz(fuzz::FuzzArgs),
    /// Formatting and clippy (warnings are errors) on every crate, each
    /// with the toolchain it builds with: stable, and nightly for the eBPF
    /// programs. `.ci/run` runs it before the tests.
    Lint,
    /// Build, then run every test; privileged ones too when root.
    Test {
        /// Extra arguments for the test binaries (e.g. a name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Bootstrap => bootstrap::ensure().map(|_| ExitCode::SUCCESS),
        Cmd::Build => {
            bootstrap::ensure()?;
            build()?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run { args } => {
            bootstrap::ensure()?;
            build()?;
            let status = Command::new(workspace_root().join("target/release/sockprobe"))
                .arg("run")
                .args(args)
                .status()
                .context("start sockprobe")?;
            Ok(ExitCode::from(status.code().unwrap_or(1) as u8))
        }
        Cmd::Bench(args) => {
            bootstrap::ensure()?;
            build()?;
            let floor =
                cargo().args(["build", "--release", "-p", "probe-user", "--example", "floor_tracer"]).status()?;
            if !floor.success() {
                bail!("building the floor tracer (probe-user/examples/floor_tracer.rs) failed");
            }
            bench::run(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Kernels(args) => {
            bootstrap::ensure()?;
            build()?;
            kernels::run(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Install { root } => {
            bootstrap::ensure()?;
            build()?;
            install(&root)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Package => {
            bootstrap::ensure()?;
            build()?;
            package::package()?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Ship => {
            bootstrap::ensure()?;
            build()?;
            let (passed, failed) = guest::check_package()?;
            println!("ship: {passed} checks passed, {failed} failed");
            Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Cmd::Image => {
            bootstrap::ensure()?;
            package::image()?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Fuzz(args) => {
            bootstrap::ensure()?;
            fuzz::run(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Lint => {
            bootstrap::ensure()?;
            lint()?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Test { args } => {
            bootstrap::ensure()?;
            build()?;
            test::run(&args)
        }
    }
}

pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// `cargo` with the environment the build needs (bpf-linker on PATH).
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace_root());
    c.env("PATH", bootstrap::path_with_cargo_bin());
    c
}

/// Binary to /usr/local/bin, unit to /etc/systemd/system, config to
/// /etc/sockprobe (kept if present), README and docs/ to
/// /usr/local/share/doc/sockprobe (the unit's `Documentation=`); then
/// `systemctl daemon-reload` on a live systemd host.
fn install(root: &std::path::Path) -> Result<()> {
    let ws = workspace_root();
    let copy = |from: &str, to: &str, mode: u32, keep: bool| -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dest = root.join(to.trim_start_matches('/'));
        if keep && dest.exists() {
            println!("kept {}", dest.display());
            return Ok(());
        }
        std::fs::create_dir_all(dest.parent().unwrap())?;
        std::fs::copy(ws.join(from), &dest).with_context(|| format!("install {}", dest.display()))?;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))?;
        println!("installed {}", dest.display());
        Ok(())
    };
    copy("target/release/sockprobe", "/usr/local/bin/sockprobe", 0o755, false)?;
    // The unit names the package's paths (/usr/bin, /usr/share/doc); this
    // development install uses /usr/local.
    let unit = std::fs::read_to_string(ws.join("deploy/systemd/sockprobe.service"))?
        .replace("/usr/bin/sockprobe", "/usr/local/bin/sockprobe")
        .replace("/usr/share/doc/sockprobe", "/usr/local/share/doc/sockprobe");
    let unit_path = root.join("etc/systemd/system/sockprobe.service");
    std::fs::create_dir_all(unit_path.parent().unwrap())?;
    std::fs::write(&unit_path, unit).with_context(|| format!("install {}", unit_path.display()))?;
    println!("installed {}", unit_path.display());
    copy("deploy/sockprobe.toml", "/etc/sockprobe/sockprobe.toml", 0o644, true)?;
    copy("README.md", "/usr/local/share/doc/sockprobe/README.md", 0o644, false)?;
    for doc in std::fs::read_dir(ws.join("docs"))?.flatten() {
        let name = doc.file_name().to_string_lossy().to_string();
        if name.ends_with(".md") {
            copy(&format!("docs/{name}"), &format!("/usr/local/share/doc/sockprobe/docs/{name}"), 0o644, false)?;
        }
    }
    if root == std::path::Path::new("/") && std::path::Path::new("/run/systemd/system").exists() {
        let _ = Command::new("systemctl").arg("daemon-reload").status();
        println!("next: systemctl enable --now sockprobe");
    }
    Ok(())
}

/// `cargo fmt --check`, then clippy with `-D warnings`: the host crates
/// (all targets: tests, examples, benches' helpers) on stable, probe-ebpf
/// for its own target on nightly (as probe-user/build.rs builds it).
fn lint() -> Result<()> {
    let steps: [(&str, Command); 3] = [
        ("cargo fmt --all --check", {
            let mut c = cargo();
            c.args(["fmt", "--all", "--check"]);
            c
        }),
        ("cargo clippy (stable: probe-common, probe-user, xtask)", {
            let mut c = cargo();
            c.args([
                "clippy",
                "--release",
                "--workspace",
                "--exclude",
                "probe-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]);
            c
        }),
        ("cargo clippy (nightly: probe-ebpf for bpfel-unknown-none)", {
            let mut c = Command::new("rustup");
            c.current_dir(workspace_root()).env("PATH", bootstrap::path_with_cargo_bin()).args([
                "run",
                "nightly",
                "cargo",
                "clippy",
                "-p",
                "probe-ebpf",
                "--release",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--target-dir",
                "target/lint-ebpf",
                "--",
                "-D",
                "warnings",
            ]);
            c
        }),
    ];
    for (what, mut command) in steps {
        println!("lint: {what}");
        let status = command.status().with_context(|| format!("run {what}"))?;
        if !status.success() {
            bail!("{what} failed (see above)");
        }
    }
    println!("lint: ok");
    Ok(())
}

fn build() -> Result<()> {
    let status = cargo().args(["build", "--release"]).status().context("run cargo build")?;
    if !status.success() {
        bail!("cargo build --release failed");
    }
    Ok(())
}
