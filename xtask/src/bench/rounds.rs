//! The throughput rounds: every workload with no tracer and with each
//! tracer, in an order that rotates by round, `kernel.bpf_stats_enabled=0`;
//! each ratio against its own round's baseline.
use std::{collections::HashMap, fmt::Write as _};

use anyhow::Result;

use super::{
    Plan,
    stats::{median_and_spread, median_interval, ratio_cell},
    tracers::{CostAcc, Tracer, start_tracer, stop},
    workload::{Workload, run_wrk},
};

pub(crate) struct Sample {
    workload: Workload,
    tracer: Tracer,
    round: usize,
    req_per_s: f64,
}

/// `rounds` rounds of every workload, each without a tracer and with each
/// tracer of the plan.
pub(crate) fn measure(rounds: usize, plan: &Plan) -> Result<Vec<Sample>> {
    let tracers: Vec<Tracer> = std::iter::once(Tracer::None).chain(plan.measured.iter().copied()).collect();
    let mut samples = Vec::new();
    for round in 0..rounds {
        for &w in plan.workloads {
            for i in 0..tracers.len() {
                let t = tracers[(i + round) % tracers.len()];
                let running = start_tracer(t, plan.dir, false, plan.base)?;
                let rps = run_wrk(w, plan.port, plan.seconds)?;
                eprintln!("round {round} {:<40} {:<10} {rps:>12.0} req/s", w.name(), t.name());
                samples.push(Sample { workload: w, tracer: t, round, req_per_s: rps });
                if let Some(r) = running {
                    stop(r, &mut CostAcc::default())?;
                }
            }
        }
    }
    Ok(samples)
}

/// The rounds' table: per workload, the baseline's median and each
/// tracer's ratio to it.
pub(crate) fn report(
    samples: &[Sample],
    rounds: usize,
    measured: &[Tracer],
    workloads: &[Workload],
    report: &mut String,
) {
    if rounds == 0 {
        return;
    }
    let interval = median_interval(rounds);
    let header: Vec<String> = measured.iter().map(|t| format!("{} / baseline", t.title())).collect();
    let _ = writeln!(report, "| workload | baseline req/s (median) | {} |", header.join(" | "));
    let _ = writeln!(report, "|---|---|{}", "---|".repeat(measured.len()));
    for &w in workloads {
        let base: HashMap<usize, f64> = samples
            .iter()
            .filter(|s| s.workload == w && s.tracer == Tracer::None)
            .map(|s| (s.round, s.req_per_s))
            .collect();
        let (base_med, _, _) = median_and_spread(base.values().copied().collect());
        let ratio = |t: Tracer| {
            ratio_cell(
                samples
                    .iter()
                    .filter(|s| s.workload == w && s.tracer == t)
                    .map(|s| s.req_per_s / base[&s.round])
                    .collect(),
            )
        };
        let cells: Vec<String> = measured.iter().map(|&t| ratio(t)).collect();
        let _ = writeln!(report, "| {} | {:.0} | {} |", w.name(), base_med, cells.join(" | "));
    }
    match interval {
        Some((k, j, level)) => {
            let _ = writeln!(
                report,
                "\nRatios: median over {rounds} rounds, in brackets its {:.1} % confidence interval (the {k}th and {j}th of the sorted ratios; distribution-free); each ratio uses its own round's baseline.\n",
                level * 100.0
            );
        }
        None => {
            let _ = writeln!(
                report,
                "\nRatios: median over {rounds} rounds, (min–max) in parentheses (6 or more rounds give a 95 % interval instead); each ratio uses its own round's baseline.\n",
            );
        }
    }
}

/// The highest churn rate with sockprobe attached (0 when not measured).
pub(crate) fn churn_max(samples: &[Sample]) -> f64 {
    samples
        .iter()
        .filter(|s| s.workload == Workload::Churn && s.tracer == Tracer::Sockprobe)
        .map(|s| s.req_per_s)
        .fold(0.0, f64::max)
}
