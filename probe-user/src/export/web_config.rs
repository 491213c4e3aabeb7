//! `--web.config.file`: TLS and basic auth for the HTTP endpoints, in the
//! Prometheus exporter-toolkit format (the same file node_exporter takes):
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt      # relative paths: to this file's directory
//!   key_file: server.key
//! basic_auth_users:
//!   prometheus: $2y$10$...     # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\n')
//! ```
use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::{Arc, Mutex},
};

use serde::Deserialize;

use crate::error::Error;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsFile>,
    #[serde(default)]
    basic_auth_users: HashMap<String, String>,
    /// Accepted for compatibility; sockprobe serves HTTP/1.1 only.
    #[serde(default, rename = "http_server_config")]
    _http_server_config: Option<serde_yaml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_file: String,
    key_file: String,
    #[serde(default)]
    client_auth_type: Option<String>,
    #[serde(default)]
    min_version: Option<String>,
}

/// What the HTTP server enforces.
pub struct WebConfig {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    users: HashMap<String, String>,
    /// `Authorization` values already checked: bcrypt is slow on purpose.
    accepted: Mutex<HashSet<String>>,
}

fn bad(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Config(format!("invalid --web.config.file {}: {what}", path.display()))
}

impl WebConfig {
    pub fn none() -> WebConfig {
        WebConfig { tls: None, users: HashMap::new(), accepted: Mutex::new(HashSet::new()) }
    }

    pub fn load(path: &Path) -> Result<WebConfig, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read --web.config.file {}: {e}", path.display())))?;
        let f: File = serde_yaml::from_str(&text).map_err(|e| bad(path, e.to_string().replace('\n', " ")))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let tls = match f.tls_server_config {
            None => None,
            Some(t) => {
                if t.client_auth_type.as_deref().is_some_and(|c| c != "NoClientCert") {
                    return Err(bad(path, "client_auth_type: only NoClientCert is supported"));
                }
                if let Some(v) = t.min_version.as_deref().filter(|v| !["TLS12", "TLS13"].contains(v)) {
                    return Err(bad(path, format!("min_version {v}: expected TLS12 or TLS13")));
                }
                let cert_path = dir.join(&t.cert_file);
                let key_path = dir.join(&t.key_file);
                let certs: Vec<_> = rustls_pemfile::certs(&mut std::io::BufReader::new(
                    std::fs::File::open(&cert_path)
                        .map_err(|e| bad(path, format!("cert_file {}: {e}", cert_path.display())))?,
                ))
                .collect::<Result<_, _>>()
                .map_err(|e| bad(path, format!("cert_file {}: {e}", cert_path.display())))?;
                if certs.is_empty() {
                    return Err(bad(path, format!("cert_file {}: no PEM certificate", cert_path.display())));
                }
                let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
                    std::fs::File::open(&key_path)
                        .map_err(|e| bad(path, format!("key_file {}: {e}", key_path.display())))?,
                ))
                .map_err(|e| bad(path, format!("key_file {}: {e}", key_path.display())))?
                .ok_or_else(|| bad(path, format!("key_file {}: no PEM private key", key_path.display())))?;
                let versions: &[&rustls::SupportedProtocolVersion] = if t.min_version.as_deref() == Some("TLS13") {
                    &[&rustls::version::TLS13]
                } else {
                    rustls::DEFAULT_VERSIONS
                };
                let config =
                    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                        .with_protocol_versions(versions)
                        .map_err(|e| bad(path, e))?
                        .with_no_client_auth()
                        .with_single_cert(certs, key)
                        .map_err(|e| bad(path, format!("certificate and key: {e}")))?;
                Some(Arc::new(config))
            }
        };
        for (user, hash) in &f.basic_auth_users {
            if !hash.starts_with("$2") {
                return Err(bad(path, format!("basic_auth_users.{user}: expected a bcrypt hash ($2y$...)")));
            }
        }
        Ok(WebConfig { tls, users: f.basic_auth_users, accepted: Mutex::new(HashSet::new()) })
    }

    /// Whether a request with this `Authorization` header may proceed.
    pub fn authorized(&self, header: Option<&str>) -> bool {
        if self.users.is_empty() {
            return true;
        }
        let Some(value) = header else { return false };
        if self.accepted.lock().unwrap().contains(value) {
            return true;
        }
        let Some(decoded) = value.strip_prefix("Basic ").and_then(|b| base64_decode(b.trim())) else { return false };
        let Ok(decoded) = String::from_utf8(decoded) else { return false };
        let Some((user, pass)) = decoded.split_once(':') else { return false };
        let ok = self.users.get(user).is_some_and(|hash| bcrypt::verify(pass, hash).unwrap_or(false));
        if ok {
            self.accepted.lock().unwrap().insert(value.to_string());
        }
        ok
    }
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c)? << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64() {
        assert_eq!(base64_decode("YWxpY2U6c2VjcmV0").unwrap(), b"alice:secret");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert!(base64_decode("!!").is_none());
    }

    #[test]
    fn basic_auth() {
        let hash = bcrypt::hash("secret", 4).unwrap();
        let w = WebConfig {
            tls: None,
            users: HashMap::from([("alice".to_string(), hash)]),
            accepted: Mutex::new(HashSet::new()),
        };
        assert!(w.authorized(Some("Basic YWxpY2U6c2VjcmV0")));
        assert!(w.authorized(Some("Basic YWxpY2U6c2VjcmV0")), "cached");
        assert!(!w.authorized(Some("Basic YWxpY2U6d3Jvbmc=")), "alice:wrong");
        assert!(!w.authorized(None));
        assert!(WebConfig::none().authorized(None));
    }
}
