//! `sockprobe run`: attach, aggregate, serve metrics until SIGTERM/SIGINT.
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use probe_common::Counter;
use tokio::net::TcpListener;

use crate::{
    check,
    config::RunConfig,
    error::Error,
    http::{self, Response},
    identity::Clock,
    k8s::{ApiConfig, PodNames},
    metrics::Aggregator,
    probes::{KernelStats, Outcome, Probes},
    scan, shutdown,
    stream::EventStream,
    web_config::WebConfig,
};

/// How often live sockets are reconciled with the kernel's socket table
/// (drops sockets whose close event was lost).
const RECONCILE_EVERY: Duration = Duration::from_secs(30);

struct Shared {
    agg: Mutex<Aggregator>,
    stats: Mutex<Option<KernelStats>>,
    ready: AtomicBool,
    telemetry_path: String,
}

pub async fn run(cfg: RunConfig) -> Result<(), Error> {
    let web = Arc::new(match &cfg.web_config_file {
        Some(path) => WebConfig::load(path)?,
        None => WebConfig::none(),
    });
    // Bind before attaching anything: a second instance fails here, at once.
    let listener = std::net::TcpListener::bind(cfg.listen_address).map_err(|e| {
        Error::io(
            format!("cannot listen on {} (another sockprobe running? see --web.listen-address)", cfg.listen_address),
            e,
        )
    })?;
    listener.set_nonblocking(true).map_err(|e| Error::io("listener", e))?;
    let listener = TcpListener::from_std(listener).map_err(|e| Error::io("listener", e))?;

    let kernel = check::kernel_release();
    let shared = Arc::new(Shared {
        agg: Mutex::new(Aggregator::new(cfg.max_endpoints, cfg.series_ttl, env!("CARGO_PKG_VERSION"), &kernel)),
        stats: Mutex::new(None),
        ready: AtomicBool::new(false),
        telemetry_path: cfg.telemetry_path.clone(),
    });
    let handler_state = shared.clone();
    let handler = Arc::new(move |path: String| {
        let s = handler_state.clone();
        async move { respond(&s, &path) }
    });
    let scheme = if web.tls.is_some() { "https" } else { "http" };
    tokio::spawn(http::serve(listener, handler, web));
    log::info!("listening on {scheme}://{}{}", cfg.listen_address, cfg.telemetry_path);

    let sizes = cfg.probe_settings();
    let mut probes = tokio::task::spawn_blocking(move || Probes::attach(sizes))
        .await
        .map_err(|e| Error::Load(format!("attach task: {e}")))??;
    log::info!("per-socket state in {}", probes.store.describe());
    check::log_probe_status(&probes);
    {
        let agg = shared.agg.lock().unwrap();
        for s in &probes.status {
            if s.outcome != Outcome::Standby {
                agg.set_probe(&s.candidate.hooks(), s.outcome == Outcome::Attached);
            }
        }
    }
    let mut events = EventStream::new(&mut probes)?;
    let pods = PodNames::default();
    if let Some(api) = ApiConfig::in_cluster(cfg.kubernetes_api_url.clone(), cfg.kubernetes_node_name.clone()) {
        spawn_pod_refresh(api, pods.clone()).await;
        events.decoder().set_pods(pods.clone());
    }
    *shared.stats.lock().unwrap() = Some(probes.take_stats()?);

    // Probes first, then the scan: a socket closing in between is seen by
    // the probes, and the periodic reconcile drops what the scan adds late.
    let started = Instant::now();
    match scan::existing_sockets() {
        Ok(found) => {
            let n = found.sockets.len();
            let now = Clock::monotonic_now_ns();
            let mut agg = shared.agg.lock().unwrap();
            for mut s in found.sockets {
                s.container = pods.resolve(&s.container);
                agg.add_existing(s, now);
            }
            let seeded = probes.seed_listeners(found.listeners);
            log::info!(
                "start-up scan: {n} existing sockets ({} without owner), {} listening ports named, in {:?}",
                found.unowned,
                seeded.unwrap_or(0),
                started.elapsed()
            );
        }
        Err(e) => log::warn!("start-up scan failed, existing sockets appear as they change: {e}"),
    }
    // Start-up parsed ~6 MiB of kernel BTF twice; give the heap back.
    // SAFETY: malloc_trim only releases free memory.
    unsafe { libc::malloc_trim(0) };
    shared.ready.store(true, Ordering::SeqCst);
    log::info!("ready");

    let mut stop = std::pin::pin!(shutdown::requested());
    let mut reconcile = tokio::time::interval(RECONCILE_EVERY);
    reconcile.tick().await;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = reconcile.tick() => {
                if let Ok(open) = scan::open_cookies() {
                    shared.agg.lock().unwrap().retain_live(&open);
                }
            }
            batch = events.next_raw_batch(|decoder, ev| {
                shared.agg.lock().unwrap().observe(decoder, ev);
            }) => batch?,
        }
    }
    log::info!("shutting down: detaching probes");
    drop(events);
    shared.stats.lock().unwrap().take();
    drop(probes);
    Ok(())
}

/// How often the pod list of this node is fetched again.
const POD_REFRESH_EVERY: Duration = Duration::from_secs(30);

/// First fetch now (so the first scrape has pod names), then every 30 s.
/// Failures keep the cgroup-derived names and are logged, never fatal.
async fn spawn_pod_refresh(api: ApiConfig, pods: PodNames) {
    let refresh = move |api: ApiConfig, pods: PodNames| async move {
        tokio::task::spawn_blocking(move || pods.refresh(&api))
            .await
            .unwrap_or_else(|e| Err(Error::Load(e.to_string())))
    };
    match refresh(api.clone(), pods.clone()).await {
        Ok(n) => log::info!("Kubernetes API {}: {n} containers on node {}", api.url, api.node),
        Err(e) => log::warn!("{e}; containers keep their cgroup-derived names"),
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POD_REFRESH_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = refresh(api.clone(), pods.clone()).await {
                log::debug!("{e}");
            }
        }
    });
}

fn respond(s: &Shared, path: &str) -> Response {
    if path == s.telemetry_path {
        let (lost, tracked) = match s.stats.lock().unwrap().as_ref() {
            Some(k) => (k.counter(Counter::EventsLost), k.tracked_sockets() as i64),
            None => (0, 0),
        };
        let body = s.agg.lock().unwrap().render(Clock::monotonic_now_ns(), lost, tracked);
        return Response { status: 200, content_type: "text/plain; version=0.0.4; charset=utf-8", body };
    }
    match path {
        "/healthz" if s.ready.load(Ordering::SeqCst) => Response::text(200, "ok\n"),
        "/healthz" => Response::text(503, "probes not attached yet\n"),
        "/" => Response {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: format!(
                "<html><head><title>sockprobe</title></head><body><h1>sockprobe</h1>\
                 <p>Per-process TCP connection hygiene from eBPF.</p>\
                 <ul><li><a href=\"{0}\">{0}</a></li><li><a href=\"/healthz\">/healthz</a></li></ul></body></html>\n",
                s.telemetry_path
            ),
        },
        _ => Response::text(404, "not found\n"),
    }
}
