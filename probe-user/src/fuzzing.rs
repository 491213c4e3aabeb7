//! Entry points for the fuzz targets (`fuzz/`, run by `cargo xtask fuzz`)
//! and for replaying their corpora in `cargo xtask test`
//! (`tests/fuzz_corpora.rs`): every parser that reads what another process,
//! a network client or the kernel hands over. Each must return, never panic.
use std::{net::IpAddr, sync::Arc};

use probe_common::TcpStates;

use crate::{
    aggregate::{Aggregator, Limits},
    cmd::trace::Record,
    config::Settings,
    decode::Decoder,
    export::{http, routes::Exporter, web_config::WebConfig},
    http_client,
    identity::{
        Clock,
        listing::{Builder, iterator, sock_diag},
    },
    kernel::{
        btf::Btf,
        layout::{self, ResetReasons},
        stream,
    },
};

/// Linux's numbering, for records the kernel did not make.
const STATES: TcpStates = TcpStates::LINUX;

/// The BTF reader and everything resolved from it.
pub fn btf(data: &[u8]) {
    if let Ok(btf) = Btf::parse(data) {
        let _ = layout::resolve(&btf);
        let _ = ResetReasons::from_btf(&btf).name(1);
        let _ = btf.tracepoint_arity("inet_sock_set_state");
        let _ = btf.function_arity("tcp_close");
        let _ = btf.member("sock", &["__sk_common", "skc_state"]);
    }
}

/// Ring-buffer records: decoded, printed as `trace` does, and aggregated
/// into the metrics.
pub fn events(data: &[u8]) {
    let mut decoder = Decoder::new(ResetReasons::default());
    let clock = Clock::new();
    let mut agg = Aggregator::new(
        Limits {
            max_endpoints: 4,
            max_processes: 8,
            max_series: 16,
            max_processes_per_container: 4,
            max_series_per_container: 8,
        },
        std::time::Duration::from_secs(1),
        "0",
        "k",
    );
    for record in data.chunks(size_of::<probe_common::Event>()) {
        if let Some(ev) = stream::parse_event(record)
            && let Some(decoded) = decoder.decode(&ev)
        {
            let _ = serde_json::to_string(&Record::new(&decoded, &clock));
            agg.observe(&decoded);
        }
    }
    agg.refresh(u64::MAX / 2);
}

/// The socket-listing iterator's records, and the fallback's netlink messages.
pub fn socket_listing(data: &[u8]) {
    let mut builder = Builder::new(STATES);
    if iterator::for_each_entry(data, |e| builder.add(e)).is_ok() {
        let mut listing = builder.finish();
        let _ = listing.ports.infer(Some(1), 8080);
        Decoder::new(ResetReasons::default()).label_listing(&mut listing);
    }
    let _ = sock_diag::parse_messages(data, &mut Vec::new());
}

/// `--config.file` (TOML), then the resolution of its values.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(settings) = toml::from_str::<Settings>(text)
    {
        let _ = settings.resolve();
    }
}

/// `--web.config.file` (YAML); files it names are looked for where none are.
pub fn web_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = WebConfig::parse(text, std::path::Path::new("/nonexistent"));
    }
}

/// Raw bytes as one HTTP connection to the daemon's server (basic auth on,
/// a cost-4 user): whatever they are, it answers or closes, in bounded time.
pub fn http_request(data: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    struct Fixture {
        rt: tokio::runtime::Runtime,
        exporter: Arc<Exporter>,
        web: Arc<WebConfig>,
    }
    static FIXTURE: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    let f = FIXTURE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let agg = Aggregator::new(
            Limits {
                max_endpoints: 1,
                max_processes: 1,
                max_series: 1,
                max_processes_per_container: 1,
                max_series_per_container: 1,
            },
            Default::default(),
            "0",
            "k",
        );
        // No event thread: refresh requests go nowhere, scrapes serve what is there.
        let (tx, _) = tokio::sync::mpsc::channel(1);
        let languages = crate::identity::language::Languages::start();
        let exporter = Arc::new(Exporter::new(agg.exported(), "/metrics".into(), tx, languages));
        let hash = bcrypt::hash("secret", 4).expect("bcrypt");
        let web = WebConfig::parse(&format!("basic_auth_users:\n  alice: {hash}\n"), std::path::Path::new("/"))
            .expect("web config");
        Fixture { rt, exporter, web: Arc::new(web) }
    });
    let limits = http::Limits {
        header_read_timeout: std::time::Duration::from_millis(200),
        connection_timeout: std::time::Duration::from_secs(2),
        ..http::Limits::default()
    };
    let origin = http::Origin { client: IpAddr::from([127, 0, 0, 1]), api: true };
    f.rt.block_on(async {
        let (mut ours, theirs) = tokio::io::duplex(64 * 1024);
        let busy = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let server = tokio::spawn(http::connection(theirs, origin, f.exporter.clone(), f.web.clone(), limits, busy));
        let _ = ours.write_all(data).await;
        let _ = ours.shutdown().await;
        let mut answer = Vec::new();
        // The request is all there is (our side is shut): the server must
        // answer and close, or close, within its connection bound.
        let bound = limits.connection_timeout + std::time::Duration::from_secs(1);
        let ended = tokio::time::timeout(bound, ours.read_to_end(&mut answer)).await;
        assert!(ended.is_ok(), "the connection outlived its {bound:?} bound; answered so far: {} bytes", answer.len());
        server.abort();
    });
}

/// Raw bytes as a server's answer to sockprobe's HTTP client (the
/// Kubernetes API; a daemon asked by `doctor` and `top`): a body within the
/// bound or an error, in bounded time.
pub fn http_response(data: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    let rt =
        RUNTIME.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime"));
    let endpoint = http_client::Endpoint { tls: false, host: "127.0.0.1".into(), port: 9741 };
    let request = http_client::Get {
        path: "/api/v1/findings",
        authorization: None,
        trust: &http_client::Trust::default(),
        server_name: None,
        connect_timeout: std::time::Duration::from_secs(1),
        timeout: std::time::Duration::from_secs(1),
        max_body_bytes: 64 * 1024,
    };
    let answer = data.to_vec();
    rt.block_on(async {
        let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            // The request first: hyper drops a connection that speaks before
            // it was asked anything.
            let _ = theirs.read(&mut [0u8; 4096]).await;
            let _ = theirs.write_all(&answer).await;
            let _ = theirs.shutdown().await;
            // Held open: the client must end by itself (EOF, error or bound).
            std::future::pending::<()>().await;
        });
        let got = tokio::time::timeout(request.timeout, http_client::get_over(ours, &endpoint, &request)).await;
        if let Ok(Ok(body)) = got {
            assert!(body.len() <= request.max_body_bytes, "a body over the bound");
        }
        server.abort();
        // Dropped here, not at the next input's turn of the runtime.
        let _ = server.await;
    });
}

/// An executable as the language detection reads it (a process chooses
/// its executable): ELF headers, sections, `.go.buildinfo`.
pub fn executable(data: &[u8]) {
    let _ = crate::identity::language::go_buildinfo_in(data);
}

/// A findings document or a connections page as `doctor` and `top` read
/// them from a daemon.
pub fn findings(data: &[u8]) {
    let _ = serde_json::from_slice::<crate::aggregate::findings::Report>(data);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = serde_json::from_value::<Vec<crate::aggregate::findings::Row>>(v["rows"].clone());
    }
}

/// What a Kubernetes API server (or anything in its place) sends the
/// watches: lines of watch events or list pages of pods, Services and
/// EndpointSlices, trimmed and indexed as identity/k8s does.
pub fn kube_objects(data: &[u8]) {
    use k8s_openapi::api::{core::v1::Pod, core::v1::Service, discovery::v1::EndpointSlice};
    use kube::core::{ObjectList, WatchEvent};

    use crate::identity::k8s::names;

    fn objects<K: serde::de::DeserializeOwned + Clone>(line: &[u8]) -> Vec<K> {
        match serde_json::from_slice::<WatchEvent<K>>(line) {
            Ok(WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o)) => vec![o],
            _ => serde_json::from_slice::<ObjectList<K>>(line).map(|l| l.items).unwrap_or_default(),
        }
    }
    let (mut pods, mut services, mut slices) = (Vec::new(), Vec::new(), Vec::new());
    for line in data.split(|&b| b == b'\n') {
        pods.extend(objects::<Pod>(line).into_iter().map(|mut p| {
            names::trim_pod(&mut p);
            p
        }));
        services.extend(objects::<Service>(line).into_iter().map(|mut s| {
            names::trim_service(&mut s);
            s
        }));
        slices.extend(objects::<EndpointSlice>(line).into_iter().map(|mut s| {
            names::trim_endpoint_slice(&mut s);
            s
        }));
    }
    let index = names::endpoint_index(&services, &slices, &pods);
    let endpoints = names::EndpointNames::default();
    endpoints.replace(index);
    let _ = endpoints.name(&IpAddr::from([10, 0, 0, 1]));
    let containers = names::PodNames::default();
    containers.replace(&pods);
    let _ = containers.resolve("/k8s/pod-0/0123456789ab");
}
