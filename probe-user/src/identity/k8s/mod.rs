//! Kubernetes names, in DaemonSet mode: the pods of this node name
//! containers `/k8s/<namespace>/<pod>/<container>` instead of the
//! cgroup-derived `/k8s/pod-<uid>/<id12>`; Services, their EndpointSlices
//! and the node's pods name remote addresses (`svc/...`, `pod/...`,
//! `node/...`, docs/metrics.md). Watched, not polled: kube-rs's watcher
//! (list then watch, bookmarks, re-list on 410 Gone, backoff) feeds
//! reflector stores of trimmed objects; the names are rebuilt from the
//! stores. When the API is unreachable the names known so far stay.
mod bounded;
pub mod names;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use futures_util::{FutureExt, StreamExt, stream::BoxStream};
use k8s_openapi::api::{core::v1::Pod, core::v1::Service, discovery::v1::EndpointSlice};
use kube::{
    Api, Client,
    runtime::{WatchStreamExt, reflector, watcher},
};
pub use names::{EndpointNames, PodNames};

use crate::http_client::Endpoint;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The API server ends each watch after this long and the watcher resumes
/// it from the last resourceVersion (no re-list).
const WATCH_SECONDS: u32 = 100;
/// No byte for this long (a stalled list or watch): the request fails and
/// the watcher retries with backoff. Longer than a healthy watch lasts.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// One line of a response: a list page or a watch event.
pub const MAX_LINE_BYTES: usize = 8 << 20;
/// Objects per list page: 100 full EndpointSlices stay far below the line bound.
const PAGE_SIZE: u32 = 100;
/// Failures are logged once per this long (debug between).
const WARN_EVERY: Duration = Duration::from_secs(600);
/// Names are rebuilt at most this often, and never more than a fifth of the time.
const REBUILD_GAP: Duration = Duration::from_millis(200);

const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Where and how to ask the API server.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// `https://host:port`; `http://` only to a loopback address (tests, a local proxy).
    pub url: String,
    pub node: String,
    /// A fixed bearer token, or (in a pod) the service account's token file,
    /// which kube reads again as the kubelet rotates it.
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    /// PEM CA bundle for https.
    pub ca_file: Option<PathBuf>,
}

impl ApiConfig {
    /// In-cluster settings: `KUBERNETES_SERVICE_HOST/PORT`, the service
    /// account's token and CA, the node from `NODE_NAME` (downward API).
    pub fn in_cluster(url: Option<String>, node: Option<String>) -> Option<ApiConfig> {
        let url = url.or_else(|| {
            let host = std::env::var("KUBERNETES_SERVICE_HOST").ok()?;
            let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
            Some(if host.contains(':') { format!("https://[{host}]:{port}") } else { format!("https://{host}:{port}") })
        })?;
        let node = node.or_else(|| std::env::var("NODE_NAME").ok())?;
        let token = std::path::Path::new(SA_DIR).join("token");
        let ca = std::path::Path::new(SA_DIR).join("ca.crt");
        Some(ApiConfig {
            url,
            node,
            token: None,
            token_file: token.exists().then_some(token),
            ca_file: ca.exists().then_some(ca),
        })
    }

    /// A kube client for this API, every response line bounded.
    pub fn client(&self) -> Result<Client, String> {
        endpoint(&self.url)?;
        if !is_node_name(&self.node) {
            return Err(format!("invalid node name {:?} (expected a DNS subdomain)", self.node));
        }
        let mut config = kube::Config::new(self.url.parse().map_err(|e| format!("{e}"))?);
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        config.read_timeout = Some(READ_TIMEOUT);
        config.reset_reader_on_write = true;
        config.auth_info.token = self.token.clone().map(Into::into);
        config.auth_info.token_file = self.token_file.as_ref().map(|p| p.display().to_string());
        config.root_cert_file = self.ca_file.clone();
        let builder = kube::client::ClientBuilder::try_from(config).map_err(|e| e.to_string())?;
        Ok(builder.with_layer(&bounded::BoundLines { max_line_bytes: MAX_LINE_BYTES }).build())
    }
}

/// Keeps `pods` (and `endpoints`, if given) named from the API until the
/// process ends. Failures keep the names known so far and are logged at
/// most once per [`WARN_EVERY`], never fatal; nothing here waits on the event path
/// or makes it wait.
pub async fn keep_watching(api: ApiConfig, pods: PodNames, endpoints: Option<EndpointNames>) {
    let client = match api.client() {
        Ok(c) => c,
        Err(e) => return log::warn!("Kubernetes API {}: {e}; containers keep their cgroup-derived names", api.url),
    };
    let config = || watcher::Config::default().timeout(WATCH_SECONDS).page_size(PAGE_SIZE);
    let (pod_store, writer) = reflector::store::<Pod>();
    let node_pods = config().fields(&format!("spec.nodeName={}", api.node));
    let mut streams: Vec<BoxStream<'static, Result<(), String>>> = vec![
        watcher(Api::<Pod>::all(client.clone()), node_pods)
            .default_backoff()
            .modify(names::trim_pod)
            .reflect(writer)
            .map(|r| r.map(drop).map_err(|e| format!("watching this node's pods: {e}")))
            .boxed(),
    ];
    let (mut service_store, mut slice_store) = (None, None);
    if endpoints.is_some() {
        let (store, writer) = reflector::store::<Service>();
        service_store = Some(store);
        streams.push(
            watcher(Api::<Service>::all(client.clone()), config())
                .default_backoff()
                .modify(names::trim_service)
                .reflect(writer)
                .map(|r| r.map(drop).map_err(|e| format!("watching Services: {e}")))
                .boxed(),
        );
        let (store, writer) = reflector::store::<EndpointSlice>();
        slice_store = Some(store);
        streams.push(
            watcher(Api::<EndpointSlice>::all(client), config())
                .default_backoff()
                .modify(names::trim_endpoint_slice)
                .reflect(writer)
                .map(|r| r.map(drop).map_err(|e| format!("watching EndpointSlices: {e}")))
                .boxed(),
        );
    }
    let mut events = futures_util::stream::select_all(streams);
    let (mut last_warning, mut announced, mut dirty) = (None::<Instant>, false, false);
    let mut next_rebuild = Instant::now();
    loop {
        let wait = next_rebuild.saturating_duration_since(Instant::now());
        tokio::select! {
            event = events.next() => match event {
                None => return,
                Some(Ok(())) => dirty = true,
                // A 410 storm or a flapping server: one line per WARN_EVERY, not a stream.
                Some(Err(e)) if last_warning.is_none_or(|t| t.elapsed() >= WARN_EVERY) => {
                    last_warning = Some(Instant::now());
                    log::warn!("Kubernetes API {}: {e}; the names known so far stay (retrying with backoff)", api.url);
                }
                Some(Err(e)) => log::debug!("Kubernetes API {}: {e}", api.url),
            },
            _ = tokio::time::sleep(wait), if dirty => {
                let started = Instant::now();
                let pods_now = pod_store.state();
                pods.replace(pods_now.iter().map(|p| &**p));
                if let (Some(names), Some(services), Some(slices)) = (&endpoints, &service_store, &slice_store) {
                    let (services, slices) = (services.state(), slices.state());
                    names.replace(names::endpoint_index(
                        services.iter().map(|s| &**s),
                        slices.iter().map(|s| &**s),
                        pods_now.iter().map(|p| &**p),
                    ));
                }
                dirty = false;
                next_rebuild = Instant::now() + REBUILD_GAP.max(started.elapsed() * 5);
                let all_listed = pod_store.wait_until_ready().now_or_never().is_some()
                    && service_store.as_ref().is_none_or(|s| s.wait_until_ready().now_or_never().is_some())
                    && slice_store.as_ref().is_none_or(|s| s.wait_until_ready().now_or_never().is_some());
                if !announced && all_listed {
                    announced = true;
                    // The first lists' pages (full objects, before trimming)
                    // are garbage now: give the heap back (glibc's; musl's
                    // returns it itself). SAFETY: only releases free memory.
                    #[cfg(target_env = "gnu")]
                    unsafe {
                        libc::malloc_trim(0)
                    };
                    log::info!(
                        "Kubernetes API {}: {} containers on node {}, {} remote addresses named",
                        api.url,
                        pods.count(),
                        api.node,
                        endpoints.as_ref().map_or(0, EndpointNames::len),
                    );
                }
            }
        }
    }
}

/// A Kubernetes node name: a DNS subdomain (it goes into the request line).
pub fn is_node_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// The API server's address: `https://host:port`, or `http://` to a
/// loopback address (tests, a local `kubectl proxy`): a bearer token never
/// crosses a network in clear.
pub fn endpoint(url: &str) -> Result<Endpoint, String> {
    let endpoint = Endpoint::parse(url)?;
    if !endpoint.tls && !endpoint.is_loopback() {
        return Err("plain http:// is allowed to a loopback address only; use https://".into());
    }
    Ok(endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_node_names() {
        assert!(endpoint("https://10.0.0.1:6443").unwrap().tls);
        assert_eq!(endpoint("http://127.0.0.1:8080").unwrap().port, 8080);
        assert!(endpoint("http://[::1]:8080").is_ok());
        assert!(endpoint("http://10.0.0.1:8080").unwrap_err().contains("loopback"));
        assert!(endpoint("http://kubernetes.default").unwrap_err().contains("loopback"));
        assert!(endpoint("ftp://x").is_err());
        assert!(is_node_name("ip-10-0-0-1.ec2.internal"));
        assert!(!is_node_name("node 1 HTTP/1.1\r\nX: y"));
        assert!(!is_node_name(""));
    }
}
