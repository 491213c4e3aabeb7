//! `sockprobe run` settings: defaults, then the TOML file (`--config.file`),
//! then flags; flag beats file. Every flag `--SECTION.NAME` has the key
//! `NAME` (dots as dashes) in table `[SECTION]` (docs/configuration.md).
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use probe_common::StateStore;
use serde::Deserialize;

use crate::{error::Error, probes::ProbeSettings};

/// Settings as given on the command line; `None` = not given.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen_address: Option<String>,
    pub telemetry_path: Option<String>,
    pub web_config_file: Option<PathBuf>,
    pub max_endpoints: Option<u32>,
    pub series_ttl: Option<String>,
    pub max_sockets: Option<u32>,
    pub ring_buffer_bytes: Option<u32>,
    pub state_store: Option<String>,
    pub log_level: Option<String>,
    pub kubernetes_api_url: Option<String>,
    pub kubernetes_node_name: Option<String>,
}

/// The file, as written. Unknown keys are errors (a typo must not be ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    web: WebFile,
    #[serde(default)]
    metrics: MetricsFile,
    #[serde(default)]
    probe: ProbeFile,
    #[serde(default)]
    log: LogFile,
    #[serde(default)]
    kubernetes: KubernetesFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct KubernetesFile {
    api_url: Option<String>,
    node_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct WebFile {
    listen_address: Option<String>,
    telemetry_path: Option<String>,
    config_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct MetricsFile {
    max_endpoints: Option<u32>,
    series_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ProbeFile {
    max_sockets: Option<u32>,
    ring_buffer_bytes: Option<u32>,
    state_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogFile {
    level: Option<String>,
}

/// Validated settings of the daemon.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub listen_address: SocketAddr,
    pub telemetry_path: String,
    pub web_config_file: Option<PathBuf>,
    /// Distinct `endpoint` values per (comm, container) before folding into `other`.
    pub max_endpoints: u32,
    /// Label sets of processes without sockets or events for this long are dropped.
    pub series_ttl: Duration,
    pub max_sockets: u32,
    pub ring_buffer_bytes: u32,
    pub state_store: StateStore,
    pub log_level: String,
    /// Kubernetes API for pod names; default: in-cluster when running in a pod.
    pub kubernetes_api_url: Option<String>,
    /// This node's name for the pod list; default: `$NODE_NAME`.
    pub kubernetes_node_name: Option<String>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9741";
pub const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

impl RunConfig {
    pub fn load(file: Option<&std::path::Path>, flags: Overrides) -> Result<RunConfig, Error> {
        let f: File = match file {
            None => File::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Error::Config(format!("cannot read --config.file {}: {e}", path.display())))?;
                toml::from_str(&text).map_err(|e| {
                    let msg = e.message().replace('\n', " ");
                    Error::Config(format!("invalid --config.file {}: {msg}", path.display()))
                })?
            }
        };
        let listen = flags.listen_address.or(f.web.listen_address).unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen_address = listen.parse::<SocketAddr>().map_err(|_| {
            Error::Config(format!(
                "invalid web.listen-address '{listen}': expected IP:PORT, e.g. 0.0.0.0:9741 or [::]:9741"
            ))
        })?;
        let telemetry_path = flags.telemetry_path.or(f.web.telemetry_path).unwrap_or_else(|| "/metrics".into());
        if !telemetry_path.starts_with('/') || telemetry_path == "/" || telemetry_path == "/healthz" {
            return Err(Error::Config(format!(
                "invalid web.telemetry-path '{telemetry_path}': expected a path starting with '/', other than '/' and '/healthz'"
            )));
        }
        let max_endpoints = flags.max_endpoints.or(f.metrics.max_endpoints).unwrap_or(100);
        if max_endpoints == 0 {
            return Err(Error::Config("invalid metrics.max-endpoints 0: expected 1 or more".into()));
        }
        let ttl = flags.series_ttl.or(f.metrics.series_ttl).unwrap_or_else(|| "10m".into());
        let series_ttl = parse_duration(&ttl).ok_or_else(|| {
            Error::Config(format!("invalid metrics.series-ttl '{ttl}': expected a duration like 90s, 10m, 1h"))
        })?;
        let max_sockets = flags.max_sockets.or(f.probe.max_sockets).unwrap_or(131_072);
        if !(1024..=16_777_216).contains(&max_sockets) {
            return Err(Error::Config(format!("invalid probe.max-sockets {max_sockets}: expected 1024 to 16777216")));
        }
        let ring_buffer_bytes = flags.ring_buffer_bytes.or(f.probe.ring_buffer_bytes).unwrap_or(1 << 20);
        if !ring_buffer_bytes.is_power_of_two() || !(4096..=1 << 30).contains(&ring_buffer_bytes) {
            return Err(Error::Config(format!(
                "invalid probe.ring-buffer-bytes {ring_buffer_bytes}: expected a power of two from 4096 to 1073741824"
            )));
        }
        let store = flags.state_store.or(f.probe.state_store).unwrap_or_else(|| "lru".into());
        let state_store = match store.as_str() {
            "lru" => StateStore::LruHash,
            "socket-local" => StateStore::SocketLocal,
            _ => {
                return Err(Error::Config(format!(
                    "invalid probe.state-store '{store}': expected lru or socket-local"
                )));
            }
        };
        let log_level = flags.log_level.or(f.log.level).unwrap_or_else(|| "info".into());
        if !LOG_LEVELS.contains(&log_level.as_str()) {
            return Err(Error::Config(format!(
                "invalid log.level '{log_level}': expected one of {}",
                LOG_LEVELS.join(", ")
            )));
        }
        let kubernetes_api_url = flags.kubernetes_api_url.or(f.kubernetes.api_url);
        if let Some(u) = &kubernetes_api_url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            return Err(Error::Config(format!("invalid kubernetes.api-url '{u}': expected https://HOST:PORT")));
        }
        Ok(RunConfig {
            kubernetes_api_url,
            kubernetes_node_name: flags.kubernetes_node_name.or(f.kubernetes.node_name),
            listen_address,
            telemetry_path,
            web_config_file: flags.web_config_file.or(f.web.config_file),
            max_endpoints,
            series_ttl,
            max_sockets,
            ring_buffer_bytes,
            state_store,
            log_level,
        })
    }
}

impl RunConfig {
    pub fn probe_settings(&self) -> ProbeSettings {
        ProbeSettings {
            max_sockets: self.max_sockets,
            ring_buffer_bytes: self.ring_buffer_bytes,
            state_store: self.state_store,
        }
    }
}

/// `90s`, `10m`, `1h`, `500ms`, or plain seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return None,
    };
    (!d.is_zero()).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile_path::TempPath {
        tempfile_path::write(text)
    }

    /// A tiny temp-file helper: std only.
    mod tempfile_path {
        pub struct TempPath(pub std::path::PathBuf);
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
        pub fn write(text: &str) -> TempPath {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "sockprobe-cfg-{}-{}.toml",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::write(&p, text).unwrap();
            TempPath(p)
        }
    }

    #[test]
    fn defaults() {
        let c = RunConfig::load(None, Overrides::default()).unwrap();
        assert_eq!(c.listen_address.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.telemetry_path, "/metrics");
        assert_eq!(c.max_endpoints, 100);
        assert_eq!(c.series_ttl, Duration::from_secs(600));
        assert_eq!(c.state_store, StateStore::LruHash);
    }

    #[test]
    fn state_store() {
        let f = file("[probe]\nstate-store = \"socket-local\"\n");
        assert_eq!(RunConfig::load(Some(&f.0), Overrides::default()).unwrap().state_store, StateStore::SocketLocal);
        let e = RunConfig::load(None, Overrides { state_store: Some("hash".into()), ..Default::default() })
            .unwrap_err()
            .to_string();
        assert!(e.contains("probe.state-store 'hash'") && e.contains("socket-local"), "{e}");
    }

    #[test]
    fn flag_beats_file() {
        let f =
            file("[web]\nlisten-address = \"127.0.0.1:1234\"\ntelemetry-path = \"/m\"\n[metrics]\nmax-endpoints = 7\n");
        let flags = Overrides { listen_address: Some("127.0.0.1:999".into()), ..Default::default() };
        let c = RunConfig::load(Some(&f.0), flags).unwrap();
        assert_eq!(c.listen_address.port(), 999);
        assert_eq!(c.telemetry_path, "/m");
        assert_eq!(c.max_endpoints, 7);
    }

    #[test]
    fn bad_values_name_the_key() {
        let f = file("[metrics]\nseries-ttl = \"soon\"\n");
        let e = RunConfig::load(Some(&f.0), Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("metrics.series-ttl") && e.contains("10m"), "{e}");
        let f = file("[web]\nlisten-adress = \"x\"\n");
        let e = RunConfig::load(Some(&f.0), Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("listen-adress"), "{e}");
        let e = RunConfig::load(None, Overrides { listen_address: Some("nope".into()), ..Default::default() })
            .unwrap_err()
            .to_string();
        assert!(e.contains("web.listen-address 'nope'"), "{e}");
        let e = RunConfig::load(Some(std::path::Path::new("/nonexistent.toml")), Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read --config.file"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("soon"), None);
    }
}
