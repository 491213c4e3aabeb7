//! What the bench drives: nginx on loopback and wrk against it, each
//! workload's wrk arguments, and the CPUs they are pinned to.
use std::{
    path::Path,
    process::{Child, Command},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

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

pub(crate) fn run_wrk(workload: Workload, port: u16, seconds: u64) -> Result<f64> {
    let out = pinned("wrk", CLIENT_CPU).args(workload.wrk_args(port, seconds)).output().context("wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk output:\n{text}"))
}

pub(crate) struct Nginx {
    child: Child,
    pub(crate) port: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn start_nginx(dir: &Path) -> Result<Nginx> {
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

pub(crate) fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
