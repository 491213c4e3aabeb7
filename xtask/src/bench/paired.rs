//! `cargo xtask bench`'s paired phase: throughput with and without a
//! tracer's programs, one slice (100 ms by default) apart, under one steady
//! load.
//!
//! On a shared VM the host's speed drifts by ±10–15 % within seconds (steal
//! time explains only part of it), so whole runs seconds apart compare
//! badly: twenty interleaved 3-second rounds still leave a 95 % interval
//! about ±5 % wide. Here the tracer starts with `SOCKPROBE_LOAD_ONLY=1`
//! (loaded and verified, nothing attached), and the bench attaches and
//! detaches its very programs by id (`BPF_RAW_TRACEPOINT_OPEN`, close):
//! slices alternate off/on, on/off, … and each adjacent pair gives one
//! ratio, counted by nginx's own request counter (`stub_status`).
//!
//! What it measures: the programs' cost in the kernel, with the daemon
//! running and consuming what they send. Not included: the daemon's start-up
//! and its first socket listing (run and measured apart, in the main rounds).
//!
//! With `--paired-versus`, two sockprobes take turns instead of one and
//! nothing: the ratio is the second configuration's throughput over the
//! first's, which is how a change to the kernel programs is measured.
use std::{
    fmt::Write as _,
    io,
    os::fd::{FromRawFd, OwnedFd, RawFd},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{
    stats::{median_and_spread, ratio_cell},
    tracers::{Running, Tracer, Variant, http_get, program_names, start_tracer, stop},
    workload::{CLIENT_CPU, Workload, pinned},
};

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;

/// `bpf(2)` with a zeroed attribute block (the kernel accepts a longer
/// block than its own if the tail is zero).
fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> io::Result<RawFd> {
    // SAFETY: attr is a valid, writable 128-byte block for the call's length.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), std::mem::size_of_val(attr)) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r as RawFd) }
}

/// Another process's loaded programs, attached and detached at will.
struct Toggle {
    programs: Vec<(String, OwnedFd)>,
    links: Vec<OwnedFd>,
}

impl Toggle {
    /// Opens the programs a raw tracepoint link accepts (tp_btf, fentry,
    /// fexit); not sockprobe's socket iterator (`iter_*`), which each
    /// listing attaches anew and the hot path never runs.
    fn new(ids: &[(u64, String)]) -> Result<Toggle> {
        let mut programs = Vec::new();
        for (id, name) in ids.iter().filter(|(_, name)| !name.starts_with("iter_")) {
            let mut attr = [0u64; 16];
            attr[0] = *id; // prog_id (u32), next_id 0, open_flags 0
            let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr).with_context(|| format!("open program {id} ({name})"))?;
            // SAFETY: a new fd the kernel just returned, owned by no one else.
            programs.push((name.clone(), unsafe { OwnedFd::from_raw_fd(fd) }));
        }
        Ok(Toggle { programs, links: Vec::new() })
    }

    fn attach(prog: &OwnedFd) -> io::Result<OwnedFd> {
        use std::os::fd::AsRawFd;
        let mut attr = [0u64; 16];
        attr[1] = prog.as_raw_fd() as u64; // name NULL: the program's own hook
        let fd = bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr)?;
        // SAFETY: as above.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn set(&mut self, on: bool) -> Result<()> {
        if !on {
            self.links.clear();
        } else if self.links.is_empty() {
            for (name, fd) in &self.programs {
                self.links.push(Self::attach(fd).with_context(|| format!("attach {name}"))?);
            }
        }
        Ok(())
    }
}

/// nginx's handled-requests counter.
fn requests(addr: &str) -> Result<u64> {
    let (_, body) = http_get(addr, "/status").context("nginx stub_status")?;
    request_count(&body).with_context(|| format!("no request count in stub_status: {body:?}"))
}

/// "Active connections: N\nserver accepts handled requests\n A H R\n…": R.
fn request_count(stub_status: &str) -> Option<u64> {
    let mut lines = stub_status.lines().skip_while(|l| !l.trim_start().starts_with("server accepts"));
    lines.next()?;
    lines.next()?.split_whitespace().nth(2)?.parse().ok()
}

/// Paired slices under one workload: each pair one slice of the first
/// state, one of the second, in alternating order.
struct Paired {
    /// Second over first, one per adjacent pair of slices.
    ratios: Vec<f64>,
    /// Requests per second in the first state's slices.
    first_rates: Vec<f64>,
}

/// wrk, stopped however the phase ends.
struct Load(std::process::Child);

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A started tracer's programs, opened to attach.
fn toggle_of(running: &Running, name: &str) -> Result<Toggle> {
    let toggle = Toggle::new(&program_names(running)?)?;
    if toggle.programs.is_empty() {
        bail!("{name}: no program of it attaches with BPF_RAW_TRACEPOINT_OPEN");
    }
    Ok(toggle)
}

/// `first` attached (or nothing, when `None`) against `second` attached.
fn pairs(
    mut first: Option<&mut Toggle>,
    second: &mut Toggle,
    workload: Workload,
    port: u16,
    seconds: u64,
    slice: Duration,
) -> Result<Paired> {
    let addr = format!("127.0.0.1:{port}");
    // On while wrk opens its connections, as when a daemon runs before them.
    second.set(true)?;
    let load = Load(
        pinned("wrk", CLIENT_CPU)
            .args(workload.wrk_args(port, seconds + 5))
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("wrk")?,
    );
    sleep(Duration::from_secs(1));
    let settle = Duration::from_millis(10);
    let mut ratios = Vec::new();
    let mut first_rates = Vec::new();
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut k = 0usize;
    while Instant::now() < end {
        // first/second, then second/first: neither state always comes first.
        let order = if k.is_multiple_of(2) { [false, true] } else { [true, false] };
        let mut rate = [0.0f64; 2];
        for use_second in order {
            // Detach before attaching: never both at once.
            if use_second {
                first.as_deref_mut().map(|t| t.set(false)).transpose()?;
                second.set(true)?;
            } else {
                second.set(false)?;
                first.as_deref_mut().map(|t| t.set(true)).transpose()?;
            }
            sleep(settle);
            let (c0, t0) = (requests(&addr)?, Instant::now());
            sleep(slice);
            let (c1, t1) = (requests(&addr)?, Instant::now());
            rate[use_second as usize] = (c1 - c0) as f64 / (t1 - t0).as_secs_f64();
        }
        if rate[0] > 0.0 {
            ratios.push(rate[1] / rate[0]);
            first_rates.push(rate[0]);
        }
        k += 1;
    }
    second.set(false)?;
    first.map(|t| t.set(false)).transpose()?;
    drop(load);
    Ok(Paired { ratios, first_rates })
}

/// One tracer on against off.
fn on_off(
    tracer: Tracer,
    workload: Workload,
    port: u16,
    seconds: u64,
    slice: Duration,
    dir: &std::path::Path,
    variant: &Variant,
) -> Result<Paired> {
    let running = start_tracer(tracer, dir, true, variant)?.context("a tracer")?;
    let mut toggle = toggle_of(&running, tracer.name())?;
    let paired = pairs(None, &mut toggle, workload, port, seconds, slice)?;
    drop(toggle);
    stop(running, &mut Default::default())?;
    Ok(paired)
}

/// sockprobe as `base` says against sockprobe with `versus` too, both
/// started with their programs detached (the second on its own metrics
/// port).
fn versus_pairs(
    workload: Workload,
    port: u16,
    seconds: u64,
    slice: Duration,
    dir: &std::path::Path,
    base: &Variant,
    versus: &Variant,
) -> Result<Paired> {
    let a = start_tracer(Tracer::Sockprobe, dir, true, base)?.context("sockprobe")?;
    let b_variant = base.and(&Variant { port: Some(19742), ..versus.clone() });
    let b = start_tracer(Tracer::Sockprobe, dir, true, &b_variant)?.context("sockprobe")?;
    let (mut ta, mut tb) = (toggle_of(&a, "sockprobe")?, toggle_of(&b, "sockprobe (versus)")?);
    let paired = pairs(Some(&mut ta), &mut tb, workload, port, seconds, slice)?;
    drop((ta, tb));
    stop(a, &mut Default::default())?;
    stop(b, &mut Default::default())?;
    Ok(paired)
}

#[allow(clippy::too_many_arguments)]
pub fn run(
    workloads: &[Workload],
    port: u16,
    seconds: u64,
    slice: Duration,
    dir: &std::path::Path,
    base: &Variant,
    versus: Option<&Variant>,
    report: &mut String,
) -> Result<()> {
    // (columns, what the slices toggle, the first state, the footnote's tail)
    let (columns, how, first_state, floor_note) = match versus {
        Some(v) => (
            vec![format!("sockprobe with `{}` / without", v.describe())],
            "the two sockprobes' programs attached in turn (never both, never neither)",
            "first sockprobe",
            "",
        ),
        None => (
            [Tracer::Sockprobe, Tracer::Floor].iter().map(|t| format!("{} on / off", t.title())).collect(),
            "the tracer's own programs attached and detached by id",
            "off",
            " The empty programs' column is the floor: what any tracer with programs on these tracepoints costs.",
        ),
    };
    let _ = writeln!(
        report,
        "\nPaired slices ({seconds} s per workload and column, {} ms slices, alternating; \
         {how} under one steady wrk load; ratio between adjacent slices, nginx's request counter):\n",
        slice.as_millis()
    );
    let _ = writeln!(report, "| workload | pairs | {first_state}, req/s (median slice) | {} |", columns.join(" | "));
    let _ = writeln!(report, "|---|---|---|{}", "---|".repeat(columns.len()));
    for &w in workloads {
        let runs = match versus {
            Some(v) => vec![("versus", versus_pairs(w, port, seconds, slice, dir, base, v)?)],
            None => {
                let mut runs = Vec::new();
                for t in [Tracer::Sockprobe, Tracer::Floor] {
                    runs.push((t.name(), on_off(t, w, port, seconds, slice, dir, base)?));
                }
                runs
            }
        };
        let n = runs.iter().map(|(_, r)| r.ratios.len()).min().unwrap_or(0);
        let mut cells = Vec::new();
        let mut first_rates = Vec::new();
        for (name, run) in runs {
            let pairs = run.ratios.len();
            let cell = ratio_cell(run.ratios);
            eprintln!("paired {:<40} {name:<12} {pairs} pairs: {cell}", w.name());
            first_rates.extend(run.first_rates);
            cells.push(cell);
        }
        let first_median = median_and_spread(first_rates).0;
        let _ = writeln!(report, "| {} | {n} | {first_median:.0} | {} |", w.name(), cells.join(" | "));
    }
    let _ = writeln!(
        report,
        "\nEach cell: the median ratio of adjacent slices and its 95 % distribution-free interval.{floor_note}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stub_status_gives_the_request_count() {
        let body = "Active connections: 17 \nserver accepts handled requests\n 1203 1203 98765 \nReading: 0 Writing: 1 Waiting: 16 \n";
        assert_eq!(request_count(body), Some(98765));
        assert_eq!(request_count("Active connections: 1\n"), None);
        assert_eq!(request_count("server accepts handled requests\n 1 2\n"), None);
    }
}
