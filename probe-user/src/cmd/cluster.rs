//! `sockprobe doctor --prometheus URL`: one report for the whole cluster,
//! from the Prometheus that scrapes every node's sockprobe. A finding here
//! is a node's own `sockprobe_finding` (the node's thresholds, evaluated on
//! the node), so the cluster report never disagrees with a node's; the
//! evidence is PromQL over `--window`; workloads come from
//! `sockprobe_workload_info`, languages (and so the advice) from
//! `sockprobe_process_info` (docs/diagnosis.md, "The cluster report").
use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::display::shown;
use crate::{
    aggregate::{advice::advice, findings::FindingKind},
    error::Error,
    http_client::{self, Endpoint, Get, Trust},
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_secs(30);
/// A query's answer: thousands of findings fit many times.
const MAX_BODY_BYTES: usize = 64 << 20;
/// The labels a finding and its evidence are matched on.
const BY: &str = "instance, comm, container, direction, endpoint";

pub struct ClusterArgs {
    pub prometheus: String,
    pub window: Duration,
    pub json: bool,
}

/// `doctor --prometheus --json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterReport {
    pub prometheus: String,
    pub window_seconds: u64,
    /// Nodes (Prometheus `instance`s) with a sockprobe up.
    pub nodes: usize,
    /// Grouped by namespace and workload, then node.
    pub findings: Vec<ClusterFinding>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ClusterFinding {
    pub finding: String,
    /// The scrape target (`instance`): the node's sockprobe.
    pub node: String,
    /// From `container` `/k8s/<namespace>/...`; empty outside Kubernetes.
    pub namespace: String,
    /// From `sockprobe_workload_info`; empty when the API named no workload.
    pub workload_kind: String,
    pub workload: String,
    pub comm: String,
    pub container: String,
    pub direction: String,
    pub endpoint: String,
    pub language: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language_version: Option<String>,
    pub evidence: BTreeMap<String, Value>,
    pub advice: String,
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Deserialize)]
struct Data {
    result: Vec<Sample>,
}

#[derive(Deserialize)]
struct Sample {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

struct Prometheus {
    endpoint: Endpoint,
    base: String,
    trust: Trust,
}

impl Prometheus {
    /// An instant query's samples.
    async fn query(&self, promql: &str) -> Result<Vec<Sample>, Error> {
        let path = format!("{}/api/v1/query?query={}", self.base, percent_encode(promql));
        let request = Get {
            path: &path,
            authorization: None,
            trust: &self.trust,
            server_name: None,
            connect_timeout: CONNECT_TIMEOUT,
            timeout: TIMEOUT,
            max_body_bytes: MAX_BODY_BYTES,
        };
        let shown = || format!("{}{}", if self.endpoint.tls { "https://" } else { "http://" }, self.endpoint.host);
        let body = http_client::get(&self.endpoint, &request)
            .await
            .map_err(|e| Error::Daemon(format!("Prometheus at {}: {e}", shown())))?;
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|e| Error::Daemon(format!("Prometheus at {} answered something else: {e}", shown())))?;
        match (answer.status.as_str(), answer.data) {
            ("success", Some(data)) => Ok(data.result),
            _ => Err(Error::Daemon(format!(
                "Prometheus at {} refused `{promql}`: {}",
                shown(),
                answer.error.unwrap_or_default()
            ))),
        }
    }

    /// Samples by the values of `keys` (each sample's value as a number).
    async fn by(&self, promql: &str, keys: &[&str]) -> Result<BTreeMap<Vec<String>, (f64, Sample)>, Error> {
        let mut out = BTreeMap::new();
        for s in self.query(promql).await? {
            let key = keys.iter().map(|k| s.metric.get(*k).cloned().unwrap_or_default()).collect();
            let v = s.value.1.parse().unwrap_or(f64::NAN);
            out.insert(key, (v, s));
        }
        Ok(out)
    }
}

/// The evidence of each kind: (name, a series selector; counters are
/// turned into their growth over the window by [`over_window`]).
fn evidence_queries(kind: FindingKind) -> &'static [(&'static str, &'static str)] {
    const UNREAD: &str = "sockprobe_tcp_unread_closes_total";
    const UNREAD_BYTES: &str = "sockprobe_tcp_unread_bytes_total";
    const CLOSED: &str = "sockprobe_tcp_connections_closed_total";
    const BY_PEER: &str = "sockprobe_tcp_connections_closed_total{closer=\"peer\"}";
    const OPENED: &str = "sockprobe_tcp_connections_opened_total";
    const EXCHANGES: &str = "sockprobe_tcp_connection_exchanges_sum";
    const RESETS: &str = "sockprobe_tcp_resets_received_total";
    const CLOSE_WAIT: &str = "sockprobe_tcp_sockets{state=\"close_wait\"}";
    const HELD: &str = "sockprobe_tcp_sockets{state=\"closed\"}";
    match kind {
        FindingKind::UnreadClose => {
            &[("unread_closes", UNREAD), ("unread_bytes", UNREAD_BYTES), ("connections_closed", CLOSED)]
        }
        FindingKind::CloseWaitLeak => &[("close_wait_sockets", CLOSE_WAIT)],
        FindingKind::ClosedFdLeak => &[("closed_sockets_held", HELD)],
        FindingKind::NoReuse => {
            &[("connections_closed", CLOSED), ("connections_opened", OPENED), ("exchanges", EXCHANGES)]
        }
        FindingKind::PeerCloses => {
            &[("connections_closed", CLOSED), ("closed_by_peer", BY_PEER), ("exchanges", EXCHANGES)]
        }
        FindingKind::ResetsReceived => &[("resets_received", RESETS)],
        FindingKind::SlowConnect => &[
            ("connects", "sockprobe_tcp_connect_duration_seconds_count"),
            ("syn_retransmits", "sockprobe_tcp_syn_retransmits_total"),
        ],
        FindingKind::ConnectFailures => &[("connect_failures", "sockprobe_tcp_connect_failures_total")],
        // Its counter is per listener, without the direction the rest share.
        FindingKind::ListenOverflow => &[],
        FindingKind::PortExhaustion => &[
            ("time_wait_sockets", "sockprobe_tcp_time_wait_sockets"),
            ("no_local_port_failures", "sockprobe_tcp_connect_failures_total{reason=\"no_local_port\"}"),
        ],
        FindingKind::Retransmits => &[("retransmits", "sockprobe_tcp_retransmits_total")],
    }
}

/// A counter's growth over the window `w`, per series. Not `increase()`: a
/// label set is born at its first event, often already past 0 at its first
/// scrape, and `increase()` would miss all of that; a series younger than
/// the window counts whole. A daemon restart (a reset) counts as 0.
fn over_window(selector: &str, w: &str) -> String {
    // Gauges are taken as they are now.
    if selector.starts_with("sockprobe_tcp_sockets") || selector.starts_with("sockprobe_tcp_time_wait_sockets") {
        return selector.to_string();
    }
    format!("(clamp_min({selector} - {selector} offset {w}, 0) or {selector})")
}

/// The cluster's findings, as Prometheus has them now.
pub async fn report(url: &str, window: Duration) -> Result<ClusterReport, Error> {
    let endpoint = Endpoint::parse(url).map_err(|e| Error::Config(format!("invalid --prometheus '{url}': {e}")))?;
    // A path prefix (a Prometheus behind a proxy at /prometheus) is kept.
    let base = url.split_once("://").and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..])).unwrap_or("");
    let prom = Prometheus { endpoint, base: base.trim_end_matches('/').to_string(), trust: Trust::default() };
    let w = format!("{}s", window.as_secs().max(1));
    let keys = ["finding", "instance", "comm", "container", "direction", "endpoint"];
    let standing = prom.by("sockprobe_finding == 1", &keys).await?;
    let nodes = prom.query("sockprobe_build_info").await?.len();
    let workloads = prom.by("sockprobe_workload_info", &["instance", "container"]).await?;
    let languages = prom.by("sockprobe_process_info", &["instance", "comm", "container"]).await?;
    let mut evidence: BTreeMap<&str, BTreeMap<Vec<String>, (f64, Sample)>> = BTreeMap::new();
    for kind in FindingKind::ALL {
        for (_, q) in evidence_queries(kind) {
            if !evidence.contains_key(q) {
                let promql = format!("sum by ({BY}) ({})", over_window(q, &w));
                evidence
                    .insert(q, prom.by(&promql, &["instance", "comm", "container", "direction", "endpoint"]).await?);
            }
        }
    }
    let mut findings = Vec::new();
    for (key, (_, sample)) in standing {
        let label = |k: &str| sample.metric.get(k).cloned().unwrap_or_default();
        let Ok(kind) = serde_json::from_value::<FindingKind>(Value::String(label("finding"))) else { continue };
        let series = key[1..].to_vec();
        let mut numbers = BTreeMap::new();
        for (name, q) in evidence_queries(kind) {
            let v = evidence.get(q).and_then(|m| m.get(&series)).map_or(0.0, |(v, _)| *v);
            numbers.insert(name.to_string(), round(v));
        }
        // The node's derived number, from the two counters.
        if let (Some(exchanges), Some(closed)) = (numbers.remove("exchanges"), numbers.get("connections_closed")) {
            let (e, c) = (exchanges.as_f64().unwrap_or(0.0), closed.as_f64().unwrap_or(0.0));
            numbers.insert("exchanges_per_connection".into(), round(if c > 0.0 { e / c } else { 0.0 }));
        }
        let (instance, container) = (label("instance"), label("container"));
        let workload = workloads.get(&vec![instance.clone(), container.clone()]).map(|(_, s)| &s.metric);
        let language = languages.get(&vec![instance.clone(), label("comm"), container.clone()]).map(|(_, s)| &s.metric);
        let lang = language.and_then(|m| m.get("language")).cloned().unwrap_or_else(|| "unknown".into());
        let direction = label("direction");
        findings.push(ClusterFinding {
            finding: kind.name().to_string(),
            node: instance,
            namespace: workload
                .and_then(|m| m.get("namespace").cloned())
                .or_else(|| container.strip_prefix("/k8s/")?.split('/').next().map(String::from))
                .unwrap_or_default(),
            workload_kind: workload.and_then(|m| m.get("workload_kind")).cloned().unwrap_or_default(),
            workload: workload.and_then(|m| m.get("workload")).cloned().unwrap_or_default(),
            comm: label("comm"),
            container,
            advice: advice(kind, direction == "outbound", &lang).to_string(),
            language: lang,
            language_version: language.and_then(|m| m.get("language_version")).filter(|v| !v.is_empty()).cloned(),
            direction,
            endpoint: label("endpoint"),
            evidence: numbers,
        });
    }
    findings.sort_by(|a, b| {
        (&a.namespace, &a.workload_kind, &a.workload, &a.node, &a.finding, &a.comm, &a.endpoint).cmp(&(
            &b.namespace,
            &b.workload_kind,
            &b.workload,
            &b.node,
            &b.finding,
            &b.comm,
            &b.endpoint,
        ))
    });
    Ok(ClusterReport { prometheus: url.to_string(), window_seconds: window.as_secs(), nodes, findings })
}

pub async fn run(args: ClusterArgs) -> Result<(), Error> {
    let report = report(&args.prometheus, args.window).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

/// The human-readable report: namespace, then workload, then each finding.
pub fn render(r: &ClusterReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sockprobe doctor: {} on {} node{} over the last {} s (Prometheus {})\n",
        match r.findings.len() {
            0 => "no connection problems found".to_string(),
            1 => "1 finding".to_string(),
            n => format!("{n} findings"),
        },
        r.nodes,
        if r.nodes == 1 { "" } else { "s" },
        r.window_seconds,
        shown(&r.prometheus)
    );
    let mut group = None;
    for f in &r.findings {
        let this = (&f.namespace, &f.workload_kind, &f.workload);
        if group != Some(this) {
            group = Some(this);
            let ns = if f.namespace.is_empty() { "(not in Kubernetes)".into() } else { shown(&f.namespace) };
            let workload = if f.workload.is_empty() {
                String::new()
            } else {
                format!(" {} {}", shown(&f.workload_kind), shown(&f.workload))
            };
            let _ = writeln!(out, "{ns}{workload}");
        }
        let language = match &f.language_version {
            Some(v) => format!("{} {}", shown(&f.language), shown(v)),
            None => shown(&f.language).into_owned(),
        };
        let _ = writeln!(
            out,
            "  {}: {} on {} ({}, {language}) {} {}",
            f.finding,
            shown(&f.comm),
            shown(&f.node),
            shown(&f.container),
            shown(&f.direction),
            shown(&f.endpoint)
        );
        let evidence: Vec<String> = f.evidence.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "    evidence: {}", evidence.join(" "));
        let _ = writeln!(out, "    advice: {}\n", shown(&f.advice));
    }
    out
}

fn round(v: f64) -> Value {
    if v.is_finite() { serde_json::json!((v * 1000.0).round() / 1000.0) } else { Value::Null }
}

/// A query string value: everything but unreserved characters escaped.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_escaped_and_groups_rendered_once() {
        assert_eq!(percent_encode("a == 1{x=\"y\"}"), "a%20%3D%3D%201%7Bx%3D%22y%22%7D");
        let f = ClusterFinding {
            finding: "unread_close".into(),
            node: "10.0.0.1:9741".into(),
            namespace: "shop".into(),
            workload_kind: "Deployment".into(),
            workload: "web".into(),
            comm: "\x1b[2Jevil".into(),
            container: "/k8s/shop/web-1/web".into(),
            direction: "outbound".into(),
            endpoint: "svc/shop/api:80".into(),
            language: "go".into(),
            language_version: Some("go1.22.1".into()),
            evidence: [("unread_closes".to_string(), serde_json::json!(3))].into(),
            advice: "read the body".into(),
        };
        let r = ClusterReport {
            prometheus: "http://p:9090".into(),
            window_seconds: 300,
            nodes: 2,
            findings: vec![f.clone(), ClusterFinding { node: "10.0.0.2:9741".into(), ..f }],
        };
        let text = render(&r);
        assert_eq!(text.matches("shop Deployment web\n").count(), 1, "{text}");
        assert!(text.contains("2 findings on 2 nodes"), "{text}");
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "{text:?}");
    }
}
