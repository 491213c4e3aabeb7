//! `sockprobe check`: what this kernel and these privileges allow, for people
//! (columns) or tools (`--json`).
use std::fmt::Write as _;

use probe_common::{REASON_UNKNOWN, StateStore};
use serde::Serialize;

use crate::{
    error::Error,
    kernel::{self, DevKnobs, Feature, Outcome, PROBE_TABLE, ProbeSettings, Probes, btf::Btf, layout, privileges},
};

pub const LISTING_ITERATOR: &str = "task_file iterator (every network namespace, in the kernel)";
pub const LISTING_SOCK_DIAG: &str = "sock_diag entered into each network namespace (fallback)";

/// The whole finding; `--json` prints it as is.
#[derive(Debug, Serialize)]
pub struct Report {
    pub kernel: String,
    pub btf: Part,
    /// Offsets and enum values resolved from BTF (absent when BTF is unusable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layout: Option<Part>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privileges: Option<Part>,
    pub probes: Vec<ProbeRow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_store: Option<StateStoreRow>,
    /// How live sockets are listed: `task_file iterator` or `sock_diag per namespace`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_listing: Option<&'static str>,
    /// Where exchanges are counted: `sends` (6.5+) or `receives`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exchanges_counted_at: Option<&'static str>,
    /// Features no candidate covers here, with what is lost.
    pub degraded: Vec<Degraded>,
    /// `run` and `trace` would work.
    pub ok: bool,
    /// One line: the verdict, or what stops sockprobe.
    pub result: String,
}

#[derive(Debug, Serialize)]
pub struct Part {
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct ProbeRow {
    pub feature: &'static str,
    pub probe: String,
    /// `attached`, `standby` (works, an earlier candidate is used),
    /// `unavailable`, or `not_tried` (no privileges).
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub min_kernel: &'static str,
}

#[derive(Debug, Serialize)]
pub struct StateStoreRow {
    /// The store `run` uses by default.
    pub default: &'static str,
    /// The store `run` would use here with the default settings.
    pub chosen: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Degraded {
    pub feature: &'static str,
    pub loss: &'static str,
}

/// Looks at the kernel; attaches (and detaches) every probe when privileged.
pub fn inspect(knobs: &DevKnobs) -> Report {
    let mut r = Report {
        kernel: kernel::release(),
        btf: Part { ok: false, detail: String::new() },
        layout: None,
        privileges: None,
        probes: Vec::new(),
        state_store: None,
        socket_listing: None,
        exchanges_counted_at: None,
        degraded: Vec::new(),
        ok: false,
        result: String::new(),
    };
    let btf_path = knobs.btf_path();
    let btf = match Btf::from_file(&btf_path) {
        Ok(b) => b,
        Err(e) => {
            r.btf.detail = e.to_string();
            r.result = "sockprobe cannot run here".into();
            return r;
        }
    };
    r.btf = Part { ok: true, detail: format!("{}: ok", btf_path.display()) };
    match layout::resolve(&btf) {
        Ok(l) => {
            let reason = if l.rst_abort_on_close == REASON_UNKNOWN {
                "absent (resets carry no reason before 6.10)".to_string()
            } else {
                l.rst_abort_on_close.to_string()
            };
            r.layout = Some(Part {
                ok: true,
                detail: format!(
                    "tcp_sock.rcv_nxt@{} copied_seq@{} sock.sk_shutdown@{} (from BTF); SK_RST_REASON_TCP_ABORT_ON_CLOSE={reason}",
                    l.tcp_rcv_nxt.offset, l.tcp_copied_seq.offset, l.sk_shutdown.offset
                ),
            });
        }
        Err(e) => {
            r.layout = Some(Part { ok: false, detail: e.to_string() });
            r.result = "sockprobe cannot run here".into();
            return r;
        }
    }
    drop(btf);
    let caps = privileges::effective_caps();
    let privileged = privileges::sufficient(caps);
    r.privileges = Some(Part {
        ok: privileged,
        detail: if privileged {
            format!("{}: ok", privileges::describe(caps))
        } else {
            format!("{}: insufficient (need root, or CAP_BPF and CAP_PERFMON)", privileges::describe(caps))
        },
    });
    if !privileged {
        r.probes = PROBE_TABLE
            .iter()
            .map(|c| ProbeRow {
                feature: c.feature.name(),
                probe: c.hooks(),
                result: "not_tried",
                reason: Some("needs privileges".into()),
                min_kernel: c.min_kernel,
            })
            .collect();
        r.result = "cannot attach without privileges: run `sudo sockprobe check`".into();
        return r;
    }
    // The default store, to say whether it works here; as `trace` (a
    // superset of what `run` attaches), so every feature is tried.
    let settings = ProbeSettings {
        max_sockets: 1024,
        ring_buffer_bytes: 4096,
        state_store: StateStore::default(),
        trace_all: true,
        knobs: knobs.clone(),
    };
    match Probes::attach_with(settings, true) {
        Ok(probes) => {
            r.probes = probes
                .status
                .iter()
                .map(|s| {
                    let (result, reason) = match &s.outcome {
                        Outcome::Attached => ("attached", None),
                        Outcome::Standby => ("standby", None),
                        Outcome::Unavailable(why) => ("unavailable", Some(why.clone())),
                    };
                    ProbeRow {
                        feature: s.candidate.feature.name(),
                        probe: s.candidate.hooks(),
                        result,
                        reason,
                        min_kernel: s.candidate.min_kernel,
                    }
                })
                .collect();
            r.state_store = Some(StateStoreRow {
                default: StateStore::default().name(),
                chosen: probes.store.store.name(),
                reason: probes.store.refused.as_ref().map(|(_, why)| why.clone()),
            });
            r.socket_listing =
                Some(if probes.attached(Feature::SocketListing) { LISTING_ITERATOR } else { LISTING_SOCK_DIAG });
            r.exchanges_counted_at = Some(probes.turns.name());
            r.degraded = Feature::ALL
                .into_iter()
                .filter(|f| !probes.attached(*f))
                .map(|f| Degraded { feature: f.name(), loss: f.loss(probes.turns).unwrap_or("") })
                .collect();
            r.ok = true;
            r.result = "ok: `sockprobe run` and `sockprobe trace` will work".into();
        }
        Err(e) => r.result = e.to_string(),
    }
    r
}

/// The report in columns, for people.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "kernel       {}", r.kernel);
    let _ = writeln!(out, "btf          {}", r.btf.detail);
    if let Some(l) = &r.layout {
        let _ = writeln!(out, "layout       {}", l.detail);
    }
    if let Some(p) = &r.privileges {
        let _ = writeln!(out, "privileges   {}", p.detail);
    }
    if !r.probes.is_empty() {
        let _ = writeln!(out, "probes (first attached candidate per feature wins):");
    }
    for p in &r.probes {
        let outcome = match (p.result, &p.reason) {
            ("standby", _) => "available (standby: an earlier candidate is used)".to_string(),
            ("not_tried", _) => "not tried: needs privileges".to_string(),
            (result, Some(why)) => format!("{result}: {why}"),
            (result, None) => result.to_string(),
        };
        let _ = writeln!(out, "  {:<16} {:<58} {outcome}  [min kernel {}]", p.feature, p.probe, p.min_kernel);
    }
    if let Some(s) = &r.state_store {
        let _ = match &s.reason {
            None => writeln!(out, "state        per-socket state: {} (default)", s.chosen),
            Some(why) => writeln!(out, "state        per-socket state: {}; {} unavailable: {why}", s.chosen, s.default),
        };
    }
    if let Some(l) = r.socket_listing {
        let _ = writeln!(out, "listing      live sockets: {l}");
    }
    if let Some(t) = r.exchanges_counted_at {
        let _ = writeln!(out, "exchanges    counted at {t}");
    }
    for d in &r.degraded {
        let _ = writeln!(out, "degraded     {}: {}", d.feature, d.loss);
    }
    let _ = writeln!(out, "result       {}", r.result);
    out
}

/// Prints the report; Ok(true) when `run` and `trace` would work.
pub fn run(json: bool, knobs: &DevKnobs) -> Result<bool, Error> {
    let report = inspect(knobs);
    if json {
        let text = serde_json::to_string(&report).map_err(|e| Error::Load(e.to_string()))?;
        println!("{text}");
    } else {
        print!("{}", render(&report));
    }
    Ok(report.ok)
}
