//! `sockprobe run`: attach, aggregate, serve metrics until SIGTERM/SIGINT.
use std::{sync::{Arc, atomic::Ordering}, time::Duration};

use tokio::net::TcpListener;

use super::signals;
use crate::{
    aggregate::Aggregator,
    config::RunConfig,
    decode::Decoder,
    error::Error,
    export::{http, routes::Exporter, web_config::WebConfig},
    identity::{
        Clock,
        k8s::{ApiConfig, PodNames},
    },
    kernel::{self, EventStream, Outcome, Probes},
};

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

    let agg = Aggregator::new(cfg.max_endpoints, cfg.series_ttl, env!("CARGO_PKG_VERSION"), &kernel::release());
    let shared = Arc::new(Exporter::new(agg, cfg.telemetry_path.clone()));
    let handler_state = shared.clone();
    let handler = Arc::new(move |path: String| {
        let s = handler_state.clone();
        async move { s.respond(&path) }
    });
    let scheme = if web.tls.is_some() { "https" } else { "http" };
    tokio::spawn(http::serve(listener, handler, web));
    log::info!("listening on {scheme}://{}{}", cfg.listen_address, cfg.telemetry_path);

    let sizes = cfg.probe;
    let mut probes = tokio::task::spawn_blocking(move || Probes::attach(sizes))
        .await
        .map_err(|e| Error::Load(format!("attach task: {e}")))??;
    log::info!("per-socket state in {}", probes.store.describe());
    probes.log_status();
    {
        let agg = shared.agg.lock().unwrap();
        for s in &probes.status {
            if s.outcome != Outcome::Standby {
                agg.set_probe(&s.candidate.hooks(), s.outcome == Outcome::Attached);
            }
        }
    }
    let mut events = EventStream::new(&mut probes)?;
    let mut decoder = Decoder::new(probes.reasons.clone());
    if let Some(api) = ApiConfig::in_cluster(cfg.kubernetes_api_url.clone(), cfg.kubernetes_node_name.clone()) {
        let pods = PodNames::default();
        spawn_pod_refresh(api, pods.clone()).await;
        decoder.set_pods(pods);
    }
    *shared.stats.lock().unwrap() = Some(probes.take_stats()?);

    // Probes first, then the listing: a socket closing in between is seen
    // by the probes (its close is remembered until the listing is applied).
    shared.agg.lock().unwrap().begin_listing(Clock::monotonic_now_ns());
    let job = super::listing_job(&mut probes);
    match tokio::task::spawn_blocking(job).await.map_err(|e| e.to_string()).and_then(|r| r) {
        Ok(listed) => {
            let found = &listed.listing;
            let r = shared.agg.lock().unwrap().apply_listing(&mut decoder, found, Clock::monotonic_now_ns());
            let seeded = probes.seed_listeners(&found.listeners);
            log::info!(
                "start-up listing: {} existing sockets, {} listeners named; {} records in {:?} ({:?} CPU)",
                r.adopted,
                seeded.unwrap_or(0),
                listed.records,
                listed.took,
                listed.cpu
            );
            decoder.set_ports(listed.listing.ports);
        }
        Err(e) => log::warn!("start-up listing failed, existing sockets appear as they change: {e}"),
    }
    // Start-up parsed ~6 MiB of kernel BTF twice; give the heap back.
    // SAFETY: malloc_trim only releases free memory.
    unsafe { libc::malloc_trim(0) };
    shared.ready.store(true, Ordering::SeqCst);
    log::info!("ready");

    let mut stop = std::pin::pin!(signals::requested());
    let mut reconcile = tokio::time::interval(cfg.reconcile_interval);
    reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    reconcile.tick().await;
    let mut pending: Option<tokio::task::JoinHandle<Result<super::Listed, String>>> = None;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = reconcile.tick(), if pending.is_none() => {
                shared.agg.lock().unwrap().begin_listing(Clock::monotonic_now_ns());
                pending = Some(tokio::task::spawn_blocking(super::listing_job(&mut probes)));
            }
            done = async { pending.as_mut().expect("guarded").await }, if pending.is_some() => {
                pending = None;
                match done.map_err(|e| e.to_string()).and_then(|r| r) {
                    Ok(listed) => {
                        let found = &listed.listing;
                        let r = shared.agg.lock().unwrap().apply_listing(&mut decoder, found, Clock::monotonic_now_ns());
                        let _ = probes.seed_listeners(&found.listeners);
                        log::debug!(
                            "reconcile: {} records listed in {:?} ({:?} CPU); {r:?}",
                            listed.records, listed.took, listed.cpu
                        );
                        decoder.set_ports(listed.listing.ports);
                    }
                    Err(e) => log::warn!("reconcile failed, live gauges may drift until the next: {e}"),
                }
            }
            batch = events.next_batch(|ev| {
                shared.agg.lock().unwrap().observe(&mut decoder, ev);
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
