//! The image `cargo xtask image` builds, run from the DaemonSet's own pod
//! template (`kubectl kustomize deploy/kubernetes`) by a real runtime:
//! podman with runc, as kernel-notes section 9 says (no network, this
//! machine's ulimits). `podman kube play` (4.3 here) cannot run the pod:
//! it never sees its init container exit ("Exceeded conmon timeout", then
//! "failed to remove once init container"), with or without hostPID. So
//! the `podman run` flags are derived from the pod spec by code
//! ([`run_flags`]), as a kubelet derives its runtime's: user,
//! capabilities, no-new-privileges, read-only root, seccomp, hostPID,
//! mounts, env, resources; the init container runs to its end first.
mod support;

use std::{path::Path, process::Command, time::Duration};

use serde_yaml_ng::Value;
use support::{podman::Container, *};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
/// What `cargo xtask image` builds.
const LOCAL_IMAGE: &str = "localhost/sockprobe:latest";
/// Where the kubelet looks for Localhost seccomp profiles.
const SECCOMP_ROOT: &str = "/var/lib/kubelet/seccomp";

fn podman(args: &[&str]) -> (bool, String) {
    let out = Command::new("podman").args(args).output().unwrap_or_else(|e| panic!("podman {args:?}: {e}"));
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// The rendered base's documents.
fn rendered() -> Vec<Value> {
    let out = Command::new("kubectl")
        .args(["kustomize", &format!("{ROOT}/deploy/kubernetes")])
        .output()
        .expect("kubectl (cargo xtask test installs it)");
    assert!(out.status.success(), "kubectl kustomize: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("a YAML document"))
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter().find(|d| d["kind"].as_str() == Some(kind)).unwrap_or_else(|| panic!("no {kind} in the render"))
}

/// What a kubelet supplies on a node: its name, and where its seccomp
/// profiles and the pod's volumes live.
struct Node {
    name: String,
    seccomp_root: std::path::PathBuf,
    /// Each configMap and emptyDir volume's directory on the host.
    volumes_dir: std::path::PathBuf,
}

/// `podman run` flags for one container of the pod spec, in the spec's
/// terms; panics on a field it does not know how to honour, so nothing in
/// the manifest is silently left out.
fn run_flags(pod: &Value, c: &Value, configmaps: &[&Value], node: &Node) -> Vec<String> {
    let mut flags = vec![format!("--name=sockprobe-ship-{}", c["name"].as_str().unwrap())];
    if pod["hostPID"].as_bool() == Some(true) {
        flags.push("--pid=host".into());
    }
    let sc = &c["securityContext"];
    for key in sc.as_mapping().into_iter().flatten().map(|(k, _)| k.as_str().unwrap()) {
        match key {
            "privileged" => assert_eq!(sc["privileged"].as_bool(), Some(false), "privileged"),
            "allowPrivilegeEscalation" if sc[key].as_bool() == Some(false) => {
                flags.push("--security-opt=no-new-privileges".into())
            }
            "readOnlyRootFilesystem" if sc[key].as_bool() == Some(true) => flags.push("--read-only".into()),
            "runAsUser" => flags.push(format!("--user={}", sc[key].as_u64().unwrap())),
            "capabilities" => {
                for cap in sc[key]["drop"].as_sequence().into_iter().flatten() {
                    flags.push(format!("--cap-drop={}", cap.as_str().unwrap()));
                }
                for cap in sc[key]["add"].as_sequence().into_iter().flatten() {
                    flags.push(format!("--cap-add=CAP_{}", cap.as_str().unwrap()));
                }
            }
            "seccompProfile" => match sc[key]["type"].as_str() {
                Some("RuntimeDefault") => {}
                Some("Localhost") => flags.push(format!(
                    "--security-opt=seccomp={}",
                    node.seccomp_root.join(sc[key]["localhostProfile"].as_str().unwrap()).display()
                )),
                other => panic!("seccompProfile {other:?}"),
            },
            // This machine runs no AppArmor.
            "appArmorProfile" => assert_eq!(sc[key]["type"].as_str(), Some("Unconfined")),
            other => panic!("securityContext.{other} not derived"),
        }
    }
    let limits = &c["resources"]["limits"];
    if let Some(m) = limits["memory"].as_str() {
        let bytes: u64 = match m.strip_suffix("Mi") {
            Some(n) => n.parse::<u64>().unwrap() << 20,
            None => m.strip_suffix("Gi").expect("Mi or Gi").parse::<u64>().unwrap() << 30,
        };
        flags.push(format!("--memory={bytes}"));
    }
    let cpu = |v: &Value| -> f64 {
        match v {
            Value::String(s) if s.ends_with('m') => s.trim_end_matches('m').parse::<f64>().unwrap() / 1000.0,
            Value::String(s) => s.parse().unwrap(),
            Value::Number(n) => n.as_f64().unwrap(),
            other => panic!("cpu {other:?}"),
        }
    };
    if !limits["cpu"].is_null() {
        flags.push(format!("--cpus={}", cpu(&limits["cpu"])));
    }
    // The kubelet's cpu.shares for a request (milli-CPUs x 1024 / 1000).
    if !c["resources"]["requests"]["cpu"].is_null() {
        flags.push(format!("--cpu-shares={}", (cpu(&c["resources"]["requests"]["cpu"]) * 1024.0) as u64));
    }
    for e in c["env"].as_sequence().into_iter().flatten() {
        let value = match (e["value"].as_str(), e["valueFrom"]["fieldRef"]["fieldPath"].as_str()) {
            (Some(v), _) => v.to_string(),
            (None, Some("spec.nodeName")) => node.name.clone(),
            other => panic!("env {other:?}"),
        };
        flags.push(format!("--env={}={value}", e["name"].as_str().unwrap()));
    }
    for m in c["volumeMounts"].as_sequence().into_iter().flatten() {
        let name = m["name"].as_str().unwrap();
        let volume = pod["volumes"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|v| v["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no volume {name}"));
        let host = if let Some(path) = volume["hostPath"]["path"].as_str() {
            if volume["hostPath"]["type"].as_str() == Some("DirectoryOrCreate") {
                std::fs::create_dir_all(path).unwrap();
            }
            std::path::PathBuf::from(path)
        } else if let Some(cm) = volume["configMap"]["name"].as_str() {
            let dir = node.volumes_dir.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            let map = configmaps.iter().find(|m| m["metadata"]["name"].as_str() == Some(cm)).expect("its ConfigMap");
            for (file, text) in map["data"].as_mapping().into_iter().flatten() {
                std::fs::write(dir.join(file.as_str().unwrap()), text.as_str().unwrap()).unwrap();
            }
            dir
        } else if volume.get("emptyDir").is_some() {
            let dir = node.volumes_dir.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            dir
        } else {
            panic!("volume {volume:?} not derived");
        };
        let ro = if m["readOnly"].as_bool() == Some(true) { ":ro" } else { "" };
        flags.push(format!("--volume={}:{}{ro}", host.display(), m["mountPath"].as_str().unwrap()));
    }
    flags
}

fn run_container(c: &Value, flags: &[String], detach: bool) -> (bool, String) {
    let hard = {
        let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) };
        l.rlim_max.min(1 << 20)
    };
    let nofile = format!("--ulimit=nofile={hard}:{hard}");
    let mut args: Vec<&str> =
        vec!["--runtime", "runc", "run", "--network", "none", &nofile, "--ulimit=nproc=4096:4096"];
    args.push(if detach { "-d" } else { "--rm" });
    args.extend(flags.iter().map(String::as_str));
    args.push(c["image"].as_str().unwrap());
    args.extend(c["args"].as_sequence().into_iter().flatten().map(|a| a.as_str().unwrap()));
    podman(&args)
}

/// Removes the containers and what the test put on the host.
struct Played {
    dir: std::path::PathBuf,
}

impl Drop for Played {
    fn drop(&mut self) {
        podman(&["rm", "-f", "-t", "0", "sockprobe-ship-sockprobe"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn scrape_in(daemon: &Container, path: &str) -> (String, String) {
    let out = Command::new("nsenter")
        .args(["-t", &daemon.pid.to_string(), "-n", "curl", "-s", "--max-time", "5", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:9741{path}"))
        .output()
        .expect("nsenter, curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    (code.to_string(), body.to_string())
}

/// The DaemonSet's pod, run by podman from its own spec: the init container
/// writes the seccomp profile, the daemon runs under it with the manifest's
/// user, capabilities, read-only root, mounts and limits, and sees another
/// container's CLOSE_WAIT leak as `ss` inside it does and a third one's
/// unread closes as its TCPAbortOnClose.
#[test]
#[ignore = "needs root and the image: `sudo cargo xtask test` builds it and runs this"]
fn privileged_the_daemonsets_own_pod_spec_runs_under_podman() {
    require_root();
    let (exists, _) = podman(&["image", "exists", LOCAL_IMAGE]);
    assert!(exists, "no {LOCAL_IMAGE}: run `cargo xtask image` (`cargo xtask test` does it first)");
    let docs = rendered();
    let daemonset = of_kind(&docs, "DaemonSet");
    // The kubelet would pull the manifest's image; here it is the local one.
    for c in daemonset["spec"]["template"]["spec"]["containers"].as_sequence().into_iter().flatten() {
        let name = c["image"].as_str().expect("an image");
        assert!(podman(&["tag", LOCAL_IMAGE, name]).0, "podman tag {name}");
    }
    let dir = std::env::temp_dir().join(format!("sockprobe-ship-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _played = Played { dir: dir.clone() };
    let node = Node {
        name: std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string(),
        seccomp_root: SECCOMP_ROOT.into(),
        volumes_dir: dir.join("volumes"),
    };
    let pod = &daemonset["spec"]["template"]["spec"];
    let configmaps: Vec<&Value> = docs.iter().filter(|d| d["kind"].as_str() == Some("ConfigMap")).collect();
    // A profile left by an earlier run would hide an init container that
    // writes none.
    let _ = std::fs::remove_dir_all(Path::new(SECCOMP_ROOT).join("profiles"));
    for init in pod["initContainers"].as_sequence().into_iter().flatten() {
        let (ok, said) = run_container(init, &run_flags(pod, init, &configmaps, &node), false);
        assert!(ok, "init container {:?}: {said}", init["name"]);
    }
    let main = &pod["containers"][0];
    assert_eq!(pod["containers"].as_sequence().map(Vec::len), Some(1), "one container in the pod");
    let flags = run_flags(pod, main, &configmaps, &node);
    let (ok, said) = run_container(main, &flags, true);
    assert!(ok, "the daemon's container, from {flags:?}: {said}");
    let (_, pid) = podman(&["inspect", "-f", "{{.State.Pid}}", "sockprobe-ship-sockprobe"]);
    let daemon = Container { id: "sockprobe-ship-sockprobe".into(), pid: pid.trim().parse().expect("its pid") };
    let logs = || podman(&["logs", &daemon.id]).1;
    wait_until_ok("the daemon, from the pod spec, to be ready", Duration::from_secs(60), || {
        match scrape_in(&daemon, "/healthz") {
            (code, _) if code == "200" => Ok(()),
            (code, body) => Err(format!("/healthz {code} {body}\n{}", logs())),
        }
    });
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid)).unwrap();
    let field = |k: &str| status.lines().find_map(|l| l.strip_prefix(k)).map(str::trim).unwrap_or("").to_string();
    assert_eq!(field("CapEff:"), "000000c000000000", "the manifest's capabilities: BPF and PERFMON only");
    assert_eq!(field("Seccomp:"), "2", "a seccomp filter (the shipped profile: the default one refuses bpf)");
    assert_eq!(field("NoNewPrivs:"), "1", "allowPrivilegeEscalation: false");
    let (limit, _, _) = daemon.memory();
    assert_eq!(limit, 256 << 20, "the manifest's memory limit");
    let pidns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    assert_eq!(pidns(&daemon.pid.to_string()), pidns("self"), "hostPID: the host's pid namespace");
    let (ok, _) = podman(&["exec", &daemon.id, "/sockprobe", "--version"]);
    assert!(ok, "the image runs its binary");
    let mounts = std::fs::read_to_string(format!("/proc/{}/mounts", daemon.pid)).unwrap();
    let root_ro = mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&"/") && f.get(3).is_some_and(|o| o.split(',').any(|o| o == "ro"))
    });
    assert!(root_ro, "readOnlyRootFilesystem:\n{mounts}");

    // A leak in another container, unread closes in a third.
    let leaky = Container::run(
        "/bin/c8-srv -mode server -listen 127.0.0.1:8080 -body-bytes 100 -idle-timeout 200ms & \
         exec /bin/c8-leaky -mode leak -wait -url http://127.0.0.1:8080/ -n 5 -interval 50ms -stay",
        &[],
    );
    let leaked = || leaky.ss_count("close-wait", "c8-leaky") as f64;
    wait_until("the leak", Duration::from_secs(20), || leaked() == 5.0);
    let unread = Container::run("exec /bin/c8-srv -mode server -listen 127.0.0.1:8080 -body-bytes 65536", &[]);
    wait_until("the server to listen", Duration::from_secs(10), || unread.ss_count("listening", "c8-srv") == 1);
    let before = unread.tcpext("TCPAbortOnClose");
    unread.exec_wait(&["/bin/c8-unread", "-mode", "unread", "-url", "http://127.0.0.1:8080/", "-n", "15"]);
    let closed = (unread.tcpext("TCPAbortOnClose") - before) as f64;
    assert!(closed > 0.0, "the client should have closed bodies unread");
    let leak_labels = [("comm", "c8-leaky"), ("container", &leaky.label() as &str), ("state", "close_wait")];
    let unread_labels = [("comm", "c8-unread"), ("container", &unread.label() as &str)];
    wait_until_ok("the pod's daemon to count both as the kernel does", Duration::from_secs(30), || {
        let (_, text) = scrape_in(&daemon, "/metrics");
        let seen = (
            metric(&text, "sockprobe_tcp_sockets", &leak_labels),
            metric(&text, "sockprobe_tcp_unread_closes_total", &unread_labels),
        );
        match seen == (leaked(), closed) {
            true => Ok(()),
            false => Err(format!("leak, unread: {seen:?}; ss and TCPAbortOnClose: {:?}", (leaked(), closed))),
        }
    });
    let (_, text) = scrape_in(&daemon, "/metrics");
    assert_eq!(metric(&text, "sockprobe_events_lost_total", &[]), 0.0);
    let warnings: Vec<String> =
        logs().lines().filter(|l| l.contains(" WARN") || l.contains(" ERROR")).map(String::from).collect();
    assert!(warnings.is_empty(), "the daemon warned: {warnings:?}");
}
