//! The daemon's pages: the metrics, `/healthz` and `/`. Rendering happens
//! here, on the HTTP side: the event thread is only asked to bring its
//! gauges up to date (and not waited for long), so no scrape, however large
//! or slow, holds up the draining of the kernel's events.
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use probe_common::Counter;
use tokio::sync::{mpsc, oneshot};

use super::http::Response;
use crate::{
    aggregate::{Exported, families::encode},
    kernel::KernelStats,
};

/// A request to the event thread to refresh the gauges; it answers when done.
pub type RefreshRequest = oneshot::Sender<()>;

/// How long a scrape waits for the event thread's refresh before it serves
/// the gauges as they are.
const REFRESH_WAIT: Duration = Duration::from_secs(1);

/// What the pages read: the metric registry, the kernel's counters, readiness.
pub struct Exporter {
    exported: Exported,
    stats: Arc<Mutex<Option<KernelStats>>>,
    events_lost_seen: Arc<AtomicU64>,
    ready: AtomicBool,
    telemetry_path: String,
    refresh: mpsc::Sender<RefreshRequest>,
}

impl Exporter {
    pub fn new(exported: Exported, telemetry_path: String, refresh: mpsc::Sender<RefreshRequest>) -> Exporter {
        Exporter {
            exported,
            stats: Arc::new(Mutex::new(None)),
            events_lost_seen: Arc::new(AtomicU64::new(0)),
            ready: AtomicBool::new(false),
            telemetry_path,
            refresh,
        }
    }

    pub fn set_stats(&self, stats: Option<KernelStats>) {
        *self.stats.lock().unwrap() = stats;
    }

    /// The probes are attached and the existing sockets listed.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    pub async fn respond(&self, path: &str) -> Response {
        if path == self.telemetry_path {
            return Response {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: self.metrics().await,
            };
        }
        match path {
            "/healthz" if self.ready.load(Ordering::SeqCst) => Response::text(200, "ok\n"),
            "/healthz" => Response::text(503, "probes not attached yet\n"),
            "/" => Response {
                status: 200,
                content_type: "text/html; charset=utf-8",
                body: format!(
                    "<html><head><title>sockprobe</title></head><body><h1>sockprobe</h1>\
                     <p>Per-process TCP connection hygiene from eBPF.</p>\
                     <ul><li><a href=\"{0}\">{0}</a></li><li><a href=\"/healthz\">/healthz</a></li></ul></body></html>\n",
                    self.telemetry_path
                ),
            },
            _ => Response::text(404, "not found\n"),
        }
    }

    async fn metrics(&self) -> String {
        let (tx, rx) = oneshot::channel();
        if self.refresh.try_send(tx).is_ok() {
            let _ = tokio::time::timeout(REFRESH_WAIT, rx).await;
        }
        let exported = self.exported.clone();
        let (stats, seen) = (self.stats.clone(), self.events_lost_seen.clone());
        // Off the async thread: counting the LRU map's keys is a syscall each.
        let render = move || {
            let (lost, sockets) = match stats.lock().unwrap().as_ref() {
                Some(k) => (k.counter(Counter::EventsLost), k.tracked_sockets() as i64),
                None => (0, 0),
            };
            let before = seen.swap(lost, Ordering::SeqCst);
            if lost > before {
                exported.events_lost.inc_by(lost - before);
            }
            exported.tracked_sockets.set(sockets);
            encode(&exported.registry)
        };
        tokio::task::spawn_blocking(render).await.unwrap_or_default()
    }
}
