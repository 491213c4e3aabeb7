//! `sockprobe run`: attach, aggregate, serve metrics until SIGTERM/SIGINT.
//!
//! Two threads with one rule: draining the kernel's events comes first. The
//! event thread owns the ring buffer, the decoder and the aggregator, and
//! runs nothing else (the socket listings it asks for run on a blocking
//! thread). Everything a network client or another process can slow down,
//! HTTP, TLS, bcrypt, encoding the exposition, the Kubernetes API, runs on
//! the main runtime and only reads the metric registry.
use std::{sync::Arc, time::Duration};

use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot},
};

use super::{Started, listing, signals};
use crate::{
    aggregate::{Aggregator, Limits},
    config::RunConfig,
    decode::Decoder,
    error::Error,
    export::{
        api_socket, http,
        routes::{Exporter, RefreshRequest},
        web_config::WebConfig,
    },
    identity::{
        Clock,
        k8s::{ApiConfig, EndpointNames, PodNames},
        language::Languages,
        listing::Listed,
    },
    kernel::{self, EventStream, Outcome, Probes},
};

pub async fn run(cfg: RunConfig) -> Result<(), Error> {
    let web = Arc::new(match &cfg.web_config_file {
        Some(path) => WebConfig::load(path)?,
        None => WebConfig::none(),
    });
    for warning in web.warnings() {
        log::warn!("{warning}");
    }
    // Bind before attaching anything: a second instance fails here, at once.
    let listener = std::net::TcpListener::bind(cfg.listen_address).map_err(|e| {
        Error::io(
            format!("cannot listen on {} (another sockprobe running? see --web.listen-address)", cfg.listen_address),
            e,
        )
    })?;
    listener.set_nonblocking(true).map_err(|e| Error::io("listener", e))?;
    let listener = TcpListener::from_std(listener).map_err(|e| Error::io("listener", e))?;
    let api_listener = api_socket::bind(&cfg.api_socket, cfg.api_socket_group)?;
    // Bound: what root could do beyond loading, listing and reading
    // executables is given up, while this is the only thread.
    match kernel::privileges::keep_only(kernel::privileges::DAEMON_KEEPS) {
        Ok(0) => {}
        Ok(dropped) => log::info!("capabilities beyond the daemon's needs dropped (mask {dropped:#x})"),
        Err(e) => log::warn!("capabilities kept: {e}"),
    }

    let limits = Limits {
        max_endpoints: cfg.max_endpoints as usize,
        max_processes: cfg.max_processes as usize,
        max_series: cfg.max_series as usize,
        max_processes_per_container: cfg.max_processes_per_container as usize,
        max_series_per_container: cfg.max_series_per_container as usize,
    };
    let mut agg = Aggregator::new(limits, cfg.series_ttl, env!("CARGO_PKG_VERSION"), &kernel::release());
    agg.set_thresholds(cfg.diagnosis);
    let languages = Languages::start();
    let resolver = languages.clone();
    agg.on_new_pid(move |pid| resolver.notice(pid));
    let known = languages.clone();
    agg.set_language_of(move |pid| known.get(pid).flatten().map(|l| (l.name.to_string(), l.version)));
    let (refresh_tx, refresh_rx) = mpsc::channel::<RefreshRequest>(4);
    let exporter = Arc::new(Exporter::new(agg.exported(), cfg.telemetry_path.clone(), refresh_tx, languages));
    let scheme = if web.tls.is_some() { "https" } else { "http" };
    let tcp = http::Listener::Tcp { listener, web, api: cfg.api_over_tcp };
    tokio::spawn(http::serve(tcp, exporter.clone(), http::Limits::default()));
    tokio::spawn(http::serve(http::Listener::Unix(api_listener), exporter.clone(), http::Limits::default()));
    log::info!(
        "listening on {scheme}://{}{} (the per-process API {}), and on {}",
        cfg.listen_address,
        cfg.telemetry_path,
        if cfg.api_over_tcp { "too" } else { "not" },
        cfg.api_socket.display()
    );

    let Started { mut probes, mut decoder } = super::start(cfg.probe.clone()).await?;
    log::info!("per-socket state in {}", probes.store.describe());
    for s in &probes.status {
        if s.outcome != Outcome::Standby {
            agg.set_probe(&s.candidate.hooks(), s.outcome == Outcome::Attached);
        }
    }
    exporter.set_stats(Some(probes.take_stats()?));
    if let Some(api) = ApiConfig::in_cluster(cfg.kubernetes_api_url.clone(), cfg.kubernetes_node_name.clone()) {
        let pods = PodNames::default();
        let endpoints = cfg.kubernetes_name_endpoints.then(EndpointNames::default);
        // Not awaited: a slow API server must not keep the ring undrained.
        tokio::spawn(crate::identity::k8s::keep_watching(api, pods.clone(), endpoints.clone()));
        decoder.set_pods(pods.clone());
        agg.set_pod_names(pods);
        if let Some(names) = endpoints {
            agg.set_endpoint_names(names);
        }
    }

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (done_tx, done_rx) = oneshot::channel::<Result<(), Error>>();
    let events = EventThread {
        probes,
        decoder,
        agg,
        reconcile_every: cfg.reconcile_interval,
        refresh: refresh_rx,
        stop: stop_rx,
        exporter: exporter.clone(),
    };
    std::thread::Builder::new()
        .name("sockprobe-events".into())
        .spawn(move || {
            let _ = done_tx.send(events.run());
        })
        .map_err(|e| Error::io("cannot start the event thread", e))?;
    // The HTTP server and signals: behind the event thread (which took the
    // priority this thread had), as every other thread.
    crate::priority::background();

    let mut done = std::pin::pin!(done_rx);
    tokio::select! {
        _ = signals::requested() => {
            log::info!("shutting down: detaching probes");
            let _ = stop_tx.send(());
            done.await.unwrap_or(Ok(()))
        }
        result = &mut done => result.unwrap_or_else(|_| Err(Error::Load("the event thread ended".into()))),
    }
}

/// The event thread's share: everything on the path of a kernel event.
struct EventThread {
    probes: Probes,
    decoder: Decoder,
    agg: Aggregator,
    reconcile_every: Duration,
    refresh: mpsc::Receiver<RefreshRequest>,
    stop: oneshot::Receiver<()>,
    exporter: Arc<Exporter>,
}

impl EventThread {
    fn run(self) -> Result<(), Error> {
        // Its blocking threads (the listing) yield to it.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("sockprobe-listing")
            .on_thread_start(crate::priority::background)
            .build()
            .map_err(|e| Error::io("cannot start the event thread's runtime", e))?;
        rt.block_on(self.drain())
    }

    async fn drain(self) -> Result<(), Error> {
        let EventThread { mut probes, mut decoder, mut agg, reconcile_every, mut refresh, mut stop, exporter } = self;
        let mut events = EventStream::new(&mut probes)?;
        // The cgroup tree is walked off this thread (a tenant may make it big).
        let mut cgroup_trees = decoder.walk_cgroups_off_thread();
        listing::first(&mut probes, &mut decoder, Some(&mut agg)).await;
        agg.refresh(Clock::monotonic_now_ns());
        // Start-up parsed ~6 MiB of kernel BTF twice; give the heap back
        // (glibc's; musl's allocator, in the static image, returns it itself).
        // SAFETY: malloc_trim only releases free memory.
        #[cfg(target_env = "gnu")]
        unsafe {
            libc::malloc_trim(0)
        };
        exporter.set_ready();
        log::info!("ready");

        let mut reconcile = tokio::time::interval(reconcile_every);
        reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        reconcile.tick().await;
        let mut pending: Option<tokio::task::JoinHandle<Result<Listed, String>>> = None;
        // The diagnosis window moves on whether or not anyone asks.
        let mut marks = tokio::time::interval(Duration::from_secs(1));
        marks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                batch = events.next_batch(|ev| super::observe(&mut decoder, &mut agg, ev)) => batch?,
                Some(reply) = refresh.recv() => {
                    events.drain_queued(|ev| super::observe(&mut decoder, &mut agg, ev));
                    agg.refresh(Clock::monotonic_now_ns());
                    let _ = reply.send(agg.diagnosis());
                }
                Some(tree) = cgroup_trees.recv() => decoder.install(tree, &mut |d| agg.observe(d)),
                _ = marks.tick() => agg.mark_if_due(Clock::monotonic_now_ns()),
                _ = reconcile.tick(), if pending.is_none() => {
                    agg.begin_listing(Clock::monotonic_now_ns());
                    pending = Some(tokio::task::spawn_blocking(listing::prepare(&mut probes, &decoder)));
                }
                done = async { pending.as_mut().expect("guarded").await }, if pending.is_some() => {
                    pending = None;
                    match done.map_err(|e| e.to_string()).and_then(|r| r) {
                        Ok(listed) => {
                            listing::apply(listed, &mut probes, &mut decoder, Some(&mut agg), "reconcile");
                        }
                        Err(e) => log::warn!("reconcile failed, live gauges may drift until the next: {e}"),
                    }
                }
            }
        }
        drop(events);
        exporter.set_stats(None);
        drop(probes);
        Ok(())
    }
}
