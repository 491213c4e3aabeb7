//! `cargo xtask bench`: sockprobe's cost, side by side in one run.
//!
//! Workloads (wrk against a local nginx, [`workload`]): connection churn,
//! keep-alive request/response, bulk transfer. The phases, each a module:
//! throughput [`rounds`] (every workload with no tracer, with `sockprobe
//! run`, with an equivalent bpftrace script and the empty programs, in a
//! rotating order; ratios to the same round's baseline), the kernel
//! [`costs`] from `kernel.bpf_stats_enabled`, the [`paired`] slices, then
//! [`scale`] and the socket [`listing`]. The tracers are started and
//! stopped one way for all of them ([`tracers`]); every ratio goes through
//! [`stats`]. Results: target/bench/report.md.
mod costs;
mod listing;
mod paired;
mod rounds;
mod scale;
mod stats;
mod tracers;
mod workload;

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result};
use clap::ValueEnum;

use self::{
    tracers::{Tracer, Variant, once_each},
    workload::{Workload, num_cpus, start_nginx},
};
use crate::workspace_root;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Interleaved rounds per workload (0: only the kernel-cost pass and
    /// the phases below).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Open sockets for the scale phase (0 skips it).
    #[arg(long, default_value_t = 100_000)]
    scale_sockets: u32,
    /// Connections to churn through for the leak check (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    churn_total: u64,
    /// Network namespaces for the listing phase (0 skips it).
    #[arg(long, default_value_t = 100)]
    listing_namespaces: u32,
    /// Sockets held across them for the listing phase.
    #[arg(long, default_value_t = 100_000)]
    listing_sockets: u32,
    /// Only the listing phase (no throughput rounds).
    #[arg(long)]
    listing_only: bool,
    /// Tracers to compare with no tracer, comma-separated (fewer tracers,
    /// more rounds in the same time). The empty programs are always
    /// measured: every ratio is to them.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "sockprobe,sockprobe-at-receives,sockprobe-lru,sockprobe-socket-local,bpftrace,empty-tp_btf"
    )]
    tracers: Vec<Tracer>,
    /// Seconds per workload for sockprobe and for the empty programs in the
    /// paired phase (0 skips it): their programs attached and detached
    /// every slice under one steady load, the ratio taken between adjacent
    /// slices (docs/benchmarks.md, "Paired slices").
    #[arg(long, default_value_t = 60)]
    paired_seconds: u64,
    /// Slice length in the paired phase, milliseconds (100 ms gave the
    /// narrowest interval per second spent here: docs/benchmarks.md).
    #[arg(long, default_value_t = 100)]
    paired_slice_ms: u64,
    /// More arguments for every `sockprobe run` in the rounds, the cost
    /// pass and the paired phase (not the scale and leak phases), e.g.
    /// `--sockprobe-args=--probe.max-sockets=4096`; a word `NAME=value`
    /// sets an environment variable instead (a development knob).
    #[arg(long, value_delimiter = ' ', allow_hyphen_values = true)]
    sockprobe_args: Vec<String>,
    /// A/B in the paired phase: sockprobe as `--sockprobe-args` say against
    /// sockprobe with these words too (same form), e.g.
    /// `--paired-versus=--probe.state-store=lru` or
    /// `--paired-versus=SOCKPROBE_TURNS=receives`. Slices then alternate
    /// between the two, never off, and each ratio is the second's requests
    /// over the first's (docs/benchmarks.md, "Paired A/B"); the on/off
    /// columns are not measured.
    #[arg(long, value_delimiter = ' ', allow_hyphen_values = true)]
    paired_versus: Vec<String>,
    /// A/B against other code: the second sockprobe of the paired phase
    /// runs this binary (with `--paired-versus`'s words, if any), e.g. one
    /// built from the commit before a kernel-side change; the ratio is then
    /// this binary's throughput over the one just built's. Swap the two to
    /// see the change as new over old: build the old one into a worktree.
    #[arg(long, value_name = "PATH")]
    paired_versus_binary: Option<PathBuf>,
    /// Workloads, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "churn,keep-alive,bulk")]
    workloads: Vec<Workload>,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if args.listing_only {
        let mut report = String::new();
        listing::run(args.listing_namespaces, args.listing_sockets, &mut report)?;
        println!("{report}");
        return Ok(());
    }
    crate::bootstrap::apt_install(&["wrk".into(), "nginx-light".into(), "bpftrace".into(), "bpftool".into()])?;
    // bpftrace 0.17 looks for tracepoints under debugfs.
    if !Path::new("/sys/kernel/debug/tracing/events").exists() {
        let _ = Command::new("mount").args(["-t", "debugfs", "none", "/sys/kernel/debug"]).status();
    }
    let dir: PathBuf = workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let nginx = start_nginx(&dir)?;

    let base = Variant::from_words(&args.sockprobe_args);
    let measured = Tracer::chosen(&args.tracers);
    let workloads = once_each(args.workloads.iter().copied());
    // Throughput with bpf_stats off (its two clock reads per run would tax
    // the tracers); then one pass per workload with it on, for the costs.
    let plan = Plan {
        seconds: args.seconds,
        measured: &measured,
        workloads: &workloads,
        port: nginx.port,
        dir: &dir,
        base: &base,
    };
    set_bpf_stats(false)?;
    let samples = rounds::measure(args.rounds, &plan)?;
    set_bpf_stats(true)?;
    let costs = costs::measure(&plan);
    set_bpf_stats(false)?;
    let costs = costs?;

    let mut report = String::new();
    header(args, &measured, &workloads, &mut report);
    rounds::report(&samples, args.rounds, &measured, &workloads, &mut report);
    costs.report(&measured, &workloads, rounds::churn_max(&samples), &mut report);
    if args.paired_seconds > 0 {
        paired::run(
            &workloads,
            nginx.port,
            args.paired_seconds,
            Duration::from_millis(args.paired_slice_ms.max(10)),
            &dir,
            &base,
            versus(args).as_ref(),
            &mut report,
        )?;
    }
    if args.scale_sockets > 0 {
        scale::scale(args.scale_sockets, &mut report)?;
    }
    if args.churn_total > 0 {
        scale::churn_leak(args.churn_total, nginx.port, &mut report)?;
    }
    if args.listing_namespaces > 0 {
        listing::run(args.listing_namespaces, args.listing_sockets, &mut report)?;
    }
    drop(nginx);
    std::fs::write(dir.join("report.md"), &report)?;
    println!("{report}\n(written to {})", dir.join("report.md").display());
    Ok(())
}

/// The paired phase's second configuration, if one is asked for.
fn versus(args: &BenchArgs) -> Option<Variant> {
    if args.paired_versus.is_empty() && args.paired_versus_binary.is_none() {
        return None;
    }
    Some(Variant { binary: args.paired_versus_binary.clone(), ..Variant::from_words(&args.paired_versus) })
}

/// What the rounds and the cost pass run: each workload for `seconds` under
/// each tracer, against nginx on `port`.
pub(crate) struct Plan<'a> {
    seconds: u64,
    measured: &'a [Tracer],
    workloads: &'a [Workload],
    port: u16,
    dir: &'a Path,
    base: &'a Variant,
}

/// The machine, the date and the command line that reproduces the run.
fn header(args: &BenchArgs, measured: &[Tracer], workloads: &[Workload], report: &mut String) {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))
        .unwrap_or_default();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let _ = writeln!(report, "Machine: {} cores, {cpu}; kernel {}; {date}", num_cpus(), kernel.trim());
    let _ = writeln!(
        report,
        "Command: `cargo xtask bench --rounds {} --seconds {} --tracers {} --workloads {} --paired-seconds {} --paired-slice-ms {}{}` (wrk 1 thread vs nginx 1 worker on loopback)\n",
        args.rounds,
        args.seconds,
        measured.iter().map(|t| t.name()).collect::<Vec<_>>().join(","),
        workloads
            .iter()
            .filter_map(|w| Some(w.to_possible_value()?.get_name().to_string()))
            .collect::<Vec<_>>()
            .join(","),
        args.paired_seconds,
        args.paired_slice_ms,
        [("sockprobe-args", &args.sockprobe_args), ("paired-versus", &args.paired_versus)]
            .iter()
            .filter(|(_, words)| !words.is_empty())
            .map(|(flag, words)| format!(" --{flag}='{}'", words.join(" ")))
            .chain(args.paired_versus_binary.iter().map(|b| format!(" --paired-versus-binary={}", b.display())))
            .collect::<String>()
    );
}

fn set_bpf_stats(on: bool) -> Result<()> {
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", if on { "1" } else { "0" })
        .context("set kernel.bpf_stats_enabled (needs root)")
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::{
        Tracer, Variant, Workload,
        stats::{median_interval, ratio_cell},
        tracers::once_each,
    };

    #[test]
    fn variant_words_split_into_environment_and_arguments() {
        let words: Vec<String> =
            ["SOCKPROBE_TURNS=receives", "--probe.max-sockets=1024", "", "--log.level", "warn", "lower=case"]
                .map(String::from)
                .to_vec();
        let v = Variant::from_words(&words);
        assert_eq!(v.env, vec![("SOCKPROBE_TURNS".to_string(), "receives".to_string())]);
        assert_eq!(v.args, ["--probe.max-sockets=1024", "--log.level", "warn", "lower=case"]);
        assert_eq!(v.describe(), "SOCKPROBE_TURNS=receives --probe.max-sockets=1024 --log.level warn lower=case");
        let both = v.and(&Variant { port: Some(1), ..Variant::from_words(&["X1=2".to_string()]) });
        assert_eq!(both.env.len(), 2);
        assert_eq!(both.args.len(), 4);
        assert_eq!(both.port, Some(1));
        assert_eq!(Variant::from_words(&[]), Variant::default());
    }

    #[test]
    fn tracers_are_asked_for_by_the_names_the_report_uses() {
        for t in Tracer::value_variants() {
            assert_eq!(t.to_possible_value().unwrap().get_name(), t.name());
        }
        assert!(!Tracer::value_variants().contains(&Tracer::None), "the baseline is not a tracer to ask for");
        assert_eq!(Tracer::chosen(&[Tracer::Sockprobe, Tracer::Sockprobe]), [Tracer::Sockprobe, Tracer::Floor]);
        let names: Vec<_> =
            Workload::value_variants().iter().map(|w| w.to_possible_value().unwrap().get_name().to_string()).collect();
        assert_eq!(names, ["churn", "keep-alive", "bulk"], "the names docs/benchmarks.md uses");
        assert_eq!(once_each([Workload::Bulk, Workload::Churn, Workload::Bulk]), [Workload::Bulk, Workload::Churn]);
    }

    #[test]
    fn by_default_every_tracer_and_workload_runs() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            bench: super::BenchArgs,
        }
        let args = <Cli as clap::Parser>::try_parse_from(["bench"]).expect("the defaults parse").bench;
        assert_eq!(args.tracers, Tracer::value_variants());
        assert_eq!(args.workloads, Workload::value_variants());
    }

    #[test]
    fn ratio_cells_give_the_interval_from_six_samples() {
        assert_eq!(ratio_cell(vec![0.9, 1.1, 1.0]), "100.0% (90.0–110.0%)");
        // Six samples: (min, max) is the 96.9 % interval, and the median the mean of the middle two.
        assert_eq!(ratio_cell(vec![0.95, 0.9, 1.0, 1.05, 1.1, 0.97]), "98.5% [90.0–110.0%]");
    }

    #[test]
    fn median_intervals_match_the_binomial_tables() {
        assert_eq!(median_interval(5), None, "(min, max) of 5 holds the median 93.75 % of the time");
        let (lo, hi, level) = median_interval(6).unwrap();
        assert_eq!((lo, hi), (1, 6));
        assert!((level - 0.96875).abs() < 1e-9);
        // n = 20: ranks 6 and 15, 95.86 % (1 - 2 * 21 700 / 2^20).
        let (lo, hi, level) = median_interval(20).unwrap();
        assert_eq!((lo, hi), (6, 15));
        assert!((level - (1.0 - 2.0 * 21_700.0 / 1_048_576.0)).abs() < 1e-9);
        // Many samples (the paired phase): near n/2 - 0.98 sqrt(n), the
        // normal approximation, and no overflow on the way.
        for (n, near) in [(534usize, 244.4f64), (5000, 2430.7)] {
            let (lo, hi, level) = median_interval(n).unwrap();
            assert!((lo as f64 - near).abs() <= 2.0, "n = {n}: rank {lo}, about {near} expected");
            assert_eq!(hi, n + 1 - lo);
            assert!((0.95..0.96).contains(&level), "n = {n}: level {level}");
        }
    }
}
