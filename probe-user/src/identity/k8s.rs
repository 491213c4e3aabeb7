//! Pod identity in DaemonSet mode: the pods of this node, from the
//! Kubernetes API, name containers `/k8s/<namespace>/<pod>/<container>`
//! instead of the cgroup-derived `/k8s/pod-<uid>/<id12>`. When the API is
//! unreachable the cgroup form stays (docs/metrics.md, label `container`).
use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    sync::{Arc, RwLock},
    time::Duration,
};

use serde::Deserialize;

use crate::error::Error;

const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Where and how to ask the API server.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// `https://host:port` or, for tests, `http://host:port`.
    pub url: String,
    pub node: String,
    pub token: Option<String>,
    /// PEM CA bundle for https.
    pub ca_file: Option<std::path::PathBuf>,
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
        let token = std::fs::read_to_string(format!("{SA_DIR}/token")).ok().map(|t| t.trim().to_string());
        let ca = std::path::Path::new(SA_DIR).join("ca.crt");
        Some(ApiConfig { url, node, token, ca_file: ca.exists().then_some(ca) })
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
    pub fn refresh(&self, api: &ApiConfig) -> Result<usize, Error> {
        let path = format!("/api/v1/pods?fieldSelector=spec.nodeName%3D{}", api.node);
        let body = get(api, &path)?;
        let list: PodList = serde_json::from_slice(&body)
            .map_err(|e| Error::Config(format!("Kubernetes API: unexpected pod list: {e}")))?;
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
                if id.len() < 12 {
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

/// A minimal HTTP/1.1 GET (chunked or sized body), over TLS for https.
fn get(api: &ApiConfig, path: &str) -> Result<Vec<u8>, Error> {
    let err = |e: &dyn std::fmt::Display| Error::Config(format!("Kubernetes API {}: {e}", api.url));
    let (tls, rest) = if let Some(r) = api.url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = api.url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(err(&"expected an http:// or https:// URL"));
    };
    let hostport = rest.trim_end_matches('/');
    let host = hostport.rsplit_once(':').map(|(h, _)| h).unwrap_or(hostport).trim_matches(['[', ']']);
    let tcp = TcpStream::connect(hostport).map_err(|e| err(&e))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| err(&e))?;
    let auth = api.token.as_ref().map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {hostport}\r\n{auth}Accept: application/json\r\nConnection: close\r\n\r\n"
    );
    let mut raw = Vec::new();
    if tls {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(ca) = &api.ca_file {
            let file = std::fs::File::open(ca).map_err(|e| err(&e))?;
            for cert in rustls_pemfile::certs(&mut BufReader::new(file)) {
                roots.add(cert.map_err(|e| err(&e))?).map_err(|e| err(&e))?;
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| err(&e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| err(&e))?;
        let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| err(&e))?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        stream.write_all(request.as_bytes()).map_err(|e| err(&e))?;
        let _ = stream.read_to_end(&mut raw); // close_notify may be missing
    } else {
        let mut tcp = tcp;
        tcp.write_all(request.as_bytes()).map_err(|e| err(&e))?;
        tcp.read_to_end(&mut raw).map_err(|e| err(&e))?;
    }
    parse_response(&raw).map_err(|e| err(&e))
}

fn parse_response(raw: &[u8]) -> Result<Vec<u8>, String> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no HTTP header")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or("bad status line")?;
    if status != 200 {
        return Err(format!("HTTP {status}"));
    }
    let body = &raw[end + 4..];
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.to_ascii_lowercase().contains("chunked")
    });
    if !chunked {
        return Ok(body.to_vec());
    }
    let mut out = Vec::new();
    let mut reader = BufReader::new(body);
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line).map_err(|e| e.to_string())?;
        let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|_| "bad chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk).map_err(|e| e.to_string())?;
        out.extend_from_slice(&chunk[..size]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        assert_eq!(parse_response(raw).unwrap(), b"hello world");
        assert!(parse_response(b"HTTP/1.1 403 Forbidden\r\n\r\n").unwrap_err().contains("403"));
    }
}
