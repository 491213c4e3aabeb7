//! Asking a running daemon, for `doctor` and `top`: on its Unix socket (the
//! default: the per-process API is served there), or over plain HTTP or
//! https when it serves the API on TCP (`--web.api-over-tcp`), with basic
//! auth from the URL or from `--http.config.file` when the daemon sits
//! behind `--web.config.file`.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;

use crate::{
    error::Error,
    http_client::{self, Endpoint, Get, GetError, Trust},
};

pub const DEFAULT_DAEMON: &str = "unix:///run/sockprobe/api.sock";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BODY_BYTES: usize = 64 << 20;

/// `--daemon`: `unix://PATH` or `http(s)://[user:password@]host:port`.
#[derive(Clone, Debug)]
pub struct DaemonUrl {
    endpoint: Endpoint,
    /// The Unix socket to connect to instead of `endpoint`'s address.
    socket: Option<PathBuf>,
    /// `user:password` from the URL.
    credentials: Option<String>,
    /// The URL without credentials, for messages.
    shown: String,
}

impl std::str::FromStr for DaemonUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        if let Some(path) = url.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(format!("expected unix:///ABSOLUTE/PATH or http(s)://HOST[:PORT], got {url:?}"));
            }
            let endpoint = Endpoint { tls: false, host: "localhost".into(), port: 80 };
            return Ok(DaemonUrl { endpoint, socket: Some(path.into()), credentials: None, shown: url.into() });
        }
        let (endpoint, credentials) = Endpoint::parse_with_userinfo(url)
            .map_err(|e| format!("{e} (or unix:///PATH of the daemon's --web.api-socket)"))?;
        let scheme = if endpoint.tls { "https" } else { "http" };
        let shown = format!("{scheme}://{}", endpoint.authority());
        Ok(DaemonUrl { endpoint, socket: None, credentials, shown })
    }
}

/// `--http.config.file`: how to reach a daemon behind `--web.config.file`.
/// The part of Prometheus' HTTP client configuration (what Prometheus and
/// promtool read for the same purpose) that applies here.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpConfig {
    basic_auth: Option<BasicAuth>,
    tls_config: Option<TlsConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BasicAuth {
    username: String,
    password: Option<String>,
    password_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsConfig {
    /// The CA that signed the daemon's certificate (or the certificate itself).
    ca_file: Option<PathBuf>,
    /// The name the certificate carries, if not the URL's host.
    server_name: Option<String>,
}

/// A daemon to ask, with what it takes to be let in.
#[derive(Debug)]
pub struct Daemon {
    endpoint: Endpoint,
    socket: Option<PathBuf>,
    authorization: Option<String>,
    trust: Trust,
    server_name: Option<String>,
    pub shown: String,
}

impl Daemon {
    /// `url` from `--daemon`; `config`, a `--http.config.file` (relative
    /// paths in it are relative to the file, as for `--web.config.file`).
    pub fn new(url: DaemonUrl, config: Option<&Path>) -> Result<Daemon, Error> {
        let (config, base) = match config {
            Some(path) => read_config(path)?,
            None => (HttpConfig::default(), PathBuf::new()),
        };
        let bad = |why: String| Error::Config(format!("--http.config.file: {why}"));
        let credentials = match (url.credentials, config.basic_auth) {
            (Some(_), Some(_)) => {
                return Err(bad("basic_auth given, and credentials in --daemon too: give them once".into()));
            }
            (Some(c), None) => Some(c),
            (None, Some(b)) => Some(format!("{}:{}", b.username, password(&b, &base).map_err(bad)?)),
            (None, None) => None,
        };
        let tls = config.tls_config.unwrap_or_default();
        if !url.endpoint.tls && (tls.ca_file.is_some() || tls.server_name.is_some()) {
            return Err(bad(format!("tls_config given for {}: use https://", url.shown)));
        }
        Ok(Daemon {
            authorization: credentials
                .map(|c| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(c))),
            trust: Trust::new(tls.ca_file.map(|f| base.join(f))),
            server_name: tls.server_name,
            endpoint: url.endpoint,
            socket: url.socket,
            shown: url.shown,
        })
    }

    /// GET `path`: the body on 200, else why not (one line).
    pub async fn get(&self, path: &str) -> Result<Bytes, String> {
        let request = Get {
            path,
            authorization: self.authorization.clone(),
            trust: &self.trust,
            server_name: self.server_name.as_deref(),
            connect_timeout: CONNECT_TIMEOUT,
            timeout: TIMEOUT,
            max_body_bytes: MAX_BODY_BYTES,
        };
        let got = match &self.socket {
            Some(path) => http_client::get_unix(path, &self.endpoint, &request).await,
            None => http_client::get(&self.endpoint, &request).await,
        };
        got.map_err(|e| match e {
            GetError::Connect(e) if self.socket.is_some() => format!(
                "no daemon at {}: {e} (not running, or it serves another --web.api-socket; reading it takes root \
                 or the daemon's --web.api-socket-group)",
                self.shown
            ),
            GetError::Connect(e) => format!("no daemon at {}: {e}", self.shown),
            GetError::Status(s) if s == hyper::StatusCode::UNAUTHORIZED => format!(
                "{} wants credentials: give them in the URL (http://USER:PASSWORD@HOST:PORT) or in --http.config.file",
                self.shown
            ),
            GetError::Status(s) if s == hyper::StatusCode::NOT_FOUND => format!(
                "{} has no {path}: it serves the API on its Unix socket only (ask unix:///run/sockprobe/api.sock, \
                 or start it with --web.api-over-tcp), or it is older than the diagnosis",
                self.shown
            ),
            GetError::Tls(e) => format!(
                "{}: {e} (does the daemon serve https? give its CA in --http.config.file, tls_config: ca_file)",
                self.shown
            ),
            e => format!("{}{path}: {e}", self.shown),
        })
    }
}

fn read_config(path: &Path) -> Result<(HttpConfig, PathBuf), Error> {
    let bad = |why: String| Error::Config(format!("--http.config.file {}: {why}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let config = parse_config(&text).map_err(bad)?;
    Ok((config, path.parent().map(Path::to_path_buf).unwrap_or_default()))
}

fn parse_config(text: &str) -> Result<HttpConfig, String> {
    if text.trim().is_empty() {
        return Ok(HttpConfig::default());
    }
    serde_yaml_ng::from_str(text).map_err(|e| e.to_string().replace('\n', " "))
}

fn password(b: &BasicAuth, base: &Path) -> Result<String, String> {
    match (&b.password, &b.password_file) {
        (Some(p), None) => Ok(p.clone()),
        (None, Some(f)) => {
            let f = base.join(f);
            let p =
                std::fs::read_to_string(&f).map_err(|e| format!("basic_auth password_file {}: {e}", f.display()))?;
            Ok(p.trim_end_matches(['\r', '\n']).to_string())
        }
        _ => Err("basic_auth needs one of password and password_file".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u: DaemonUrl = "http://127.0.0.1:9741".parse().unwrap();
        assert_eq!((u.endpoint.host.as_str(), u.endpoint.port, u.credentials.is_none()), ("127.0.0.1", 9741, true));
        let u: DaemonUrl = "https://me:sec:ret@[::1]:9741/".parse().unwrap();
        assert_eq!((u.endpoint.host.as_str(), u.endpoint.port, u.endpoint.tls), ("::1", 9741, true));
        assert_eq!(u.credentials.as_deref(), Some("me:sec:ret"));
        assert_eq!(u.shown, "https://[::1]:9741");
        assert!("127.0.0.1:9741".parse::<DaemonUrl>().is_err());
        assert!("ftp://h:1".parse::<DaemonUrl>().is_err());
    }

    #[test]
    fn credentials_from_the_url_or_the_file() {
        let d = Daemon::new("http://me:secret@h:1".parse().unwrap(), None).unwrap();
        assert_eq!(d.authorization.as_deref(), Some("Basic bWU6c2VjcmV0"));
        let dir = std::env::temp_dir().join(format!("sockprobe-http-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("client.yml");
        std::fs::write(dir.join("pw"), "secret\n").unwrap();
        std::fs::write(
            &file,
            "basic_auth:\n  username: me\n  password_file: pw\ntls_config:\n  ca_file: ca.pem\n  server_name: node-1\n",
        )
        .unwrap();
        let d = Daemon::new("https://h:1".parse().unwrap(), Some(&file)).unwrap();
        assert_eq!(d.authorization.as_deref(), Some("Basic bWU6c2VjcmV0"));
        assert_eq!(d.trust.ca_file(), Some(dir.join("ca.pem").as_path()));
        assert_eq!(d.server_name.as_deref(), Some("node-1"));
        let err = |url: &str, text: &str| {
            std::fs::write(&file, text).unwrap();
            Daemon::new(url.parse().unwrap(), Some(&file)).unwrap_err().to_string()
        };
        assert!(err("http://a:b@h:1", "basic_auth: {username: me, password: x}").contains("once"));
        assert!(err("http://h:1", "tls_config: {ca_file: ca.pem}").contains("https://"));
        assert!(err("http://h:1", "basic_auth: {username: me}").contains("password"));
        assert!(err("http://h:1", "bearer_token: x").contains("unknown field"));
        assert!(err("http://h:1", "basic_auth: {username: me, password_file: nope}").contains("nope"));
        std::fs::remove_dir_all(&dir).ok();
        let missing = Daemon::new("http://h:1".parse().unwrap(), Some(Path::new("/nonexistent/client.yml")));
        assert!(matches!(missing, Err(Error::Config(m)) if m.contains("/nonexistent/client.yml")));
    }
}
