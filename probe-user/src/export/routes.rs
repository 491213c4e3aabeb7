//! The daemon's pages: the metrics, `/healthz` and `/`.
use std::sync::{
    Mutex,
    atomic::{AtomicBool, Ordering},
};

use probe_common::Counter;

use super::http::Response;
use crate::{aggregate::Aggregator, identity::Clock, kernel::KernelStats};

/// What the pages read: the aggregates, the kernel's counters, readiness.
pub struct Exporter {
    pub agg: Mutex<Aggregator>,
    pub stats: Mutex<Option<KernelStats>>,
    pub ready: AtomicBool,
    pub telemetry_path: String,
}

impl Exporter {
    pub fn new(agg: Aggregator, telemetry_path: String) -> Exporter {
        Exporter { agg: Mutex::new(agg), stats: Mutex::new(None), ready: AtomicBool::new(false), telemetry_path }
    }

    pub fn respond(&self, path: &str) -> Response {
        if path == self.telemetry_path {
            let (lost, tracked) = match self.stats.lock().unwrap().as_ref() {
                Some(k) => (k.counter(Counter::EventsLost), k.tracked_sockets() as i64),
                None => (0, 0),
            };
            let body = self.agg.lock().unwrap().render(Clock::monotonic_now_ns(), lost, tracked);
            return Response { status: 200, content_type: "text/plain; version=0.0.4; charset=utf-8", body };
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
}
