//! sockprobe-peer: a tiny TCP client and server that reproduce the connection
//! mistakes sockprobe reports (closing with unread bytes, CLOSE_WAIT, ...),
//! under a process name of your choice. Used by the tests and the README.
//!
//! Protocol: the client sends `req\n`, the server answers with `--response`
//! bytes; repeat. No framing beyond that: it only has to move real bytes.
use std::{
    ffi::CString,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    os::fd::FromRawFd,
    process::ExitCode,
    thread::sleep,
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "sockprobe-peer", version, about = "TCP peers that misbehave on purpose, for trying sockprobe")]
struct Cli {
    /// Process name to run under (as `comm`, at most 15 bytes).
    #[arg(long, global = true)]
    name: Option<String>,
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Accept connections; answer every request with --response bytes.
    /// Prints `listening <addr>` once ready.
    Server {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Bytes in each response.
        #[arg(long, default_value_t = 1000)]
        response: usize,
        /// Close each connection after this many responses (the client then
        /// sits in CLOSE_WAIT until it closes too).
        #[arg(long)]
        close_after: Option<u32>,
        /// Exit after serving this many connections.
        #[arg(long, default_value_t = 1)]
        connections: u32,
        /// Wait for each request with poll(2), as event-loop servers (Go,
        /// nginx) do, instead of blocking inside read: no receive is under
        /// way when probes attach.
        #[arg(long)]
        poll: bool,
    },
    /// Hold --connections open loopback connections (both ends in this
    /// process), the server side of --close-wait of them closed so the
    /// client side sits in CLOSE_WAIT, and of the next --reset of them reset
    /// (SO_LINGER 0) so the client side's connection is over while its fd
    /// stays open. Prints `ready`, then waits to be killed.
    Hold {
        #[arg(long, default_value_t = 1000)]
        connections: u32,
        #[arg(long, default_value_t = 0)]
        close_wait: u32,
        #[arg(long, default_value_t = 0)]
        reset: u32,
        /// Also connect this many times to the listener and never accept.
        #[arg(long, default_value_t = 0)]
        unaccepted: u32,
        /// Fill the fd table with dup()s of the listener and of the first
        /// connection, alternately, up to the soft RLIMIT_NOFILE raised to
        /// its hard limit (a tenant's fd flood).
        #[arg(long)]
        dup_fill: bool,
        /// Then fork into this many processes holding all of it.
        #[arg(long, default_value_t = 1)]
        processes: u32,
    },
    /// Listen with --backlog and never accept: connections beyond the
    /// backlog overflow its accept queue. Prints `listening <addr>`.
    Listen {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 1)]
        backlog: i32,
    },
    /// connect() --connections times, one after another, each closed at
    /// once by this side (so it sits in TIME_WAIT here); nothing is sent.
    /// Prints `connected N refused N timeout N no_local_port N other N`.
    Dial {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value_t = 1)]
        connections: u32,
        /// Give up on each connect() after this long (the process closes
        /// the socket; without it the kernel's SYN retries decide).
        #[arg(long)]
        timeout_ms: Option<u64>,
    },
    /// Connect, make --requests exchanges, then close.
    Client {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value_t = 1)]
        requests: u32,
        /// Bytes the server sends per response.
        #[arg(long, default_value_t = 1000)]
        response: usize,
        /// Bytes of each response to read (default: all). Fewer leaves the
        /// rest unread at close, so the kernel resets the connection.
        #[arg(long)]
        read: Option<usize>,
        /// Repeat the whole connection this many times.
        #[arg(long, default_value_t = 1)]
        connections: u32,
        /// One connection to each of this many consecutive IPv4 addresses
        /// from --connect's (127.0.0.1, 127.0.0.2, ...; the server must listen
        /// on 0.0.0.0): that many distinct endpoints.
        #[arg(long, default_value_t = 1)]
        spread: u32,
        /// Wait this long before closing (the server may close first).
        #[arg(long, default_value_t = 0)]
        hold_ms: u64,
        /// Fork before closing: the parent drops its descriptor first, a child
        /// under this name closes last.
        #[arg(long)]
        fork_close: Option<String>,
        /// Rename the process before each connection: this prefix and the
        /// connection's number (a process sockprobe must not let bloat its series).
        #[arg(long)]
        rename_prefix: Option<String>,
        /// Send the next request as soon as the first byte of a response is
        /// in, then read the rest: with a response larger than the socket
        /// buffers, the request reaches the server while its send of the
        /// response is still under way.
        #[arg(long)]
        ask_early: bool,
        /// Connect, print `connected`, then wait until this file exists
        /// before the first request: the connection predates whatever
        /// starts meanwhile.
        #[arg(long, value_name = "FILE")]
        wait_for: Option<std::path::PathBuf>,
    },
}

fn set_comm(name: &str) {
    if let Ok(c) = CString::new(name) {
        // SAFETY: PR_SET_NAME copies at most 16 bytes from a NUL-terminated string.
        unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr(), 0, 0, 0) };
    }
}

fn queued_bytes(s: &TcpStream) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    unsafe { libc::ioctl(s.as_raw_fd(), libc::FIONREAD, &mut n) };
    n.max(0) as usize
}

/// Blocks until `s` is readable (or its peer closed).
fn wait_readable(s: &TcpStream) {
    let mut fd = libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one pollfd we own; EINTR just polls again.
    while unsafe { libc::poll(&mut fd, 1, -1) } < 0 {}
}

fn serve(
    listener: TcpListener,
    response: usize,
    close_after: Option<u32>,
    connections: u32,
    poll: bool,
) -> std::io::Result<()> {
    let body = vec![b'x'; response];
    for _ in 0..connections {
        let (mut conn, _) = listener.accept()?;
        let mut buf = [0u8; 64];
        let mut served = 0;
        loop {
            if poll {
                wait_readable(&conn);
            }
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if conn.write_all(&body).is_err() {
                break;
            }
            served += 1;
            if close_after.is_some_and(|n| served >= n) {
                break;
            }
        }
        drop(conn);
    }
    Ok(())
}

/// How a client behaves on each connection.
struct ClientPlan<'a> {
    requests: u32,
    response: usize,
    read: usize,
    hold: Duration,
    fork_close: Option<&'a str>,
    ask_early: bool,
    wait_for: Option<&'a std::path::Path>,
}

fn client(addr: SocketAddr, plan: &ClientPlan) -> std::io::Result<()> {
    let ClientPlan { requests, response, read, hold, fork_close, ask_early, wait_for } = *plan;
    let mut s = TcpStream::connect(addr)?;
    if let Some(file) = wait_for {
        println!("connected");
        std::io::stdout().flush()?;
        while !file.exists() {
            sleep(Duration::from_millis(10));
        }
    }
    let mut buf = vec![0u8; response.max(1)];
    for i in 0..requests {
        // Asking early, every request but the first went out already.
        if !ask_early || i == 0 {
            s.write_all(b"req\n")?;
        }
        if ask_early && read > 0 {
            s.read_exact(&mut buf[..1])?;
            if i + 1 < requests {
                s.write_all(b"req\n")?;
            }
            s.read_exact(&mut buf[1..read])?;
        } else {
            s.read_exact(&mut buf[..read])?;
        }
    }
    // Let the unread rest of the response arrive, so the amount is exact.
    let unread = response - read;
    let deadline = Instant::now() + Duration::from_secs(5);
    while queued_bytes(&s) < unread && Instant::now() < deadline {
        sleep(Duration::from_millis(5));
    }
    sleep(hold);
    match fork_close {
        None => drop(s),
        Some(child_name) => {
            // SAFETY: single-threaded here; the child only sleeps, drops and exits.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                set_comm(child_name);
                sleep(Duration::from_millis(100));
                drop(s);
                unsafe { libc::_exit(0) };
            }
            // The parent drops its reference first; the child's close is the real one.
            drop(s);
            let mut status = 0;
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
    }
    Ok(())
}

/// What `hold` adds for a hostile tenant.
struct Flood {
    unaccepted: u32,
    dup_fill: bool,
    processes: u32,
}

fn hold(connections: u32, close_wait: u32, reset: u32, flood: Flood) -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut held = Vec::with_capacity(2 * connections as usize);
    for i in 0..connections {
        let client = TcpStream::connect(addr)?;
        let (server, _) = listener.accept()?;
        held.push(client);
        if i < close_wait {
            // Dropped: FIN sent, the client side enters CLOSE_WAIT.
        } else if i < close_wait + reset {
            let linger = libc::linger { l_onoff: 1, l_linger: 0 };
            // SAFETY: SO_LINGER with a valid struct linger; then the close sends a RST.
            unsafe {
                libc::setsockopt(
                    server.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&linger as *const libc::linger).cast(),
                    size_of::<libc::linger>() as libc::socklen_t,
                )
            };
        } else {
            held.push(server);
        }
    }
    for _ in 0..flood.unaccepted {
        held.push(TcpStream::connect(addr)?);
    }
    if flood.dup_fill {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: plain rlimit calls on a struct we own; dup of fds we hold.
        unsafe {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
        let sources = [listener.as_raw_fd(), held.first().map_or(listener.as_raw_fd(), |s| s.as_raw_fd())];
        // Each dup'ed fd stays open until the process exits.
        for i in 0.. {
            if unsafe { libc::dup(sources[i % 2]) } < 0 {
                break;
            }
        }
    }
    for _ in 1..flood.processes {
        // SAFETY: the child only sleeps (no locks held across fork matter).
        match unsafe { libc::fork() } {
            0 => {
                // Gone with the parent the test kills.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
                loop {
                    sleep(Duration::from_secs(3600));
                }
            }
            -1 => return Err(std::io::Error::last_os_error()),
            _ => {}
        }
    }
    println!("ready");
    std::io::stdout().flush()?;
    loop {
        sleep(Duration::from_secs(3600));
    }
}

/// A listener with a chosen backlog (std's TcpListener always asks for 128).
fn listen_only(addr: SocketAddr, backlog: i32) -> std::io::Result<()> {
    let SocketAddr::V4(v4) = addr else {
        return Err(std::io::Error::other("listen: IPv4 only"));
    };
    // SAFETY: plain socket calls on a descriptor this function owns; the
    // sockaddr is a zeroed sockaddr_in filled in below.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as u16;
        sa.sin_port = v4.port().to_be();
        sa.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
        let len = size_of::<libc::sockaddr_in>() as u32;
        if libc::bind(fd, &sa as *const _ as *const libc::sockaddr, len) < 0 || libc::listen(fd, backlog) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let l = TcpListener::from_raw_fd(fd);
        println!("listening {}", l.local_addr()?);
        std::io::stdout().flush()?;
        loop {
            sleep(Duration::from_secs(3600));
        }
    }
}

fn dial(addr: SocketAddr, connections: u32, timeout_ms: Option<u64>) -> std::io::Result<()> {
    let mut outcome = std::collections::BTreeMap::<&str, u32>::new();
    for name in ["connected", "refused", "timeout", "no_local_port", "other"] {
        outcome.insert(name, 0);
    }
    for _ in 0..connections {
        let r = match timeout_ms {
            Some(ms) => TcpStream::connect_timeout(&addr, Duration::from_millis(ms)),
            None => TcpStream::connect(addr),
        };
        let name = match r {
            Ok(s) => {
                drop(s);
                "connected"
            }
            Err(e) => match e.raw_os_error() {
                Some(libc::ECONNREFUSED) => "refused",
                Some(libc::ETIMEDOUT) => "timeout",
                _ if e.kind() == std::io::ErrorKind::TimedOut => "timeout",
                Some(libc::EADDRNOTAVAIL) => "no_local_port",
                _ => "other",
            },
        };
        *outcome.entry(name).or_default() += 1;
    }
    let line: Vec<String> = ["connected", "refused", "timeout", "no_local_port", "other"]
        .iter()
        .map(|n| format!("{n} {}", outcome[n]))
        .collect();
    println!("{}", line.join(" "));
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(name) = &cli.name {
        set_comm(name);
    }
    let result = match cli.role {
        Role::Server { listen, response, close_after, connections, poll } => TcpListener::bind(listen).and_then(|l| {
            println!("listening {}", l.local_addr()?);
            std::io::stdout().flush()?;
            serve(l, response, close_after, connections, poll)
        }),
        Role::Listen { listen, backlog } => listen_only(listen, backlog),
        Role::Dial { connect, connections, timeout_ms } => dial(connect, connections, timeout_ms),
        Role::Hold { connections, close_wait, reset, unaccepted, dup_fill, processes } => {
            hold(connections, close_wait, reset, Flood { unaccepted, dup_fill, processes })
        }
        Role::Client {
            connect,
            requests,
            response,
            read,
            connections,
            spread,
            hold_ms,
            fork_close,
            rename_prefix,
            ask_early,
            wait_for,
        } => {
            let read = read.unwrap_or(response).min(response);
            let plan = ClientPlan {
                requests,
                response,
                read,
                hold: Duration::from_millis(hold_ms),
                fork_close: fork_close.as_deref(),
                ask_early,
                wait_for: wait_for.as_deref(),
            };
            let mut n = 0u64;
            (0..spread).flat_map(|i| (0..connections).map(move |_| i)).try_for_each(|i| {
                if let Some(prefix) = &rename_prefix {
                    n += 1;
                    set_comm(&format!("{prefix}{n}"));
                }
                let addr = match connect {
                    SocketAddr::V4(a) => {
                        SocketAddr::new(std::net::Ipv4Addr::from(u32::from(*a.ip()) + i).into(), a.port())
                    }
                    other => other,
                };
                client(addr, &plan)
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sockprobe-peer: {e}");
            ExitCode::FAILURE
        }
    }
}
