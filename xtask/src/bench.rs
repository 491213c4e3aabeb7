//! `cargo xtask bench`: sockprobe's cost, side by side in one run.
//!
//! Workloads (wrk against a local nginx): connection churn, keep-alive
//! request/response, bulk transfer. Each round runs every workload with no
//! tracer, with `sockprobe run`, and with an equivalent bpftrace script, in a
//! rotating order; throughput is reported as a ratio to the same round's
//! baseline. Kernel cost per event comes from `kernel.bpf_stats_enabled`.
//! Then saturation and scale. Results: target/bench/report.md.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;

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
    /// Workloads, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "churn,keep-alive,bulk")]
    workloads: Vec<Workload>,
}

/// Named on the command line as [`Tracer::name`] says (a unit test holds
/// the two together).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum Tracer {
    /// The baseline every round measures anyway.
    #[value(skip)]
    None,
    /// sockprobe's defaults (state in the cookie table; exchanges counted
    /// at sends on 6.5+).
    Sockprobe,
    /// sockprobe with exchanges counted at receives (`SOCKPROBE_TURNS`),
    /// as before 6.5: the two directions side by side.
    SockprobeAtReceives,
    /// sockprobe with its state in the LRU hash (what kprobe hooks use).
    SockprobeLru,
    /// sockprobe with its state in socket-local storage: the three stores
    /// side by side.
    SockprobeSocketLocal,
    Bpftrace,
    /// Empty `tp_btf` programs of our own on the same six tracepoints
    /// (probe-ebpf/src/floor.rs, loaded by the `floor_tracer` example): what
    /// merely running a program of sockprobe's kind costs per event here,
    /// bpf_stats' own clock reads included. The floor under any tracer.
    #[value(name = "empty-tp_btf")]
    Floor,
}

impl Tracer {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Tracer::None => "none",
            Tracer::Sockprobe => "sockprobe",
            Tracer::SockprobeAtReceives => "sockprobe-at-receives",
            Tracer::SockprobeLru => "sockprobe-lru",
            Tracer::SockprobeSocketLocal => "sockprobe-socket-local",
            Tracer::Bpftrace => "bpftrace",
            Tracer::Floor => "empty-tp_btf",
        }
    }

    /// What the report's columns call it.
    pub(crate) fn title(self) -> &'static str {
        match self {
            Tracer::None => "no tracer",
            Tracer::Sockprobe => "sockprobe (defaults)",
            Tracer::SockprobeAtReceives => "sockprobe, exchanges at receives",
            Tracer::SockprobeLru => "sockprobe, LRU hash",
            Tracer::SockprobeSocketLocal => "sockprobe, socket-local store",
            Tracer::Bpftrace => "bpftrace",
            Tracer::Floor => "empty tp_btf",
        }
    }

    /// The tracers asked for, each once, the empty programs always among them.
    fn chosen(asked: &[Tracer]) -> Vec<Tracer> {
        once_each(asked.iter().copied().chain([Tracer::Floor]))
    }

    fn is_sockprobe(self) -> bool {
        matches!(
            self,
            Tracer::Sockprobe | Tracer::SockprobeAtReceives | Tracer::SockprobeLru | Tracer::SockprobeSocketLocal
        )
    }
}

/// `items` in order, repeats dropped (a flag may name one twice).
fn once_each<T: PartialEq>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum Workload {
    Churn,
    KeepAlive,
    Bulk,
}

impl Workload {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Workload::Churn => "churn (new connection per request)",
            Workload::KeepAlive => "keep-alive request/response",
            Workload::Bulk => "bulk transfer (16 MiB responses)",
        }
    }

    /// wrk arguments: threads, connections, path, extra headers.
    pub(crate) fn wrk_args(self, port: u16, seconds: u64) -> Vec<String> {
        let url = |p: &str| format!("http://127.0.0.1:{port}/{p}");
        let mut a: Vec<String> = vec!["-t1".into(), format!("-d{seconds}s")];
        match self {
            Workload::Churn => a.extend(["-c16".into(), "-H".into(), "Connection: close".into(), url("small")]),
            Workload::KeepAlive => a.extend(["-c16".into(), url("small")]),
            Workload::Bulk => a.extend(["-c2".into(), url("bulk")]),
        }
        a
    }
}

const BPFTRACE_SCRIPT: &str = r#"
tracepoint:sock:inet_sock_set_state /args->protocol == 6/ {
  if (args->newstate == 2) { @owner[args->skaddr] = pid; }
  if (args->newstate == 1) { @birth[args->skaddr] = nsecs; @opened[comm] = count(); }
  if (args->oldstate == 1 && args->newstate != 1) { @closed[comm] = count(); }
  if (args->newstate == 8) { @cw[args->skaddr] = nsecs; }
}
tracepoint:sock:sock_send_length /args->protocol == 6 && args->ret > 0/ { @out[args->sk] = sum(args->ret); @last[args->sk] = 1; }
tracepoint:sock:sock_recv_length /args->protocol == 6 && args->ret > 0/ { @in[args->sk] = sum(args->ret); @last[args->sk] = 2; }
tracepoint:tcp:tcp_send_reset { @rst_sent[comm] = count(); }
tracepoint:tcp:tcp_receive_reset { @rst_recv = count(); }
tracepoint:tcp:tcp_destroy_sock {
  delete(@owner[args->skaddr]); delete(@birth[args->skaddr]); delete(@cw[args->skaddr]);
  delete(@out[args->skaddr]); delete(@in[args->skaddr]); delete(@last[args->skaddr]);
}
"#;

/// A BPF program's counters from `bpftool prog show -j`.
#[derive(Clone, Debug, Default)]
struct ProgStat {
    name: String,
    run_time_ns: u64,
    run_cnt: u64,
    /// Size after the verifier's rewrites, in 8-byte instructions.
    instructions: u64,
}

fn bpf_programs() -> Result<HashMap<u64, ProgStat>> {
    let out = Command::new("bpftool").args(["prog", "show", "-j"]).output().context("bpftool")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // Small JSON subset: objects with id/name/run_time_ns/run_cnt.
    let mut progs = HashMap::new();
    for obj in text.split("},{") {
        let field = |k: &str| -> Option<String> {
            let i = obj.find(&format!("\"{k}\":"))? + k.len() + 3;
            let rest = &obj[i..];
            let end = rest.find([',', '}']).unwrap_or(rest.len());
            Some(rest[..end].trim_matches('"').to_string())
        };
        let Some(id) = field("id").and_then(|v| v.parse().ok()) else { continue };
        progs.insert(
            id,
            ProgStat {
                name: field("name").unwrap_or_default(),
                run_time_ns: field("run_time_ns").and_then(|v| v.parse().ok()).unwrap_or(0),
                run_cnt: field("run_cnt").and_then(|v| v.parse().ok()).unwrap_or(0),
                instructions: field("bytes_xlated").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) / 8,
            },
        );
    }
    Ok(progs)
}

pub(crate) struct Running {
    child: Child,
    tracer: Tracer,
    progs: HashSet<u64>,
    metrics_addr: Option<String>,
    /// CPU seconds the tracer spent starting (BTF, loading, first listing):
    /// not part of its cost per event.
    startup_cpu_s: f64,
}

/// How a sockprobe tracer starts beyond its [`Tracer`]'s own settings.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Variant {
    /// More arguments for `sockprobe run`.
    pub args: Vec<String>,
    /// More environment: the development knobs (docs/development.md).
    pub env: Vec<(String, String)>,
    /// Its metrics port, when another sockprobe holds the default one.
    pub port: Option<u16>,
}

impl Variant {
    /// Words as `--sockprobe-args` and `--paired-versus` take them:
    /// `NAME=value` (a capitalised name) is environment, the rest arguments.
    pub fn from_words(words: &[String]) -> Variant {
        let env_name = |name: &str| {
            name.starts_with(|c: char| c.is_ascii_uppercase())
                && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        };
        let mut v = Variant::default();
        for w in words.iter().filter(|w| !w.is_empty()) {
            match w.split_once('=') {
                Some((name, value)) if env_name(name) => v.env.push((name.to_string(), value.to_string())),
                _ => v.args.push(w.clone()),
            }
        }
        v
    }

    /// Both: `self`'s words, then `other`'s.
    pub fn and(&self, other: &Variant) -> Variant {
        Variant {
            args: self.args.iter().chain(&other.args).cloned().collect(),
            env: self.env.iter().chain(&other.env).cloned().collect(),
            port: other.port.or(self.port),
        }
    }

    pub fn describe(&self) -> String {
        self.env.iter().map(|(k, v)| format!("{k}={v}")).chain(self.args.iter().cloned()).collect::<Vec<_>>().join(" ")
    }
}

/// With `load_only`, the tracer loads its programs and attaches none
/// (`SOCKPROBE_LOAD_ONLY=1`): the paired phase attaches them.
pub(crate) fn start_tracer(tracer: Tracer, dir: &Path, load_only: bool, extra: &Variant) -> Result<Option<Running>> {
    if tracer == Tracer::None {
        return Ok(None);
    }
    let before: HashSet<u64> = bpf_programs()?.into_keys().collect();
    let (child, metrics_addr) = match tracer {
        t if t.is_sockprobe() => {
            let addr = format!("127.0.0.1:{}", extra.port.unwrap_or(19741));
            // The default store unnamed, so `extra` may name another.
            let store = match tracer {
                Tracer::SockprobeSocketLocal => Some("socket-local"),
                Tracer::SockprobeLru => Some("lru"),
                _ => None,
            };
            let mut command = Command::new(workspace_root().join("target/release/sockprobe"));
            command.args(["run", "--log.level", "warn", "--web.listen-address", &addr]);
            command.args(store.iter().flat_map(|s| ["--probe.state-store", s]));
            command.args(&extra.args).envs(extra.env.iter().map(|(k, v)| (k, v)));
            if tracer == Tracer::SockprobeAtReceives {
                command.env("SOCKPROBE_TURNS", "receives");
            }
            if load_only {
                command.env("SOCKPROBE_LOAD_ONLY", "1");
            }
            let child = command.spawn().context("start sockprobe")?;
            (child, Some(addr))
        }
        Tracer::Floor => {
            let child = Command::new(workspace_root().join("target/release/examples/floor_tracer"))
                .envs(load_only.then_some(("SOCKPROBE_LOAD_ONLY", "1")))
                .stderr(Stdio::null())
                .spawn()
                .context("start floor_tracer")?;
            (child, None)
        }
        Tracer::Bpftrace if !load_only => {
            let script = dir.join("track.bt");
            std::fs::write(&script, BPFTRACE_SCRIPT)?;
            let child = Command::new("bpftrace")
                .arg(&script)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("start bpftrace")?;
            (child, None)
        }
        _ => bail!("{} cannot start with its programs detached", tracer.name()),
    };
    // Attached once its programs exist (and, for sockprobe, /healthz says so).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now: HashSet<u64> = bpf_programs()?.into_keys().collect();
        let new: HashSet<u64> = now.difference(&before).copied().collect();
        let healthy = match &metrics_addr {
            Some(a) => http_get(a, "/healthz").is_some_and(|(s, _)| s == 200),
            None => new.len() >= 6,
        };
        if healthy && !new.is_empty() {
            // Let the tracer's start-up work (first listing, BTF) finish
            // before the workload it would otherwise tax.
            sleep(Duration::from_secs(1));
            let now: HashSet<u64> = bpf_programs()?.into_keys().collect();
            let progs = now.difference(&before).copied().collect();
            let startup_cpu_s = proc_usage(child.id()).0;
            return Ok(Some(Running { child, tracer, progs, metrics_addr, startup_cpu_s }));
        }
        if Instant::now() > deadline {
            bail!("{} did not attach within 60 s", tracer.name());
        }
        sleep(Duration::from_millis(100));
    }
}

pub(crate) fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    let status = r.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, r.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// utime + stime in seconds, and peak RSS in KiB, of a process.
fn proc_usage(pid: u32) -> (f64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let hz = 100.0; // USER_HZ on Linux
    let cpu = (ticks(11) + ticks(12)) / hz;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (cpu, kib("VmHWM:"), kib("VmRSS:"))
}

struct Sample {
    workload: Workload,
    tracer: Tracer,
    round: usize,
    req_per_s: f64,
}

#[derive(Default)]
pub(crate) struct CostAcc {
    by_prog: BTreeMap<(Tracer, String), (u64, u64)>,
    instructions: BTreeMap<(Tracer, String), u64>,
    daemon_cpu_s: f64,
    daemon_events: u64,
    daemon_records: f64,
    daemon_peak_rss_kib: u64,
    events_lost: f64,
}

impl CostAcc {
    fn merge(&mut self, other: CostAcc) {
        for (k, (ns, cnt)) in other.by_prog {
            let e = self.by_prog.entry(k).or_default();
            e.0 += ns;
            e.1 += cnt;
        }
        self.instructions.extend(other.instructions);
        self.daemon_cpu_s += other.daemon_cpu_s;
        self.daemon_events += other.daemon_events;
        self.daemon_records += other.daemon_records;
        self.daemon_peak_rss_kib = self.daemon_peak_rss_kib.max(other.daemon_peak_rss_kib);
        self.events_lost += other.events_lost;
    }
}

/// The CPU the server runs on; the client gets the next one. With two or
/// more CPUs the two are pinned apart, so the scheduler's placement (both on
/// one CPU some rounds, apart in others) does not move throughput by more
/// than the tracers do. Tracers stay unpinned: their programs run wherever
/// the events happen.
const SERVER_CPU: usize = 0;
pub(crate) const CLIENT_CPU: usize = 1;

/// `program`, pinned to `cpu` (with `taskset`, util-linux) when this machine
/// has CPUs enough to keep server and client apart.
pub(crate) fn pinned(program: &str, cpu: usize) -> Command {
    if num_cpus() > CLIENT_CPU {
        let mut c = Command::new("taskset");
        c.args(["-c", &cpu.to_string(), program]);
        c
    } else {
        Command::new(program)
    }
}

fn run_wrk(workload: Workload, port: u16, seconds: u64) -> Result<f64> {
    let out = pinned("wrk", CLIENT_CPU).args(workload.wrk_args(port, seconds)).output().context("wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk output:\n{text}"))
}

pub(crate) fn stop(r: Running, acc: &mut CostAcc) -> Result<()> {
    let after = bpf_programs()?;
    let mut events = 0;
    for id in &r.progs {
        if let Some(p) = after.get(id) {
            let e = acc.by_prog.entry((r.tracer, p.name.clone())).or_default();
            e.0 += p.run_time_ns;
            e.1 += p.run_cnt;
            events += p.run_cnt;
            acc.instructions.insert((r.tracer, p.name.clone()), p.instructions);
        }
    }
    let pid = r.child.id();
    // Daemon figures are for the default configuration only.
    if let Some(addr) = r.metrics_addr.as_ref().filter(|_| r.tracer == Tracer::Sockprobe) {
        let (cpu, hwm, _) = proc_usage(pid);
        acc.daemon_cpu_s += cpu - r.startup_cpu_s;
        acc.daemon_events += events;
        acc.daemon_peak_rss_kib = acc.daemon_peak_rss_kib.max(hwm);
        if let Some((_, text)) = http_get(addr, "/metrics") {
            acc.events_lost += metric(&text, "sockprobe_events_lost_total");
        }
        acc.daemon_records += ring_records() as f64;
    }
    signal(pid, 2);
    let mut child = r.child;
    child.wait()?;
    Ok(())
}

/// The tracer's programs, by id and name.
pub(crate) fn program_names(r: &Running) -> Result<Vec<(u64, String)>> {
    let all = bpf_programs()?;
    Ok(r.progs.iter().filter_map(|id| Some((*id, all.get(id)?.name.clone()))).collect())
}

/// Records sockprobe's kernel side handed to its ring buffer: the
/// `EventsSubmitted` slot (probe-common's `Counter`) of its per-CPU
/// `COUNTERS` map, summed over CPUs.
fn ring_records() -> u64 {
    const EVENTS_SUBMITTED: u64 = 4;
    let Ok(out) = Command::new("bpftool").args(["map", "dump", "name", "COUNTERS", "-j"]).output() else { return 0 };
    let Ok(entries) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else { return 0 };
    // Maps without BTF dump keys and values as little-endian hex bytes.
    let number = |v: &serde_json::Value| -> u64 {
        match v {
            serde_json::Value::Array(bytes) => bytes
                .iter()
                .rev()
                .filter_map(|b| u64::from_str_radix(b.as_str()?.trim_start_matches("0x"), 16).ok())
                .fold(0, |acc, b| acc << 8 | b),
            v => v.as_u64().unwrap_or(0),
        }
    };
    entries
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| number(&e["key"]) == EVENTS_SUBMITTED)
        .flat_map(|e| e["values"].as_array().cloned().unwrap_or_default())
        .map(|v| number(&v["value"]))
        .sum()
}

fn signal(pid: u32, sig: i32) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
}

struct Nginx {
    child: Child,
    port: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_nginx(dir: &Path) -> Result<Nginx> {
    let port = 18080;
    let html = dir.join("html");
    std::fs::create_dir_all(&html)?;
    std::fs::create_dir_all(dir.join("logs"))?;
    std::fs::write(html.join("small"), vec![b'x'; 128])?;
    std::fs::write(html.join("bulk"), vec![b'x'; 16 << 20])?;
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off; master_process off; worker_processes 1; error_log {}/logs/error.log; pid {}/nginx.pid;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ access_log off; keepalive_requests 1000000; sendfile on;\n\
               server {{ listen 127.0.0.1:{port} backlog=4096 reuseport; root {};\n\
                 location = /status {{ stub_status; }} }} }}\n",
            dir.display(),
            dir.display(),
            html.display()
        ),
    )?;
    let child = pinned("nginx", SERVER_CPU).args(["-c"]).arg(&conf).args(["-p"]).arg(dir).spawn().context("nginx")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("nginx did not start");
        }
        sleep(Duration::from_millis(50));
    }
    Ok(Nginx { child, port })
}

pub(crate) fn median_and_spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mid = if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 };
    (mid, v[0], v[v.len() - 1])
}

/// `median% [lo–hi%]` for ratios: the median and, from 6 samples, its
/// 95 % interval ([`median_interval`]); below that `(min–max%)`.
pub(crate) fn ratio_cell(mut v: Vec<f64>) -> String {
    let (m, lo, hi) = median_and_spread(v.clone());
    v.sort_by(|a, b| a.total_cmp(b));
    match median_interval(v.len()) {
        Some((k, j, _)) => format!("{:.1}% [{:.1}–{:.1}%]", m * 100.0, v[k - 1] * 100.0, v[j - 1] * 100.0),
        None => format!("{:.1}% ({:.1}–{:.1}%)", m * 100.0, lo * 100.0, hi * 100.0),
    }
}

/// A distribution-free confidence interval for the median of `n` samples:
/// the 1-based ranks (k, n + 1 - k) of the sorted samples for the largest k
/// whose interval holds the median with probability >= 95 %, and that
/// probability, 1 - 2 P(X < k) for X ~ Binomial(n, 1/2). `None` below 6
/// samples, where even (min, max) is short of 95 %.
pub(crate) fn median_interval(n: usize) -> Option<(usize, usize, f64)> {
    // ln P(X = k - 1), kept as a logarithm: C(n, k) overflows f64 and 2^-n
    // underflows it from about a thousand samples (the paired phase's pairs).
    let mut ln_term = -(n as f64) * std::f64::consts::LN_2;
    let mut below = 0.0; // P(X < k)
    let mut best = None;
    for k in 1..=n.div_ceil(2) {
        below += ln_term.exp();
        ln_term += ((n - (k - 1)) as f64 / k as f64).ln();
        let level = 1.0 - 2.0 * below;
        if level < 0.95 {
            break;
        }
        best = Some((k, n + 1 - k, level));
    }
    best
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if args.listing_only {
        let mut report = String::new();
        crate::listing_bench::run(args.listing_namespaces, args.listing_sockets, &mut report)?;
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
    let tracers: Vec<Tracer> = std::iter::once(Tracer::None).chain(measured.iter().copied()).collect();
    let workloads = once_each(args.workloads.iter().copied());
    let mut samples = Vec::new();
    let mut acc = CostAcc::default();
    // Throughput with bpf_stats off (its two clock reads per run would tax
    // the tracers); then one pass per workload with it on, for the costs.
    set_bpf_stats(false)?;
    for round in 0..args.rounds {
        for &w in &workloads {
            for i in 0..tracers.len() {
                let t = tracers[(i + round) % tracers.len()];
                let running = start_tracer(t, &dir, false, &base)?;
                let rps = run_wrk(w, nginx.port, args.seconds)?;
                eprintln!("round {round} {:<40} {:<10} {rps:>12.0} req/s", w.name(), t.name());
                samples.push(Sample { workload: w, tracer: t, round, req_per_s: rps });
                if let Some(r) = running {
                    stop(r, &mut CostAcc::default())?;
                }
            }
        }
    }
    set_bpf_stats(true)?;
    // Per workload and tracer, from its bpf_stats pass: (run_time_ns, run_cnt, requests).
    let mut pass_cost: BTreeMap<(Workload, Tracer), (u64, u64, f64)> = BTreeMap::new();
    for &w in &workloads {
        for &t in &measured {
            let running = start_tracer(t, &dir, false, &base)?;
            let rps = run_wrk(w, nginx.port, args.seconds)?;
            if let Some(r) = running {
                let mut one = CostAcc::default();
                stop(r, &mut one)?;
                let (ns, cnt) = one.by_prog.values().fold((0, 0), |(a, b), (ns, cnt)| (a + ns, b + cnt));
                pass_cost.insert((w, t), (ns, cnt, rps * args.seconds as f64));
                acc.merge(one);
            }
        }
    }
    set_bpf_stats(false)?;

    let mut report = String::new();
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
            .collect::<String>()
    );
    if args.rounds > 0 {
        let interval = median_interval(args.rounds);
        let header: Vec<String> = measured.iter().map(|t| format!("{} / baseline", t.title())).collect();
        let _ = writeln!(report, "| workload | baseline req/s (median) | {} |", header.join(" | "));
        let _ = writeln!(report, "|---|---|{}", "---|".repeat(measured.len()));
        for &w in &workloads {
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
                    "\nRatios: median over {} rounds, in brackets its {:.1} % confidence interval (the {k}th and {j}th of the sorted ratios; distribution-free); each ratio uses its own round's baseline.\n",
                    args.rounds,
                    level * 100.0
                );
            }
            None => {
                let _ = writeln!(
                    report,
                    "\nRatios: median over {} rounds, (min–max) in parentheses (6 or more rounds give a 95 % interval instead); each ratio uses its own round's baseline.\n",
                    args.rounds
                );
            }
        }
    }
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
    let per_request =
        |w: Workload, t: Tracer| pass_cost.get(&(w, t)).map(|(ns, _, req)| *ns as f64 / req.max(1.0)).unwrap_or(0.0);
    let hits_per_request =
        |w: Workload| pass_cost.get(&(w, Tracer::Floor)).map(|(_, cnt, req)| *cnt as f64 / req.max(1.0)).unwrap_or(0.0);
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
    for &t in &measured {
        let runs = pass_cost.get(&(Workload::Churn, t)).map(|(_, cnt, req)| *cnt as f64 / req.max(1.0)).unwrap_or(0.0);
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
    let churn_max = samples
        .iter()
        .filter(|s| s.workload == Workload::Churn && s.tracer == Tracer::Sockprobe)
        .map(|s| s.req_per_s)
        .fold(0.0, f64::max);
    if churn_max > 0.0 {
        let _ = writeln!(
            report,
            "\nSaturation: highest churn rate with sockprobe attached: {churn_max:.0} connections/s (wrk, 16 connections); events lost over all runs: {}.",
            acc.events_lost
        );
    }

    if args.paired_seconds > 0 {
        crate::paired_bench::run(
            &workloads,
            nginx.port,
            args.paired_seconds,
            Duration::from_millis(args.paired_slice_ms.max(10)),
            &dir,
            &base,
            (!args.paired_versus.is_empty()).then(|| Variant::from_words(&args.paired_versus)).as_ref(),
            &mut report,
        )?;
    }
    if args.scale_sockets > 0 {
        scale(args.scale_sockets, &mut report)?;
    }
    if args.churn_total > 0 {
        churn_leak(args.churn_total, nginx.port, &mut report)?;
    }
    if args.listing_namespaces > 0 {
        crate::listing_bench::run(args.listing_namespaces, args.listing_sockets, &mut report)?;
    }
    drop(nginx);
    std::fs::write(dir.join("report.md"), &report)?;
    println!("{report}\n(written to {})", dir.join("report.md").display());
    Ok(())
}

fn set_bpf_stats(on: bool) -> Result<()> {
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", if on { "1" } else { "0" })
        .context("set kernel.bpf_stats_enabled (needs root)")
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// RSS and kernel map use with `sockets` open sockets; half the connections
/// have their server side closed, so a quarter of all sockets sit in CLOSE_WAIT.
fn scale(sockets: u32, report: &mut String) -> Result<()> {
    let peer = workspace_root().join("target/release/sockprobe-peer");
    let sp = start_tracer(Tracer::Sockprobe, &workspace_root().join("target/bench"), false, &Variant::default())?
        .context("sockprobe")?;
    let addr = sp.metrics_addr.clone().unwrap();
    let pid = sp.child.id();
    let (_, _, rss_idle) = proc_usage(pid);
    // One process holds at most ~9000 connections (fd limit 20000 here).
    let per = 9000u32;
    let connections = sockets.div_ceil(2);
    let mut holders = Vec::new();
    let mut left = connections;
    while left > 0 {
        let n = left.min(per);
        let mut c = Command::new(&peer)
            .args([
                "--name",
                "bench-holder",
                "hold",
                "--connections",
                &n.to_string(),
                "--close-wait",
                &(n / 2).to_string(),
            ])
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(c.stdout.take().unwrap()), &mut line)?;
        if line.trim() != "ready" {
            bail!("holder failed: {line}");
        }
        holders.push(c);
        left -= n;
    }
    // Idle connections that never carried an exchange reach the gauges at
    // the first reconcile (30 s after start; docs/architecture.md, "One
    // record per connection").
    sleep(Duration::from_secs(32));
    let t = Instant::now();
    let text = http_get(&addr, "/metrics").map(|(_, b)| b).unwrap_or_default();
    let scrape = t.elapsed();
    let (_, hwm, rss) = proc_usage(pid);
    let tracked = metric(&text, "sockprobe_tracked_sockets");
    let live: f64 = text
        .lines()
        .filter(|l| l.starts_with("sockprobe_tcp_sockets{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    for mut h in holders {
        let _ = h.kill();
        let _ = h.wait();
    }
    sleep(Duration::from_secs(3));
    let text_after = http_get(&addr, "/metrics").map(|(_, b)| b).unwrap_or_default();
    let tracked_after = metric(&text_after, "sockprobe_tracked_sockets");
    let (_, _, rss_after) = proc_usage(pid);
    let lost = metric(&text_after, "sockprobe_events_lost_total");
    let _ = writeln!(
        report,
        "\nScale: {} sockets held open ({} connections, both ends; a quarter of all sockets in CLOSE_WAIT): \
         daemon RSS {:.1} MiB (idle before: {:.1} MiB, peak {:.1} MiB), kernel map entries {tracked:.0}, sockets in gauges {live:.0}, \
         scrape of /metrics {:.0} ms. After closing them all: map entries {tracked_after:.0}, RSS {:.1} MiB, events lost {lost}.",
        connections * 2,
        connections,
        rss as f64 / 1024.0,
        rss_idle as f64 / 1024.0,
        hwm as f64 / 1024.0,
        scrape.as_secs_f64() * 1000.0,
        rss_after as f64 / 1024.0,
    );
    let mut acc = CostAcc::default();
    stop(sp, &mut acc)
}

/// Churns `total` connections through nginx with sockprobe attached: map and
/// RSS must come back down.
fn churn_leak(total: u64, port: u16, report: &mut String) -> Result<()> {
    let sp = start_tracer(Tracer::Sockprobe, &workspace_root().join("target/bench"), false, &Variant::default())?
        .context("sockprobe")?;
    let addr = sp.metrics_addr.clone().unwrap();
    let pid = sp.child.id();
    let t = Instant::now();
    let mut done = 0.0;
    let mut rss_samples = Vec::new();
    while done < total as f64 {
        let rps = run_wrk(Workload::Churn, port, 10)?;
        done += rps * 10.0;
        rss_samples.push(proc_usage(pid).2);
    }
    sleep(Duration::from_secs(2));
    let text = http_get(&addr, "/metrics").map(|(_, b)| b).unwrap_or_default();
    let opened = metric(&text, "sockprobe_tcp_connections_opened_total");
    let _ = writeln!(
        report,
        "\nChurn leak check: {opened:.0} connections opened in {:.0} s with sockprobe attached; kernel map entries afterwards {:.0}; \
         daemon RSS per 10 s slice (MiB): {}; events lost {}.",
        t.elapsed().as_secs_f64(),
        metric(&text, "sockprobe_tracked_sockets"),
        rss_samples.iter().map(|k| format!("{:.1}", *k as f64 / 1024.0)).collect::<Vec<_>>().join(", "),
        metric(&text, "sockprobe_events_lost_total"),
    );
    let mut acc = CostAcc::default();
    stop(sp, &mut acc)
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::{Tracer, Variant, Workload, median_interval, once_each, ratio_cell};

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
