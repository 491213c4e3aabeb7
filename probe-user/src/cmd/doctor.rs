//! `sockprobe doctor`: the diagnosis, from the daemon, or (when none
//! answers) from probes of its own over `--window`.
use std::{fmt::Write as _, time::Duration};

use super::{Started, daemon_client::Daemon, display::shown, signals};
use crate::{
    aggregate::{
        Aggregator, Limits,
        findings::{Report, Severity, Thresholds, localize_from},
    },
    error::Error,
    identity::{clock::Clock, language::Languages},
    kernel::{self, EventStream, ProbeSettings},
};

pub struct DoctorArgs {
    pub daemon: Daemon,
    pub json: bool,
    /// How long to observe when no daemon answers.
    pub window: Duration,
    pub probe: ProbeSettings,
}

pub async fn run(args: DoctorArgs) -> Result<(), Error> {
    let (report, source) = match args.daemon.get("/api/v1/findings").await {
        Ok(body) => {
            let report: Report = serde_json::from_slice(&body).map_err(|e| {
                Error::Daemon(format!("{} answered /api/v1/findings with something else: {e}", args.daemon.shown))
            })?;
            (report, format!("daemon {}", args.daemon.shown))
        }
        Err(why) => match observe(&why, args.window, args.probe).await {
            Ok(report) => (report, format!("own probes, {} s", args.window.as_secs())),
            Err(e) => return Err(Error::Daemon(format!("{why}, and cannot observe with its own probes: {e}"))),
        },
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        print!("{}", render(&report, &source));
    }
    Ok(())
}

/// Attaches the probes, aggregates for `window`, diagnoses.
async fn observe(why: &str, window: Duration, settings: ProbeSettings) -> Result<Report, Error> {
    let Started { mut probes, mut decoder } = super::start(settings).await?;
    eprintln!("sockprobe doctor: {why}; observing with its own probes for {} s instead", window.as_secs());
    let mut events = EventStream::new(&mut probes)?;
    let limits = Limits::DEFAULT;
    let mut agg = Aggregator::new(limits, window * 2, env!("CARGO_PKG_VERSION"), &kernel::release());
    agg.set_thresholds(Thresholds { window, ..Thresholds::default() });
    let languages = Languages::start();
    let resolver = languages.clone();
    agg.on_new_pid(move |pid| resolver.notice(pid));
    agg.mark_if_due(Clock::monotonic_now_ns());
    super::listing::first(&mut probes, &mut decoder, Some(&mut agg)).await;
    let deadline = tokio::time::sleep(window);
    let mut deadline = std::pin::pin!(deadline);
    let mut stop = std::pin::pin!(signals::requested());
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            _ = &mut stop => break,
            batch = events.next_batch(|ev| super::observe(&mut decoder, &mut agg, ev)) => batch?,
        }
    }
    // What is still queued belongs to the window too.
    events.next_batch(|ev| super::observe(&mut decoder, &mut agg, ev)).await?;
    agg.refresh(Clock::monotonic_now_ns());
    let mut report = agg.diagnosis().report.clone();
    localize_from(&mut report.findings, &languages).await;
    Ok(report)
}

/// The human-readable report.
pub fn render(report: &Report, source: &str) -> String {
    let mut out = String::new();
    let n = report.findings.len();
    let _ = writeln!(
        out,
        "sockprobe doctor: {} over the last {} s ({source}, window {} s, {})\n",
        match n {
            0 => "no connection problems found".to_string(),
            1 => "1 finding".to_string(),
            n => format!("{n} findings"),
        },
        report.observed_seconds.min(report.window_seconds),
        report.window_seconds,
        report.generated
    );
    for f in &report.findings {
        let severity = match f.severity {
            Severity::Critical => "CRITICAL",
            Severity::Warning => "WARNING",
        };
        // Names other processes chose: escaped (cmd/display.rs).
        let language = match (&f.language_version, f.language.as_str()) {
            (Some(v), l) => format!("{} {}", shown(l), shown(v)),
            (None, l) => shown(l).into_owned(),
        };
        let pids = f.pids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let container = if f.container.is_empty() { String::new() } else { format!(" in {}", shown(&f.container)) };
        let _ = writeln!(
            out,
            "{severity} {}: {} (pid {pids}{container}, {language}) {} {}",
            f.finding.name(),
            shown(&f.comm),
            shown(&f.direction),
            shown(&f.endpoint)
        );
        let _ = writeln!(out, "  {}", shown(&f.summary));
        let evidence: Vec<String> = f.evidence.iter().map(|(k, v)| shown(&format!("{k}={v}")).into_owned()).collect();
        let _ = writeln!(out, "  evidence: {}", evidence.join(" "));
        let _ = writeln!(out, "  advice: {}\n", shown(&f.advice));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::findings::{Finding, FindingKind};

    /// A process that names itself with terminal controls (or whose
    /// container or executable does) cannot reach the operator's terminal.
    #[test]
    fn names_other_processes_chose_are_escaped() {
        let evil = "\x1b[2J\x1b[8mevil";
        let report = Report {
            generated: "2026-12-07T00:00:00Z".into(),
            window_seconds: 300,
            observed_seconds: 10,
            findings: vec![Finding {
                finding: FindingKind::UnreadClose,
                severity: Severity::Critical,
                comm: evil.into(),
                container: format!("/podman/{evil}"),
                direction: "outbound".into(),
                endpoint: "10.0.0.1:80".into(),
                pids: vec![7],
                language: "go".into(),
                language_version: Some(format!("go1.22{evil}")),
                evidence: [("unread_closes".to_string(), serde_json::json!(3))].into_iter().collect(),
                summary: format!("{evil} closed 3 connections with unread bytes"),
                advice: "read the body".into(),
            }],
        };
        let text = render(&report, "daemon http://127.0.0.1:9741");
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "a control character got through:\n{text:?}");
        assert!(text.contains("\\u{1b}[2J\\u{1b}[8mevil"), "{text}");
    }
}
