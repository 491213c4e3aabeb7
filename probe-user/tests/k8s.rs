//! Kubernetes names against a stand-in API server that lists and watches
//! recorded objects (tests/support/kube_api.rs; no real API server is
//! installable here, see docs/install.md), and real clients in network
//! namespaces whose addresses are the recordings' pod IPs.
mod support;

use std::{net::IpAddr, time::Duration};

use serde_json::json;
use sockprobe::identity::k8s::{ApiConfig, EndpointNames, PodNames, keep_watching};
use support::{
    kube_api::{KubeApi, fixture, set},
    *,
};

fn api(url: &str, token: Option<&str>) -> ApiConfig {
    ApiConfig {
        url: url.into(),
        node: "node-1".into(),
        token: token.map(String::from),
        token_file: None,
        ca_file: None,
    }
}

/// Runs the daemon's watch loop on a thread of its own.
fn watching(api: ApiConfig) -> (PodNames, EndpointNames) {
    let (pods, names) = (PodNames::default(), EndpointNames::default());
    let (p, n) = (pods.clone(), names.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(keep_watching(api, p, Some(n)));
    });
    (pods, names)
}

fn name_of(names: &EndpointNames, ip: &str) -> Option<String> {
    names.name(&ip.parse::<IpAddr>().unwrap()).map(|n| n.to_string())
}

/// The `web` Service (cluster IP 10.96.0.10, pod 10.244.1.5 on node-1) and
/// a pod of no Service, `jobs/batch` at 10.244.1.9.
fn shop(api: &KubeApi) {
    api.apply(fixture("service"));
    api.apply(fixture("endpointslice"));
    api.apply(fixture("pod"));
    api.apply(batch_pod());
}

fn batch_pod() -> Value {
    set(
        fixture("pod"),
        &[
            ("/metadata/name", json!("batch")),
            ("/metadata/namespace", json!("jobs")),
            ("/metadata/uid", json!("11111111-2222-4333-8444-555555555555")),
            ("/status/podIP", json!("10.244.1.9")),
            ("/status/podIPs", json!([{"ip": "10.244.1.9"}])),
            (
                "/status/containerStatuses/0/containerID",
                json!("containerd://abcdefabcdef0000000000000000000000000000000000000000000000000000"),
            ),
        ],
    )
}

#[test]
fn watched_objects_name_addresses_and_containers_and_follow_every_change() {
    let stand_in = KubeApi::start();
    shop(&stand_in);
    // A pod of another node: the node-scoped watch never sees it.
    stand_in.apply(set(
        batch_pod(),
        &[
            ("/metadata/name", json!("elsewhere")),
            ("/spec/nodeName", json!("node-2")),
            ("/status/podIPs", json!([{"ip": "10.244.2.4"}])),
        ],
    ));
    let (pods, names) = watching(api(&stand_in.url, Some("t0ken")));
    wait_until("names from the first list", Duration::from_secs(10), || names.len() == 4);
    assert_eq!(name_of(&names, "10.96.0.10").as_deref(), Some("svc/shop/web"), "the cluster IP");
    assert_eq!(name_of(&names, "10.244.1.5").as_deref(), Some("svc/shop/web"), "its endpoint");
    assert_eq!(name_of(&names, "10.244.1.9").as_deref(), Some("pod/jobs/batch"), "a pod of no Service");
    assert_eq!(name_of(&names, "192.168.50.10").as_deref(), Some("node/node-1"), "the node's address");
    assert_eq!(name_of(&names, "10.244.2.4"), None, "another node's pod");
    assert_eq!(
        pods.resolve("/k8s/pod-0f6e5d4c-3b2a-4190-8f7e-6d5c4b3a2910/7a1b2c3d4e5f"),
        "/k8s/shop/web-6c9f7d8b4-q4r7t/web"
    );
    let requests = stand_in.requests();
    assert!(
        requests.iter().any(|r| r.starts_with("/api/v1/pods?") && r.contains("fieldSelector=spec.nodeName%3Dnode-1")),
        "{requests:?}"
    );
    for path in ["/api/v1/pods?", "/api/v1/services?", "/apis/discovery.k8s.io/v1/endpointslices?"] {
        let watch = requests.iter().find(|r| r.starts_with(path) && r.contains("watch=true"));
        assert!(
            watch.is_some_and(|w| w.contains("allowWatchBookmarks=true")),
            "a watch with bookmarks of {path}: {requests:?}"
        );
    }

    // Deleted: the name goes with the next watch event.
    let g = names.generation();
    stand_in.delete("Pod", "jobs", "batch");
    wait_until("the deleted pod's name to go", Duration::from_secs(5), || name_of(&names, "10.244.1.9").is_none());
    assert!(names.generation() > g);

    // Compaction: the watch resumes from a resourceVersion that is gone
    // (410), the watcher lists again and sees what changed meanwhile.
    stand_in.compact();
    stand_in.apply(set(
        fixture("service"),
        &[
            ("/metadata/name", json!("api")),
            ("/spec/clusterIP", json!("10.96.0.20")),
            ("/spec/clusterIPs", json!(["10.96.0.20"])),
        ],
    ));
    wait_until("a Service added after a 410", Duration::from_secs(15), || name_of(&names, "10.96.0.20").is_some());

    // The server restored from a backup: its resourceVersion goes back.
    stand_in.rewind(500);
    stand_in.delete("Service", "shop", "api");
    wait_until("a Service deleted after the resourceVersion went back", Duration::from_secs(15), || {
        name_of(&names, "10.96.0.20").is_none()
    });
    assert_eq!(name_of(&names, "10.96.0.10").as_deref(), Some("svc/shop/web"));
    let lists =
        stand_in.requests().iter().filter(|r| r.starts_with("/api/v1/services?") && !r.contains("watch=")).count();
    assert!(lists >= 3, "one list at start, one after each 410: {lists}");

    // Pods come and go: the mapping follows, it does not grow with history.
    let baseline = (names.len(), pods.count());
    for round in 0..3 {
        for i in 0..300 {
            stand_in.apply(set(
                batch_pod(),
                &[
                    ("/metadata/name", json!(format!("job-{round}-{i}"))),
                    ("/metadata/uid", json!(format!("00000000-0000-4000-8000-{round:04}{i:08}"))),
                    ("/status/podIP", json!(format!("10.244.{}.{}", 100 + i / 250, 1 + i % 250))),
                    ("/status/podIPs", json!([{"ip": format!("10.244.{}.{}", 100 + i / 250, 1 + i % 250)}])),
                ],
            ));
        }
        wait_until_ok("300 pods named", Duration::from_secs(10), || {
            let n = (names.len(), pods.count());
            if n.0 == baseline.0 + 300 { Ok(()) } else { Err(format!("{n:?} from {baseline:?}")) }
        });
        for i in 0..300 {
            stand_in.delete("Pod", "jobs", &format!("job-{round}-{i}"));
        }
        wait_until("back to the baseline", Duration::from_secs(10), || (names.len(), pods.count()) == baseline);
    }
}

#[test]
fn pods_of_this_node_name_their_containers() {
    let stand_in = KubeApi::start();
    let recorded: Value = serde_json::from_str(include_str!("fixtures/pods-node-1.json")).unwrap();
    for mut pod in recorded["items"].as_array().unwrap().clone() {
        pod["kind"] = json!("Pod");
        pod["apiVersion"] = json!("v1");
        stand_in.apply(pod);
    }
    let (pods, _) = watching(api(&stand_in.url, None));
    wait_until("three containers named", Duration::from_secs(10), || pods.count() == 3);
    let uid = "1b2c3d4e-0000-1111-2222-333344445555";
    assert_eq!(pods.resolve(&format!("/k8s/pod-{uid}/0123456789ab")), "/k8s/shop/checkout-7d9f8c6b5-x2kqp/api");
    assert_eq!(pods.resolve(&format!("/k8s/pod-{uid}/fedcba987654")), "/k8s/shop/checkout-7d9f8c6b5-x2kqp/envoy");
    assert_eq!(pods.resolve(&format!("/k8s/pod-{uid}/aaaabbbbcccc")), "/k8s/shop/checkout-7d9f8c6b5-x2kqp/migrate");
    // Unknown containers and non-Kubernetes labels keep their names.
    assert_eq!(pods.resolve(&format!("/k8s/pod-{uid}/999999999999")), format!("/k8s/pod-{uid}/999999999999"));
    assert_eq!(pods.resolve("/system.slice/nginx.service"), "/system.slice/nginx.service");
}

#[test]
fn unreachable_api_keeps_the_cgroup_names() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (pods, names) = watching(api(&format!("http://{closed}"), None));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!((pods.count(), names.len()), (0, 0));
    let label = "/k8s/pod-1b2c3d4e-0000-1111-2222-333344445555/0123456789ab";
    assert_eq!(pods.resolve(label), label, "no API: the cgroup-derived form");
}

/// kube-proxy's iptables mode, as it writes a ClusterIP Service with one
/// endpoint: OUTPUT → KUBE-SERVICES → KUBE-SVC-* → KUBE-SEP-* → DNAT.
fn kube_proxy_rules(ns: &NetNs, cluster_ip: &str, port: u16, endpoint: &str) {
    let ipt = |args: &[&str]| {
        let mut argv = vec!["ip", "netns", "exec", &ns.name, "iptables", "-w", "-t", "nat"];
        argv.extend_from_slice(args);
        run(&argv);
    };
    ipt(&["-N", "KUBE-SERVICES"]);
    ipt(&["-N", "KUBE-SVC-TCOU7JCQXEZGVUNU"]);
    ipt(&["-N", "KUBE-SEP-IT2ZTR26TO4XFPTO"]);
    ipt(&["-A", "OUTPUT", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"]);
    let port = port.to_string();
    ipt(&[
        "-A",
        "KUBE-SERVICES",
        "-d",
        &format!("{cluster_ip}/32"),
        "-p",
        "tcp",
        "-m",
        "comment",
        "--comment",
        "shop/web:http cluster IP",
        "-m",
        "tcp",
        "--dport",
        &port,
        "-j",
        "KUBE-SVC-TCOU7JCQXEZGVUNU",
    ]);
    ipt(&[
        "-A",
        "KUBE-SVC-TCOU7JCQXEZGVUNU",
        "-m",
        "comment",
        "--comment",
        "shop/web:http -> pod",
        "-j",
        "KUBE-SEP-IT2ZTR26TO4XFPTO",
    ]);
    ipt(&[
        "-A",
        "KUBE-SEP-IT2ZTR26TO4XFPTO",
        "-p",
        "tcp",
        "-m",
        "comment",
        "--comment",
        "shop/web:http",
        "-m",
        "tcp",
        "-j",
        "DNAT",
        "--to-destination",
        endpoint,
    ]);
}

/// Two namespaces joined by a veth pair: a client pod at 10.244.2.7 and a
/// server "node" holding the recordings' pod IPs 10.244.1.5 (the `web`
/// Service's endpoint) and 10.244.1.9 (`jobs/batch`, in no Service).
fn pod_network() -> (NetNs, NetNs) {
    let (client, server) = (NetNs::new("k8s-cli"), NetNs::new("k8s-srv"));
    let (a, b) = (format!("kc{}", std::process::id() % 100_000), format!("ks{}", std::process::id() % 100_000));
    run(&["ip", "link", "add", &a, "netns", &client.name, "type", "veth", "peer", "name", &b, "netns", &server.name]);
    run(&["ip", "-n", &client.name, "addr", "add", "10.244.2.7/16", "dev", &a]);
    run(&["ip", "-n", &client.name, "link", "set", &a, "up"]);
    // The Service range: routed to the link, DNAT picks the pod after.
    run(&["ip", "-n", &client.name, "route", "add", "10.96.0.0/12", "dev", &a]);
    run(&["ip", "-n", &server.name, "addr", "add", "10.244.1.5/16", "dev", &b]);
    run(&["ip", "-n", &server.name, "addr", "add", "10.244.1.9/16", "dev", &b]);
    run(&["ip", "-n", &server.name, "link", "set", &b, "up"]);
    (client, server)
}

/// The seed's Go client closing bodies unread, through a Service's
/// cluster IP: the findings name `svc/shop/web:80`, counted as the client
/// namespace's TCPAbortOnClose; a pod of no Service is `pod/jobs/batch`,
/// and once the API deletes it, new connections to it are `ip:port` again.
#[test]
#[ignore = "needs root: `sudo cargo xtask test` runs it"]
fn privileged_go_unread_closes_name_the_service_they_reach_through_its_cluster_ip() {
    require_root();
    let stand_in = KubeApi::start();
    shop(&stand_in);
    let (client, server) = pod_network();
    kube_proxy_rules(&client, "10.96.0.10", 80, "10.244.1.5:8080");
    let daemon = Daemon::start(&["--kubernetes.api-url", &stand_in.url, "--kubernetes.node-name", "node-1"]);
    let sp = server.prefix();
    let (_web, _) = spawn_listening(&sp, &go_program("k8s-web"), &["-mode", "server", "-listen", "10.244.1.5:8080"]);
    let (_batch, _) =
        spawn_listening(&sp, &go_program("k8s-batch"), &["-mode", "server", "-listen", "10.244.1.9:9090"]);
    wait_until("the daemon to name the recorded addresses", Duration::from_secs(20), || {
        metric(&daemon.scrape(), "sockprobe_kubernetes_named_addresses", &[]) == 4.0
    });

    let before = client.tcpext("TCPAbortOnClose");
    run_in(&client.prefix(), &go_program("k8s-unread"), &["-mode", "unread", "-url", "http://10.96.0.10/", "-n", "30"]);
    let aborted = (client.tcpext("TCPAbortOnClose") - before) as f64;
    assert!(aborted > 0.0, "the Go client should have caused aborts");
    let web = [("comm", "k8s-unread"), ("endpoint", "svc/shop/web:80")];
    let mut text = String::new();
    wait_until("unread closes on svc/shop/web:80", Duration::from_secs(10), || {
        text = daemon.scrape();
        metric(&text, "sockprobe_tcp_unread_closes_total", &web) >= aborted
    });
    assert_eq!(metric(&text, "sockprobe_tcp_unread_closes_total", &web), aborted, "vs TCPAbortOnClose\n{text}");
    let raw = text
        .lines()
        .filter(|l| l.contains("comm=\"k8s-unread\"") && (l.contains("10.96.0.10") || l.contains("10.244.1.5")));
    assert_eq!(raw.count(), 0, "no raw address left on the client's series\n{text}");
    let (status, body) = daemon.api_get("/api/v1/findings").expect("GET /api/v1/findings");
    assert_eq!(status, 200, "{body}");
    let findings: Value = serde_json::from_str(&body).unwrap();
    assert!(
        findings["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["finding"] == "unread_close" && f["endpoint"] == "svc/shop/web:80"),
        "{findings:#}"
    );

    let batch = [("comm", "k8s-batch-cli"), ("endpoint", "pod/jobs/batch:9090")];
    run_in(
        &client.prefix(),
        &go_program("k8s-batch-cli"),
        &["-mode", "drain", "-url", "http://10.244.1.9:9090/", "-n", "3"],
    );
    wait_until("a pod of no Service by its name", Duration::from_secs(10), || {
        metric(&daemon.scrape(), "sockprobe_tcp_connections_opened_total", &batch) == 1.0
    });

    stand_in.delete("Pod", "jobs", "batch");
    wait_until("the deleted pod's name to go", Duration::from_secs(10), || {
        metric(&daemon.scrape(), "sockprobe_kubernetes_named_addresses", &[]) == 3.0
    });
    let raw = [("comm", "k8s-batch-cli"), ("endpoint", "10.244.1.9:9090")];
    run_in(
        &client.prefix(),
        &go_program("k8s-batch-cli"),
        &["-mode", "drain", "-url", "http://10.244.1.9:9090/", "-n", "3"],
    );
    wait_until("the deleted pod's address raw again", Duration::from_secs(10), || {
        metric(&daemon.scrape(), "sockprobe_tcp_connections_opened_total", &raw) == 1.0
    });
    assert_eq!(metric(&daemon.scrape(), "sockprobe_tcp_connections_opened_total", &batch), 1.0);
}

/// Scale: 10 000 Services and 100 000 endpoints (1 000 EndpointSlices of
/// 100) in the stand-in: every address named, and what it costs the daemon
/// in memory and time (docs/benchmarks.md, "Kubernetes names").
#[test]
#[ignore = "needs root: `sudo cargo xtask test` runs it"]
fn privileged_ten_thousand_services_and_a_hundred_thousand_endpoints() {
    require_root();
    let stand_in = KubeApi::start();
    let (services, slices, per_slice) = (10_000u32, 1_000u32, 100u32);
    for i in 0..services {
        let ip = format!("10.96.{}.{}", i / 250, 1 + i % 250);
        stand_in.apply(set(
            fixture("service"),
            &[
                ("/metadata/name", json!(format!("svc-{i}"))),
                ("/spec/clusterIP", json!(ip)),
                ("/spec/clusterIPs", json!([ip])),
            ],
        ));
    }
    let template = fixture("endpointslice")["endpoints"][0].clone();
    for s in 0..slices {
        let endpoints: Vec<Value> = (0..per_slice)
            .map(|e| {
                let n = s * per_slice + e;
                let mut ep = template.clone();
                ep["addresses"] = json!([format!("10.{}.{}.{}", 128 + n / 62_500, (n / 250) % 250, 1 + n % 250)]);
                ep
            })
            .collect();
        stand_in.apply(set(
            fixture("endpointslice"),
            &[
                ("/metadata/name", json!(format!("svc-{s}-x1"))),
                ("/metadata/labels/kubernetes.io~1service-name", json!(format!("svc-{s}"))),
                ("/endpoints", json!(endpoints)),
            ],
        ));
    }
    let expected = f64::from(services + slices * per_slice);
    let daemon = Daemon::start(&["--kubernetes.api-url", &stand_in.url, "--kubernetes.node-name", "node-1"]);
    let started = std::time::Instant::now();
    let (before, _) = rss_kib(daemon.child.id());
    wait_until("every address named", Duration::from_secs(120), || {
        metric(&daemon.scrape(), "sockprobe_kubernetes_named_addresses", &[]) == expected
    });
    let took = started.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let (after, peak) = rss_kib(daemon.child.id());
    let growth = after.saturating_sub(before);
    eprintln!(
        "{services} Services, {} endpoints: named in {:.1} s; RSS {before} -> {after} KiB (+{growth} KiB, \
         {:.0} bytes an address; peak {peak} KiB)",
        slices * per_slice,
        took.as_secs_f64(),
        growth as f64 * 1024.0 / expected
    );
    let lists = stand_in
        .requests()
        .iter()
        .filter(|r| {
            r.starts_with("/apis/discovery.k8s.io/v1/endpointslices?")
                && r.contains("limit=100")
                && !r.contains("watch=")
        })
        .count();
    assert!(lists >= 10, "listed in pages of at most 100: {lists} requests");
    assert!(growth < 128 * 1024, "{growth} KiB for {expected} addresses: more than the DaemonSet can spare");
}
