//! `cargo xtask test`: every test, one summary line.
use std::{
    io::{BufRead, BufReader},
    process::{ExitCode, Stdio},
};

use anyhow::{Context, Result};

use crate::cargo;

/// Privileged tests are `#[ignore]`d (they need root): libtest counts them
/// as ignored, which this summary reports as skipped; as root they are
/// included.
#[derive(Default, Debug, PartialEq)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

/// Adds a libtest `test result: ok. 3 passed; 0 failed; 1 ignored; ...` line.
fn add_result_line(t: &mut Totals, line: &str) {
    let Some(rest) = line.trim().strip_prefix("test result: ") else { return };
    for part in rest.split(';') {
        let words: Vec<&str> = part.split_whitespace().collect();
        let (n, what) = match words.as_slice() {
            [.., n, what] => (n.parse::<u64>().unwrap_or(0), *what),
            _ => continue,
        };
        match what {
            "passed" => t.passed += n,
            "failed" => t.failed += n,
            "ignored" => t.ignored += n,
            _ => {}
        }
    }
}

pub fn run(extra: &[String]) -> Result<ExitCode> {
    let root = is_root();
    // The image the pod-spec test runs (tests/ship.rs): built first.
    if root && std::env::var_os("SOCKPROBE_SKIP_SHIP").is_none() {
        crate::package::image()?;
    }
    // Every test binary runs, whichever fails first.
    let mut args: Vec<String> = vec!["test".into(), "--release".into(), "--no-fail-fast".into(), "--".into()];
    // Tests share the kernel and its counters: one at a time.
    args.push("--test-threads=1".into());
    if root {
        args.push("--include-ignored".into());
    }
    args.extend(extra.iter().cloned());
    let mut child = cargo().args(&args).stdout(Stdio::piped()).spawn().context("run cargo test")?;
    let mut totals = Totals::default();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines().map_while(Result::ok) {
        println!("{line}");
        add_result_line(&mut totals, &line);
    }
    let status = child.wait()?;
    let mut skipped = totals.ignored;
    // The kernel matrix: Debian's 6.1 in QEMU, the scenarios inside (about
    // 3 minutes); `cargo xtask kernels` runs 6.1 and 6.12.
    if root && std::env::var_os("SOCKPROBE_SKIP_KERNELS").is_none() {
        println!("kernel matrix: Debian 6.1 under QEMU (set SOCKPROBE_SKIP_KERNELS=1 to skip)");
        let (p, f) = crate::kernels::matrix(&crate::kernels::KernelArgs::all_scenarios_on("6.1"))?;
        println!("kernel matrix: {p} passed, {f} failed");
        totals.passed += p as u64;
        totals.failed += f as u64;
    } else {
        skipped += 1;
        println!("skipped: the kernel matrix ({})", if root { "SOCKPROBE_SKIP_KERNELS is set" } else { "needs root" });
    }
    // The package under a real systemd (about 5 minutes).
    if root && std::env::var_os("SOCKPROBE_SKIP_SHIP").is_none() {
        println!("ship: the .deb installed and run by systemd in a Debian guest (set SOCKPROBE_SKIP_SHIP=1 to skip)");
        let (p, f) = crate::guest::check_package()?;
        println!("ship: {p} checks passed, {f} failed");
        totals.passed += p as u64;
        totals.failed += f as u64;
    } else {
        skipped += 1;
        println!(
            "skipped: the package under systemd ({})",
            if root { "SOCKPROBE_SKIP_SHIP is set" } else { "needs root" }
        );
    }
    if !root {
        println!("skipped: {} privileged tests need root (run `sudo cargo xtask test`)", totals.ignored);
    }
    println!("summary: {} passed, {} failed, {} skipped", totals.passed, totals.failed, skipped);
    Ok(if status.success() && totals.failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_result_lines() {
        let mut t = Totals::default();
        add_result_line(
            &mut t,
            "test result: ok. 10 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s",
        );
        add_result_line(&mut t, "test result: FAILED. 2 passed; 1 failed; 3 ignored; 0 measured; 0 filtered out");
        add_result_line(&mut t, "running 3 tests");
        assert_eq!(t, Totals { passed: 12, failed: 1, ignored: 3 });
    }
}
