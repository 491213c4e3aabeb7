//! Pod identity in DaemonSet mode: the pods of this node, from the
//! Kubernetes API, name containers `/k8s/<namespace>/<pod>/<container>`
//! instead of the cgroup-derived `/k8s/pod-<uid>/<id12>`. When the API is
//! unreachable the cgroup form stays (docs/metrics.md, label `container`).
use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, RwLock},
    time::Duration,
};

use bytes::Bytes;
use serde::Deserialize;

use crate::{
    error::Error,
    http_client::{self, Endpoint, Get, Trust},
};

/// How often the pod list of this node is fetched again.
pub const REFRESH_EVERY: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole request, body included: a stalled API server cannot hold a refresh longer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// A node's pod list is far smaller (110 pods by default); anything larger is refused.
pub const MAX_BODY_BYTES: usize = 16 << 20;
/// Names kept: more than a node can run.
const MAX_CONTAINERS: usize = 16_384;

const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Where and how to ask the API server.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// `https://host:port`; `http://` only to a loopback address (tests, a local proxy).
    pub url: String,
    pub node: String,
    /// A fixed bearer token, or (in a pod) the service account's token file,
    /// read again at every refresh: the kubelet rotates it.
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
}

#[derive(Deserialize)]
struct PodList {
    #[serde(default)]
    items: Vec<Pod>,
}

#[derive(Deserialize)]
struct Pod {
    metadata: Meta,
    #[serde(default)]
    status: Option<PodStatus>,
}

#[derive(Deserialize)]
struct Meta {
    name: String,
    namespace: String,
    uid: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PodStatus {
    #[serde(default)]
    container_statuses: Vec<ContainerStatus>,
    #[serde(default)]
    init_container_statuses: Vec<ContainerStatus>,
    #[serde(default)]
    ephemeral_container_statuses: Vec<ContainerStatus>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerStatus {
    name: String,
    #[serde(default, rename = "containerID")]
    container_id: Option<String>,
}

/// `/k8s/pod-<uid>/<id12>` → `/k8s/<namespace>/<pod>/<container>`.
#[derive(Clone, Default)]
pub struct PodNames {
    map: Arc<RwLock<HashMap<String, String>>>,
}

impl PodNames {
    /// The API's name for a cgroup-derived label, or the label itself.
    pub fn resolve(&self, label: &str) -> String {
        if !label.starts_with("/k8s/pod-") {
            return label.to_string();
        }
        self.map.read().unwrap().get(label).cloned().unwrap_or_else(|| label.to_string())
    }

    /// How many containers are named.
    pub fn count(&self) -> usize {
        self.map.read().unwrap().len()
    }

    /// Replaces the mapping with the pods the API lists for this node.
    pub async fn refresh(&self, api: &ApiConfig) -> Result<usize, Error> {
        let err = |e: &dyn std::fmt::Display| Error::Config(format!("Kubernetes API {}: {e}", api.url));
        if !is_node_name(&api.node) {
            return Err(err(&format!("invalid node name {:?} (expected a DNS subdomain)", api.node)));
        }
        // resourceVersion=0: served from the API server's cache, not etcd.
        let path = format!("/api/v1/pods?fieldSelector=spec.nodeName%3D{}&resourceVersion=0", api.node);
        let body = get(api, &path).await.map_err(|e| err(&e))?;
        let list: PodList = serde_json::from_slice(&body).map_err(|e| err(&format!("unexpected pod list: {e}")))?;
        let mut map = HashMap::new();
        for pod in list.items {
            let status = pod.status.unwrap_or_default();
            let all = status
                .container_statuses
                .iter()
                .chain(&status.init_container_statuses)
                .chain(&status.ephemeral_container_statuses);
            for c in all {
                // containerd://<64 hex>, cri-o://..., docker://...
                let Some(id) = c.container_id.as_deref().and_then(|i| i.split_once("://")).map(|(_, id)| id) else {
                    continue;
                };
                if id.len() < 12 || !id.is_char_boundary(12) || map.len() >= MAX_CONTAINERS {
                    continue;
                }
                map.insert(
                    format!("/k8s/pod-{}/{}", pod.metadata.uid, &id[..12]),
                    format!("/k8s/{}/{}/{}", pod.metadata.namespace, pod.metadata.name, c.name),
                );
            }
        }
        let n = map.len();
        *self.map.write().unwrap() = map;
        Ok(n)
    }
}

/// First fetch now, then every [`REFRESH_EVERY`]. Failures keep the names
/// known so far (or the cgroup-derived ones) and are logged once until the
/// next success, never fatal.
pub async fn keep_refreshed(api: ApiConfig, pods: PodNames) {
    let mut tick = tokio::time::interval(REFRESH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        match pods.refresh(&api).await {
            Ok(n) if failing || n > 0 => {
                failing = false;
                log::info!("Kubernetes API {}: {n} containers on node {}", api.url, api.node);
            }
            Ok(_) => {}
            Err(e) if !failing => {
                failing = true;
                log::warn!("{e}; containers keep their cgroup-derived names");
            }
            Err(e) => log::debug!("{e}"),
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

/// One GET of the API, its token read again each time (the kubelet rotates it).
async fn get(api: &ApiConfig, path: &str) -> Result<Bytes, String> {
    let endpoint = endpoint(&api.url)?;
    let token = match &api.token_file {
        Some(f) => std::fs::read_to_string(f).ok().map(|t| t.trim().to_string()),
        None => api.token.clone(),
    };
    let request = Get {
        path,
        authorization: token.map(|t| format!("Bearer {t}")),
        // Read again at each refresh: the cluster's CA may be rotated.
        trust: &Trust::new(api.ca_file.clone()),
        server_name: None,
        connect_timeout: CONNECT_TIMEOUT,
        timeout: REQUEST_TIMEOUT,
        max_body_bytes: MAX_BODY_BYTES,
    };
    http_client::get(&endpoint, &request).await.map_err(|e| e.to_string())
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
