//! Test harness: real `sockprobe` processes, real peers, real kernel counters.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, LazyLock, Mutex},
    thread,
    time::{Duration, Instant},
};

#[allow(unused_imports)] // each test binary uses its share
pub use scrape::{http_get_with, metric, series_of};
pub use serde_json::Value;

pub mod scrape;

/// The binaries under test: where cargo built them, or where
/// `SOCKPROBE_BIN` / `SOCKPROBE_PEER_BIN` say (the QEMU guests put them at
/// fixed paths, since their /tmp hides the build tree of a clone in /tmp).
pub static SOCKPROBE: LazyLock<&'static str> =
    LazyLock::new(|| binary("SOCKPROBE_BIN", env!("CARGO_BIN_EXE_sockprobe")));
pub static PEER: LazyLock<&'static str> =
    LazyLock::new(|| binary("SOCKPROBE_PEER_BIN", env!("CARGO_BIN_EXE_sockprobe-peer")));

fn binary(var: &str, built: &'static str) -> &'static str {
    match std::env::var(var) {
        Ok(path) => path.leak(),
        Err(_) => built,
    }
}

/// Waits scale by `SOCKPROBE_TEST_TIME_SCALE` (e.g. 20 under QEMU's TCG).
pub fn scaled(d: Duration) -> Duration {
    let k: u32 = std::env::var("SOCKPROBE_TEST_TIME_SCALE").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    d * k.max(1)
}

/// Whether this kernel names resets from close() (6.12+): expect
/// `abort_on_close` there, `unknown`/`not_specified` before.
pub fn kernel_has_reset_reasons() -> bool {
    std::fs::read("/sys/kernel/btf/vmlinux")
        .map(|b| b.windows(32).any(|w| w == b"SK_RST_REASON_TCP_ABORT_ON_CLOSE"))
        .unwrap_or(false)
}

/// Privileged tests are `#[ignore]`d, so a run without root reports them
/// skipped; one that includes them anyway fails here, not silently.
pub fn require_root() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root (run `sudo cargo xtask test`)");
}

/// A running `sockprobe trace`, its JSON lines collected in the background.
pub struct Tracer {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
}

/// Flags for a tracer that keeps kernel state in socket-local storage
/// instead of the default cookie table.
pub const SOCKET_LOCAL: &[&str] = &["--probe.state-store", "socket-local"];
/// Flags for a tracer that keeps kernel state in the LRU hash (what kprobe
/// hooks use) instead of the default cookie table.
pub const LRU: &[&str] = &["--probe.state-store", "lru"];

impl Tracer {
    pub fn start(args: &[&str]) -> Tracer {
        Tracer::start_with_env(&[], args)
    }

    /// As [`Tracer::start`], with environment variables (development knobs).
    pub fn start_with_env(env: &[(&str, &str)], args: &[&str]) -> Tracer {
        let mut child = Command::new(*SOCKPROBE)
            .arg("trace")
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sockprobe trace");
        let stderr = child.stderr.take().unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[sockprobe] {line}");
                if line.contains("probes attached") {
                    let _ = ready_tx.send(());
                }
            }
        });
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v: Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("trace printed non-JSON {line:?}: {e}"));
                sink.lock().unwrap().push(v);
            }
        });
        ready_rx
            .recv_timeout(scaled(Duration::from_secs(30)))
            .expect("sockprobe trace did not report attached probes within 30 s");
        Tracer { child, lines }
    }

    pub fn events(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until `pred` holds over the events seen so far.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + scaled(timeout);
        loop {
            let ev = self.events();
            if pred(&ev) {
                return ev;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; events seen:\n{}", dump(&ev));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(mut self) -> Vec<Value> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait().expect("wait for sockprobe trace");
        assert!(status.success(), "sockprobe trace exited with {status}");
        self.events()
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn dump(events: &[Value]) -> String {
    events.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")
}

/// Events of one kind from processes named `comm`.
pub fn select<'a>(events: &'a [Value], event: &str, comm: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == event && e["comm"] == comm).collect()
}

/// A `sockprobe-peer server`; the address it listens on.
pub struct Server {
    pub child: Child,
    pub addr: String,
}

impl Server {
    pub fn start(prefix: &[&str], name: &str, args: &[&str]) -> Server {
        let mut cmd = command(prefix, *PEER);
        cmd.args(["--name", name, "server"]).args(args).stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn sockprobe-peer server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("server prints its address");
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("unexpected server output {line:?}"))
            .to_string();
        Server { child, addr }
    }

    pub fn wait(&mut self) {
        let status = self.child.wait().expect("wait for server");
        assert!(status.success(), "server exited with {status}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a `sockprobe-peer client` to completion; returns its pid.
pub fn client(prefix: &[&str], name: &str, args: &[&str]) -> u32 {
    let mut cmd = command(prefix, *PEER);
    cmd.args(["--name", name, "client"]).args(args);
    run_to_end(cmd)
}

/// Runs a program to completion (stdout discarded), asserting success; its pid.
pub fn run_to_end(mut cmd: Command) -> u32 {
    let mut child = cmd.stdout(Stdio::null()).spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let pid = child.id();
    let status = child.wait().expect("wait for child");
    assert!(status.success(), "{cmd:?} exited with {status}");
    pid
}

/// Runs `program` inside `prefix` (e.g. `ip netns exec NS`) to completion.
pub fn run_in(prefix: &[&str], program: &str, args: &[&str]) -> u32 {
    let mut cmd = command(prefix, program);
    cmd.args(args);
    run_to_end(cmd)
}

/// Polls `f` until it yields a value.
pub fn poll<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + scaled(timeout);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `f` until it holds.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    poll(what, timeout, || f().then_some(()))
}

/// As [`wait_until`]; a timeout says what the last attempt found.
pub fn wait_until_ok(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + scaled(timeout);
    loop {
        match f() {
            Ok(()) => return,
            Err(last) => assert!(Instant::now() < deadline, "timed out waiting for {what}: {last}"),
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// `prefix` runs the program inside something, e.g. `ip netns exec NS`.
fn command(prefix: &[&str], program: &str) -> Command {
    match prefix.split_first() {
        None => Command::new(program),
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(program);
            c
        }
    }
}

/// A network namespace of our own, so kernel counters see only our traffic.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(tag: &str) -> NetNs {
        let name = format!("sockprobe-test-{tag}-{}", std::process::id());
        run(&["ip", "netns", "add", &name]);
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        NetNs { name }
    }

    pub fn prefix(&self) -> Vec<&str> {
        vec!["ip", "netns", "exec", &self.name]
    }

    /// A TcpExt counter from this namespace's `/proc/net/netstat`.
    pub fn tcpext(&self, counter: &str) -> u64 {
        tcpext_counter(&self.output(&["cat", "/proc/net/netstat"]), counter)
    }
}

impl NetNs {
    /// Runs `argv` inside the namespace; it must succeed.
    pub fn exec(&self, argv: &[&str]) {
        let mut full = self.prefix();
        full.extend_from_slice(argv);
        run(&full);
    }

    /// Sets a sysctl of the namespace (`net.ipv4.*` are per namespace).
    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec(&["sysctl", "-q", "-w", &format!("{key}={value}")]);
    }

    /// A `Tcp:` counter of this namespace's `/proc/net/snmp` (RetransSegs).
    pub fn tcp_snmp(&self, counter: &str) -> u64 {
        tcp_snmp_counter(&self.output(&["cat", "/proc/net/snmp"]), counter)
    }

    /// Appends an iptables rule (its words, as one string) in the namespace.
    pub fn iptables(&self, rule: &str) {
        let mut argv = vec!["iptables"];
        argv.extend(rule.split_whitespace());
        self.exec(&argv);
    }

    /// The output of `argv` run inside the namespace.
    pub fn output(&self, argv: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv)
            .output()
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        assert!(out.status.success(), "{argv:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl NetNs {
    /// The namespace's TCP table (`/proc/net/tcp{,6}`), as the kernel has it.
    pub fn tcp_table(&self) -> Vec<TcpRow> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "cat", "/proc/net/tcp", "/proc/net/tcp6"])
            .output()
            .expect("read /proc/net/tcp");
        parse_tcp_table(&String::from_utf8_lossy(&out.stdout))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

pub fn run(argv: &[&str]) {
    let status = Command::new(argv[0]).args(&argv[1..]).status().unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(status.success(), "{argv:?} failed: {status}");
}

/// Parses `/proc/net/netstat`: pairs of header and value lines per prefix.
pub fn tcpext_counter(netstat: &str, counter: &str) -> u64 {
    let lines: Vec<&str> = netstat.lines().collect();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        if !names.starts_with("TcpExt:") {
            continue;
        }
        let idx = names.split_whitespace().position(|n| n == counter).unwrap_or_else(|| panic!("no TcpExt {counter}"));
        return values.split_whitespace().nth(idx).and_then(|v| v.parse().ok()).expect("counter value");
    }
    panic!("no TcpExt section in netstat");
}

pub fn u64_of(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("event lacks numeric {key}: {v}"))
}

/// A running `sockprobe run`, scraped over HTTP.
pub struct Daemon {
    pub child: Child,
    pub addr: String,
    /// `Authorization` for scrapes, with `--web.config.file`.
    pub auth: Option<String>,
    /// Its `--web.api-socket` (one per daemon: tests run side by side).
    pub api_socket: std::path::PathBuf,
}

impl Daemon {
    pub fn start(args: &[&str]) -> Daemon {
        Daemon::start_under(&[], args)
    }

    /// As [`Daemon::start`], scraping with these credentials.
    pub fn start_auth(args: &[&str], authorization: &str) -> Daemon {
        Daemon::start_with(&[], args, Some(authorization.to_string()))
    }

    /// As [`Daemon::start`], in the memory cgroup `limit` (from exec on:
    /// its maps are charged there).
    pub fn start_limited(limit: &MemoryLimit, args: &[&str]) -> Daemon {
        let prefix = limit.prefix();
        let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
        Daemon::start_under(&prefix, args)
    }

    /// As [`Daemon::start`], the command prefixed (e.g. `setpriv ...`).
    pub fn start_under(prefix: &[&str], args: &[&str]) -> Daemon {
        Daemon::start_with(prefix, args, None)
    }

    fn start_with(prefix: &[&str], args: &[&str], auth: Option<String>) -> Daemon {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let api_socket = std::env::temp_dir().join(format!("sockprobe-test-api-{port}.sock"));
        let child = command(prefix, *SOCKPROBE)
            .args(["run", "--web.listen-address", &addr, "--web.api-socket"])
            .arg(&api_socket)
            .args(args)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sockprobe run");
        let d = Daemon { child, addr, auth, api_socket };
        let deadline = Instant::now() + scaled(Duration::from_secs(30));
        while http_get_as(&d.addr, "/healthz", d.auth.as_deref()).map(|(s, _)| s) != Some(200) {
            assert!(Instant::now() < deadline, "sockprobe run not healthy within 30 s (time-scaled)");
            thread::sleep(Duration::from_millis(50));
        }
        d
    }

    /// GET `path` on the daemon's Unix socket (where `/api/v1/*` is served):
    /// status and body.
    pub fn api_get(&self, path: &str) -> Option<(u16, String)> {
        unix_get(&self.api_socket, path)
    }

    /// The `--daemon` URL of `doctor` and `top` for this daemon.
    pub fn api_url(&self) -> String {
        format!("unix://{}", self.api_socket.display())
    }

    pub fn scrape(&self) -> String {
        let (status, body) = http_get_as(&self.addr, "/metrics", self.auth.as_deref()).expect("scrape /metrics");
        assert_eq!(status, 200, "scrape status");
        body
    }

    /// SIGTERM; returns how long the exit took.
    pub fn terminate(mut self) -> (std::process::ExitStatus, Duration) {
        let t = Instant::now();
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("wait for daemon");
        (status, t.elapsed())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.api_socket);
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// HTTP GET; (status, body).
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    http_get_as(addr, path, None)
}

/// As [`http_get`], with an `Authorization` header value.
pub fn http_get_as(addr: &str, path: &str, authorization: Option<&str>) -> Option<(u16, String)> {
    http_get_with(addr, path, authorization, Duration::from_secs(10))
}

/// The Go test subjects (tests/go/gohttp.go), built once, reachable under
/// `name` so each test's processes have a comm of their own.
pub fn go_program(name: &str) -> String {
    use std::sync::OnceLock;
    static BUILT: OnceLock<std::path::PathBuf> = OnceLock::new();
    let bin = BUILT.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("go");
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("gohttp");
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/go/gohttp.go");
        let status = Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(src)
            .env("GOCACHE", dir.join("cache"))
            .env("GOPATH", dir.join("gopath"))
            .env("GO111MODULE", "off")
            .status()
            .expect("go (Debian golang-go; cargo xtask test installs it)");
        assert!(status.success(), "go build failed");
        out
    });
    let link = bin.with_file_name(name);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(bin, &link).unwrap();
    link.to_string_lossy().into_owned()
}

/// Starts `program args...` (optionally inside `prefix`) and reads its
/// `listening <addr>` line.
pub fn spawn_listening(prefix: &[&str], program: &str, args: &[&str]) -> (Child, String) {
    let mut child = command(prefix, program).args(args).stdout(Stdio::piped()).spawn().expect("spawn server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("server prints its address");
    let addr =
        line.trim().strip_prefix("listening ").unwrap_or_else(|| panic!("unexpected output {line:?}")).to_string();
    (child, addr)
}

/// Starts `program args...` (optionally inside `prefix`) and waits for it to print `ready`.
pub fn spawn_ready(prefix: &[&str], program: &str, args: &[&str]) -> Child {
    let mut child = command(prefix, program).args(args).stdout(Stdio::piped()).spawn().expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("prints ready");
    assert_eq!(line.trim(), "ready", "unexpected output");
    child
}

/// GET `path` over the Unix socket at `socket` (HTTP/1.0): status and body.
pub fn unix_get(socket: &std::path::Path, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    Some((head.get(9..12)?.parse().ok()?, body.to_string()))
}

/// Kills a child on drop.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn spawn(prefix: &[&str], program: &str, args: &[&str]) -> Child {
    command(prefix, program).args(args).stdout(Stdio::null()).spawn().expect("spawn")
}

/// Counts `ss` lines for sockets in CLOSE_WAIT held by `pid`.
pub fn ss_close_wait(pid: u32) -> usize {
    ss_count(pid, "close-wait")
}

/// Sockets of `pid` in an `ss` state (`established`, `close-wait`...).
pub fn ss_count(pid: u32, state: &str) -> usize {
    let out = Command::new("ss").args(["-tanpH", "state", state]).output().expect("ss");
    let needle = format!("pid={pid},");
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains(&needle)).count()
}

/// A Go `net/http` server with a short idle timeout and a Go client that
/// never closes response bodies: CLOSE_WAIT sockets pile up in the client
/// (`<tag>-leaky`). Both are killed on drop.
pub struct GoLeak {
    server: Child,
    client: Child,
}

impl GoLeak {
    pub fn start(tag: &str, idle_timeout: &str, interval: &str) -> GoLeak {
        let (server, addr) = spawn_listening(
            &[],
            &go_program(&format!("{tag}-gosrv")),
            &["-mode", "server", "-body-bytes", "100", "-idle-timeout", idle_timeout],
        );
        let url = format!("http://{addr}/");
        let client = spawn(
            &[],
            &go_program(&format!("{tag}-leaky")),
            &["-mode", "leak", "-url", &url, "-n", "0", "-interval", interval],
        );
        GoLeak { server, client }
    }

    pub fn client_pid(&self) -> u32 {
        self.client.id()
    }

    /// SIGSTOP the client: its sockets stay as they are.
    pub fn freeze_client(&self) {
        unsafe { libc::kill(self.client.id() as i32, libc::SIGSTOP) };
    }
}

impl Drop for GoLeak {
    fn drop(&mut self) {
        for c in [&mut self.client, &mut self.server] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One line of `/proc/net/tcp{,6}`: the kernel's own socket table, the one
/// `ss` reads too (and one a QEMU guest without `ss` can read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpRow {
    /// Kernel TCP state number (1 ESTABLISHED, 8 CLOSE_WAIT, 10 LISTEN, ...).
    pub state: u8,
    pub local_port: u16,
    pub remote_port: u16,
    /// A listener's accept queue; else bytes received, unread.
    pub rx_queue: u32,
    pub inode: u64,
}

pub const STATE_ESTABLISHED: u8 = 1;
pub const STATE_CLOSE_WAIT: u8 = 8;
pub const STATE_TIME_WAIT: u8 = 6;
pub const STATE_LISTEN: u8 = 10;

pub fn parse_tcp_table(text: &str) -> Vec<TcpRow> {
    text.lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            if cols.len() < 10 || cols[0] == "sl" {
                return None;
            }
            let local_port = u16::from_str_radix(cols[1].rsplit(':').next()?, 16).ok()?;
            let remote_port = u16::from_str_radix(cols[2].rsplit(':').next()?, 16).ok()?;
            let rx_queue = u32::from_str_radix(cols[4].split(':').nth(1)?, 16).ok()?;
            let state = u8::from_str_radix(cols[3], 16).ok()?;
            Some(TcpRow { state, local_port, remote_port, rx_queue, inode: cols[9].parse().ok()? })
        })
        .collect()
}

/// Socket inodes of the fds `pid` holds.
pub fn socket_fds(pid: u32) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| {
            let t = std::fs::read_link(e.path()).ok()?;
            t.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// Sockets `pid` holds whose connection the kernel's table no longer lists:
/// what sockprobe reports as `state="closed"`. (Other socket kinds, e.g.
/// Unix sockets, are not in `table` either: only TCP-only holders fit.)
pub fn held_but_unlisted(pid: u32, table: &[TcpRow]) -> usize {
    socket_fds(pid).iter().filter(|ino| !table.iter().any(|r| r.inode == **ino)).count()
}

/// The pid of the process named `comm` (exactly), if one runs.
pub fn pid_of(comm: &str) -> Option<u32> {
    let out = Command::new("pgrep").args(["-x", comm]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).lines().next()?.trim().parse().ok()
}

pub mod kube_api;
pub mod podman;

/// A `Tcp:` counter (e.g. `PassiveOpens`) from a `/proc/net/snmp` text.
pub fn tcp_snmp_counter(snmp: &str, counter: &str) -> u64 {
    let lines: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Tcp:")).collect();
    let [names, values] = lines.as_slice() else { panic!("no Tcp section in snmp") };
    let idx = names.split_whitespace().position(|n| n == counter).unwrap_or_else(|| panic!("no Tcp {counter}"));
    values.split_whitespace().nth(idx).and_then(|v| v.parse().ok()).expect("counter value")
}

/// Resident and peak memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A memory cgroup of its own with a limit, as the DaemonSet's `limits:
/// memory` sets one: BPF maps are charged to it too. cgroup v1's memory
/// controller (this machine, ../shared kernel-notes §10) or v2's.
pub struct MemoryLimit {
    dir: std::path::PathBuf,
    v2: bool,
}

impl MemoryLimit {
    pub fn new(name: &str, bytes: u64) -> MemoryLimit {
        let v1_root = std::path::Path::new("/sys/fs/cgroup/memory");
        let own = std::fs::read_to_string("/proc/self/cgroup").expect("read /proc/self/cgroup");
        let (base, v2) = if v1_root.is_dir() {
            let path = own.lines().find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()));
            (v1_root.join(path.unwrap_or_default().trim_start_matches('/')), false)
        } else {
            let path = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap_or("/").to_string();
            (std::path::Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/')), true)
        };
        let dir = base.join(format!("sockprobe-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("create memory cgroup {}: {e}", dir.display()));
        let file = if v2 { "memory.max" } else { "memory.limit_in_bytes" };
        std::fs::write(dir.join(file), bytes.to_string()).unwrap_or_else(|e| panic!("set {file}: {e}"));
        MemoryLimit { dir, v2 }
    }

    /// A command prefix that moves the process into the group before exec,
    /// so its start-up (maps included) is charged.
    pub fn prefix(&self) -> Vec<String> {
        let procs = self.dir.join("cgroup.procs");
        vec!["sh".into(), "-c".into(), format!("echo $$ > {} && exec \"$@\"", procs.display()), "sh".into()]
    }

    /// The group's highest charge so far, in bytes.
    pub fn peak(&self) -> u64 {
        let file = if self.v2 { "memory.peak" } else { "memory.max_usage_in_bytes" };
        std::fs::read_to_string(self.dir.join(file)).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
    }

    /// Processes of the group the OOM killer took.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.v2 { "memory.events" } else { "memory.oom_control" };
        let text = std::fs::read_to_string(self.dir.join(file)).unwrap_or_default();
        text.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    }
}

impl Drop for MemoryLimit {
    fn drop(&mut self) {
        // Empty once the daemon (dropped first) is gone.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}
