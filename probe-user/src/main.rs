use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use sockprobe::{
    Error,
    cmd::{
        self, cluster,
        daemon_client::{Daemon, DaemonUrl},
        doctor, trace,
    },
    config::{
        DEFAULT_LOG_LEVEL, DiagnosisSection, KubernetesSection, LogLevel, LogSection, MetricsSection, ProbeSection,
        RunConfig, Settings, WebSection,
    },
    kernel::{DevKnobs, ProbeSettings},
};

/// sockprobe watches every TCP socket's life with eBPF and tells you, per
/// process and container, which connections were closed with unread bytes,
/// never reused, reset, or left in CLOSE_WAIT.
#[derive(Parser, Debug)]
#[command(name = "sockprobe", version, about, long_about = None, after_help = EXAMPLES)]
struct Cli {
    /// Log level [default: info].
    #[arg(long = "log.level", global = true, value_name = "LEVEL")]
    log_level: Option<LogLevel>,

    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "Examples:
  sudo sockprobe check                      what this kernel allows
  sudo sockprobe run                        metrics on http://127.0.0.1:9741/metrics
  sudo sockprobe trace --event unread_close who closes sockets with unread bytes
  sudo sockprobe trace --comm curl          every socket event of curl
  sockprobe doctor                          which process has which connection bug, and what to change
  sockprobe top                             live view of every process's connections";

// Parsed once; boxing the big variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// The daemon: attach probes, aggregate, serve Prometheus metrics until SIGTERM/SIGINT.
    Run(RunArgs),
    /// Stream socket events as JSON lines on stdout (one object per line).
    Trace(TraceArgs),
    /// Report what this kernel and these privileges allow; exit 0 when `run` would work.
    Check {
        /// One JSON object instead of columns, for tools.
        #[arg(long)]
        json: bool,
    },
    /// Name the connection bugs: which process closes with unread bytes, leaks
    /// CLOSE_WAIT, does not reuse connections..., with evidence and advice.
    /// Asks the daemon; without one, observes with its own probes (root) for --window.
    Doctor(DoctorArgs),
    /// Full-screen live view of the daemon's connections per process and
    /// endpoint, refreshed every second (keys: c u r w e n sort, / filter, q quit).
    Top(DaemonArgs),
    /// Print the seccomp profile the daemon runs under in a container (the
    /// runtime's default plus bpf and perf_event_open), or write it where the
    /// kubelet looks for it (the DaemonSet's init container does).
    SeccompProfile {
        /// Write it to FILE (atomically) instead of stdout.
        #[arg(long, value_name = "FILE")]
        output: Option<std::path::PathBuf>,
    },
    /// The man page or a shell's completions, from this command line's own
    /// definition, on stdout (`cargo xtask package` puts them in the .deb).
    #[command(hide = true)]
    Generate {
        #[arg(value_enum)]
        what: Generated,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Generated {
    Man,
    Bash,
    Zsh,
    Fish,
}

/// deploy/kubernetes/seccomp/sockprobe.json (docs/operations.md says how it
/// was made).
const SECCOMP_PROFILE: &str = include_str!("../../deploy/kubernetes/seccomp/sockprobe.json");

/// Which daemon `doctor` and `top` ask, and how they are let in.
#[derive(clap::Args, Debug)]
struct DaemonArgs {
    /// The daemon to ask: its Unix socket, unix:///PATH (--web.api-socket), or
    /// http(s)://[USER:PASSWORD@]HOST:PORT when it serves the API on TCP (--web.api-over-tcp).
    #[arg(long, value_name = "URL", default_value = cmd::daemon_client::DEFAULT_DAEMON)]
    daemon: DaemonUrl,
    /// For a daemon behind --web.config.file: YAML as Prometheus and promtool
    /// read it, `basic_auth` (username, password or password_file) and
    /// `tls_config` (ca_file, server_name). Relative paths: to the file.
    #[arg(long = "http.config.file", value_name = "FILE")]
    http_config_file: Option<PathBuf>,
}

impl DaemonArgs {
    fn daemon(self) -> Result<Daemon, Error> {
        Daemon::new(self.daemon, self.http_config_file.as_deref())
    }
}

#[derive(clap::Args, Debug)]
struct DoctorArgs {
    #[command(flatten)]
    daemon: DaemonArgs,
    /// The findings document (as GET /api/v1/findings) instead of the report.
    #[arg(long)]
    json: bool,
    /// Without a daemon: how long to observe with its own probes (10s, 1m)
    /// [default: 30s]. With --prometheus: the window of the evidence
    /// [default: 5m, the daemons' diagnosis window].
    #[arg(long, value_name = "DURATION")]
    window: Option<sockprobe::config::HumanDuration>,
    /// The whole cluster's report instead of one node's: ask this Prometheus
    /// (the one scraping every node's sockprobe) for every node's findings,
    /// grouped by namespace and workload (http://HOST:9090).
    #[arg(long, value_name = "URL", conflicts_with = "daemon")]
    prometheus: Option<String>,
    #[command(flatten)]
    probe: ProbeSection,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// TOML file with any of the settings below; flags win over it.
    #[arg(long = "config.file", value_name = "FILE")]
    config_file: Option<PathBuf>,
    #[command(flatten)]
    web: WebSection,
    #[command(flatten)]
    metrics: MetricsSection,
    #[command(flatten)]
    kubernetes: KubernetesSection,
    #[command(flatten)]
    probe: ProbeSection,
    #[command(flatten)]
    diagnosis: DiagnosisSection,
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
    probe: ProbeSection,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let log_level = cli.log_level;
    // The environment is read here, once; nothing below reads it.
    let knobs = DevKnobs::from_env();
    match cli.command {
        Command::Check { json } => {
            init_logging(log_level.unwrap_or(DEFAULT_LOG_LEVEL));
            match cmd::check::run(json, &knobs) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => fail(e),
            }
        }
        Command::Trace(args) => {
            init_logging(log_level.unwrap_or(DEFAULT_LOG_LEVEL));
            let events = match trace::parse_event_names(&args.event) {
                Ok(e) => e,
                Err(msg) => {
                    eprintln!("sockprobe: {msg}");
                    return ExitCode::from(2);
                }
            };
            let sizes = match args.probe.resolve() {
                Ok(s) => ProbeSettings { knobs, ..s },
                Err(e) => return fail(e),
            };
            let filter = trace::Filter { pids: args.pid, comms: args.comm, events };
            block_on(trace::run(filter, sizes))
        }
        Command::Doctor(args) => {
            init_logging(log_level.unwrap_or(LogLevel::Warn));
            let probe = match args.probe.resolve() {
                Ok(s) => ProbeSettings { knobs, ..s },
                Err(e) => return fail(e),
            };
            let daemon = match args.daemon.daemon() {
                Ok(d) => d,
                Err(e) => return fail(e),
            };
            if let Some(prometheus) = args.prometheus {
                let window = args.window.map_or(std::time::Duration::from_secs(300), |w| w.0);
                return block_on(cluster::run(cluster::ClusterArgs { prometheus, window, json: args.json }));
            }
            let window = args.window.map_or(std::time::Duration::from_secs(30), |w| w.0);
            block_on(doctor::run(doctor::DoctorArgs { daemon, json: args.json, window, probe }))
        }
        Command::SeccompProfile { output: None } => {
            print!("{SECCOMP_PROFILE}");
            ExitCode::SUCCESS
        }
        Command::SeccompProfile { output: Some(path) } => {
            let tmp = path.with_extension("json.tmp");
            let written = std::fs::create_dir_all(path.parent().unwrap_or(std::path::Path::new(".")))
                .and_then(|_| std::fs::write(&tmp, SECCOMP_PROFILE))
                .and_then(|_| std::fs::rename(&tmp, &path));
            match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(Error::io(format!("cannot write the seccomp profile to {}", path.display()), e)),
            }
        }
        Command::Generate { what } => {
            let mut cli = <Cli as clap::CommandFactory>::command();
            let mut out = std::io::stdout().lock();
            let shell = match what {
                Generated::Man => {
                    return match clap_mangen::Man::new(cli).render(&mut out) {
                        Ok(()) => ExitCode::SUCCESS,
                        Err(e) => fail(Error::io("cannot write the man page", e)),
                    };
                }
                Generated::Bash => clap_complete::Shell::Bash,
                Generated::Zsh => clap_complete::Shell::Zsh,
                Generated::Fish => clap_complete::Shell::Fish,
            };
            clap_complete::generate(shell, &mut cli, "sockprobe", &mut out);
            ExitCode::SUCCESS
        }
        Command::Top(args) => {
            init_logging(log_level.unwrap_or(LogLevel::Warn));
            match args.daemon().and_then(cmd::top::run) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Command::Run(args) => {
            let flags = Settings {
                web: args.web,
                metrics: args.metrics,
                probe: args.probe,
                log: LogSection { level: log_level },
                kubernetes: args.kubernetes,
                diagnosis: args.diagnosis,
            };
            let cfg = match RunConfig::load(args.config_file.as_deref(), flags) {
                Ok(c) => RunConfig { probe: ProbeSettings { knobs, ..c.probe }, ..c },
                Err(e) => return fail(e),
            };
            init_logging(cfg.log_level);
            block_on(cmd::run::run(cfg))
        }
    }
}

fn init_logging(level: LogLevel) {
    env_logger::Builder::new().parse_filters(level.as_str()).format_target(false).init();
}

/// Blocking threads at most (bcrypt 2, renders 3, a listing, the rest
/// spare): with the event thread and the language workers, the daemon stays
/// far under the unit's `TasksMax`.
const MAX_BLOCKING_THREADS: usize = 16;

fn block_on(fut: impl std::future::Future<Output = Result<(), Error>>) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .thread_name("sockprobe-http")
        .on_thread_start(sockprobe::priority::background)
        .build();
    match runtime {
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// clap's own consistency checks: unique ids (two `config_file` fields
    /// once made `--web.config.file` fill `--config.file`), valid defaults.
    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_reach_their_sections() {
        let cli = Cli::try_parse_from([
            "sockprobe",
            "run",
            "--config.file",
            "/a.toml",
            "--web.config.file",
            "/w.yml",
            "--probe.state-store",
            "socket-local",
            "--log.level",
            "debug",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else { panic!("run") };
        assert_eq!(args.config_file.as_deref(), Some(std::path::Path::new("/a.toml")));
        assert_eq!(args.web.config_file.as_deref(), Some(std::path::Path::new("/w.yml")));
        assert_eq!(args.probe.state_store, Some(probe_common::StateStore::SocketLocal));
        assert_eq!(cli.log_level, Some(LogLevel::Debug));
    }
}
