//! GET from a running daemon, for `doctor` and `top`: plain HTTP (the
//! daemon listens on loopback by default), basic auth from the URL's
//! `user:password@`, bounded in time and size like every client here.
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub const DEFAULT_DAEMON: &str = "http://127.0.0.1:9741";
const TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BODY_BYTES: usize = 64 << 20;

/// A daemon's address: `http://[user:password@]host:port`.
#[derive(Clone, Debug)]
pub struct DaemonUrl {
    host: String,
    port: u16,
    authorization: Option<String>,
    pub shown: String,
}

impl std::str::FromStr for DaemonUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, String> {
        let rest = match url.split_once("://") {
            Some(("http", r)) => r,
            Some(("https", _)) => {
                return Err("https:// daemons are not supported by doctor and top yet: run them on the node against \
                            the loopback address, or fetch /api/v1/findings with curl"
                    .into());
            }
            _ => return Err(format!("expected http://HOST:PORT, got {url:?}")),
        };
        let rest = rest.trim_end_matches('/');
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') => (h, p.parse::<u16>().map_err(|_| format!("bad port in {url:?}"))?),
            _ => (hostport, 80),
        };
        if host.is_empty() || host.contains('/') {
            return Err(format!("expected http://HOST:PORT, got {url:?}"));
        }
        let authorization = auth.map(|a| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(a)));
        Ok(DaemonUrl {
            host: host.trim_matches(['[', ']']).to_string(),
            port,
            authorization,
            shown: format!("http://{hostport}"),
        })
    }
}

impl DaemonUrl {
    /// GET `path`: the body on 200, else why not (one line).
    pub async fn get(&self, path: &str) -> Result<Bytes, String> {
        tokio::time::timeout(TIMEOUT, self.get_inner(path))
            .await
            .map_err(|_| format!("{} did not answer within {TIMEOUT:?}", self.shown))?
    }

    async fn get_inner(&self, path: &str) -> Result<Bytes, String> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("no daemon at {}: {e}", self.shown))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = hyper::Request::get(path)
            .header(hyper::header::HOST, format!("{}:{}", self.host, self.port))
            .header(hyper::header::ACCEPT, "application/json");
        if let Some(a) = &self.authorization {
            req = req.header(hyper::header::AUTHORIZATION, a);
        }
        let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| format!("{}: {e}", self.shown))?;
        match resp.status() {
            hyper::StatusCode::OK => {}
            hyper::StatusCode::UNAUTHORIZED => {
                return Err(format!(
                    "{} wants credentials: give them in the URL, http://USER:PASSWORD@HOST:PORT",
                    self.shown
                ));
            }
            hyper::StatusCode::NOT_FOUND => {
                return Err(format!("{} has no {path}: is it a sockprobe older than the diagnosis?", self.shown));
            }
            s => return Err(format!("{}{path}: HTTP {s}", self.shown)),
        }
        let body = Limited::new(resp.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| format!("{}{path}: {e} (limit {MAX_BODY_BYTES} bytes)", self.shown))?;
        Ok(body.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u: DaemonUrl = "http://127.0.0.1:9741".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port, u.authorization.is_none()), ("127.0.0.1", 9741, true));
        let u: DaemonUrl = "http://me:secret@[::1]:9741/".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9741));
        assert_eq!(u.authorization.as_deref(), Some("Basic bWU6c2VjcmV0"));
        assert!("https://x:1".parse::<DaemonUrl>().unwrap_err().contains("not supported"));
        assert!("127.0.0.1:9741".parse::<DaemonUrl>().is_err());
    }
}
