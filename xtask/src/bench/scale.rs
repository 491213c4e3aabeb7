//! The scale phases: many live sockets at once (kernel state equals the
//! gauges), and a long churn (no leak).
use std::{
    fmt::Write as _,
    process::{Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{
    tracers::{CostAcc, Tracer, Variant, http_get, metric, proc_usage, start_tracer, stop},
    workload::{Workload, run_wrk},
};
use crate::workspace_root;

/// RSS and kernel map use with `sockets` open sockets; half the connections
/// have their server side closed, so a quarter of all sockets sit in CLOSE_WAIT.
pub(crate) fn scale(sockets: u32, report: &mut String) -> Result<()> {
    let peer = workspace_root().join("target/release/sockprobe-peer");
    let sp = start_tracer(Tracer::Sockprobe, &workspace_root().join("target/bench"), false, &Variant::default())?
        .context("sockprobe")?;
    let addr = sp.metrics_addr.clone().unwrap();
    let pid = sp.child.id();
    let (_, _, rss_idle) = proc_usage(pid);
    // One process holds at most ~9000 connections (fd limit 20000 here).
    let per = 9000u32;
    let connections = sockets.div_ceil(2);
    let mut holders = Vec::new();
    let mut left = connections;
    while left > 0 {
        let n = left.min(per);
        let mut c = Command::new(&peer)
            .args([
                "--name",
                "bench-holder",
                "hold",
                "--connections",
                &n.to_string(),
                "--close-wait",
                &(n / 2).to_string(),
            ])
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(c.stdout.take().unwrap()), &mut line)?;
        if line.trim() != "ready" {
            bail!("holder failed: {line}");
        }
        holders.push(c);
        left -= n;
    }
    // Idle connections that never carried an exchange reach the gauges at
    // the first reconcile (30 s after start; docs/architecture.md, "One
    // record per connection").
    sleep(Duration::from_secs(32));
    let t = Instant::now();
    let text = http_get(&addr, "/metrics").map(|(_, b)| b).unwrap_or_default();
    let scrape = t.elapsed();
    let (_, hwm, rss) = proc_usage(pid);
    let tracked = metric(&text, "sockprobe_tracked_sockets");
    let live: f64 = text
        .lines()
        .filter(|l| l.starts_with("sockprobe_tcp_sockets{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    for mut h in holders {
        let _ = h.kill();
        let _ = h.wait();
    }
    sleep(Duration::from_secs(3));
    let text_after = http_get(&addr, "/metrics").map(|(_, b)| b).unwrap_or_default();
    let tracked_after = metric(&text_after, "sockprobe_tracked_sockets");
    let (_, _, rss_after) = proc_usage(pid);
    let lost = metric(&text_after, "sockprobe_events_lost_total");
    let _ = writeln!(
        report,
        "\nScale: {} sockets held open ({} connections, both ends; a quarter of all sockets in CLOSE_WAIT): \
         daemon RSS {:.1} MiB (idle before: {:.1} MiB, peak {:.1} MiB), kernel map entries {tracked:.0}, sockets in gauges {live:.0}, \
         scrape of /metrics {:.0} ms. After closing them all: map entries {tracked_after:.0}, RSS {:.1} MiB, events lost {lost}.",
        connections * 2,
        connections,
        rss as f64 / 1024.0,
        rss_idle as f64 / 1024.0,
        hwm as f64 / 1024.0,
        scrape.as_secs_f64() * 1000.0,
        rss_after as f64 / 1024.0,
    );
    let mut acc = CostAcc::default();
    stop(sp, &mut acc)
}

/// Churns `total` connections through nginx with sockprobe attached: map and
/// RSS must come back down.
pub(crate) fn churn_leak(total: u64, port: u16, report: &mut String) -> Result<()> {
    let sp = start_tracer(Tracer::Sockprobe, &workspace_root().join("target/bench"), false, &Variant::default())?
        .context("sockprobe")?;
    let addr = sp.metrics_addr.clone().unwrap();
    let pid = sp.child.id();
    let t = Instant::now();
    let mut done = 0.0;
    let mut rss_samples = Vec::new();
    while done < total as f64 {
        let rps = run_wrk(Workload::Churn, port, 10)?;
        done += rps * 10.0;
        rss_samples.push(proc_usage(pid).2);
    }
    sleep(Duration::from_secs(2));
    let text = http_get(&addr, "/metrics").map(|(_, b)| b).unwrap_or_default();
    let opened = metric(&text, "sockprobe_tcp_connections_opened_total");
    let _ = writeln!(
        report,
        "\nChurn leak check: {opened:.0} connections opened in {:.0} s with sockprobe attached; kernel map entries afterwards {:.0}; \
         daemon RSS per 10 s slice (MiB): {}; events lost {}.",
        t.elapsed().as_secs_f64(),
        metric(&text, "sockprobe_tracked_sockets"),
        rss_samples.iter().map(|k| format!("{:.1}", *k as f64 / 1024.0)).collect::<Vec<_>>().join(", "),
        metric(&text, "sockprobe_events_lost_total"),
    );
    let mut acc = CostAcc::default();
    stop(sp, &mut acc)
}
