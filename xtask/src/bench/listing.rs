//! `cargo xtask bench --listing-only`: what listing every process's sockets
//! costs, 100 000 sockets across 100 network namespaces by default.
//! Side by side: sockprobe's in-kernel pass (its reconcile, as its log
//! reports it) and `ss` run in every namespace, without and with `-p` (the
//! per-namespace dump plus /proc walk that a tool without the iterator does).
use std::{
    fmt::Write as _,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::workspace_root;

struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

struct Holder(std::process::Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `12.3ms`, `456.7µs`, `1.2s`, `800ns` (Rust's `Duration` Debug form).
fn parse_debug_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    let secs = match unit {
        "ns" => n / 1e9,
        "µs" | "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

/// From `reconcile: 100412 records listed in 85.3ms (84.1ms CPU); ...`.
fn parse_pass(line: &str) -> Option<(u64, Duration, Duration)> {
    let rest = line.split("reconcile: ").nth(1)?;
    let records = rest.split_whitespace().next()?.parse().ok()?;
    let took = parse_debug_duration(rest.split(" listed in ").nth(1)?.split_whitespace().next()?)?;
    let cpu = parse_debug_duration(rest.split(" (").nth(1)?.split_whitespace().next()?)?;
    Some((records, took, cpu))
}

fn children_cpu() -> Duration {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// `ss` in every namespace, one after the other: (wall, CPU).
fn ss_everywhere(namespaces: &[Namespace], flags: &str) -> Result<(Duration, Duration)> {
    let (t, cpu) = (Instant::now(), children_cpu());
    for ns in namespaces {
        let status = Command::new("ip")
            .args(["netns", "exec", &ns.0, "ss", flags])
            .stdout(Stdio::null())
            .status()
            .context("ss")?;
        if !status.success() {
            bail!("ss in {} failed", ns.0);
        }
    }
    Ok((t.elapsed(), children_cpu().saturating_sub(cpu)))
}

pub fn run(namespaces: u32, sockets: u32, report: &mut String) -> Result<()> {
    let peer = workspace_root().join("target/release/sockprobe-peer");
    let per_ns = (sockets / namespaces.max(1) / 2).max(1);
    let mut nss = Vec::new();
    let mut holders = Vec::new();
    for i in 0..namespaces {
        let name = format!("sockprobe-bench-{}-{i}", std::process::id());
        if !Command::new("ip").args(["netns", "add", &name]).status()?.success() {
            bail!("ip netns add {name}");
        }
        nss.push(Namespace(name.clone()));
        Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]).status()?;
        let mut c = Command::new("ip")
            .args(["netns", "exec", &name])
            .arg(&peer)
            .args(["--name", "bench-ns-hold", "hold", "--connections", &per_ns.to_string()])
            .args(["--close-wait", &(per_ns / 4).to_string()])
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(c.stdout.take().unwrap()).read_line(&mut line)?;
        if line.trim() != "ready" {
            bail!("holder in {name} failed: {line}");
        }
        holders.push(Holder(c));
    }
    let total = namespaces * per_ns * 2;
    // The server ends of the CLOSE_WAIT connections are closed: orphans, no fd.
    let held = namespaces * (2 * per_ns - per_ns / 4);
    eprintln!("listing bench: {total} sockets ({held} held by processes) in {namespaces} namespaces");

    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut daemon = Command::new(workspace_root().join("target/release/sockprobe"))
        .args(["run", "--web.listen-address", &format!("127.0.0.1:{port}")])
        .args(["--metrics.reconcile-interval", "2s", "--log.level", "debug"])
        .stderr(Stdio::piped())
        .spawn()?;
    let passes = Arc::new(Mutex::new(Vec::new()));
    let startup = Arc::new(Mutex::new(String::new()));
    {
        let (passes, startup) = (passes.clone(), startup.clone());
        let stderr = daemon.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("start-up listing") {
                    *startup.lock().unwrap() = line.clone();
                }
                if let Some(p) = parse_pass(&line) {
                    passes.lock().unwrap().push(p);
                }
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while passes.lock().unwrap().len() < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    let passes = passes.lock().unwrap().clone();
    if passes.is_empty() {
        bail!("no reconcile pass logged by the daemon");
    }
    let records = passes.iter().map(|p| p.0).max().unwrap_or(0);
    let took = median(passes.iter().map(|p| p.1).collect());
    let cpu = median(passes.iter().map(|p| p.2).collect());
    let (ss_wall, ss_cpu) = ss_everywhere(&nss, "-tanH")?;
    let (ssp_wall, ssp_cpu) = ss_everywhere(&nss, "-tanpH")?;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let _ = writeln!(
        report,
        "\nListing: {total} sockets ({per_ns} connections, both ends, in each of {namespaces} network namespaces, a \
         quarter of them half-closed: {held} socket fds held, plus the listeners). \
         sockprobe's pass (task_file iterator; median of {} reconciles, {records} records): {:.1} ms, {:.1} ms CPU \
         ({:.2} µs per socket). Side by side, `ss -tan` in every namespace: {:.0} ms, {:.0} ms CPU ({:.1}x); \
         `ss -tanp` (plus the /proc walk for owners): {:.0} ms, {:.0} ms CPU ({:.1}x). Start-up: {}",
        passes.len(),
        ms(took),
        ms(cpu),
        cpu.as_secs_f64() * 1e6 / held.max(1) as f64,
        ms(ss_wall),
        ms(ss_cpu),
        ss_cpu.as_secs_f64() / cpu.as_secs_f64().max(1e-9),
        ms(ssp_wall),
        ms(ssp_cpu),
        ssp_cpu.as_secs_f64() / cpu.as_secs_f64().max(1e-9),
        startup.lock().unwrap().split("start-up listing: ").nth(1).unwrap_or("(not logged)")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_daemons_reconcile_line() {
        let line = "[2026-11-25T16:20:00Z DEBUG] reconcile: 100412 records listed in 85.3ms (84.1ms CPU); Reconciled { dropped: 0 }";
        let (n, took, cpu) = parse_pass(line).unwrap();
        assert_eq!(n, 100412);
        assert_eq!(took, Duration::from_secs_f64(0.0853));
        assert_eq!(cpu, Duration::from_secs_f64(0.0841));
        assert_eq!(parse_debug_duration("456.5µs"), Some(Duration::from_secs_f64(456.5e-6)));
        assert_eq!(parse_debug_duration("1.5s"), Some(Duration::from_millis(1500)));
    }
}
