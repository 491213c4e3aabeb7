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
    collections::HashMap,
    net::IpAddr,
    path::Path,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use base64::Engine;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::error::Error;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsFile>,
    #[serde(default)]
    basic_auth_users: HashMap<String, String>,
    /// Accepted for compatibility; sockprobe serves HTTP/1.1 only.
    #[serde(default, rename = "http_server_config")]
    _http_server_config: Option<serde_yaml_ng::Value>,
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

/// bcrypt costs accepted in `basic_auth_users`: a cost-31 hash would take
/// days to check, so one such user could stall every scrape. htpasswd's
/// default is 5, exporter-toolkit's examples use 10; 12 takes ~0.2 s here.
pub const MAX_BCRYPT_COST: u32 = 12;
/// bcrypt checks running at once (each on a blocking thread); a request
/// beyond them is refused at once with 503, not queued.
pub const MAX_CONCURRENT_BCRYPT: usize = 2;
/// Wrong credentials a client address may send per window before its next
/// attempts are refused without a bcrypt check.
pub const MAX_FAILURES: u32 = 5;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(10);
/// Client addresses remembered for the rate limit, and credentials cached as
/// accepted: both bounded, whoever connects.
const MAX_TRACKED_CLIENTS: usize = 4096;
const MAX_ACCEPTED: usize = 64;

/// What the HTTP server enforces.
pub struct WebConfig {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    users: HashMap<String, String>,
    /// A hash of the users' highest cost to check unknown users against, so
    /// an unknown user takes as long as a wrong password (no user oracle);
    /// made at the first unknown user, on a blocking thread.
    dummy_cost: u32,
    dummy_hash: Arc<OnceLock<String>>,
    /// `Authorization` values already checked: bcrypt is slow on purpose.
    accepted: Mutex<Vec<String>>,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    bcrypt_slots: Arc<Semaphore>,
}

/// The outcome of checking a request's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Allowed,
    /// Wrong or missing credentials: 401.
    Denied,
    /// Too many failures from this address: 429, no bcrypt check.
    RateLimited,
    /// Every bcrypt slot busy: 503, try again.
    Busy,
}

fn bad(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Config(format!("invalid --web.config.file {}: {what}", path.display()))
}

impl WebConfig {
    pub fn none() -> WebConfig {
        WebConfig::with_users(None, HashMap::new())
    }

    fn with_users(tls: Option<Arc<rustls::ServerConfig>>, users: HashMap<String, String>) -> WebConfig {
        let dummy_cost = users.values().filter_map(|h| bcrypt_cost(h)).max().unwrap_or(4);
        WebConfig {
            tls,
            users,
            dummy_cost,
            dummy_hash: Arc::new(OnceLock::new()),
            accepted: Mutex::new(Vec::new()),
            failures: Mutex::new(HashMap::new()),
            bcrypt_slots: Arc::new(Semaphore::new(MAX_CONCURRENT_BCRYPT)),
        }
    }

    pub fn load(path: &Path) -> Result<WebConfig, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read --web.config.file {}: {e}", path.display())))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, dir).map_err(|what| bad(path, what))
    }

    /// The file's text; relative paths are resolved against `dir`.
    pub fn parse(text: &str, dir: &Path) -> Result<WebConfig, String> {
        let f: File = serde_yaml_ng::from_str(text).map_err(|e| e.to_string().replace('\n', " "))?;
        let tls = match f.tls_server_config {
            None => None,
            Some(t) => {
                if t.client_auth_type.as_deref().is_some_and(|c| c != "NoClientCert") {
                    return Err("client_auth_type: only NoClientCert is supported".into());
                }
                if let Some(v) = t.min_version.as_deref().filter(|v| !["TLS12", "TLS13"].contains(v)) {
                    return Err(format!("min_version {v}: expected TLS12 or TLS13"));
                }
                let cert_path = dir.join(&t.cert_file);
                let key_path = dir.join(&t.key_file);
                let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(&cert_path)
                    .and_then(|certs| certs.collect::<Result<_, _>>())
                    .map_err(|e| format!("cert_file {}: {e}", cert_path.display()))?;
                if certs.is_empty() {
                    return Err(format!("cert_file {}: no PEM certificate", cert_path.display()));
                }
                let key = PrivateKeyDer::from_pem_file(&key_path)
                    .map_err(|e| format!("key_file {}: {e}", key_path.display()))?;
                let versions: &[&rustls::SupportedProtocolVersion] = if t.min_version.as_deref() == Some("TLS13") {
                    &[&rustls::version::TLS13]
                } else {
                    rustls::DEFAULT_VERSIONS
                };
                let config =
                    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                        .with_protocol_versions(versions)
                        .map_err(|e| e.to_string())?
                        .with_no_client_auth()
                        .with_single_cert(certs, key)
                        .map_err(|e| format!("certificate and key: {e}"))?;
                Some(Arc::new(config))
            }
        };
        for (user, hash) in &f.basic_auth_users {
            match bcrypt_cost(hash) {
                None => return Err(format!("basic_auth_users.{user}: expected a bcrypt hash ($2y$10$...)")),
                Some(c) if c > MAX_BCRYPT_COST => {
                    return Err(format!(
                        "basic_auth_users.{user}: bcrypt cost {c} is above {MAX_BCRYPT_COST} (each check would stall scrapes)"
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(WebConfig::with_users(tls, f.basic_auth_users))
    }

    pub fn requires_auth(&self) -> bool {
        !self.users.is_empty()
    }

    /// What the operator should hear at start-up about this configuration.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.requires_auth() && self.tls.is_none() {
            out.push(
                "basic auth without TLS: passwords cross the network in clear text on every scrape; \
                 add tls_server_config to the web config file (docs/configuration.md)"
                    .to_string(),
            );
        }
        out
    }

    /// Checks a request's `Authorization` header from `client`. Cheap checks
    /// first; bcrypt on a blocking thread, at most [`MAX_CONCURRENT_BCRYPT`]
    /// at once.
    pub async fn authorize(&self, header: Option<&str>, client: IpAddr) -> Auth {
        if self.users.is_empty() {
            return Auth::Allowed;
        }
        let Some(value) = header else { return Auth::Denied };
        // The rate limit first: an address past it learns nothing, not even
        // from the cache's answer.
        if self.rate_limited(client) {
            return Auth::RateLimited;
        }
        // Every cached credential compared, each in constant time: neither
        // the answer's timing nor which entry matched depends on the guess.
        let cached = self.accepted.lock().unwrap().iter().fold(subtle::Choice::from(0), |hit, a| {
            hit | subtle::ConstantTimeEq::ct_eq(a.as_bytes(), value.as_bytes())
        });
        if bool::from(cached) {
            return Auth::Allowed;
        }
        let Some((user, pass)) = basic_credentials(value) else {
            self.failed(client);
            return Auth::Denied;
        };
        let Ok(permit) = self.bcrypt_slots.clone().try_acquire_owned() else { return Auth::Busy };
        // Unknown users are checked against a dummy hash: same time as a wrong password.
        let known = self.users.get(&user).cloned();
        let (dummy, cost) = (self.dummy_hash.clone(), self.dummy_cost);
        let is_known = known.is_some();
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let hash = known.unwrap_or_else(|| {
                dummy.get_or_init(|| bcrypt::hash("sockprobe: no such user", cost).unwrap_or_default()).clone()
            });
            bcrypt::verify(pass, &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false)
            && is_known;
        if ok {
            let mut accepted = self.accepted.lock().unwrap();
            if accepted.len() >= MAX_ACCEPTED {
                accepted.remove(0);
            }
            accepted.push(value.to_string());
            Auth::Allowed
        } else {
            self.failed(client);
            Auth::Denied
        }
    }

    fn rate_limited(&self, client: IpAddr) -> bool {
        let failures = self.failures.lock().unwrap();
        failures.get(&client).is_some_and(|(since, n)| *n >= MAX_FAILURES && since.elapsed() < FAILURE_WINDOW)
    }

    fn failed(&self, client: IpAddr) {
        let mut failures = self.failures.lock().unwrap();
        if failures.len() >= MAX_TRACKED_CLIENTS && !failures.contains_key(&client) {
            failures.retain(|_, (since, _)| since.elapsed() < FAILURE_WINDOW);
            // Every slot fresh (a flood from many addresses): the one whose
            // window began first gives its place up, not every address its
            // limit (the bcrypt limit holds either way).
            if failures.len() >= MAX_TRACKED_CLIENTS
                && let Some(oldest) = failures.iter().min_by_key(|(_, (since, _))| *since).map(|(ip, _)| *ip)
            {
                failures.remove(&oldest);
            }
        }
        let entry = failures.entry(client).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= FAILURE_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

/// The cost of a bcrypt hash (`$2a$`, `$2b$`, `$2x$`, `$2y$`), if it is one.
fn bcrypt_cost(hash: &str) -> Option<u32> {
    let parts: bcrypt::HashParts = hash.parse().ok()?;
    Some(parts.get_cost())
}

/// `Basic <base64 of user:password>`, strictly decoded (one spelling per credential).
pub fn basic_credentials(value: &str) -> Option<(String, String)> {
    // No trimming: one spelling per credential, the one clients send.
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, pass) = decoded.split_once(':')?;
    Some((user.to_string(), pass.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    fn alice() -> WebConfig {
        WebConfig::with_users(None, HashMap::from([("alice".to_string(), bcrypt::hash("secret", 4).unwrap())]))
    }

    #[test]
    fn strict_base64() {
        assert_eq!(basic_credentials("Basic YWxpY2U6c2VjcmV0"), Some(("alice".into(), "secret".into())));
        assert!(basic_credentials("Basic YWxp=Y2U6c2VjcmV0").is_none(), "'=' inside: another spelling");
        assert!(basic_credentials("Basic !!").is_none());
        assert!(basic_credentials("Bearer x").is_none());
        for other_spelling in ["Basic  YWxpY2U6c2VjcmV0", "Basic YWxpY2U6c2VjcmV0 ", "Basic YWxpY2U6c2VjcmV0\t"] {
            assert!(basic_credentials(other_spelling).is_none(), "{other_spelling:?}");
        }
    }

    #[test]
    fn rate_limited_addresses_are_refused_before_the_cache() {
        let rt = runtime();
        let w = alice();
        let me: IpAddr = "10.0.0.3".parse().unwrap();
        assert_eq!(rt.block_on(w.authorize(Some("Basic YWxpY2U6c2VjcmV0"), me)), Auth::Allowed, "now cached");
        for _ in 0..MAX_FAILURES {
            assert_eq!(rt.block_on(w.authorize(Some("Basic Ym9iOng="), me)), Auth::Denied);
        }
        // Even the cached, right credential: the limit answers first.
        assert_eq!(rt.block_on(w.authorize(Some("Basic YWxpY2U6c2VjcmV0"), me)), Auth::RateLimited);
    }

    #[test]
    fn a_full_rate_limiter_keeps_limiting() {
        let w = alice();
        let limited: IpAddr = "10.1.0.1".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            w.failed(limited);
        }
        assert!(w.rate_limited(limited));
        // A flood from as many fresh addresses as the limiter holds.
        for i in 0..MAX_TRACKED_CLIENTS as u32 {
            w.failed(IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i)));
        }
        // Full, not wiped: every other address keeps its count.
        assert_eq!(w.failures.lock().unwrap().len(), MAX_TRACKED_CLIENTS);
        let still = w.failures.lock().unwrap().values().filter(|(_, n)| *n >= MAX_FAILURES).count();
        assert!(still <= 1, "at most the oldest gave way");
        // What was limited before the flood began gave its place up first:
        // the newest addresses keep theirs.
        let newest = IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + MAX_TRACKED_CLIENTS as u32 - 1));
        assert!(w.failures.lock().unwrap().contains_key(&newest));
    }

    #[test]
    fn basic_auth_without_tls_is_warned_about() {
        assert_eq!(alice().warnings().len(), 1);
        assert!(alice().warnings()[0].contains("without TLS"));
        assert!(WebConfig::none().warnings().is_empty());
    }

    #[test]
    fn basic_auth() {
        let rt = runtime();
        let w = alice();
        let me: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(rt.block_on(w.authorize(Some("Basic YWxpY2U6c2VjcmV0"), me)), Auth::Allowed);
        assert_eq!(rt.block_on(w.authorize(Some("Basic YWxpY2U6c2VjcmV0"), me)), Auth::Allowed, "cached");
        assert_eq!(rt.block_on(w.authorize(Some("Basic YWxpY2U6d3Jvbmc="), me)), Auth::Denied, "alice:wrong");
        assert_eq!(rt.block_on(w.authorize(None, me)), Auth::Denied);
        assert_eq!(rt.block_on(WebConfig::none().authorize(None, me)), Auth::Allowed);
    }

    #[test]
    fn failures_are_rate_limited_per_address() {
        let rt = runtime();
        let w = alice();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..MAX_FAILURES {
            assert_eq!(rt.block_on(w.authorize(Some("Basic Ym9iOng="), a)), Auth::Denied, "bob:x, unknown user");
        }
        assert_eq!(rt.block_on(w.authorize(Some("Basic YWxpY2U6c2VjcmV0"), a)), Auth::RateLimited);
        assert_eq!(rt.block_on(w.authorize(Some("Basic YWxpY2U6c2VjcmV0"), b)), Auth::Allowed, "others unaffected");
    }

    #[test]
    fn absurd_costs_and_non_hashes_are_refused() {
        let dir = Path::new("/");
        let e = WebConfig::parse(
            "basic_auth_users:\n  a: $2y$31$CM1lEph2QhK91UDDfmvgzOM8n4F3V8225KqyCvPx.Rgm0qlYCXdXa\n",
            dir,
        );
        assert!(e.err().unwrap().contains("cost 31"));
        let e = WebConfig::parse("basic_auth_users:\n  a: plaintext\n", dir);
        assert!(e.err().unwrap().contains("expected a bcrypt hash"));
        let ok = WebConfig::parse(
            "basic_auth_users:\n  a: $2y$10$CM1lEph2QhK91UDDfmvgzOM8n4F3V8225KqyCvPx.Rgm0qlYCXdXa\n",
            dir,
        );
        assert!(ok.unwrap().requires_auth());
    }
}
