//! Pod identity against recorded Kubernetes API responses served locally
//! (not tested against a live cluster here; see docs/install.md).
use std::{
    io::{Read, Write},
    net::TcpListener,
    sync::mpsc,
};

use sockprobe::identity::k8s::{ApiConfig, PodNames};

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

fn api(url: String, token: Option<&str>) -> ApiConfig {
    ApiConfig { url, node: "node-1".into(), token: token.map(String::from), token_file: None, ca_file: None }
}

/// Serves `body` (chunked, as the API server does) to one request; sends
/// the request line back.
fn serve_once(body: &'static str) -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        let req = String::from_utf8_lossy(&buf[..n]).to_string();
        tx.send(req).unwrap();
        let half = body.len() / 2;
        let (a, b) = body.split_at(half);
        write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n", a.len(), b.len()).unwrap();
    });
    (url, rx)
}

#[test]
fn pods_of_this_node_name_their_containers() {
    let (url, requests) = serve_once(include_str!("fixtures/pods-node-1.json"));
    let api = api(url, Some("t0ken"));
    let pods = PodNames::default();
    assert_eq!(block_on(pods.refresh(&api)).expect("refresh from the recorded API"), 3);
    let req = requests.recv().unwrap().to_ascii_lowercase();
    assert!(
        req.starts_with("get /api/v1/pods?fieldselector=spec.nodename%3dnode-1&resourceversion=0 http/1.1"),
        "{req}"
    );
    assert!(req.contains("authorization: bearer t0ken"), "{req}");
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
    let (url, _requests) = serve_once(include_str!("fixtures/pods-node-1.json"));
    let pods = PodNames::default();
    block_on(pods.refresh(&api(url, None))).unwrap();
    // The API goes away: refresh fails, the names learned so far stay.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let err = block_on(pods.refresh(&api(format!("http://{closed}"), None))).unwrap_err();
    assert!(err.to_string().contains("Kubernetes API"), "{err}");
    assert_eq!(pods.count(), 3);
    let fresh = PodNames::default();
    let label = "/k8s/pod-1b2c3d4e-0000-1111-2222-333344445555/0123456789ab";
    assert_eq!(fresh.resolve(label), label, "no API: the cgroup-derived form");
}
