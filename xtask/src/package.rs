//! `cargo xtask package`: the Debian package (cargo-deb, configured in
//! probe-user/Cargo.toml's `[package.metadata.deb]`), with the man page and
//! shell completions generated from the binary's own clap definition, then
//! checked by lintian. `cargo xtask image`: the OCI image, built offline by
//! podman from the static (musl) binary.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::{bootstrap, cargo, workspace_root};

/// Where the generated assets go: under target/release, which cargo-deb
/// maps to the real target directory.
const ASSETS: &str = "target/release/package-assets";

/// Builds target/debian/sockprobe_<version>_amd64.deb and returns its path.
pub fn package() -> Result<PathBuf> {
    bootstrap::ensure_packaging()?;
    let ws = workspace_root();
    let assets = ws.join(ASSETS);
    std::fs::create_dir_all(&assets)?;
    let binary = ws.join("target/release/sockprobe");
    let generate = |what: &str| -> Result<Vec<u8>> {
        let out = Command::new(&binary).args(["generate", what]).output().context("run sockprobe generate")?;
        if !out.status.success() {
            bail!("sockprobe generate {what}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(out.stdout)
    };
    // gzip -n: no name or time stamp, so a rebuild gives the same bytes.
    let mut gzip = Command::new("gzip").args(["-9n"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    let man = generate("man")?;
    std::io::Write::write_all(gzip.stdin.as_mut().context("gzip's stdin")?, &man)?;
    drop(gzip.stdin.take());
    let out = gzip.wait_with_output()?;
    if !out.status.success() {
        bail!("gzip of the man page failed");
    }
    std::fs::write(assets.join("sockprobe.1.gz"), out.stdout)?;
    for (shell, file) in [("bash", "sockprobe.bash"), ("zsh", "_sockprobe"), ("fish", "sockprobe.fish")] {
        std::fs::write(assets.join(file), generate(shell)?)?;
    }
    let status = cargo()
        .args(["deb", "-p", "probe-user", "--no-build"])
        .env("PATH", bootstrap::path_with_cargo_bin())
        .status()
        .context("cargo deb")?;
    if !status.success() {
        bail!("cargo deb failed");
    }
    let deb = newest_deb(&ws.join("target/debian"))?;
    // Errors fail the build; warnings and notes are shown.
    let status = Command::new("lintian")
        .args(["--fail-on", "error", "--tag-display-limit", "0"])
        .arg(&deb)
        .status()
        .context("lintian")?;
    if !status.success() {
        bail!("lintian found errors in {}", deb.display());
    }
    println!("{}", deb.display());
    Ok(deb)
}

fn newest_deb(dir: &Path) -> Result<PathBuf> {
    let version = env!("CARGO_PKG_VERSION");
    let deb = dir.join(format!("sockprobe_{version}-1_amd64.deb"));
    if deb.exists() {
        return Ok(deb);
    }
    std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .with_context(|| format!("no .deb in {}", dir.display()))
}

/// The image's name in the local store.
pub const IMAGE: &str = "localhost/sockprobe:latest";
const MUSL: &str = "x86_64-unknown-linux-musl";

/// Builds the static binary and from it, with no registry and no network,
/// the image: the binary and the default config, nothing else.
pub fn image() -> Result<()> {
    bootstrap::ensure_musl(MUSL)?;
    let ws = workspace_root();
    let status = cargo()
        .args(["build", "--release", "--locked", "--target", MUSL, "-p", "probe-user", "--bin", "sockprobe"])
        .env("PATH", bootstrap::path_with_cargo_bin())
        .status()
        .context("cargo build --target musl")?;
    if !status.success() {
        bail!("the static build failed");
    }
    let context = ws.join("target/image-context");
    let _ = std::fs::remove_dir_all(&context);
    std::fs::create_dir_all(&context)?;
    std::fs::copy(ws.join(format!("target/{MUSL}/release/sockprobe")), context.join("sockprobe"))?;
    std::fs::copy(ws.join("deploy/sockprobe.toml"), context.join("sockprobe.toml"))?;
    std::fs::copy(ws.join("deploy/Containerfile.static"), context.join("Containerfile"))?;
    let status = Command::new("podman")
        .args(["build", "--network", "none", "--pull=never", "-t", IMAGE, "-f"])
        .arg(context.join("Containerfile"))
        .arg(&context)
        .status()
        .context("podman build")?;
    if !status.success() {
        bail!("podman build failed");
    }
    println!("{IMAGE}");
    Ok(())
}
