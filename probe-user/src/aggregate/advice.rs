//! What to change for each finding, in the terms of the process's language
//! where sockprobe knows them (docs/diagnosis.md). Prose only; the rules
//! that decide a finding are [`super::findings`]'.
use super::findings::FindingKind;

/// What to change, in the language's terms where sockprobe knows them.
pub fn advice(kind: FindingKind, outbound: bool, language: &str) -> &'static str {
    use FindingKind::*;
    match (kind, outbound, language) {
        (UnreadClose, true, "go") => {
            "Read every response body to the end before closing it: io.Copy(io.Discard, resp.Body) then resp.Body.Close() \
             (wrap in io.LimitReader to bound a large body). An unread body makes net/http close the connection with a RST \
             instead of returning it to the pool."
        }
        (UnreadClose, true, "python") => {
            "Consume the response before closing it: read r.content, or iterate r.iter_content() to the end for stream=True, \
             then close; closing an unconsumed stream=True response makes urllib3 drop the connection with a RST."
        }
        (UnreadClose, true, "java") => {
            "Read the response stream to EOF before closing it (Apache HttpClient: EntityUtils.consume(entity); \
             HttpURLConnection: drain getInputStream()), so the connection goes back to the pool."
        }
        (UnreadClose, true, "node") => {
            "Consume every response (res.resume() when the body is not needed) before ending; an unconsumed response \
             keeps or destroys the socket instead of reusing it."
        }
        (UnreadClose, true, _) => {
            "Read responses to the end before closing the connection: closing with unread bytes makes the kernel send a \
             RST instead of a FIN, and the connection cannot be reused."
        }
        (UnreadClose, false, _) => {
            "This server closes connections before reading the whole request (e.g. answering an upload early): read or \
             discard the rest of the request before closing, or the client gets a RST instead of the response."
        }
        (CloseWaitLeak, _, "go") => {
            "Close every response body on every path: defer resp.Body.Close() right after the error check. These \
             connections were closed by the peer and are held until the process closes them (until \"too many open files\")."
        }
        (CloseWaitLeak, _, "python") => {
            "Close responses and sessions: use `with requests.get(...) as r:` or call r.close(); with stream=True an \
             unclosed response keeps its connection."
        }
        (CloseWaitLeak, _, "java") => {
            "Close responses and their streams in try-with-resources; a leaked CloseableHttpResponse or InputStream holds \
             its connection."
        }
        (CloseWaitLeak, _, _) => {
            "Close the socket when a read returns end-of-file (the peer closed): a socket left open sits in CLOSE_WAIT \
             and holds a file descriptor."
        }
        (ClosedFdLeak, _, "go") => {
            "Close connections and response bodies on error paths too (resp.Body.Close() even after a read error, \
             conn.Close() after a failed read or write)."
        }
        (ClosedFdLeak, _, _) => {
            "The connection failed (reset or timed out) but the socket was never closed: close it on error paths too."
        }
        (NoReuse, true, "go") => {
            "Reuse connections: share one http.Client and Transport, do not set DisableKeepAlives, and raise \
             Transport.MaxIdleConnsPerHost (default 2) to the number of concurrent requests per host (and MaxIdleConns \
             with it); otherwise all but 2 connections of each burst are closed after one request."
        }
        (NoReuse, true, "python") => {
            "Use one requests.Session per host and size its pool to the concurrency: \
             session.mount('http://', HTTPAdapter(pool_maxsize=N)); module-level requests.get() opens a connection per call."
        }
        (NoReuse, true, "java") => {
            "Reuse one HTTP client and raise its connection pool's per-route maximum to the concurrency \
             (PoolingHttpClientConnectionManager.setDefaultMaxPerRoute)."
        }
        (NoReuse, true, "node") => {
            "Use an http.Agent with keepAlive: true and maxSockets / maxFreeSockets at least the concurrency."
        }
        (NoReuse, true, _) => {
            "Keep connections alive and pool them: an idle pool smaller than the request concurrency closes the extra \
             connections after one request each."
        }
        (NoReuse, false, _) => {
            "This server closes connections after one request: enable keep-alive (and a sensible idle timeout) so \
             clients can reuse them."
        }
        (PeerCloses, _, "go") => {
            "The server closes connections after one request: enable keep-alive on the server or raise its idle timeout \
             above the client's request interval; keep the client's Transport.IdleConnTimeout below the server's."
        }
        (PeerCloses, _, _) => {
            "The server ends connections after one request (keep-alive disabled, or an idle timeout shorter than the \
             interval between requests): enable keep-alive there or raise its idle timeout."
        }
        (ResetsReceived, false, _) => {
            "Clients reset these connections: usually a client closing before it read the whole response (look for \
             its unread_close finding) or giving up on a timeout; the fix is on the client side."
        }
        (ResetsReceived, _, "go") => {
            "The peer resets connections: check its logs (overload, crashes, a proxy cutting idle connections) and keep \
             Transport.IdleConnTimeout below the server's idle timeout."
        }
        (ResetsReceived, _, _) => {
            "The peer resets connections: check its logs (overload, crashes, a proxy or load balancer cutting idle \
             connections) and keep the client's idle timeout below the server's."
        }
        (SlowConnect, _, _) => {
            "Connects wait for lost SYNs (the first retry after 1 s): if the endpoint's listener on this host overflows, \
             fix that server (listen_overflow); otherwise look at the network path and the server's SYN and accept \
             queues (nstat ListenOverflows on its host). Reusing connections makes each slow connect rarer."
        }
        (ConnectFailures, _, _) => {
            "refused: nothing listens on that address and port (a wrong address, a server down or restarting); timeout: \
             nothing answers (a firewall dropping SYNs, a host down, an overloaded server); no_local_port: see \
             port_exhaustion. Fix the endpoint or its discovery; retry with backoff rather than at once."
        }
        (ListenOverflow, _, "go") => {
            "Go's net.Listen takes its backlog from net.core.somaxconn (4096 on recent kernels; raise it with sysctl if \
             lower); then make the accept loop cheap: hand each connection to a goroutine at once, never block in \
             Accept's loop."
        }
        (ListenOverflow, _, "java") => {
            "Pass a larger backlog to new ServerSocket(port, backlog) (or the server's acceptCount/backlog setting: \
             Tomcat acceptCount, Netty SO_BACKLOG), and keep the accepting thread from blocking on work."
        }
        (ListenOverflow, _, "python") => {
            "Raise the listen backlog (socket.listen(n); gunicorn --backlog; uvicorn --backlog) and add workers if \
             they are all busy: a blocked accept loop fills the queue."
        }
        (ListenOverflow, _, "node") => {
            "Pass a larger backlog to server.listen({ backlog }) and keep the event loop from blocking: an accept queue \
             fills while the loop is busy."
        }
        (ListenOverflow, _, _) => {
            "The process does not accept() fast enough or its backlog is small: raise the backlog (nginx: listen ... \
             backlog=N; listen()'s argument, capped by net.core.somaxconn) and keep the accept loop from blocking."
        }
        (PortExhaustion, _, _) => {
            "Reuse connections (the same fix as no_reuse: a pool large enough for the concurrency): every connection \
             closed here holds its local port to that endpoint for 60 s in TIME_WAIT. net.ipv4.tcp_tw_reuse or a wider \
             ip_local_port_range only postpone it."
        }
        (Retransmits, _, _) => {
            "Segments to this endpoint are lost on the way: this is the network (a congested or faulty link, a \
             policer, a full queue on a middlebox), not an application bug; compare with other endpoints and hosts on \
             the same path."
        }
    }
}
