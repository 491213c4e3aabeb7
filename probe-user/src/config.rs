//! Settings: defaults, then the TOML file (`--config.file`), then flags; a
//! flag beats the file. Every flag `--SECTION.NAME` is key `NAME` in table
//! `[SECTION]` (docs/configuration.md).
//!
//! Each section is one struct that serves both clap (the flags) and serde
//! (the file): its fields are `Option`s, merged once ([`Settings::merge`]),
//! then resolved against the defaults below, the only place they are
//! written down.
use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use probe_common::{DEFAULT_MAX_SOCKETS, DEFAULT_RING_BUFFER_BYTES, StateStore};
use serde::Deserialize;

use crate::{
    aggregate::{Limits, findings::Thresholds},
    error::Error,
    identity::k8s,
    kernel::ProbeSettings,
};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9741";
pub const DEFAULT_TELEMETRY_PATH: &str = "/metrics";
/// Where the per-process API is served (and where `doctor` and `top` ask).
pub const DEFAULT_API_SOCKET: &str = "/run/sockprobe/api.sock";
pub const DEFAULT_MAX_ENDPOINTS: u32 = Limits::DEFAULT.max_endpoints as u32;
/// (comm, container) pairs and label sets in all, and per container: sized
/// so that the worst case stays well inside the DaemonSet's 256 MiB, and a
/// quarter for one tenant (docs/security.md).
pub const DEFAULT_MAX_PROCESSES: u32 = Limits::DEFAULT.max_processes as u32;
pub const DEFAULT_MAX_SERIES: u32 = Limits::DEFAULT.max_series as u32;
pub const DEFAULT_MAX_PROCESSES_PER_CONTAINER: u32 = Limits::DEFAULT.max_processes_per_container as u32;
pub const DEFAULT_MAX_SERIES_PER_CONTAINER: u32 = Limits::DEFAULT.max_series_per_container as u32;
pub const DEFAULT_SERIES_TTL: &str = "10m";
pub const DEFAULT_RECONCILE_INTERVAL: &str = "30s";
pub const DEFAULT_LOG_LEVEL: LogLevel = LogLevel::Info;
pub const MAX_SOCKETS_RANGE: (u32, u32) = (1024, 16_777_216);
pub const RING_BUFFER_RANGE: (u32, u32) = (4096, 1 << 30);

/// The id of a group by name (getgrnam_r).
fn group_id(name: &str) -> Option<u32> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut group: libc::group = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is to memory we own, sized as passed.
    let rc = unsafe { libc::getgrnam_r(cname.as_ptr(), &mut group, buf.as_mut_ptr(), buf.len(), &mut found) };
    (rc == 0 && !found.is_null()).then_some(group.gr_gid)
}

/// A help line that ends with the setting's default.
fn with_default(help: &str, default: impl fmt::Display) -> String {
    format!("{help} [default: {default}]")
}

#[derive(clap::Args, Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct WebSection {
    #[arg(id = "web.listen-address", long = "web.listen-address", value_name = "IP:PORT",
          help = with_default("Address to serve metrics on ([::]:9741 for IPv6)", DEFAULT_LISTEN))]
    pub listen_address: Option<ListenAddress>,
    #[arg(id = "web.telemetry-path", long = "web.telemetry-path", value_name = "PATH",
          help = with_default("Path of the metrics", DEFAULT_TELEMETRY_PATH))]
    pub telemetry_path: Option<TelemetryPath>,
    #[arg(id = "web.api-socket", long = "web.api-socket", value_name = "PATH",
          help = with_default("Unix socket serving every page, the per-process API (/api/v1/findings, /api/v1/connections: pids, endpoints, languages of every process) included; `doctor` and `top` ask it. Mode 0600 (root), or 0660 with --web.api-socket-group", DEFAULT_API_SOCKET))]
    pub api_socket: Option<PathBuf>,
    #[arg(
        id = "web.api-socket-group",
        long = "web.api-socket-group",
        value_name = "GROUP",
        help = "Group allowed to read the API socket (mode 0660) [default: none, root only]"
    )]
    pub api_socket_group: Option<String>,
    #[arg(
        id = "web.api-over-tcp",
        long = "web.api-over-tcp",
        num_args = 0,
        default_missing_value = "true",
        help = "Also serve /api/v1/* on --web.listen-address (behind --web.config.file's auth): a network client, or any local user if it listens on loopback without auth, then reads every process's pids and endpoints [default: false]"
    )]
    pub api_over_tcp: Option<bool>,
    /// TLS and basic-auth settings, in the Prometheus exporter-toolkit
    /// web-config format (tls_server_config, basic_auth_users).
    #[arg(id = "web.config.file", long = "web.config.file", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
}

#[derive(clap::Args, Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MetricsSection {
    #[arg(id = "metrics.max-endpoints", long = "metrics.max-endpoints", value_name = "N",
          help = with_default("Distinct `endpoint` label values per (comm, container); the rest are folded into endpoint=\"other\"", DEFAULT_MAX_ENDPOINTS))]
    pub max_endpoints: Option<u32>,
    #[arg(id = "metrics.max-processes", long = "metrics.max-processes", value_name = "N",
          help = with_default("Distinct (comm, container) pairs; the rest are folded into comm=\"other\" (a process renaming itself cannot add series without end)", DEFAULT_MAX_PROCESSES))]
    pub max_processes: Option<u32>,
    #[arg(id = "metrics.max-series", long = "metrics.max-series", value_name = "N",
          help = with_default("Label sets (comm, container, direction, endpoint) in all; past it, new ones are folded into comm=\"other\", endpoint=\"other\"", DEFAULT_MAX_SERIES))]
    pub max_series: Option<u32>,
    #[arg(id = "metrics.max-processes-per-container", long = "metrics.max-processes-per-container", value_name = "N",
          help = with_default("(comm, container) pairs of one container (pod); the rest of its processes are folded into comm=\"other\" in that container, so one tenant cannot use up --metrics.max-processes for the others (host processes have no such cap)", DEFAULT_MAX_PROCESSES_PER_CONTAINER))]
    pub max_processes_per_container: Option<u32>,
    #[arg(id = "metrics.max-series-per-container", long = "metrics.max-series-per-container", value_name = "N",
          help = with_default("Label sets of one container (pod); past it, its new ones are folded into comm=\"other\", endpoint=\"other\" in that container", DEFAULT_MAX_SERIES_PER_CONTAINER))]
    pub max_series_per_container: Option<u32>,
    #[arg(id = "metrics.series-ttl", long = "metrics.series-ttl", value_name = "DURATION",
          help = with_default("Drop the series of a process with no socket and no event for this long (90s, 10m, 1h)", DEFAULT_SERIES_TTL))]
    pub series_ttl: Option<HumanDuration>,
    #[arg(id = "metrics.reconcile-interval", long = "metrics.reconcile-interval", value_name = "DURATION",
          help = with_default("How often every process's sockets are listed, in every network namespace, to correct the live gauges (sockets whose events were missed, connections over but still held)", DEFAULT_RECONCILE_INTERVAL))]
    pub reconcile_interval: Option<HumanDuration>,
}

#[derive(clap::Args, Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ProbeSection {
    #[arg(id = "probe.max-sockets", long = "probe.max-sockets", value_name = "N",
          help = with_default("Sockets the kernel side keeps state for, allocated up front: the cookie table gets twice as many slots (96 bytes each), the LRU hash this many entries (~150 bytes each). Beyond it, the oldest (table) or least recently used (LRU) sockets are forgotten, counted", DEFAULT_MAX_SOCKETS))]
    pub max_sockets: Option<u32>,
    #[arg(id = "probe.ring-buffer-bytes", long = "probe.ring-buffer-bytes", value_name = "BYTES",
          help = with_default("Kernel-to-userspace ring buffer, a power of two; overflow is counted in sockprobe_events_lost_total", DEFAULT_RING_BUFFER_BYTES))]
    pub ring_buffer_bytes: Option<u32>,
    #[arg(id = "probe.state-store", long = "probe.state-store", value_name = "STORE",
          help = with_default("Where the kernel side keeps per-socket state: `cookie-table`, an array indexed by socket cookie, no locks or allocation (BTF hooks only); `lru`, a hash map, works with kprobes too; or `socket-local`, socket storage (kernel 5.11+, BTF hooks only): unbounded, an allocation per socket. Where kprobes stand in, `lru` is used. Benchmarks: docs/benchmarks.md", StateStore::default().name()))]
    pub state_store: Option<StateStore>,
}

#[derive(clap::Args, Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KubernetesSection {
    /// Kubernetes API server, to name pods' containers /k8s/<namespace>/<pod>/<container>
    /// [default: in-cluster (KUBERNETES_SERVICE_HOST) when running in a pod].
    #[arg(id = "kubernetes.api-url", long = "kubernetes.api-url", value_name = "URL")]
    pub api_url: Option<String>,
    /// This node's name, to list only its pods [default: $NODE_NAME].
    #[arg(id = "kubernetes.node-name", long = "kubernetes.node-name", value_name = "NAME")]
    pub node_name: Option<String>,
    #[arg(
        id = "kubernetes.name-endpoints",
        long = "kubernetes.name-endpoints",
        value_name = "BOOL",
        help = "Name remote endpoints by the Service, pod or node they belong to (endpoint=\"svc/<namespace>/<service>:<port>\"), from a watch of every Service and EndpointSlice; false keeps raw ip:port [default: true]"
    )]
    pub name_endpoints: Option<bool>,
}

/// When a diagnosis finding stands (docs/diagnosis.md); defaults in
/// `aggregate::findings::Thresholds::default`.
#[derive(clap::Args, Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DiagnosisSection {
    #[arg(id = "diagnosis.window", long = "diagnosis.window", value_name = "DURATION",
          help = with_default("Sliding window the findings are judged over", HumanDuration(Thresholds::default().window)))]
    pub window: Option<HumanDuration>,
    #[arg(id = "diagnosis.min-connections", long = "diagnosis.min-connections", value_name = "N",
          help = with_default("Connections closed in the window before reuse is judged (no_reuse, peer_closes)", Thresholds::default().min_connections))]
    pub min_connections: Option<u64>,
    #[arg(id = "diagnosis.min-unread-closes", long = "diagnosis.min-unread-closes", value_name = "N",
          help = with_default("Unread closes in the window for unread_close", Thresholds::default().min_unread_closes))]
    pub min_unread_closes: Option<u64>,
    #[arg(id = "diagnosis.min-held-sockets", long = "diagnosis.min-held-sockets", value_name = "N",
          help = with_default("Sockets in CLOSE_WAIT (close_wait_leak), or over but held (closed_fd_leak), per process and endpoint", Thresholds::default().min_held_sockets))]
    pub min_held_sockets: Option<u64>,
    #[arg(id = "diagnosis.close-wait-age", long = "diagnosis.close-wait-age", value_name = "DURATION",
          help = with_default("Age the oldest CLOSE_WAIT socket must reach for close_wait_leak", HumanDuration(Thresholds::default().close_wait_age)))]
    pub close_wait_age: Option<HumanDuration>,
    #[arg(id = "diagnosis.min-resets", long = "diagnosis.min-resets", value_name = "N",
          help = with_default("Resets received in the window for resets_received", Thresholds::default().min_resets))]
    pub min_resets: Option<u64>,
    #[arg(id = "diagnosis.slow-connect", long = "diagnosis.slow-connect", value_name = "DURATION",
          help = with_default("A connect() slower than this is slow (slow_connect: most of the window's are)", HumanDuration(Thresholds::default().slow_connect)))]
    pub slow_connect: Option<HumanDuration>,
    #[arg(id = "diagnosis.retransmit-share", long = "diagnosis.retransmit-share", value_name = "SHARE",
          help = with_default("Share of data segments retransmitted to one endpoint for retransmits (0.02 = 2%)", Thresholds::default().retransmit_share))]
    pub retransmit_share: Option<f64>,
    #[arg(id = "diagnosis.min-connect-failures", long = "diagnosis.min-connect-failures", value_name = "N",
          help = with_default("Failed connects in the window for connect_failures (and SYN retransmits or connects for slow_connect)", Thresholds::default().min_connect_failures))]
    pub min_connect_failures: Option<u64>,
    #[arg(id = "diagnosis.min-retransmits", long = "diagnosis.min-retransmits", value_name = "N",
          help = with_default("Retransmitted segments in the window before retransmits judges the share", Thresholds::default().min_retransmits))]
    pub min_retransmits: Option<u64>,
}

impl DiagnosisSection {
    fn merge(self, f: DiagnosisSection) -> DiagnosisSection {
        DiagnosisSection {
            window: self.window.or(f.window),
            min_connections: self.min_connections.or(f.min_connections),
            min_unread_closes: self.min_unread_closes.or(f.min_unread_closes),
            min_held_sockets: self.min_held_sockets.or(f.min_held_sockets),
            close_wait_age: self.close_wait_age.or(f.close_wait_age),
            min_resets: self.min_resets.or(f.min_resets),
            slow_connect: self.slow_connect.or(f.slow_connect),
            retransmit_share: self.retransmit_share.or(f.retransmit_share),
            min_connect_failures: self.min_connect_failures.or(f.min_connect_failures),
            min_retransmits: self.min_retransmits.or(f.min_retransmits),
        }
    }

    pub fn resolve(self) -> Result<Thresholds, Error> {
        let d = Thresholds::default();
        let t = Thresholds {
            window: self.window.map_or(d.window, |w| w.0),
            min_connections: self.min_connections.unwrap_or(d.min_connections),
            min_unread_closes: self.min_unread_closes.unwrap_or(d.min_unread_closes),
            min_held_sockets: self.min_held_sockets.unwrap_or(d.min_held_sockets),
            close_wait_age: self.close_wait_age.map_or(d.close_wait_age, |a| a.0),
            min_resets: self.min_resets.unwrap_or(d.min_resets),
            slow_connect: self.slow_connect.map_or(d.slow_connect, |a| a.0),
            retransmit_share: self.retransmit_share.unwrap_or(d.retransmit_share),
            port_share: d.port_share,
            min_connect_failures: self.min_connect_failures.unwrap_or(d.min_connect_failures),
            min_retransmits: self.min_retransmits.unwrap_or(d.min_retransmits),
        };
        if !(t.retransmit_share > 0.0 && t.retransmit_share <= 1.0) {
            return Err(Error::Config(format!(
                "invalid diagnosis.retransmit-share {}: expected a share above 0, at most 1",
                t.retransmit_share
            )));
        }
        if t.window < std::time::Duration::from_secs(5) {
            return Err(Error::Config(format!("invalid diagnosis.window {:?}: expected 5s or more", t.window)));
        }
        for (name, v) in [
            ("diagnosis.min-connections", t.min_connections),
            ("diagnosis.min-unread-closes", t.min_unread_closes),
            ("diagnosis.min-held-sockets", t.min_held_sockets),
            ("diagnosis.min-resets", t.min_resets),
            ("diagnosis.min-connect-failures", t.min_connect_failures),
            ("diagnosis.min-retransmits", t.min_retransmits),
        ] {
            if v == 0 {
                return Err(Error::Config(format!("invalid {name} 0: expected 1 or more")));
            }
        }
        Ok(t)
    }
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub level: Option<LogLevel>,
}

#[derive(clap::ValueEnum, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// Everything `sockprobe run` can be told, as the file has it (and, merged,
/// as the flags and the file together have it).
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub web: WebSection,
    #[serde(default)]
    pub metrics: MetricsSection,
    #[serde(default)]
    pub probe: ProbeSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub kubernetes: KubernetesSection,
    #[serde(default)]
    pub diagnosis: DiagnosisSection,
}

impl Settings {
    /// Reads a `--config.file`.
    pub fn from_file(path: &std::path::Path) -> Result<Settings, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read --config.file {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| Error::Config(describe_toml_error(path, &text, &e)))
    }

    /// `self` (the flags) where set, else `file`.
    pub fn merge(self, file: Settings) -> Settings {
        let (f, w, m, p, l, k, d) =
            (file, self.web, self.metrics, self.probe, self.log, self.kubernetes, self.diagnosis);
        Settings {
            web: WebSection {
                listen_address: w.listen_address.or(f.web.listen_address),
                telemetry_path: w.telemetry_path.or(f.web.telemetry_path),
                config_file: w.config_file.or(f.web.config_file),
                api_socket: w.api_socket.or(f.web.api_socket),
                api_socket_group: w.api_socket_group.or(f.web.api_socket_group),
                api_over_tcp: w.api_over_tcp.or(f.web.api_over_tcp),
            },
            metrics: MetricsSection {
                max_endpoints: m.max_endpoints.or(f.metrics.max_endpoints),
                max_processes: m.max_processes.or(f.metrics.max_processes),
                max_series: m.max_series.or(f.metrics.max_series),
                max_processes_per_container: m.max_processes_per_container.or(f.metrics.max_processes_per_container),
                max_series_per_container: m.max_series_per_container.or(f.metrics.max_series_per_container),
                series_ttl: m.series_ttl.or(f.metrics.series_ttl),
                reconcile_interval: m.reconcile_interval.or(f.metrics.reconcile_interval),
            },
            probe: p.merge(f.probe),
            log: LogSection { level: l.level.or(f.log.level) },
            kubernetes: KubernetesSection {
                api_url: k.api_url.or(f.kubernetes.api_url),
                node_name: k.node_name.or(f.kubernetes.node_name),
                name_endpoints: k.name_endpoints.or(f.kubernetes.name_endpoints),
            },
            diagnosis: d.merge(f.diagnosis),
        }
    }

    /// The defaults filled in, and every value checked.
    pub fn resolve(self) -> Result<RunConfig, Error> {
        let max_endpoints = self.metrics.max_endpoints.unwrap_or(DEFAULT_MAX_ENDPOINTS);
        if max_endpoints == 0 {
            return Err(Error::Config("invalid metrics.max-endpoints 0: expected 1 or more".into()));
        }
        let max_processes = self.metrics.max_processes.unwrap_or(DEFAULT_MAX_PROCESSES);
        let max_series = self.metrics.max_series.unwrap_or(DEFAULT_MAX_SERIES);
        let max_processes_per_container =
            self.metrics.max_processes_per_container.unwrap_or(DEFAULT_MAX_PROCESSES_PER_CONTAINER);
        let max_series_per_container =
            self.metrics.max_series_per_container.unwrap_or(DEFAULT_MAX_SERIES_PER_CONTAINER);
        for (name, v) in [
            ("metrics.max-processes", max_processes),
            ("metrics.max-series", max_series),
            ("metrics.max-processes-per-container", max_processes_per_container),
            ("metrics.max-series-per-container", max_series_per_container),
        ] {
            if v == 0 {
                return Err(Error::Config(format!("invalid {name} 0: expected 1 or more")));
            }
        }
        let api_socket_group = match &self.web.api_socket_group {
            Some(name) => Some(group_id(name).ok_or_else(|| {
                Error::Config(format!("unknown group {name:?} for web.api-socket-group: create it or name another"))
            })?),
            None => None,
        };
        let kubernetes_api_url = self.kubernetes.api_url;
        // The same checks the Kubernetes client makes, at start-up.
        if let Some(u) = &kubernetes_api_url
            && let Err(why) = k8s::endpoint(u)
        {
            return Err(Error::Config(format!("invalid kubernetes.api-url '{u}': {why}")));
        }
        if let Some(n) = &self.kubernetes.node_name
            && !k8s::is_node_name(n)
        {
            return Err(Error::Config(format!("invalid kubernetes.node-name {n:?}: expected a DNS subdomain")));
        }
        Ok(RunConfig {
            listen_address: self
                .web
                .listen_address
                .map_or_else(|| DEFAULT_LISTEN.parse().expect("valid default"), |a| a.0),
            telemetry_path: self.web.telemetry_path.map_or_else(|| DEFAULT_TELEMETRY_PATH.into(), |p| p.0),
            web_config_file: self.web.config_file,
            api_socket: self.web.api_socket.unwrap_or_else(|| DEFAULT_API_SOCKET.into()),
            api_socket_group,
            api_over_tcp: self.web.api_over_tcp.unwrap_or(false),
            max_endpoints,
            max_processes,
            max_series,
            max_processes_per_container,
            max_series_per_container,
            series_ttl: self.metrics.series_ttl.unwrap_or_else(|| DEFAULT_SERIES_TTL.parse().expect("valid default")).0,
            reconcile_interval: self
                .metrics
                .reconcile_interval
                .unwrap_or_else(|| DEFAULT_RECONCILE_INTERVAL.parse().expect("valid default"))
                .0,
            probe: self.probe.resolve()?,
            log_level: self.log.level.unwrap_or(DEFAULT_LOG_LEVEL),
            kubernetes_api_url,
            kubernetes_node_name: self.kubernetes.node_name,
            kubernetes_name_endpoints: self.kubernetes.name_endpoints.unwrap_or(true),
            diagnosis: self.diagnosis.resolve()?,
        })
    }
}

impl ProbeSection {
    fn merge(self, file: ProbeSection) -> ProbeSection {
        ProbeSection {
            max_sockets: self.max_sockets.or(file.max_sockets),
            ring_buffer_bytes: self.ring_buffer_bytes.or(file.ring_buffer_bytes),
            state_store: self.state_store.or(file.state_store),
        }
    }

    /// The defaults filled in and checked (`run` and `trace` share these).
    pub fn resolve(self) -> Result<ProbeSettings, Error> {
        let max_sockets = self.max_sockets.unwrap_or(DEFAULT_MAX_SOCKETS);
        let (lo, hi) = MAX_SOCKETS_RANGE;
        if !(lo..=hi).contains(&max_sockets) {
            return Err(Error::Config(format!("invalid probe.max-sockets {max_sockets}: expected {lo} to {hi}")));
        }
        let ring_buffer_bytes = self.ring_buffer_bytes.unwrap_or(DEFAULT_RING_BUFFER_BYTES);
        let (lo, hi) = RING_BUFFER_RANGE;
        if !ring_buffer_bytes.is_power_of_two() || !(lo..=hi).contains(&ring_buffer_bytes) {
            return Err(Error::Config(format!(
                "invalid probe.ring-buffer-bytes {ring_buffer_bytes}: expected a power of two from {lo} to {hi}"
            )));
        }
        Ok(ProbeSettings {
            max_sockets,
            ring_buffer_bytes,
            state_store: self.state_store.unwrap_or_default(),
            trace_all: false,
            knobs: Default::default(),
        })
    }
}

/// Validated settings of the daemon.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub listen_address: SocketAddr,
    pub telemetry_path: String,
    pub web_config_file: Option<PathBuf>,
    /// The Unix socket serving everything, the per-process API included.
    pub api_socket: PathBuf,
    /// The group (gid) that may use it, if not root alone.
    pub api_socket_group: Option<u32>,
    /// The API on the TCP address too.
    pub api_over_tcp: bool,
    /// Distinct `endpoint` values per (comm, container) before folding into `other`.
    pub max_endpoints: u32,
    /// (comm, container) pairs before folding into `comm="other"`.
    pub max_processes: u32,
    /// Label sets in all before folding.
    pub max_series: u32,
    /// The same two caps per container (pod).
    pub max_processes_per_container: u32,
    pub max_series_per_container: u32,
    /// Label sets of processes without sockets or events for this long are dropped.
    pub series_ttl: Duration,
    /// How often live sockets are listed again.
    pub reconcile_interval: Duration,
    pub probe: ProbeSettings,
    pub log_level: LogLevel,
    /// Kubernetes API for pod names; default: in-cluster when running in a pod.
    pub kubernetes_api_url: Option<String>,
    /// This node's name for the pod list; default: `$NODE_NAME`.
    pub kubernetes_node_name: Option<String>,
    /// Remote endpoints named `svc/...`, `pod/...`, `node/...` (Kubernetes only).
    pub kubernetes_name_endpoints: bool,
    pub diagnosis: Thresholds,
}

impl RunConfig {
    /// Flags merged over the file (if any), resolved.
    pub fn load(file: Option<&std::path::Path>, flags: Settings) -> Result<RunConfig, Error> {
        let from_file = match file {
            Some(path) => Settings::from_file(path)?,
            None => Settings::default(),
        };
        flags.merge(from_file).resolve()
    }
}

/// A TOML error in one line that names the key (`section.key`) when it can.
fn describe_toml_error(path: &std::path::Path, text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().replace('\n', " ");
    let Some(span) = e.span() else { return format!("invalid --config.file {}: {msg}", path.display()) };
    let line_start = text[..span.start.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line.split_once('=').map(|(k, _)| k.trim().trim_matches('"')).unwrap_or("");
    let section = text[..line_start]
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix('[').and_then(|l| l.strip_suffix(']')))
        .unwrap_or("");
    let line_no = text[..line_start].lines().count() + 1;
    let name = match (section, key) {
        (_, "") => String::new(),
        ("", k) => format!(" {k}"),
        (s, k) => format!(" {s}.{k}"),
    };
    format!("invalid{name} in --config.file {} line {line_no}: {msg}", path.display())
}

/// Values that clap and serde both parse from text, with one error message.
macro_rules! from_text {
    ($t:ident) => {
        impl TryFrom<String> for $t {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                s.parse()
            }
        }
    };
}

/// `--web.listen-address`: `IP:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ListenAddress(pub SocketAddr);

impl FromStr for ListenAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse().map(ListenAddress).map_err(|_| "expected IP:PORT, e.g. 0.0.0.0:9741 or [::]:9741".into())
    }
}
from_text!(ListenAddress);

/// `--web.telemetry-path`: an absolute path other than the pages the daemon
/// already serves (`/`, `/healthz`, and the API under `/api/`, kept free
/// for its future versions): one of those would hide the other page.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct TelemetryPath(pub String);

impl FromStr for TelemetryPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if !s.starts_with('/') || s == "/" || s == "/healthz" || s == "/api" || s.starts_with("/api/") {
            return Err("expected a path starting with '/', other than '/', '/healthz' and '/api/...'".into());
        }
        Ok(TelemetryPath(s.to_string()))
    }
}
from_text!(TelemetryPath);

/// A duration: `90s`, `10m`, `1h`, `500ms`, or plain seconds; not zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_duration(s).map(HumanDuration).ok_or_else(|| "expected a duration like 90s, 10m, 1h".into())
    }
}
from_text!(HumanDuration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let s = self.0.as_secs();
        match s {
            s if s >= 3600 && s % 3600 == 0 => write!(f, "{}h", s / 3600),
            s if s >= 60 && s % 60 == 0 => write!(f, "{}m", s / 60),
            s => write!(f, "{s}s"),
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
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    };
    (!d.is_zero()).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempFile(std::path::PathBuf);

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn file(text: &str) -> TempFile {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "sockprobe-cfg-{}-{}.toml",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&p, text).unwrap();
        TempFile(p)
    }

    fn load(text: &str, flags: Settings) -> Result<RunConfig, Error> {
        let f = file(text);
        RunConfig::load(Some(&f.0), flags)
    }

    #[test]
    fn defaults() {
        let c = RunConfig::load(None, Settings::default()).unwrap();
        assert_eq!(c.listen_address.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.telemetry_path, "/metrics");
        assert_eq!(c.max_endpoints, 100);
        assert_eq!(c.series_ttl, Duration::from_secs(600));
        assert_eq!(c.reconcile_interval, Duration::from_secs(30));
        assert_eq!(c.probe.state_store, StateStore::CookieTable);
        assert_eq!(c.probe.max_sockets, 131_072);
        assert_eq!(c.log_level, LogLevel::Info);
    }

    /// deploy/sockprobe.toml says it shows the defaults: it must.
    #[test]
    fn shipped_config_file_shows_the_defaults() {
        let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/sockprobe.toml"));
        let shipped = RunConfig::load(Some(path), Settings::default()).unwrap();
        let defaults = RunConfig::load(None, Settings::default()).unwrap();
        assert_eq!(format!("{shipped:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn state_store_from_file_and_bad_values() {
        let c = load("[probe]\nstate-store = \"socket-local\"\n", Settings::default()).unwrap();
        assert_eq!(c.probe.state_store, StateStore::SocketLocal);
        let c = load("[probe]\nstate-store = \"lru\"\n", Settings::default()).unwrap();
        assert_eq!(c.probe.state_store, StateStore::LruHash);
        let e = load("[probe]\nstate-store = \"hash\"\n", Settings::default()).unwrap_err().to_string();
        assert!(e.contains("probe.state-store") && e.contains("socket-local"), "{e}");
    }

    #[test]
    fn flag_beats_file() {
        let text =
            "[web]\nlisten-address = \"127.0.0.1:1234\"\ntelemetry-path = \"/m\"\n[metrics]\nmax-endpoints = 7\n";
        let mut flags = Settings::default();
        flags.web.listen_address = Some("127.0.0.1:999".parse().unwrap());
        let c = load(text, flags).unwrap();
        assert_eq!(c.listen_address.port(), 999);
        assert_eq!(c.telemetry_path, "/m");
        assert_eq!(c.max_endpoints, 7);
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = load("[metrics]\nseries-ttl = \"soon\"\n", Settings::default()).unwrap_err().to_string();
        assert!(e.contains("metrics.series-ttl") && e.contains("10m"), "{e}");
        let e = load("[web]\nlisten-adress = \"x\"\n", Settings::default()).unwrap_err().to_string();
        assert!(e.contains("listen-adress"), "{e}");
        for served in ["/healthz", "/", "/api/v1/findings", "/api/v1/connections", "/api/v2/x", "/api"] {
            let e = load(&format!("[web]\ntelemetry-path = \"{served}\"\n"), Settings::default()).unwrap_err();
            let e = e.to_string();
            assert!(e.contains("web.telemetry-path") && e.contains("other than"), "{served}: {e}");
        }
        assert!("/apis".parse::<TelemetryPath>().is_ok() && "/metrics2".parse::<TelemetryPath>().is_ok());
        let e = load("[probe]\nmax-sockets = 10\n", Settings::default()).unwrap_err().to_string();
        assert!(e.contains("probe.max-sockets 10"), "{e}");
        let e = load("[diagnosis]\nwindow = \"1s\"\n", Settings::default()).unwrap_err().to_string();
        assert!(e.contains("diagnosis.window") && e.contains("5s or more"), "{e}");
        let e = load("[diagnosis]\nmin-connections = 0\n", Settings::default()).unwrap_err().to_string();
        assert!(e.contains("diagnosis.min-connections 0"), "{e}");
        let e = RunConfig::load(Some(std::path::Path::new("/nonexistent.toml")), Settings::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read --config.file"), "{e}");
        assert_eq!(e.lines().count(), 1);
    }

    #[test]
    fn text_values() {
        assert!("nope".parse::<ListenAddress>().unwrap_err().contains("IP:PORT"));
        assert_eq!("[::]:9741".parse::<ListenAddress>().unwrap().0.port(), 9741);
        assert!("metrics".parse::<TelemetryPath>().is_err());
        assert!("/".parse::<TelemetryPath>().is_err());
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("99999999999999999h"), None, "overflow is an error, not a panic");
    }
}
