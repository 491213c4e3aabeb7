//! One bounded HTTP GET, for sockprobe's two clients: the Kubernetes API
//! (pod names, `identity/k8s.rs`) and `doctor`/`top` asking a daemon
//! (`cmd/daemon_client.rs`). hyper over TCP or rustls. The server is another
//! program and may be hostile or stalled, so connecting, the whole exchange
//! and the body are each bounded.
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

/// Where a server listens: `http(s)://host[:port]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    /// Without the brackets of an IPv6 literal.
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// `http://` or `https://`, a host (a name, an IPv4 or a bracketed IPv6
    /// address), an optional port (80 or 443 by default), an optional `/`.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        match Self::parse_with_userinfo(url)? {
            (endpoint, None) => Ok(endpoint),
            (_, Some(_)) => Err(format!("expected http(s)://HOST[:PORT] without credentials, got {url:?}")),
        }
    }

    /// As [`Endpoint::parse`], and a `user:password@` before the host
    /// (parsed by the `http` crate's `Uri`).
    pub fn parse_with_userinfo(url: &str) -> Result<(Endpoint, Option<String>), String> {
        let bad = || format!("expected http(s)://HOST[:PORT], got {url:?}");
        let uri: http::Uri = url.parse().map_err(|_| bad())?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad()),
        };
        let authority = uri.authority().ok_or_else(bad)?;
        // `Uri` keeps a path of its own (`/` when none was given).
        if uri.path() != "/" || uri.query().is_some() || url.ends_with("//") {
            return Err(bad());
        }
        let host = authority.host();
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if host.is_empty() {
            return Err(bad());
        }
        // `port_u16` is also `None` for a port that is no u16.
        let hostport = authority.as_str().rsplit('@').next().unwrap_or_default();
        let port = match authority.port_u16() {
            Some(p) => p,
            None if hostport != authority.host() => return Err(format!("bad port in {url:?}")),
            None if tls => 443,
            None => 80,
        };
        let userinfo = authority.as_str().rsplit_once('@').map(|(u, _)| u.to_string());
        Ok((Endpoint { tls, host: host.to_string(), port }, userinfo))
    }

    pub fn is_loopback(&self) -> bool {
        self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// `host:port`, an IPv6 literal back in brackets (the `Host` header).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// One GET: the path, credentials, how to trust an https server, the bounds.
pub struct Get<'a> {
    pub path: &'a str,
    /// The `Authorization` header's value (`Basic …`, `Bearer …`).
    pub authorization: Option<String>,
    /// Whom an https server's certificate must chain to.
    pub trust: &'a Trust,
    /// The name the certificate must carry, if not the endpoint's host.
    pub server_name: Option<&'a str>,
    pub connect_timeout: Duration,
    /// The whole exchange, connecting and the body included.
    pub timeout: Duration,
    pub max_body_bytes: usize,
}

/// Why a GET gave no body.
#[derive(Debug)]
pub enum GetError {
    /// No connection: refused, unreachable, not within the connect timeout.
    Connect(String),
    /// TLS: no trust anchors, a certificate that does not verify, a handshake that fails.
    Tls(String),
    /// The server answered with another status than 200.
    Status(hyper::StatusCode),
    /// No complete answer within the timeout.
    Timeout(Duration),
    /// A protocol error or a body over the bound.
    Failed(String),
}

impl std::fmt::Display for GetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GetError::Connect(e) => write!(f, "cannot connect: {e}"),
            GetError::Tls(e) => write!(f, "TLS: {e}"),
            GetError::Status(s) => write!(f, "HTTP {s}"),
            GetError::Timeout(t) => write!(f, "no complete answer within {t:?}"),
            GetError::Failed(e) => f.write_str(e),
        }
    }
}

/// The CAs an https server's certificate must chain to: a PEM bundle, or
/// the system's. Read and parsed at the first https GET, then reused by every
/// GET given this `Trust` (`top` asks every second); an unreadable bundle is
/// that GET's TLS error, and the next one's.
#[derive(Debug, Default)]
pub struct Trust {
    ca_file: Option<PathBuf>,
    config: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
}

impl Trust {
    /// `ca_file`, or the system's bundle when none.
    pub fn new(ca_file: Option<PathBuf>) -> Trust {
        Trust { ca_file, config: OnceLock::new() }
    }

    #[cfg(test)]
    pub(crate) fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    fn config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        self.config.get_or_init(|| tls_config(self.ca_file.as_deref()).map(Arc::new)).clone()
    }
}

/// GET `req.path` from `endpoint`: the body on 200.
pub async fn get(endpoint: &Endpoint, req: &Get<'_>) -> Result<Bytes, GetError> {
    tokio::time::timeout(req.timeout, get_unbounded_in_time(endpoint, req))
        .await
        .map_err(|_| GetError::Timeout(req.timeout))?
}

/// As [`get`], over the Unix socket at `path` (`endpoint` names the Host).
pub async fn get_unix(path: &Path, endpoint: &Endpoint, req: &Get<'_>) -> Result<Bytes, GetError> {
    let got = async {
        let stream = tokio::time::timeout(req.connect_timeout, tokio::net::UnixStream::connect(path))
            .await
            .map_err(|_| GetError::Connect(format!("no connection within {:?}", req.connect_timeout)))?
            .map_err(|e| GetError::Connect(e.to_string()))?;
        get_over(stream, endpoint, req).await
    };
    tokio::time::timeout(req.timeout, got).await.map_err(|_| GetError::Timeout(req.timeout))?
}

async fn get_unbounded_in_time(endpoint: &Endpoint, req: &Get<'_>) -> Result<Bytes, GetError> {
    let tcp = tokio::time::timeout(req.connect_timeout, TcpStream::connect((endpoint.host.as_str(), endpoint.port)))
        .await
        .map_err(|_| GetError::Connect(format!("no connection within {:?}", req.connect_timeout)))?
        .map_err(|e| GetError::Connect(e.to_string()))?;
    if !endpoint.tls {
        return get_over(tcp, endpoint, req).await;
    }
    let config = req.trust.config().map_err(GetError::Tls)?;
    let name = ServerName::try_from(req.server_name.unwrap_or(&endpoint.host).to_string())
        .map_err(|e| GetError::Tls(e.to_string()))?;
    let tls =
        tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map_err(|e| GetError::Tls(e.to_string()))?;
    get_over(tls, endpoint, req).await
}

fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let source = match ca_file {
        Some(bundle) => format!("CA bundle {}", bundle.display()),
        None => "the system's CA certificates (give the server's CA: tls_config: ca_file)".into(),
    };
    let err = |e: &dyn std::fmt::Display| format!("{source}: {e}");
    let certs = match ca_file {
        Some(bundle) => {
            let mut certs = Vec::new();
            for cert in CertificateDer::pem_file_iter(bundle).map_err(|e| err(&e))? {
                certs.push(cert.map_err(|e| err(&e))?);
            }
            certs
        }
        // Where the system keeps them (rustls-native-certs: the distribution's
        // bundle, or SSL_CERT_FILE/SSL_CERT_DIR).
        None => {
            let found = rustls_native_certs::load_native_certs();
            if found.certs.is_empty() {
                let why = found.errors.first().map_or("none found".to_string(), |e| e.to_string());
                return Err(err(&why));
            }
            found.certs
        }
    };
    let mut roots = rustls::RootCertStore::empty();
    // A system bundle may hold a certificate rustls rejects; skip it.
    let (added, _) = roots.add_parsable_certificates(certs.iter().cloned());
    if added == 0 {
        return Err(err(&"no usable certificate in it"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| err(&e))?;
    // Only certificates the operator named are pinned, not a system bundle's.
    let pinned = if ca_file.is_some() { certs } else { Vec::new() };
    let verifier = Arc::new(PinnedOrChained { pinned, webpki, provider: provider.clone() });
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// A server certificate is trusted if it chains to the CA file's roots and
/// names the host (webpki), or if it is itself one of the certificates in
/// the CA file: the self-signed certificate an exporter is often given
/// (`openssl req -x509`, marked as a CA), which Prometheus accepts in
/// `ca_file` and webpki refuses as an end entity. An exact match of a
/// certificate the operator chose; the handshake signatures are checked
/// either way.
#[derive(Debug)]
struct PinnedOrChained {
    pinned: Vec<CertificateDer<'static>>,
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for PinnedOrChained {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if self.pinned.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        self.webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The GET itself over a connected stream (TCP, TLS, or a test's pipe).
pub async fn get_over<S>(stream: S, endpoint: &Endpoint, req: &Get<'_>) -> Result<Bytes, GetError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let failed = |e: &dyn std::fmt::Display| GetError::Failed(e.to_string());
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| failed(&e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut request = hyper::Request::get(req.path)
        .header(hyper::header::HOST, endpoint.authority())
        .header(hyper::header::ACCEPT, "application/json");
    if let Some(a) = &req.authorization {
        request = request.header(hyper::header::AUTHORIZATION, a);
    }
    let request = request.body(Empty::<Bytes>::new()).map_err(|e| failed(&e))?;
    let resp = sender.send_request(request).await.map_err(|e| failed(&e))?;
    if resp.status() != hyper::StatusCode::OK {
        return Err(GetError::Status(resp.status()));
    }
    let body = Limited::new(resp.into_body(), req.max_body_bytes)
        .collect()
        .await
        .map_err(|e| GetError::Failed(format!("reading the body: {e} (limit {} bytes)", req.max_body_bytes)))?;
    Ok(body.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(tls: bool, host: &str, port: u16) -> Endpoint {
        Endpoint { tls, host: host.into(), port }
    }

    #[test]
    fn endpoints() {
        assert_eq!(Endpoint::parse("https://10.0.0.1:6443").unwrap(), ep(true, "10.0.0.1", 6443));
        assert_eq!(Endpoint::parse("https://[fd00::1]:443/").unwrap(), ep(true, "fd00::1", 443));
        assert_eq!(Endpoint::parse("https://[fd00::1]").unwrap(), ep(true, "fd00::1", 443));
        assert_eq!(Endpoint::parse("https://kubernetes.default").unwrap(), ep(true, "kubernetes.default", 443));
        assert_eq!(Endpoint::parse("http://127.0.0.1:8080").unwrap(), ep(false, "127.0.0.1", 8080));
        assert_eq!(Endpoint::parse("http://localhost").unwrap(), ep(false, "localhost", 80));
        for bad in [
            "ftp://x",
            "127.0.0.1:80",
            "http://",
            "http://a/b",
            "http://u@h:1",
            "http://h:99999",
            "http://h:x",
            "http://h:1?q",
            "http://[::1",
            "http:// h",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(ep(false, "::1", 1).is_loopback() && !ep(false, "10.0.0.1", 1).is_loopback());
        assert_eq!(ep(false, "::1", 9741).authority(), "[::1]:9741");
    }

    fn request(max_body_bytes: usize) -> Get<'static> {
        static SYSTEM: OnceLock<Trust> = OnceLock::new();
        Get {
            path: "/x",
            authorization: Some("Bearer t".into()),
            trust: SYSTEM.get_or_init(Trust::default),
            server_name: None,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            max_body_bytes,
        }
    }

    /// A server's answer, through a pipe; what the client sent.
    async fn answer(response: &'static [u8], max_body_bytes: usize) -> (Result<Bytes, GetError>, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let mut asked = vec![0u8; 4096];
            let n = theirs.read(&mut asked).await.unwrap();
            theirs.write_all(response).await.unwrap();
            theirs.shutdown().await.unwrap();
            String::from_utf8_lossy(&asked[..n]).to_string()
        });
        let got = get_over(ours, &ep(false, "::1", 9741), &request(max_body_bytes)).await;
        (got, server.await.unwrap())
    }

    #[tokio::test]
    async fn answers_and_bounds() {
        let (got, asked) = answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", 16).await;
        assert_eq!(got.unwrap(), "ok");
        assert!(asked.starts_with("GET /x HTTP/1.1\r\n"), "{asked}");
        assert!(asked.contains("host: [::1]:9741\r\n") && asked.contains("authorization: Bearer t\r\n"), "{asked}");
        let (got, _) = answer(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n", 16).await;
        assert!(matches!(got, Err(GetError::Status(s)) if s == 401), "{got:?}");
        let (got, _) = answer(b"HTTP/1.1 200 OK\r\ncontent-length: 17\r\n\r\n0123456789abcdefg", 16).await;
        assert!(matches!(&got, Err(GetError::Failed(e)) if e.contains("limit 16")), "{got:?}");
        let (got, _) = answer(b"SSH-2.0-OpenSSH\r\n", 16).await;
        assert!(matches!(got, Err(GetError::Failed(_))), "{got:?}");
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let _held = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(10)).await;
            drop(s);
        });
        let mut req = request(16);
        req.timeout = Duration::from_millis(200);
        let got = get(&ep(false, "127.0.0.1", port), &req).await;
        assert!(matches!(got, Err(GetError::Timeout(_))), "{got:?}");
    }

    #[test]
    fn a_missing_ca_bundle_is_named() {
        let e = Trust::new(Some("/nonexistent/ca.pem".into())).config().unwrap_err();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }

    /// A certificate only (tests/fixtures/ca.pem, self-signed, marked a CA).
    const FIXTURE_CA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ca.pem");

    #[test]
    fn a_trust_reads_its_bundle_once() {
        let trust = Trust::new(Some(FIXTURE_CA.into()));
        let a = trust.config().expect("the fixture CA loads");
        let b = trust.config().expect("read again");
        assert!(Arc::ptr_eq(&a, &b), "built again");
    }

    #[test]
    fn a_bundle_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("sockprobe-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = Trust::new(Some(empty.clone())).config().unwrap_err();
        assert!(e.contains("empty.pem") && e.contains("no usable certificate"), "{e}");
        std::fs::remove_dir_all(dir).ok();
    }
}
