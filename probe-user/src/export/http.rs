//! A deliberately small HTTP/1.1 server for `/metrics`, `/healthz` and `/`:
//! one request per connection, bounded header size and time.
use std::{future::Future, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
};

use super::web_config::WebConfig;

pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response { status, content_type: "text/plain; charset=utf-8", body: body.into() }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "",
    }
}

const MAX_HEAD: usize = 16 * 1024;

/// Serves until the listener fails; `handler(path)` answers GET/HEAD
/// requests, behind TLS and basic auth when `web` asks for them.
pub async fn serve<H, F>(listener: TcpListener, handler: Arc<H>, web: Arc<WebConfig>)
where
    H: Fn(String) -> F + Send + Sync + 'static,
    F: Future<Output = Response> + Send,
{
    let acceptor = web.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let (handler, web, acceptor) = (handler.clone(), web.clone(), acceptor.clone());
        tokio::spawn(async move {
            let work = async {
                match acceptor {
                    Some(a) => match a.accept(stream).await {
                        Ok(tls) => handle(tls, handler, &web).await,
                        Err(e) => Err(e),
                    },
                    None => handle(stream, handler, &web).await,
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(30), work).await;
        });
    }
}

async fn handle<S, H, F>(mut stream: S, handler: Arc<H>, web: &WebConfig) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Fn(String) -> F,
    F: Future<Output = Response>,
{
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut parts = text.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("").to_string();
    let authorization = text.lines().skip(1).find_map(|l| {
        l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("authorization")).map(|(_, v)| v.trim())
    });
    let resp = match method {
        _ if !web.authorized(authorization) => Response::text(401, "unauthorized\n"),
        "GET" | "HEAD" => handler(path).await,
        "" => Response::text(400, "bad request\n"),
        _ => Response::text(405, "only GET and HEAD\n"),
    };
    let challenge = if resp.status == 401 { "WWW-Authenticate: Basic realm=\"sockprobe\"\r\n" } else { "" };
    let header = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{challenge}Connection: close\r\n\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len()
    );
    stream.write_all(header.as_bytes()).await?;
    if method != "HEAD" {
        stream.write_all(resp.body.as_bytes()).await?;
    }
    stream.shutdown().await
}
