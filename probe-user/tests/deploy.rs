//! The deployment files are checked by the tools that will consume them:
//! systemd, kustomize + the Kubernetes schemas, promtool, and the dashboard
//! against the metric names sockprobe exports.
mod support;

use std::{path::Path, process::Command, time::Duration};

use support::*;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e} (cargo xtask test installs the tool)"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("sockprobe-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

// The tools these need are not on every machine: plain `cargo test` reports
// them as ignored, `cargo xtask test` installs the tools and includes them.
#[test]
#[ignore = "needs systemd-analyze: `cargo xtask test` installs it and runs this"]
fn systemd_unit_verifies_and_is_hardened() {
    let unit = std::fs::read_to_string(format!("{ROOT}/deploy/systemd/sockprobe.service")).unwrap();
    let dir = temp_dir("unit");
    // verify wants the binary to exist: point it at the one just built.
    let path = dir.join("sockprobe.service");
    std::fs::write(&path, unit.replace("/usr/bin/sockprobe", *SOCKPROBE)).unwrap();
    // and the man page its Documentation= names: the one the package ships.
    std::fs::create_dir_all(dir.join("man/man1")).unwrap();
    let man = Command::new(*SOCKPROBE).args(["generate", "man"]).output().unwrap();
    assert!(man.status.success() && man.stdout.starts_with(b".ie"), "sockprobe generate man");
    std::fs::write(dir.join("man/man1/sockprobe.1"), man.stdout).unwrap();
    let out = run(Command::new("systemd-analyze").arg("verify").arg(&path).env("MANPATH", dir.join("man")));
    assert!(!out.contains("sockprobe.service:"), "systemd-analyze verify complains:\n{out}");
    let security = run(Command::new("systemd-analyze").args(["security", "--offline=yes"]).arg(&path));
    let score: f64 = security
        .lines()
        .find_map(|l| l.split("sockprobe.service: ").nth(1))
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in:\n{security}"));
    // docs/operations.md reports this score; keep the unit at least "OK".
    assert!(score <= 1.9, "exposure {score} regressed:\n{security}");
    for needed in [
        "CapabilityBoundingSet=CAP_BPF CAP_PERFMON\n",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "Restart=on-failure",
        "MemoryMax=256M",
        "TasksMax=64",
        "LimitNOFILE=4096",
        "ProtectProc=invisible",
        "RuntimeDirectory=sockprobe",
    ] {
        assert!(unit.contains(needed), "{needed} missing from the unit");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
#[ignore = "needs kubectl and kubernetes-validate: `cargo xtask test` installs them and runs this"]
fn kubernetes_base_renders_and_validates() {
    let rendered = run(Command::new("kubectl").args(["kustomize", &format!("{ROOT}/deploy/kubernetes")]));
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
        "Service",
        "PodMonitor",
        "ConfigMap",
        "NetworkPolicy",
    ] {
        assert!(rendered.contains(&format!("kind: {kind}\n")), "{kind} missing from the rendered base");
    }
    assert!(rendered.contains("hostPID: true") && rendered.contains("privileged: false"));
    assert!(
        rendered.contains("add:\n            - BPF\n            - PERFMON\n") && !rendered.contains("SYS_RESOURCE"),
        "capabilities other than docs/operations.md's:\n{rendered}"
    );
    let dir = temp_dir("k8s");
    let file = dir.join("rendered.yaml");
    std::fs::write(&file, &rendered).unwrap();
    let out = run(Command::new("kubernetes-validate").arg("--strict").arg(&file));
    assert!(!out.contains("ERROR"), "{out}");
    // RBAC: only what identity/k8s watches (pods, Services, EndpointSlices), list and watch.
    let rules = "rules:\n- apiGroups:\n  - \"\"\n  resources:\n  - pods\n  - services\n  verbs:\n  - list\n  - watch\n\
                 - apiGroups:\n  - discovery.k8s.io\n  resources:\n  - endpointslices\n  verbs:\n  - list\n  - watch\n---";
    assert!(rendered.contains(rules), "RBAC other than list+watch of pods, services, endpointslices:\n{rendered}");
    // The overlay with TLS and basic auth renders and validates too.
    let secure = run(Command::new("kubectl").args(["kustomize", &format!("{ROOT}/deploy/kubernetes-web-config")]));
    assert!(
        secure.contains("--web.config.file=/etc/sockprobe/web/web.yml")
            && secure.contains("secretName: sockprobe-web-config")
    );
    std::fs::write(&file, &secure).unwrap();
    let out = run(Command::new("kubernetes-validate").arg("--strict").arg(&file));
    assert!(!out.contains("ERROR"), "{out}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
#[ignore = "needs promtool: `cargo xtask test` installs it and runs this"]
fn alert_rules_pass_their_unit_tests() {
    let dir = format!("{ROOT}/deploy/prometheus");
    run(Command::new("promtool").args(["check", "rules", "alerts.yml"]).current_dir(&dir));
    let out = run(Command::new("promtool").args(["test", "rules", "alerts_test.yml"]).current_dir(&dir));
    assert!(out.contains("SUCCESS"), "{out}");
}

/// Every metric the dashboard and the alerts query is one the daemon serves,
/// and every family it serves is documented in docs/metrics.md. The daemon
/// is driven until each family has a sample: unread closes (opens, closes,
/// resets both ways, exchanges), and leaked CLOSE_WAIT sockets.
#[test]
#[ignore = "needs root: `sudo cargo xtask test` runs it"]
fn privileged_dashboard_and_alerts_use_only_served_metrics() {
    require_root();
    let daemon = Daemon::start(&["--metrics.max-endpoints", "1"]);
    let server = Server::start(&[], "t81-server", &["--response", "5000", "--connections", "4"]);
    let server_addr = server.addr.clone();
    let other = Server::start(&[], "t81-other", &["--response", "10", "--connections", "1"]);
    client(
        &[],
        "t81-client",
        &["--connect", &server_addr, "--response", "5000", "--read", "100", "--connections", "4"],
    );
    // A second endpoint for the same client: folded, so the overflow counter appears.
    client(&[], "t81-client", &["--connect", &other.addr, "--response", "10", "--connections", "1"]);
    let leak = GoLeak::start("t81", "1s", "100ms");
    wait_until("leaked CLOSE_WAIT sockets", Duration::from_secs(15), || ss_close_wait(leak.client_pid()) >= 2);
    let mut served = std::collections::BTreeSet::new();
    // The unread closes above stand as a finding too.
    let wanted = [
        "sockprobe_tcp_unread_closes_total",
        "sockprobe_tcp_close_wait_oldest_seconds",
        "sockprobe_series_overflow_total",
        "sockprobe_finding",
    ];
    wait_until("every family to have a sample", Duration::from_secs(20), || {
        let text = daemon.scrape();
        served = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ")?.split_whitespace().next())
            .map(String::from)
            .collect();
        wanted.iter().all(|w| served.contains(*w))
    });
    let docs = std::fs::read_to_string(format!("{ROOT}/docs/metrics.md")).unwrap();
    for family in &served {
        assert!(
            docs.contains(&format!("`{family}`")),
            "docs/metrics.md does not document {family}, which the daemon serves"
        );
    }
    for file in ["deploy/grafana/sockprobe.json", "deploy/prometheus/alerts.yml"] {
        let text = std::fs::read_to_string(Path::new(ROOT).join(file)).unwrap();
        if file.ends_with(".json") {
            serde_json::from_str::<serde_json::Value>(&text).expect("dashboard is JSON");
        }
        let mut rest = text.as_str();
        while let Some(i) = rest.find("sockprobe_") {
            let name: String = rest[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            rest = &rest[i + name.len()..];
            let family = ["_sum", "_count", "_bucket"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(&name);
            assert!(served.contains(family), "{file} uses {name}, which the daemon does not serve: {served:?}");
        }
    }
}
