use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use sockprobe::{
    Error,
    config::{LOG_LEVELS, Overrides, RunConfig},
    trace,
};

/// sockprobe watches every TCP socket's life with eBPF and tells you, per
/// process and container, which connections were closed with unread bytes,
/// never reused, reset, or left in CLOSE_WAIT.
#[derive(Parser, Debug)]
#[command(name = "sockprobe", version, about, long_about = None, after_help = EXAMPLES)]
struct Cli {
    /// Log level: error, warn, info, debug, trace [default: info].
    #[arg(long = "log.level", global = true, value_parser = LOG_LEVELS)]
    log_level: Option<String>,

    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "Examples:
  sudo sockprobe check                      what this kernel allows
  sudo sockprobe run                        metrics on http://127.0.0.1:9741/metrics
  sudo sockprobe trace --event unread_close who closes sockets with unread bytes
  sudo sockprobe trace --comm curl          every socket event of curl";

#[derive(Subcommand, Debug)]
enum Command {
    /// The daemon: attach probes, aggregate, serve Prometheus metrics until SIGTERM/SIGINT.
    Run(RunArgs),
    /// Stream socket events as JSON lines on stdout (one object per line).
    Trace(TraceArgs),
    /// Report what this kernel and these privileges allow; exit 0 when `run` would work.
    Check,
}

#[derive(clap::Args, Debug)]
struct ProbeArgs {
    /// Size of the LRU per-socket map; beyond it the least recently used
    /// sockets are forgotten [default: 131072; ~160 bytes of kernel memory each].
    #[arg(long = "probe.max-sockets")]
    max_sockets: Option<u32>,
    /// Kernel-to-userspace ring buffer in bytes, a power of two [default: 1048576].
    /// Overflow is counted in sockprobe_events_lost_total.
    #[arg(long = "probe.ring-buffer-bytes")]
    ring_buffer_bytes: Option<u32>,
    /// Where the kernel side keeps per-socket state: `lru`, a hash map of
    /// --probe.max-sockets entries, cheapest under connection churn; or
    /// `socket-local`, socket storage (kernel 5.11+, not with kprobes): cheaper
    /// per send/recv and unbounded, but an allocation per socket. Benchmarks:
    /// docs/benchmarks.md [default: lru].
    #[arg(long = "probe.state-store", value_name = "lru|socket-local")]
    state_store: Option<String>,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// TOML file with any of the settings below; flags win over it.
    #[arg(long = "config.file")]
    config_file: Option<PathBuf>,
    /// Address to serve metrics on [default: 127.0.0.1:9741].
    #[arg(long = "web.listen-address")]
    listen_address: Option<String>,
    /// Path of the metrics [default: /metrics].
    #[arg(long = "web.telemetry-path")]
    telemetry_path: Option<String>,
    /// TLS and basic-auth settings, in the Prometheus exporter-toolkit
    /// web-config format (tls_server_config, basic_auth_users).
    #[arg(long = "web.config.file")]
    web_config_file: Option<PathBuf>,
    /// Distinct `endpoint` label values per (comm, container); the rest are
    /// folded into endpoint="other" [default: 100].
    #[arg(long = "metrics.max-endpoints")]
    max_endpoints: Option<u32>,
    /// Drop the series of a process with no socket and no event for this long [default: 10m].
    #[arg(long = "metrics.series-ttl")]
    series_ttl: Option<String>,
    /// Kubernetes API server, to name pods' containers /k8s/<namespace>/<pod>/<container>
    /// [default: in-cluster (KUBERNETES_SERVICE_HOST) when running in a pod].
    #[arg(long = "kubernetes.api-url")]
    kubernetes_api_url: Option<String>,
    /// This node's name, to list only its pods [default: $NODE_NAME].
    #[arg(long = "kubernetes.node-name")]
    kubernetes_node_name: Option<String>,
    #[command(flatten)]
    probe: ProbeArgs,
}

#[derive(clap::Args, Debug)]
struct TraceArgs {
    /// Only events of these processes (repeatable).
    #[arg(long)]
    pid: Vec<u32>,
    /// Only events of processes with this name (the thread-group leader's comm; repeatable).
    #[arg(long)]
    comm: Vec<String>,
    /// Only these events (repeatable or comma-separated): open, close,
    /// unread_close, reset_sent, reset_received, close_wait, close_wait_end.
    #[arg(long)]
    event: Vec<String>,
    #[command(flatten)]
    probe: ProbeArgs,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    match cli.command {
        Command::Check => {
            init_logging(cli.log_level.as_deref().unwrap_or("info"));
            match sockprobe::check::run() {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => fail(e),
            }
        }
        Command::Trace(args) => {
            init_logging(cli.log_level.as_deref().unwrap_or("info"));
            let events = match trace::parse_event_names(&args.event) {
                Ok(e) => e,
                Err(msg) => {
                    eprintln!("sockprobe: {msg}");
                    return ExitCode::from(2);
                }
            };
            // Same validation as `run`, for the shared probe flags.
            let flags = Overrides {
                max_sockets: args.probe.max_sockets,
                ring_buffer_bytes: args.probe.ring_buffer_bytes,
                state_store: args.probe.state_store,
                ..Default::default()
            };
            let cfg = match RunConfig::load(None, flags) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            let filter = trace::Filter { pids: args.pid, comms: args.comm, events };
            block_on(trace::run(filter, cfg.probe_settings()))
        }
        Command::Run(args) => {
            let flags = Overrides {
                listen_address: args.listen_address,
                telemetry_path: args.telemetry_path,
                web_config_file: args.web_config_file,
                max_endpoints: args.max_endpoints,
                series_ttl: args.series_ttl,
                max_sockets: args.probe.max_sockets,
                ring_buffer_bytes: args.probe.ring_buffer_bytes,
                state_store: args.probe.state_store,
                log_level: cli.log_level,
                kubernetes_api_url: args.kubernetes_api_url,
                kubernetes_node_name: args.kubernetes_node_name,
            };
            let cfg = match RunConfig::load(args.config_file.as_deref(), flags) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            init_logging(&cfg.log_level);
            block_on(sockprobe::daemon::run(cfg))
        }
    }
}

fn init_logging(level: &str) {
    env_logger::Builder::new().parse_filters(level).format_target(false).init();
}

fn block_on(fut: impl std::future::Future<Output = Result<(), Error>>) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => match rt.block_on(fut) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        },
        Err(e) => {
            eprintln!("sockprobe: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Help and version go to stdout as usual; a usage error becomes one line
/// (clap's first) plus where to look, and exit code 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or("invalid command line").trim_start_matches("error: ");
    eprintln!("sockprobe: {first}; see `sockprobe --help`");
    ExitCode::from(2)
}

/// Configuration mistakes exit 2 like bad flags; everything else 1.
fn fail(e: Error) -> ExitCode {
    eprintln!("sockprobe: {e}");
    match e {
        Error::Config(_) => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    }
}
