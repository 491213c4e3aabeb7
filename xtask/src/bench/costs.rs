//! The kernel-cost pass: one run per workload and tracer with
//! `kernel.bpf_stats_enabled=1`, and the tables made of it (ns per event per
//! program, per unit of work, per tracepoint hit) and the daemon's own cost.
use std::{collections::BTreeMap, fmt::Write as _};

use anyhow::Result;

use super::{
    Plan,
    tracers::{CostAcc, Tracer, start_tracer, stop},
    workload::{Workload, run_wrk},
};

/// What the pass measured.
pub(crate) struct Costs {
    acc: CostAcc,
    /// Per workload and tracer: (run_time_ns, run_cnt, requests).
    pass: BTreeMap<(Workload, Tracer), (u64, u64, f64)>,
}

/// One run of each workload under each tracer, bpf_stats on (the caller
/// turns it on and off).
pub(crate) fn measure(plan: &Plan) -> Result<Costs> {
    let mut costs = Costs { acc: CostAcc::default(), pass: BTreeMap::new() };
    for &w in plan.workloads {
        for &t in plan.measured {
            let running = start_tracer(t, plan.dir, false, plan.base)?;
            let rps = run_wrk(w, plan.port, plan.seconds)?;
            if let Some(r) = running {
                let mut one = CostAcc::default();
                stop(r, &mut one)?;
                let (ns, cnt) = one.by_prog.values().fold((0, 0), |(a, b), (ns, cnt)| (a + ns, b + cnt));
                costs.pass.insert((w, t), (ns, cnt, rps * plan.seconds as f64));
                costs.acc.merge(one);
            }
        }
    }
    Ok(costs)
}

impl Costs {
    /// The cost tables, the daemon's line, and the saturation line
    /// (`churn_max`, from the rounds).
    pub(crate) fn report(&self, measured: &[Tracer], workloads: &[Workload], churn_max: f64, report: &mut String) {
        let (acc, pass_cost) = (&self.acc, &self.pass);
        let _ = writeln!(
            report,
            "Throughput rounds ran with `kernel.bpf_stats_enabled=0`. Kernel cost per event: one more pass per workload with it on \
             (run_time_ns / run_cnt, all workloads together):\n"
        );
        let _ = writeln!(report, "| tracer | program | events | ns/event | instructions (xlated) |");
        let _ = writeln!(report, "|---|---|---|---|---|");
        let mut totals: BTreeMap<Tracer, (u64, u64)> = BTreeMap::new();
        for ((t, name), (ns, cnt)) in &acc.by_prog {
            if *cnt == 0 {
                continue;
            }
            let insns = acc.instructions.get(&(*t, name.clone())).copied().unwrap_or(0);
            let _ = writeln!(report, "| {} | {name} | {cnt} | {:.0} | {insns} |", t.name(), *ns as f64 / *cnt as f64);
            let e = totals.entry(*t).or_default();
            e.0 += ns;
            e.1 += cnt;
        }
        for (t, (ns, cnt)) in &totals {
            let _ = writeln!(
                report,
                "| {} | **all programs** | {cnt} | **{:.0}** | |",
                t.name(),
                *ns as f64 / (*cnt).max(1) as f64
            );
        }
        // A tracer that leaves a tracepoint alone costs nothing there, so the
        // fair unit is the workload, not the tracer's own runs: kernel ns per
        // request, and per tracepoint hit (the empty programs, attached to all
        // six, count the hits).
        let per_request = |w: Workload, t: Tracer| {
            pass_cost.get(&(w, t)).map(|(ns, _, req)| *ns as f64 / req.max(1.0)).unwrap_or(0.0)
        };
        let hits_per_request = |w: Workload| {
            pass_cost.get(&(w, Tracer::Floor)).map(|(_, cnt, req)| *cnt as f64 / req.max(1.0)).unwrap_or(0.0)
        };
        let per_hit = |t: Tracer| {
            let (ns, hits) = workloads.iter().fold((0.0, 0.0), |(ns, hits), &w| {
                let floor_req = pass_cost.get(&(w, Tracer::Floor)).map(|c| c.2).unwrap_or(0.0);
                (ns + per_request(w, t) * floor_req, hits + hits_per_request(w) * floor_req)
            });
            ns / hits.max(1.0)
        };
        let _ = writeln!(
            report,
            "\nKernel ns per unit of work (each tracer's own pass; churn per connection, else per request) and per \
             tracepoint hit over all three workloads (hits counted by the empty programs, on all six tracepoints):\n"
        );
        let _ = writeln!(
            report,
            "| tracer | churn: runs / ns per connection (/ floor) | keep-alive: ns per request (/ floor) | bulk: ns per request (/ floor) | all workloads: ns per tracepoint hit | / empty tp_btf | / bpftrace |"
        );
        let _ = writeln!(report, "|---|---|---|---|---|---|---|");
        for &t in measured {
            let runs =
                pass_cost.get(&(Workload::Churn, t)).map(|(_, cnt, req)| *cnt as f64 / req.max(1.0)).unwrap_or(0.0);
            let cell = |w: Workload| {
                if !workloads.contains(&w) {
                    return "not measured".to_string();
                }
                format!("{:.0} ({:.2}x)", per_request(w, t), per_request(w, t) / per_request(w, Tracer::Floor).max(1.0))
            };
            let to_bpftrace = if measured.contains(&Tracer::Bpftrace) {
                format!("{:.2}x", per_hit(t) / per_hit(Tracer::Bpftrace).max(1.0))
            } else {
                "not measured".to_string()
            };
            let _ = writeln!(
                report,
                "| {} | {runs:.1} / {} | {} | {} | {:.0} | {:.2}x | {to_bpftrace} |",
                t.name(),
                cell(Workload::Churn),
                cell(Workload::KeepAlive),
                cell(Workload::Bulk),
                per_hit(t),
                per_hit(t) / per_hit(Tracer::Floor).max(1.0),
            );
        }
        let _ = writeln!(
            report,
            "\nDaemon: {:.2} CPU-seconds per million kernel events ({:.2} s for {} events; {:.0} ring-buffer records); peak RSS {:.1} MiB; events lost: {}.",
            acc.daemon_cpu_s / (acc.daemon_events.max(1) as f64 / 1e6),
            acc.daemon_cpu_s,
            acc.daemon_events,
            acc.daemon_records,
            acc.daemon_peak_rss_kib as f64 / 1024.0,
            acc.events_lost
        );
        if churn_max > 0.0 {
            let _ = writeln!(
                report,
                "\nSaturation: highest churn rate with sockprobe attached: {churn_max:.0} connections/s (wrk, 16 connections); events lost over all runs: {}.",
                acc.events_lost
            );
        }
    }
}
