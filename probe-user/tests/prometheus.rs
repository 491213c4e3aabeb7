//! End to end: a real Prometheus server (Debian's `prometheus`) scrapes
//! `sockprobe run` while a Go client leaks CLOSE_WAIT sockets; its HTTP API
//! shows the series and our CLOSE_WAIT alert firing.
mod support;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use support::*;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn api(addr: &str, path: &str) -> Option<Value> {
    let (status, body) = http_get(addr, path)?;
    if status != 200 {
        return None;
    }
    serde_json::from_str(&body).ok()
}

#[test]
#[ignore = "needs root: `sudo cargo xtask test` runs it"]
fn privileged_prometheus_scrapes_and_fires_close_wait_alert() {
    require_root();
    let daemon = Daemon::start(&[]);
    let dir = std::env::temp_dir().join(format!("sockprobe-prom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Our rules, with windows and `for:` shortened so a test can see them fire.
    let rules = std::fs::read_to_string(format!("{ROOT}/deploy/prometheus/alerts.yml"))
        .unwrap()
        .replace("for: 15m", "for: 0s")
        .replace("[15m:1m]", "[20s:1s]")
        .replace("{state=\"close_wait\"}) > 10", "{state=\"close_wait\"}) > 2");
    std::fs::write(dir.join("alerts.yml"), rules).unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [alerts.yml]\n\
             scrape_configs:\n  - job_name: sockprobe\n    static_configs:\n      - targets: ['{}']\n",
            daemon.addr
        ),
    )
    .unwrap();
    let prom_addr = format!("127.0.0.1:{}", free_port());
    // Killed on drop: a failing assertion must not leave it running.
    let _prom = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={prom_addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package; cargo xtask test installs it)"),
    );

    let leak = GoLeak::start("t61", "1s", "100ms");
    let alert = poll("SockprobeCloseWaitGrowing firing", Duration::from_secs(90), || {
        let v = api(&prom_addr, "/api/v1/alerts")?;
        v["data"]["alerts"]
            .as_array()?
            .iter()
            .find(|a| {
                a["labels"]["alertname"] == "SockprobeCloseWaitGrowing"
                    && a["labels"]["comm"] == "t61-leaky"
                    && a["state"] == "firing"
            })
            .cloned()
    });
    assert_eq!(alert["labels"]["severity"], "warning", "{alert}");
    // What Prometheus stores is what the kernel has: with the client frozen
    // (and the server's idle timeout past), `ss`'s count must reach it.
    leak.freeze_client();
    std::thread::sleep(Duration::from_millis(1500));
    let expected = ss_close_wait(leak.client_pid()) as f64;
    assert!(expected > 2.0, "the client should have leaked, ss shows {expected}");
    let query = encode("sum(sockprobe_tcp_sockets{comm=\"t61-leaky\",state=\"close_wait\"})");
    poll(&format!("Prometheus to store ss's CLOSE_WAIT count {expected}"), Duration::from_secs(30), || {
        let v = api(&prom_addr, &format!("/api/v1/query?query={query}"))?;
        let stored: f64 = v["data"]["result"][0]["value"][1].as_str()?.parse().ok()?;
        (stored == expected).then_some(())
    });
    drop(leak);
    drop(_prom);
    std::fs::remove_dir_all(&dir).ok();
}
