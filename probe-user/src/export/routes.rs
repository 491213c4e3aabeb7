//! The daemon's pages: the metrics, the diagnosis (`/api/v1/findings`,
//! `/api/v1/connections`), `/healthz` and `/`. Rendering happens
//! here, on the HTTP side: the event thread is only asked to bring its
//! gauges up to date (and not waited for long), so no scrape, however large
//! or slow, holds up the draining of the kernel's events.
use std::{
    io::Write,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use probe_common::Counter;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::http::{Body, Response};
use crate::{
    aggregate::{
        Diagnosis, Exported, exposition,
        findings::{Report, localize_from},
    },
    identity::language::Languages,
    kernel::KernelStats,
};

/// A request to the event thread to refresh the gauges and the diagnosis;
/// it answers with the diagnosis when done.
pub type RefreshRequest = oneshot::Sender<Arc<Diagnosis>>;

/// How long a scrape waits for the event thread's refresh before it serves
/// the gauges as they are.
const REFRESH_WAIT: Duration = Duration::from_secs(1);

/// What the pages read: the metric registry, the kernel's counters, readiness.
pub struct Exporter {
    exported: Exported,
    stats: Arc<Mutex<Option<KernelStats>>>,
    /// The kernel's own counts last mirrored into `events_lost`,
    /// `untracked_sockets` and `evicted_sockets`.
    events_lost_seen: Arc<AtomicU64>,
    untracked_seen: Arc<AtomicU64>,
    evicted_seen: Arc<AtomicU64>,
    ready: AtomicBool,
    telemetry_path: String,
    refresh: mpsc::Sender<RefreshRequest>,
    /// The last diagnosis the event thread answered with.
    latest: Mutex<Option<Arc<Diagnosis>>>,
    languages: Languages,
    /// The last gzip render and when it was done: scrapers that arrived
    /// while it was under way share it (one render at a time).
    gzipped: tokio::sync::Mutex<Option<(Instant, Bytes)>>,
    /// Uncompressed renders streamed at once (each holds a blocking thread
    /// while its client reads).
    plain: Arc<Semaphore>,
    pacer: Arc<Pacer>,
}

/// Renders, however many scrapers ask, use at most `1 / (1 + RENDER_GAP)`
/// of one CPU: after a render that took `t` of CPU the next one starts no
/// sooner than `RENDER_GAP * t` later. Without it 20 scrapers in a loop kept
/// renders running back to back, and under the DaemonSet's one CPU they took
/// the event thread's time (29 322 events lost in
/// `privileged_every_attack_at_once_under_the_daemonsets_limits`). A small
/// exposition renders in milliseconds, so Prometheus never notices.
const RENDER_GAP: u32 = 3;

struct Pacer {
    next: Mutex<Instant>,
}

impl Pacer {
    fn new() -> Pacer {
        Pacer { next: Mutex::new(Instant::now()) }
    }

    /// Waits until a render may start.
    async fn wait(&self) {
        loop {
            let next = *self.next.lock().unwrap();
            if Instant::now() >= next {
                return;
            }
            tokio::time::sleep_until(next.into()).await;
        }
    }

    /// A render that used `cpu` ended: holds the next one back.
    fn done(&self, cpu: Duration) {
        let mut next = self.next.lock().unwrap();
        *next = (*next).max(Instant::now() + cpu * RENDER_GAP);
    }
}

/// CPU time the calling thread has used.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid out-pointer; this clock exists on every Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Uncompressed renders at once (Prometheus asks for gzip; this is curl).
const PLAIN_RENDERS: usize = 2;
/// Bytes per chunk of a streamed render, and chunks queued ahead of the client.
const CHUNK: usize = 64 * 1024;
const CHUNKS_AHEAD: usize = 4;

/// How a client wants `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// HEAD: the headers only, no render.
    None,
    Gzip,
    Plain,
}

impl Exporter {
    pub fn new(
        exported: Exported,
        telemetry_path: String,
        refresh: mpsc::Sender<RefreshRequest>,
        languages: Languages,
    ) -> Exporter {
        Exporter {
            exported,
            stats: Arc::new(Mutex::new(None)),
            events_lost_seen: Arc::new(AtomicU64::new(0)),
            untracked_seen: Arc::new(AtomicU64::new(0)),
            evicted_seen: Arc::new(AtomicU64::new(0)),
            ready: AtomicBool::new(false),
            telemetry_path,
            refresh,
            latest: Mutex::new(None),
            languages,
            gzipped: tokio::sync::Mutex::new(None),
            plain: Arc::new(Semaphore::new(PLAIN_RENDERS)),
            pacer: Arc::new(Pacer::new()),
        }
    }

    pub fn set_stats(&self, stats: Option<KernelStats>) {
        *self.stats.lock().unwrap() = stats;
    }

    /// The probes are attached and the existing sockets listed.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// The page at `path`; `api`: whether this origin may read `/api/v1/*`.
    pub async fn respond(&self, path: &str, encoding: Encoding, api: bool) -> Response {
        if path == self.telemetry_path {
            let body = match encoding {
                Encoding::None => Body::Text(String::new()),
                Encoding::Gzip => Body::Gzip(self.gzipped().await),
                Encoding::Plain => self.streamed().await,
            };
            return Response { status: 200, content_type: "text/plain; version=0.0.4; charset=utf-8", body };
        }
        match path {
            "/api/v1/findings" | "/api/v1/connections" if !api => Response::text(
                404,
                "not served here: the per-process API is on the daemon's Unix socket (--web.api-socket, \
                 /run/sockprobe/api.sock by default; `sockprobe doctor` and `top` use it), or set --web.api-over-tcp\n",
            ),
            "/api/v1/findings" => Response::json(self.findings().await),
            "/api/v1/connections" => {
                let d = self.diagnosis().await;
                Response::json(serde_json::json!({
                    "generated": d.report.generated,
                    "window_seconds": d.report.window_seconds,
                    "rows": d.rows,
                }))
            }
            "/healthz" if self.ready.load(Ordering::SeqCst) => Response::text(200, "ok\n"),
            "/healthz" => Response::text(503, "probes not attached yet\n"),
            "/" => {
                let api = if api {
                    "<li><a href=\"/api/v1/findings\">/api/v1/findings</a></li>\
                     <li><a href=\"/api/v1/connections\">/api/v1/connections</a></li>"
                } else {
                    "<li>the per-process API: on the daemon's Unix socket (<code>sockprobe doctor</code>, \
                     <code>sockprobe top</code>)</li>"
                };
                Response {
                    status: 200,
                    content_type: "text/html; charset=utf-8",
                    body: Body::Text(format!(
                        "<html><head><title>sockprobe</title></head><body><h1>sockprobe</h1>\
                         <p>Per-process TCP connection hygiene from eBPF.</p>\
                         <ul><li><a href=\"{0}\">{0}</a></li>{api}<li><a href=\"/healthz\">/healthz</a></li></ul>\
                         </body></html>\n",
                        self.telemetry_path
                    )),
                }
            }
            _ => Response::text(404, "not found\n"),
        }
    }

    /// Asks the event thread for a refresh (gauges and findings), waiting
    /// at most [`REFRESH_WAIT`]; the last diagnosis otherwise.
    async fn diagnosis(&self) -> Arc<Diagnosis> {
        let (tx, rx) = oneshot::channel();
        if self.refresh.try_send(tx).is_ok()
            && let Ok(Ok(d)) = tokio::time::timeout(REFRESH_WAIT, rx).await
        {
            *self.latest.lock().unwrap() = Some(d.clone());
            return d;
        }
        self.latest.lock().unwrap().clone().unwrap_or_else(|| Arc::new(Diagnosis::empty(0)))
    }

    /// The findings with each process's language and advice in its terms.
    async fn findings(&self) -> Report {
        let mut report = self.diagnosis().await.report.clone();
        localize_from(&mut report.findings, &self.languages).await;
        report
    }

    /// The exposition gzipped, shared: a scraper that arrives while a
    /// render is under way waits for it and gets it too, so N concurrent
    /// scrapers cost one render (and one refresh of the event thread).
    async fn gzipped(&self) -> Bytes {
        let arrived = Instant::now();
        let mut last = self.gzipped.lock().await;
        if let Some((done, body)) = last.as_ref()
            && *done >= arrived
        {
            return body.clone();
        }
        self.pacer.wait().await;
        let render = self.render().await;
        let pacer = self.pacer.clone();
        let body = tokio::task::spawn_blocking(move || {
            let start = thread_cpu();
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            let body = render(&mut gz).and_then(|_| gz.finish()).map(Bytes::from).unwrap_or_default();
            pacer.done(thread_cpu().saturating_sub(start));
            body
        })
        .await
        .unwrap_or_default();
        *last = Some((Instant::now(), body.clone()));
        body
    }

    /// The exposition uncompressed, streamed in chunks as it is written (no
    /// whole copy), [`PLAIN_RENDERS`] at a time.
    async fn streamed(&self) -> Body {
        let Ok(permit) = self.plain.clone().acquire_owned().await else { return Body::Text(String::new()) };
        self.pacer.wait().await;
        let render = self.render().await;
        let (tx, rx) = mpsc::channel(CHUNKS_AHEAD);
        let pacer = self.pacer.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let start = thread_cpu();
            let mut out = std::io::BufWriter::with_capacity(CHUNK, Chunks(tx));
            // A client gone stops the render (its chunks have nowhere to go).
            let _ = render(&mut out).and_then(|_| out.flush());
            // Waiting on a slow client costs no CPU, so it holds nobody back.
            pacer.done(thread_cpu().saturating_sub(start));
        });
        Body::Stream(rx)
    }

    /// Brings everything up to date (the event thread's gauges, the
    /// kernel's counters) and returns the writer of the exposition, to run
    /// on a blocking thread.
    async fn render(&self) -> impl FnOnce(&mut dyn Write) -> std::io::Result<()> + Send + 'static {
        let _ = self.diagnosis().await;
        let exported = self.exported.clone();
        let (stats, lost_seen, untracked_seen, evicted_seen) =
            (self.stats.clone(), self.events_lost_seen.clone(), self.untracked_seen.clone(), self.evicted_seen.clone());
        move |w: &mut dyn Write| {
            // Counting the LRU map's keys is a syscall each: off the async thread.
            let (lost, untracked, evicted, sockets) = match stats.lock().unwrap().as_ref() {
                Some(k) => (
                    k.counter(Counter::EventsLost),
                    k.counter(Counter::StateInsertFailed),
                    k.counter(Counter::StatesEvicted),
                    k.tracked_sockets() as i64,
                ),
                None => (0, 0, 0, 0),
            };
            mirror(&exported.events_lost, &lost_seen, lost);
            mirror(&exported.untracked_sockets, &untracked_seen, untracked);
            mirror(&exported.evicted_sockets, &evicted_seen, evicted);
            exported.tracked_sockets.set(sockets);
            exposition::write(w, &exported.cells.snapshot(), &exported.registry)
        }
    }
}

/// Hands each chunk a `BufWriter` flushes to the response body.
struct Chunks(mpsc::Sender<Bytes>);

impl Write for Chunks {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.blocking_send(Bytes::copy_from_slice(buf)).map_err(|_| std::io::ErrorKind::BrokenPipe)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Moves a Prometheus counter up to a kernel counter's total (read as a
/// whole each time, so only the growth since the last read is added).
fn mirror(counter: &prometheus::IntCounter, seen: &AtomicU64, total: u64) {
    let before = seen.swap(total, Ordering::SeqCst);
    if total > before {
        counter.inc_by(total - before);
    }
}
