use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sockprobe::{probes::MapSizes, trace};

/// sockprobe watches every TCP socket's life with eBPF and tells you, per
/// process and container, which connections were closed with unread bytes,
/// never reused, reset, or left in CLOSE_WAIT.
#[derive(Parser, Debug)]
#[command(name = "sockprobe", version, about, long_about = None, after_help = EXAMPLES)]
struct Cli {
    /// Log level: error, warn, info, debug, trace.
    #[arg(long = "log.level", global = true, default_value = "info", value_parser = ["error", "warn", "info", "debug", "trace"])]
    log_level: String,

    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "Examples:
  sudo sockprobe check                      what this kernel allows
  sudo sockprobe trace --event unread_close who closes sockets with unread bytes
  sudo sockprobe trace --comm curl          every socket event of curl";

#[derive(Subcommand, Debug)]
enum Command {
    /// Stream socket events as JSON lines on stdout (one object per line).
    Trace(TraceArgs),
    /// Report what this kernel and these privileges allow; exit 0 when `run` would work.
    Check,
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
    /// Ring buffer size between kernel and sockprobe, in bytes (power of two).
    #[arg(long = "ring-buffer-bytes", default_value_t = 1 << 20)]
    ring_buffer_bytes: u32,
    /// Most sockets tracked in the kernel at once (LRU beyond).
    #[arg(long = "max-sockets", default_value_t = 131_072)]
    max_sockets: u32,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    env_logger::Builder::new()
        .parse_filters(&cli.log_level)
        .format_target(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sockprobe: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Check => match sockprobe::check::run() {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => fail(e),
        },
        Command::Trace(args) => {
            let events = match trace::parse_event_names(&args.event) {
                Ok(e) => e,
                Err(msg) => {
                    eprintln!("sockprobe: {msg}");
                    return ExitCode::from(2);
                }
            };
            let filter = trace::Filter { pids: args.pid, comms: args.comm, events };
            let sizes = MapSizes { max_sockets: args.max_sockets, ring_buffer_bytes: args.ring_buffer_bytes };
            match runtime.block_on(trace::run(filter, sizes)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
    }
}

/// Help and version go to stdout as usual; a usage error becomes one line
/// (clap's first) plus where to look, and exit code 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand) {
        let _ = e.print();
        return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand { ExitCode::from(2) } else { ExitCode::SUCCESS };
    }
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or("invalid command line").trim_start_matches("error: ");
    eprintln!("sockprobe: {first}; see `sockprobe --help`");
    ExitCode::from(2)
}

fn fail(e: sockprobe::Error) -> ExitCode {
    eprintln!("sockprobe: {e}");
    ExitCode::FAILURE
}
