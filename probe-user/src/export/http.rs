//! The HTTP server for `/metrics`, `/healthz` and `/`, on hyper: HTTP/1.1
//! framing, header limits and timeouts are hyper's; what is ours is a cap on
//! open connections (the oldest idle one goes first), a deadline for TLS
//! handshakes and whole connections, backoff when `accept` fails (EMFILE),
//! and the credentials check.
use std::{
    collections::VecDeque,
    convert::Infallible,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use hyper::{
    Method, Request, StatusCode,
    body::{Frame, Incoming, SizeHint},
    header,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, UnixListener},
    sync::mpsc,
    task::AbortHandle,
};

use super::{
    routes::{Encoding, Exporter},
    web_config::{Auth, WebConfig},
};

pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Body,
}

/// What a page answers with.
pub enum Body {
    Text(String),
    /// Already gzipped (`Content-Encoding: gzip`).
    Gzip(Bytes),
    /// Chunks as a render writes them.
    Stream(mpsc::Receiver<Bytes>),
}

impl Response {
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response { status, content_type: "text/plain; charset=utf-8", body: Body::Text(body.into()) }
    }

    pub fn json(value: impl serde::Serialize) -> Response {
        let body = serde_json::to_string_pretty(&value).unwrap_or_else(|_| "{}".into()) + "\n";
        Response { status: 200, content_type: "application/json", body: Body::Text(body) }
    }
}

/// The body hyper sends: whole, or chunk by chunk from a render.
pub enum ResponseBody {
    Whole(Option<Bytes>),
    Chunks(mpsc::Receiver<Bytes>),
}

impl hyper::body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ResponseBody::Whole(b) => Poll::Ready(b.take().filter(|b| !b.is_empty()).map(|b| Ok(Frame::data(b)))),
            ResponseBody::Chunks(rx) => rx.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ResponseBody::Whole(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Whole(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ResponseBody::Chunks(_) => SizeHint::default(),
        }
    }
}

/// What one client can hold of the server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections open at once; a new one beyond closes the oldest idle one.
    pub max_connections: usize,
    /// From connect to the end of the request head (slowloris).
    pub header_read_timeout: Duration,
    /// Request head bytes (request line and headers).
    pub max_header_bytes: usize,
    /// A connection's whole life, keep-alive included.
    pub connection_timeout: Duration,
    /// Pause after a failed `accept` (e.g. out of file descriptors).
    pub accept_backoff: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(5),
            max_header_bytes: 16 * 1024,
            connection_timeout: Duration::from_secs(60),
            accept_backoff: Duration::from_millis(100),
        }
    }
}

/// Open connections, oldest first, so that a new one can push out the
/// oldest that is not answering a request right now: idle or half-sent
/// connections cannot hold every slot and lock out the scraper.
#[derive(Default)]
struct Open {
    next_id: u64,
    conns: VecDeque<(u64, AbortHandle, Arc<AtomicBool>)>,
}

/// Where the pages are served: the TCP address (behind `web`'s TLS and
/// basic auth; the per-process API only if `--web.api-over-tcp`), or the
/// Unix socket (its file mode is the access control; every page).
pub enum Listener {
    Tcp { listener: TcpListener, web: Arc<WebConfig>, api: bool },
    Unix(UnixListener),
}

/// Who asks, as far as the pages care.
#[derive(Clone, Copy, Debug)]
pub struct Origin {
    /// For the rate limit of wrong credentials.
    pub client: IpAddr,
    /// May read `/api/v1/*`.
    pub api: bool,
}

/// Serves until the listener fails for good. At most `max_connections` are
/// open; past that, each new one closes the oldest idle one.
pub async fn serve(listener: Listener, exporter: Arc<Exporter>, limits: Limits) {
    let (acceptor, web, tcp_api) = match &listener {
        Listener::Tcp { web, api, .. } => (web.tls.clone().map(tokio_rustls::TlsAcceptor::from), web.clone(), *api),
        Listener::Unix(_) => (None, Arc::new(WebConfig::none()), true),
    };
    let open = Arc::new(Mutex::new(Open::default()));
    let mut accept_errors = 0u64;
    loop {
        let accepted = match &listener {
            Listener::Tcp { listener, .. } => listener.accept().await.map(|(s, peer)| Accepted::Tcp(s, peer.ip())),
            Listener::Unix(listener) => listener.accept().await.map(|(s, _)| Accepted::Unix(s)),
        };
        let accepted = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                accept_errors += 1;
                if accept_errors.is_power_of_two() {
                    log::warn!("HTTP accept failed ({accept_errors} times so far): {e}");
                }
                tokio::time::sleep(limits.accept_backoff).await;
                continue;
            }
        };
        let (exporter, web, acceptor) = (exporter.clone(), web.clone(), acceptor.clone());
        let busy = Arc::new(AtomicBool::new(false));
        let id = {
            let mut o = open.lock().unwrap();
            if o.conns.len() >= limits.max_connections
                && let Some(i) = o.conns.iter().position(|(_, _, busy)| !busy.load(Ordering::SeqCst))
                && let Some((_, oldest, _)) = o.conns.remove(i)
            {
                oldest.abort();
            }
            o.next_id += 1;
            o.next_id
        };
        let open_for_task = open.clone();
        let busy_for_task = busy.clone();
        let task = tokio::spawn(async move {
            let work = async {
                match accepted {
                    Accepted::Tcp(stream, client) => {
                        let origin = Origin { client, api: tcp_api };
                        match acceptor {
                            Some(a) => {
                                if let Ok(Ok(tls)) =
                                    tokio::time::timeout(limits.header_read_timeout, a.accept(stream)).await
                                {
                                    connection(tls, origin, exporter, web, limits, busy_for_task).await;
                                }
                            }
                            None => connection(stream, origin, exporter, web, limits, busy_for_task).await,
                        }
                    }
                    Accepted::Unix(stream) => {
                        let origin = Origin { client: IpAddr::from([127, 0, 0, 1]), api: true };
                        connection(stream, origin, exporter, web, limits, busy_for_task).await
                    }
                }
            };
            let _ = tokio::time::timeout(limits.connection_timeout, work).await;
            open_for_task.lock().unwrap().conns.retain(|(i, _, _)| *i != id);
        });
        open.lock().unwrap().conns.push_back((id, task.abort_handle(), busy));
    }
}

enum Accepted {
    Tcp(tokio::net::TcpStream, IpAddr),
    Unix(tokio::net::UnixStream),
}

/// Serves one connection (plain, or TLS already accepted) until it ends;
/// `busy` is set while a request is being answered.
pub async fn connection<S>(
    stream: S,
    origin: Origin,
    exporter: Arc<Exporter>,
    web: Arc<WebConfig>,
    limits: Limits,
    busy: Arc<AtomicBool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| {
        let (exporter, web, busy) = (exporter.clone(), web.clone(), busy.clone());
        async move {
            busy.store(true, Ordering::SeqCst);
            let resp = handle(req, origin, &exporter, &web).await;
            busy.store(false, Ordering::SeqCst);
            Ok::<_, Infallible>(resp)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// One request: credentials, method, path. The body, if any, is not read.
pub async fn handle<B>(
    req: Request<B>,
    origin: Origin,
    exporter: &Exporter,
    web: &WebConfig,
) -> hyper::Response<ResponseBody> {
    let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let head = *req.method() == Method::HEAD;
    let encoding = if head {
        Encoding::None
    } else if accepts_gzip(req.headers()) {
        Encoding::Gzip
    } else {
        Encoding::Plain
    };
    let resp = match web.authorize(authorization, origin.client).await {
        Auth::Denied => Response::text(401, "unauthorized\n"),
        Auth::RateLimited => Response::text(429, "too many failed attempts; try again later\n"),
        Auth::Busy => Response::text(503, "busy checking credentials; try again\n"),
        Auth::Allowed => match *req.method() {
            Method::GET | Method::HEAD => exporter.respond(req.uri().path(), encoding, origin.api).await,
            _ => Response::text(405, "only GET and HEAD\n"),
        },
    };
    let mut builder = hyper::Response::builder()
        .status(StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, resp.content_type);
    match resp.status {
        401 => builder = builder.header(header::WWW_AUTHENTICATE, "Basic realm=\"sockprobe\""),
        429 | 503 => builder = builder.header(header::RETRY_AFTER, "1"),
        _ => {}
    }
    let body = match resp.body {
        _ if head => ResponseBody::Whole(None),
        Body::Text(t) => ResponseBody::Whole(Some(Bytes::from(t))),
        Body::Gzip(b) => {
            builder = builder.header(header::CONTENT_ENCODING, "gzip").header(header::VARY, "Accept-Encoding");
            ResponseBody::Whole(Some(b))
        }
        Body::Stream(rx) => ResponseBody::Chunks(rx),
    };
    builder.body(body).unwrap_or_else(|_| hyper::Response::new(ResponseBody::Whole(None)))
}

/// Whether `Accept-Encoding` lists gzip with a non-zero weight.
fn accepts_gzip(headers: &hyper::HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let zero = parts.any(|p| p.strip_prefix("q=").is_some_and(|q| q.parse::<f32>().is_ok_and(|q| q <= 0.0)));
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !zero
        },
    )
}
