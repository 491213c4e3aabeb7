//! `sockprobe check`: what this kernel and these privileges allow.
use std::fmt::Write as _;

use probe_common::StateStore;

use crate::{
    btf::Btf,
    error::Error,
    layout, privileges,
    probes::{Feature, Outcome, PROBE_TABLE, ProbeSettings, Probes},
};

pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Logs, at start of `run`/`trace`, which probes attached and what is lost.
pub fn log_probe_status(probes: &Probes) {
    for s in &probes.status {
        match &s.outcome {
            Outcome::Attached => log::info!("probe {} attached ({})", s.candidate.hooks(), s.candidate.feature.name()),
            Outcome::Unavailable(why) => log::debug!("probe {} unavailable: {why}", s.candidate.hooks()),
            Outcome::Standby => {}
        }
    }
    for f in Feature::ALL {
        if !probes.attached(f) {
            log::warn!("no probe for {}: {}", f.name(), f.loss().unwrap_or("required"));
        }
    }
}

/// Prints the report; Ok(true) when `run` and `trace` would work.
pub fn run() -> Result<bool, Error> {
    let mut out = String::new();
    let _ = writeln!(out, "kernel       {}", kernel_release());
    let btf = match Btf::from_vmlinux() {
        Ok(b) => {
            let _ = writeln!(out, "btf          {}: ok", Btf::path().display());
            b
        }
        Err(e) => {
            println!("{out}btf          {e}\nresult       sockprobe cannot run here");
            return Ok(false);
        }
    };
    match layout::resolve(&btf) {
        Ok(l) => {
            let reason = if l.rst_abort_on_close == probe_common::REASON_UNKNOWN {
                "absent (resets carry no reason before 6.10)".to_string()
            } else {
                l.rst_abort_on_close.to_string()
            };
            let _ = writeln!(
                out,
                "layout       tcp_sock.rcv_nxt@{} copied_seq@{} sock.sk_shutdown@{} (from BTF); SK_RST_REASON_TCP_ABORT_ON_CLOSE={reason}",
                l.tcp_rcv_nxt.offset, l.tcp_copied_seq.offset, l.sk_shutdown.offset
            );
        }
        Err(e) => {
            println!("{out}layout       {e}\nresult       sockprobe cannot run here");
            return Ok(false);
        }
    }
    let caps = privileges::effective_caps();
    let privileged = privileges::sufficient(caps);
    let _ = writeln!(
        out,
        "privileges   {}: {}",
        privileges::describe(caps),
        if privileged { "ok" } else { "insufficient (need root, or CAP_BPF and CAP_PERFMON)" }
    );
    print!("{out}");
    println!("probes (first attached candidate per feature wins):");
    if !privileged {
        for c in PROBE_TABLE {
            println!("  {:<16} {:<58} not tried: needs privileges", c.feature.name(), c.hooks());
        }
        println!("result       cannot attach without privileges: run `sudo sockprobe check`");
        return Ok(false);
    }
    // Socket-local storage asked for, to say whether it would work here.
    let settings = ProbeSettings { max_sockets: 1024, ring_buffer_bytes: 4096, state_store: StateStore::SocketLocal };
    match Probes::attach_with(settings, true) {
        Ok(probes) => {
            for s in &probes.status {
                let outcome = match &s.outcome {
                    Outcome::Attached => "attached".to_string(),
                    Outcome::Standby => "available (standby: an earlier candidate is used)".to_string(),
                    Outcome::Unavailable(why) => format!("unavailable: {why}"),
                };
                println!(
                    "  {:<16} {:<58} {outcome}  [min kernel {}]",
                    s.candidate.feature.name(),
                    s.candidate.hooks(),
                    s.candidate.min_kernel
                );
            }
            match &probes.store.refused {
                None => println!(
                    "state        per-socket state: LRU hash (default); socket-local storage available (--probe.state-store=socket-local)"
                ),
                Some(why) => {
                    println!("state        per-socket state: LRU hash; socket-local storage unavailable: {why}")
                }
            }
            let lost: Vec<_> = Feature::ALL.iter().filter(|f| !probes.attached(**f)).collect();
            for f in &lost {
                println!("degraded     {}: {}", f.name(), f.loss().unwrap_or(""));
            }
            println!("result       ok: `sockprobe run` and `sockprobe trace` will work");
            Ok(true)
        }
        Err(e) => {
            println!("result       {e}");
            Ok(false)
        }
    }
}
