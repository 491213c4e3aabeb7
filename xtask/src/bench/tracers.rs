//! The tracers a bench run measures, started and stopped the same way for
//! every phase: sockprobe in its configurations, bpftrace, the empty
//! programs; their programs' bpf_stats and the daemon's own cost.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::Path,
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::workspace_root;

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
    pub(crate) fn chosen(asked: &[Tracer]) -> Vec<Tracer> {
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
pub(crate) fn once_each<T: PartialEq>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
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
    let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).context("bpftool prog show -j")?;
    let number = |p: &serde_json::Value, k: &str| p[k].as_u64().unwrap_or(0);
    Ok(all
        .iter()
        .filter_map(|p| {
            let stat = ProgStat {
                name: p["name"].as_str().unwrap_or_default().to_string(),
                run_time_ns: number(p, "run_time_ns"),
                run_cnt: number(p, "run_cnt"),
                instructions: number(p, "bytes_xlated") / 8,
            };
            Some((p["id"].as_u64()?, stat))
        })
        .collect())
}

pub(crate) struct Running {
    pub(crate) child: Child,
    tracer: Tracer,
    progs: HashSet<u64>,
    pub(crate) metrics_addr: Option<String>,
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
    /// Another sockprobe binary than the one just built (the code before a
    /// kernel-side change, for `--paired-versus-binary`).
    pub binary: Option<std::path::PathBuf>,
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
            binary: other.binary.clone().or_else(|| self.binary.clone()),
        }
    }

    pub fn describe(&self) -> String {
        let binary = self.binary.iter().map(|b| format!("binary {}", b.display()));
        self.env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .chain(self.args.iter().cloned())
            .chain(binary)
            .collect::<Vec<_>>()
            .join(" ")
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
            let binary = extra.binary.clone().unwrap_or_else(|| workspace_root().join("target/release/sockprobe"));
            let mut command = Command::new(binary);
            command.args(["run", "--log.level", "warn", "--web.listen-address", &addr]);
            // Two at once in the paired phase: each its own API socket.
            let api = dir.join(format!("api-{}.sock", extra.port.unwrap_or(19741)));
            command.arg("--web.api-socket").arg(api);
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
    crate::scrape::http_get_with(addr, path, None, Duration::from_secs(30))
}

pub(crate) fn metric(text: &str, name: &str) -> f64 {
    crate::scrape::metric(text, name, &[])
}

/// utime + stime in seconds, and peak RSS in KiB, of a process.
pub(crate) fn proc_usage(pid: u32) -> (f64, u64, u64) {
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

#[derive(Default)]
pub(crate) struct CostAcc {
    pub(crate) by_prog: BTreeMap<(Tracer, String), (u64, u64)>,
    pub(crate) instructions: BTreeMap<(Tracer, String), u64>,
    pub(crate) daemon_cpu_s: f64,
    pub(crate) daemon_events: u64,
    pub(crate) daemon_records: f64,
    pub(crate) daemon_peak_rss_kib: u64,
    pub(crate) events_lost: f64,
}

impl CostAcc {
    pub(crate) fn merge(&mut self, other: CostAcc) {
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
