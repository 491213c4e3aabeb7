//! `cargo xtask fuzz`: runs the cargo-fuzz targets of `fuzz/` (nightly,
//! libFuzzer), each for a while, then minimizes its corpus, which is kept in
//! the repository and replayed by `cargo xtask test`.
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{bootstrap, workspace_root};

pub const TARGETS: &[&str] = &[
    "btf",
    "events",
    "socket_listing",
    "config",
    "web_config",
    "http_request",
    "http_response",
    "executable",
    "findings",
    "kube_objects",
];

#[derive(clap::Args, Debug)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// Only these targets (repeatable); default all.
    #[arg(long = "target")]
    targets: Vec<String>,
}

fn cargo_fuzz() -> Command {
    let mut c = Command::new("cargo");
    c.args(["+nightly", "fuzz"]).current_dir(workspace_root()).env("PATH", bootstrap::path_with_cargo_bin());
    c
}

pub fn run(args: &FuzzArgs) -> Result<()> {
    if Command::new("cargo")
        .args(["fuzz", "--version"])
        .env("PATH", bootstrap::path_with_cargo_bin())
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        eprintln!("xtask: cargo install cargo-fuzz");
        let ok = Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]).status()?.success();
        if !ok {
            bail!("cargo install cargo-fuzz failed");
        }
    }
    let targets: Vec<&str> =
        if args.targets.is_empty() { TARGETS.to_vec() } else { args.targets.iter().map(String::as_str).collect() };
    for t in &targets {
        if !TARGETS.contains(t) {
            bail!("unknown fuzz target {t}: expected one of {}", TARGETS.join(", "));
        }
        println!("== fuzz {t} for {} s", args.seconds);
        let corpus = format!("fuzz/corpus/{t}");
        let status = cargo_fuzz()
            .args(["run", "-O", t, &corpus, "--"])
            .arg(format!("-max_total_time={}", args.seconds))
            .args(["-max_len=65536", "-rss_limit_mb=2048", "-timeout=10"])
            .status()
            .context("cargo fuzz run")?;
        if !status.success() {
            bail!("fuzz target {t} found a crash: see fuzz/artifacts/{t}/");
        }
        let status = cargo_fuzz().args(["cmin", "-O", t, &corpus]).status().context("cargo fuzz cmin")?;
        if !status.success() {
            bail!("cargo fuzz cmin {t} failed");
        }
    }
    Ok(())
}
