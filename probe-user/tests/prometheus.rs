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

/// A real Prometheus scraping `targets` (quoted, comma-separated) every
/// second, its data in `dir`; `extra` (YAML lines) goes into its config
/// after the global scrape interval. Killed on drop: a failing assertion must not
/// leave it running.
fn start_prometheus(dir: &std::path::Path, targets: &str, extra: &str) -> (Killed, String) {
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n{extra}scrape_configs:\n  - job_name: sockprobe\n    static_configs:\n      - targets: [{targets}]\n"
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let prom = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package; cargo xtask test installs it)"),
    );
    (prom, addr)
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
    let targets = format!("'{}'", daemon.addr);
    let (_prom, prom_addr) = start_prometheus(&dir, &targets, "  evaluation_interval: 1s\nrule_files: [alerts.yml]\n");

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

/// The cluster report (issue 27): two daemons (as two nodes) named by a
/// stand-in Kubernetes API, scraped by a real Prometheus; a Go client of
/// the `shop/web` Deployment's pod (its cgroup as the kubelet makes it)
/// closes bodies unread. `doctor --prometheus` names the same findings the
/// two daemons' /api/v1/findings do, each on its node, with the workload,
/// the language and the language's advice.
#[test]
#[ignore = "needs root: `sudo cargo xtask test` runs it"]
fn privileged_doctor_prometheus_reports_every_nodes_findings_by_workload() {
    use support::kube_api::{KubeApi, fixture};
    require_root();
    let stand_in = KubeApi::start();
    for name in ["service", "endpointslice", "pod"] {
        stand_in.apply(fixture(name));
    }
    // The pod's container, where the kubelet (cgroupfs driver) puts it.
    let root = std::path::Path::new("/sys/fs/cgroup/unified/kubepods");
    let cgroup = root.join(
        "besteffort/pod0f6e5d4c-3b2a-4190-8f7e-6d5c4b3a2910/\
         7a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9",
    );
    let _cleanup = RemoveCgroups(root.to_path_buf(), cgroup.clone());
    std::fs::create_dir_all(&cgroup).expect("a cgroup v2 directory (kernel-notes section 10)");
    let k8s = ["--kubernetes.api-url", &stand_in.url, "--kubernetes.node-name", "node-1"];
    let nodes = [Daemon::start(&k8s), Daemon::start(&k8s)];
    for d in &nodes {
        wait_until("the daemon to name the recorded objects", Duration::from_secs(20), || {
            metric(&d.scrape(), "sockprobe_kubernetes_named_addresses", &[]) == 3.0
        });
    }
    let dir = std::env::temp_dir().join(format!("sockprobe-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let targets = nodes.iter().map(|d| format!("'{}'", d.addr)).collect::<Vec<_>>().join(", ");
    let (_prom, prom_addr) = start_prometheus(&dir, &targets, "");

    let ns = NetNs::new("cluster");
    let (_server, addr) = spawn_listening(&ns.prefix(), &go_program("cl-server"), &["-mode", "server"]);
    // Into the pod's cgroup first, then the namespace; it stays, so its
    // language can be read.
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec ip netns exec {} \"$0\" -mode unread -url http://{addr}/ -n 30 -stay",
        cgroup.display(),
        ns.name
    );
    let _client = Killed(
        Command::new("sh").args(["-c", &script, &go_program("cl-unread")]).stdout(Stdio::null()).spawn().unwrap(),
    );
    let container = "/k8s/shop/web-6c9f7d8b4-q4r7t/web";
    let of_node = |d: &Daemon| -> Vec<(String, String, String, String)> {
        let (_, body) = d.api_get("/api/v1/findings").unwrap_or_default();
        let doc: Value = serde_json::from_str(&body).unwrap_or_default();
        let mut found: Vec<_> = doc["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["comm"] == "cl-unread")
            .map(|f| {
                let s = |k: &str| f[k].as_str().unwrap_or_default().to_string();
                (d.addr.clone(), s("finding"), s("container"), s("endpoint"))
            })
            .collect();
        found.sort();
        found
    };
    wait_until("both nodes to find the unread closes", Duration::from_secs(30), || {
        nodes.iter().all(|d| of_node(d).iter().any(|f| f.1 == "unread_close" && f.2 == container))
    });
    let query = encode(
        "count(sockprobe_finding{comm=\"cl-unread\"}) and count(sockprobe_process_info{comm=\"cl-unread\",language=\"go\"}) == 2",
    );
    poll("Prometheus to have both nodes' findings and languages", Duration::from_secs(30), || {
        let v = api(&prom_addr, &format!("/api/v1/query?query={query}"))?;
        (!v["data"]["result"].as_array()?.is_empty()).then_some(())
    });
    let out = Command::new(*SOCKPROBE)
        .args(["doctor", "--prometheus", &format!("http://{prom_addr}"), "--window", "1m", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ours: Vec<&Value> =
        report["findings"].as_array().unwrap().iter().filter(|f| f["comm"] == "cl-unread").collect();
    let mut cluster: Vec<(String, String, String, String)> = ours
        .iter()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_string();
            (s("node"), s("finding"), s("container"), s("endpoint"))
        })
        .collect();
    cluster.sort();
    let mut by_nodes: Vec<_> = nodes.iter().flat_map(of_node).collect();
    by_nodes.sort();
    assert_eq!(cluster, by_nodes, "the cluster report vs each node's own findings\n{report:#}");
    assert_eq!(report["nodes"], 2, "{report:#}");
    for f in ours {
        assert_eq!(
            (f["namespace"].as_str(), f["workload_kind"].as_str(), f["workload"].as_str()),
            (Some("shop"), Some("Deployment"), Some("web")),
            "{f:#}"
        );
        assert_eq!(f["language"], "go", "{f:#}");
        if f["finding"] == "unread_close" {
            assert!(f["evidence"]["unread_closes"].as_f64().unwrap_or(0.0) > 0.0, "{f:#}");
            assert!(f["advice"].as_str().unwrap_or_default().contains("io.Copy"), "Go's advice: {f:#}");
        }
    }
    let text = Command::new(*SOCKPROBE)
        .args(["doctor", "--prometheus", &format!("http://{prom_addr}"), "--window", "1m"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("shop Deployment web\n"), "grouped by namespace and workload:\n{text}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Removes the test's cgroup directories, leaf first.
struct RemoveCgroups(std::path::PathBuf, std::path::PathBuf);

impl Drop for RemoveCgroups {
    fn drop(&mut self) {
        let mut dir = Some(self.1.as_path());
        while let Some(d) = dir.filter(|d| d.starts_with(&self.0)) {
            let _ = std::fs::remove_dir(d);
            dir = d.parent();
        }
    }
}
