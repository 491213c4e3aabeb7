//! The diagnosis (`/api/v1/findings`, `sockprobe_finding`, `doctor`, `top`)
//! against real Go `net/http` programs (tests/go/gohttp.go), each under a
//! name of its own, and a Python `requests` client: the bugs of the seeds,
//! named by sockprobe, with advice in the program's language.
mod support;

use std::{
    process::Command,
    thread::sleep,
    time::{Duration, Instant},
};

use support::*;

fn findings(daemon: &Daemon) -> Value {
    let (status, body) = daemon.api_get("/api/v1/findings").expect("GET /api/v1/findings");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("findings are not JSON ({e}): {body}"))
}

fn of<'a>(doc: &'a Value, comm: &str) -> Vec<&'a Value> {
    doc["findings"].as_array().expect("findings array").iter().filter(|f| f["comm"] == comm).collect()
}

fn kinds(doc: &Value, comm: &str) -> Vec<String> {
    of(doc, comm).iter().map(|f| f["finding"].as_str().unwrap_or_default().to_string()).collect()
}

/// Starts a Go client that stays after its requests (a service does), and
/// waits until it prints `done`.
fn client_done(ns: &NetNs, name: &str, args: &[&str]) -> Killed {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name, &go_program(name)])
        .args(args)
        .arg("-stay")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn a Go client");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("done") {
        line.clear();
        assert!(out.read_line(&mut line).expect("client output") > 0, "{name} ended before its requests were done");
    }
    Killed(child)
}

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux").args(args).output().expect("tmux (cargo xtask test installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Cases 1-6 of the issue in one run: four Go clients with four bugs, a
/// healthy one beside them, then `sockprobe top` driven in tmux.
#[test]
#[ignore = "needs root: `sudo cargo xtask test` runs it"]
fn privileged_go_clients_get_their_findings() {
    require_root();
    let ns = NetNs::new("diag");
    let p = ns.prefix();
    let daemon = Daemon::start(&["--diagnosis.window", "2m"]);
    let server = |name: &str, args: &[&str]| {
        let mut a = vec!["-mode", "server"];
        a.extend_from_slice(args);
        let (child, addr) = spawn_listening(&p, &go_program(name), &a);
        (Killed(child), format!("http://{addr}/"), addr)
    };
    let (_s1, url, addr) = server("d-server", &[]);
    let (_s2, idle_url, _) = server("d-idle-srv", &["-idle-timeout", "1s"]);
    let (_s3, slow_url, slow_addr) = server("d-slow-srv", &["-delay", "20ms", "-body-bytes", "1024"]);
    // Closes a connection 5 ms idle. (Not `-no-keepalive`: its `Connection:
    // close` makes the Go client close too, and which FIN leaves first is a
    // race the server does not always win.)
    let (_s4, nokeep_url, _) = server("d-nokeep-srv", &["-idle-timeout", "5ms", "-body-bytes", "1024"]);

    // 1. Bodies closed unread.
    let before = ns.tcpext("TCPAbortOnClose");
    let _c1 = client_done(&ns, "d-unread", &["-mode", "unread", "-url", &url, "-n", "20"]);
    let aborts = ns.tcpext("TCPAbortOnClose") - before;
    // 2. Bodies never closed, against a 1 s idle timeout.
    let _leak = Killed(spawn(&p, &go_program("d-leak"), &["-mode", "leak", "-url", &idle_url, "-n", "8", "-stay"]));
    // 3. Drained, but bursts of 16 through the default Transport (2 idle per host).
    let _c3 = client_done(&ns, "d-burst", &["-mode", "burst", "-url", &slow_url, "-n", "5", "-interval", "50ms"]);
    // 4. Drained, a request every 20 ms against that server: each
    // connection is closed by the server after one request.
    let _c4 = client_done(&ns, "d-nokeep", &["-mode", "drain", "-url", &nokeep_url, "-n", "20", "-interval", "20ms"]);
    // 5. Healthy: drains, reuses.
    let _c5 = client_done(&ns, "d-healthy", &["-mode", "drain", "-url", &url, "-n", "50", "-interval", "10ms"]);

    let deadline = Instant::now() + scaled(Duration::from_secs(30));
    let expected = [
        ("d-unread", "unread_close"),
        ("d-leak", "close_wait_leak"),
        ("d-burst", "no_reuse"),
        ("d-nokeep", "peer_closes"),
    ];
    let doc = loop {
        let doc = findings(&daemon);
        if expected.iter().all(|(comm, kind)| kinds(&doc, comm).iter().any(|k| k == kind)) {
            break doc;
        }
        assert!(Instant::now() < deadline, "findings missing after 30 s:\n{doc:#}");
        sleep(Duration::from_millis(500));
    };
    let text = daemon.scrape();

    // 1: the counts are the kernel's, the language and advice Go's.
    let unread = of(&doc, "d-unread");
    let f = unread.iter().find(|f| f["finding"] == "unread_close").unwrap();
    assert!(aborts > 0, "the Go client should have caused aborts");
    assert_eq!(u64_of(&f["evidence"], "unread_closes"), aborts, "vs TcpExt TCPAbortOnClose\n{doc:#}");
    assert_eq!(f["language"], "go", "{f:#}");
    assert!(f["language_version"].as_str().is_some_and(|v| v.starts_with("go1.")), "{f:#}");
    assert!(f["advice"].as_str().unwrap().contains("io.Copy(io.Discard, resp.Body)"), "{f:#}");
    assert_eq!(f["direction"], "outbound");
    assert_eq!(f["endpoint"], addr.as_str());
    assert!(f["pids"].as_array().is_some_and(|p| !p.is_empty()), "{f:#}");
    let gauge = [("finding", "unread_close"), ("comm", "d-unread")];
    assert_eq!(metric(&text, "sockprobe_finding", &gauge), 1.0, "{text}");

    // 2.
    let leak = of(&doc, "d-leak");
    let f = leak.iter().find(|f| f["finding"] == "close_wait_leak").unwrap();
    assert!(u64_of(&f["evidence"], "close_wait_sockets") >= 3, "{f:#}");
    assert!(f["advice"].as_str().unwrap().contains("defer resp.Body.Close()"), "{f:#}");

    // 3: closed here, after one exchange, nothing unread.
    assert_eq!(kinds(&doc, "d-burst"), ["no_reuse"], "{doc:#}");
    let f = of(&doc, "d-burst")[0];
    assert!(f["advice"].as_str().unwrap().contains("MaxIdleConnsPerHost"), "{f:#}");
    let burst = [("comm", "d-burst"), ("endpoint", slow_addr.as_str())];
    let local = metric(&text, "sockprobe_tcp_connections_closed_total", &[burst[0], burst[1], ("closer", "local")]);
    assert!(local >= 10.0, "closer=\"local\" closes: {local}\n{text}");
    assert_eq!(metric(&text, "sockprobe_tcp_unread_closes_total", &burst), 0.0, "{text}");

    // 4: the server ends them: peer_closes, not no_reuse.
    assert_eq!(kinds(&doc, "d-nokeep"), ["peer_closes"], "{doc:#}");

    // 5.
    assert!(of(&doc, "d-healthy").is_empty(), "a healthy client got findings:\n{doc:#}");
    assert!(text.contains("comm=\"d-healthy\""), "the healthy client was seen:\n{text}");

    // 6: top, in a terminal.
    let session = format!("sockprobe-top-{}", std::process::id());
    let exit_file = std::env::temp_dir().join(format!("{session}.exit"));
    let _ = std::fs::remove_file(&exit_file);
    let top = format!("{} top --daemon {}; echo $? > {}", *SOCKPROBE, daemon.api_url(), exit_file.display());
    tmux(&["new-session", "-d", "-s", &session, "-x", "200", "-y", "50", &top]);
    let screen = |what: &str, pred: &dyn Fn(&str) -> bool| -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = tmux(&["capture-pane", "-p", "-t", &session]);
            if pred(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "top: {what}; screen:\n{s}");
            sleep(Duration::from_millis(200));
        }
    };
    let first = screen("rows with findings", &|s| {
        s.contains("d-unread") && s.contains("unread_close") && s.contains("d-leak") && s.contains("close_wait_leak")
    });
    assert!(first.contains("sorted by conn/s"), "{first}");
    tmux(&["send-keys", "-t", &session, "w"]);
    let sorted = screen("sorted by CLOSE_WAIT", &|s| s.contains("sorted by close_wait"));
    let first_row = sorted.lines().find(|l| l.contains("d-") && !l.contains("sorted")).unwrap_or_default();
    assert!(first_row.contains("d-leak"), "the CLOSE_WAIT holder first:\n{sorted}");
    tmux(&["send-keys", "-t", &session, "q"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !exit_file.exists() {
        assert!(Instant::now() < deadline, "top did not quit on q");
        sleep(Duration::from_millis(100));
    }
    sleep(Duration::from_millis(100));
    assert_eq!(std::fs::read_to_string(&exit_file).unwrap().trim(), "0", "top's exit status");
    let _ = std::fs::remove_file(&exit_file);
}

/// `doctor` without a daemon: its own probes for 10 s find an unread-close
/// client and a CLOSE_WAIT leak running meanwhile.
#[test]
#[ignore = "needs root: `sudo cargo xtask test` runs it"]
fn privileged_doctor_without_a_daemon_finds_them_itself() {
    require_root();
    let ns = NetNs::new("doctor");
    let p = ns.prefix();
    let (_s1, addr) = spawn_listening(&p, &go_program("dr-server"), &["-mode", "server"]);
    let _s1 = Killed(_s1);
    let (_s2, idle_addr) = spawn_listening(&p, &go_program("dr-idle-srv"), &["-mode", "server", "-idle-timeout", "1s"]);
    let _s2 = Killed(_s2);
    let unread = format!("http://{addr}/");
    let leaky = format!("http://{idle_addr}/");
    let _c1 = Killed(spawn(
        &p,
        &go_program("dr-unread"),
        &["-mode", "unread", "-url", &unread, "-n", "0", "-interval", "200ms"],
    ));
    let _c2 = Killed(spawn(
        &p,
        &go_program("dr-leak"),
        &["-mode", "leak", "-url", &leaky, "-n", "10", "-interval", "300ms", "-stay"],
    ));
    // Port 1 on loopback: nobody answers there.
    let out = Command::new(*SOCKPROBE)
        .args(["doctor", "--daemon", "http://127.0.0.1:1", "--window", "10s", "--json"])
        .output()
        .expect("run sockprobe doctor");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "doctor failed: {stderr}");
    assert!(stderr.contains("own probes"), "says it observes itself: {stderr}");
    let doc: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert!(kinds(&doc, "dr-unread").contains(&"unread_close".to_string()), "{doc:#}");
    assert!(kinds(&doc, "dr-leak").contains(&"close_wait_leak".to_string()), "{doc:#}");
    assert_eq!(of(&doc, "dr-unread")[0]["language"], "go");

    // The human report names the bug and the fix.
    let out = Command::new(*SOCKPROBE)
        .args(["doctor", "--daemon", "http://127.0.0.1:1", "--window", "5s"])
        .output()
        .expect("run sockprobe doctor");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        report.contains("unread_close: dr-unread") && report.contains("io.Copy(io.Discard, resp.Body)"),
        "{report}"
    );
}

/// Debian's python3-requests, `stream=True`, closed unread: `unread_close`
/// with `language: python`.
#[test]
#[ignore = "needs root: `sudo cargo xtask test` runs it"]
fn privileged_python_requests_closed_unread() {
    require_root();
    let ns = NetNs::new("py");
    let p = ns.prefix();
    let daemon = Daemon::start(&[]);
    let (s, addr) = spawn_listening(&p, &go_program("py-server"), &["-mode", "server"]);
    let _s = Killed(s);
    // A name of its own: the interpreter under another file name.
    let python = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("d-pyclient");
    let _ = std::fs::remove_file(&python);
    std::os::unix::fs::symlink("/usr/bin/python3", &python).unwrap();
    let script = format!(
        "import requests, time\n\
         for _ in range(10):\n\
         \x20   r = requests.get('http://{addr}/', stream=True)\n\
         \x20   assert r.status_code == 200\n\
         \x20   r.close()\n\
         print('done', flush=True)\n\
         time.sleep(60)\n"
    );
    let _py = Killed(spawn(&p, python.to_str().unwrap(), &["-c", &script]));
    let mut doc = Value::Null;
    wait_until("python's unread_close", scaled(Duration::from_secs(20)), || {
        doc = findings(&daemon);
        kinds(&doc, "d-pyclient").contains(&"unread_close".to_string())
    });
    let f = of(&doc, "d-pyclient").into_iter().find(|f| f["finding"] == "unread_close").unwrap();
    assert_eq!(f["language"], "python", "{f:#}");
    assert!(f["advice"].as_str().unwrap().contains("iter_content"), "{f:#}");
}

/// java.net.http.HttpClient closing each response body after 100 of 65 536
/// bytes: some closes leave bytes unread in the kernel (the rest was read
/// ahead into Java's buffers). Each unread close counts for `unread_close`
/// (= the namespace's TCPAbortOnClose) and never also for `no_reuse`: before,
/// the same 20 connections raised both, and `no_reuse`'s advice (a bigger
/// pool) is wrong for them. And its IPv4-mapped peer is one IPv4 endpoint.
#[test]
#[ignore = "needs root: `sudo cargo xtask test` runs it"]
fn privileged_java_half_read_bodies_are_unread_closes_not_also_no_reuse() {
    require_root();
    let classes = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("java");
    std::fs::create_dir_all(&classes).unwrap();
    let javac = Command::new("javac")
        .arg("-d")
        .arg(&classes)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/java/HalfRead.java"))
        .output()
        .expect("javac (cargo xtask test installs default-jdk-headless)");
    assert!(javac.status.success(), "javac: {}", String::from_utf8_lossy(&javac.stderr));
    let ns = NetNs::new("java");
    let p = ns.prefix();
    let daemon = Daemon::start(&[]);
    // 1 MiB bodies: more than Java reads ahead, so most closes leave bytes
    // unread in the kernel.
    let (s, addr) = spawn_listening(&p, &go_program("jv-server"), &["-mode", "server", "-body-bytes", "1048576"]);
    let _s = Killed(s);
    let before = ns.tcpext("TCPAbortOnClose");
    let url = format!("http://{addr}/");
    let classpath = classes.to_str().unwrap();
    let _java = Killed(spawn_ready(&p, "java", &["-cp", classpath, "HalfRead", &url, "20"]));
    let unread = (ns.tcpext("TCPAbortOnClose") - before) as f64;
    assert!(unread >= 3.0, "Java should have closed bodies with bytes unread: {unread}");
    let java = [("comm", "java")];
    wait_until("java's unread closes, as the kernel counted them", scaled(Duration::from_secs(20)), || {
        metric(&daemon.scrape(), "sockprobe_tcp_unread_closes_total", &java) >= unread
    });
    assert_eq!(metric(&daemon.scrape(), "sockprobe_tcp_unread_closes_total", &java), unread, "= TCPAbortOnClose");
    let doc = findings(&daemon);
    let evidence = |kind: &str, key: &str| {
        of(&doc, "java").iter().find(|f| f["finding"] == kind).and_then(|f| f["evidence"][key].as_f64()).unwrap_or(0.0)
    };
    assert_eq!(evidence("unread_close", "unread_closes"), unread, "{doc:#}");
    // Java's dual-stack socket reaches the IPv4 server as ::ffff:127.0.0.1:
    // one endpoint, in its IPv4 form.
    let endpoints: Vec<&Value> = of(&doc, "java").iter().map(|f| &f["endpoint"]).collect();
    assert!(endpoints.iter().all(|e| **e == addr), "endpoints {endpoints:?}, the server {addr}");
    let closed = evidence("unread_close", "connections_closed");
    assert_eq!(closed, 20.0, "{doc:#}");
    let one_shot = evidence("no_reuse", "closed_here_after_one_exchange");
    assert!(
        one_shot + unread <= closed,
        "a connection counted twice: {one_shot} one-shot + {unread} unread of {closed}\n{doc:#}"
    );
}
