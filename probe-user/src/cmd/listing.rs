//! Every socket listed and applied: the one place that runs a listing (off
//! the event path) and hands its result to whoever needs it. The sources
//! beneath it are `identity::listing` (the iterator, sock_diag).
//!
//! Applying a listing: the kernel side learns the owners of listeners that
//! predate it (so the connections they accept start with an owner), the
//! decoder learns the listening ports (directions) and labels the holders'
//! containers, and the aggregator, where there is one, reconciles its live
//! sockets with what exists.
use crate::{
    aggregate::Aggregator,
    decode::Decoder,
    identity::{
        Clock, cgroup,
        listing::{Listed, Source},
    },
    kernel::Probes,
};

/// One listing, to run on a blocking thread: the socket-listing iterator
/// where it attached (every network namespace in one pass), else sock_diag
/// entered into each namespace.
/// The cgroup tree is walked there too (the holders' containers).
pub fn prepare(probes: &mut Probes, decoder: &Decoder) -> impl FnOnce() -> Result<Listed, String> + Send + 'static {
    let states = probes.states;
    let source = probes.socket_listing().map(|file| file.map_or(Source::SockDiag, Source::Iterator));
    let cgroup_root = decoder.cgroup_root();
    move || {
        let mut listed = source.map_err(|e| e.to_string())?.list(&states)?;
        listed.cgroups = cgroup_root.as_deref().map(cgroup::walk);
        Ok(listed)
    }
}

/// One listing taken on a blocking thread, never the async runtime's.
pub async fn take(probes: &mut Probes, decoder: &Decoder) -> Result<Listed, String> {
    let job = prepare(probes, decoder);
    tokio::task::spawn_blocking(job).await.map_err(|e| e.to_string())?
}

/// Applies a listing (see the module's doc). Returns (sockets adopted,
/// listeners named).
pub fn apply(
    mut listed: Listed,
    probes: &mut Probes,
    decoder: &mut Decoder,
    agg: Option<&mut Aggregator>,
    what: &str,
) -> (usize, usize) {
    let seeded = probes.seed_listeners(&listed.listing.listeners).unwrap_or(0);
    let mut agg = agg;
    if let Some(tree) = listed.cgroups.take() {
        // Events parked for a walk may go now, before the listing is applied.
        decoder.refresh_cgroups(tree, &mut |d| {
            if let Some(agg) = agg.as_deref_mut() {
                agg.observe(d)
            }
        });
    }
    decoder.label_listing(&mut listed.listing);
    let reconciled = agg.map(|agg| agg.apply_listing(&listed.listing, Clock::monotonic_now_ns()));
    log::debug!(
        "{what}: {} records listed in {:?} ({:?} CPU); {reconciled:?}",
        listed.listing.records,
        listed.listing.took,
        listed.cpu
    );
    let adopted = reconciled.map_or(0, |r| r.adopted);
    decoder.set_ports(std::mem::take(&mut listed.listing.ports));
    (adopted, seeded)
}

/// The first listing of a command that watches: sockets that predate it
/// (a CLOSE_WAIT pile-up from before it came) count from the start.
/// Probes first, then the listing: a socket closing in between is seen by
/// the probes (the aggregator remembers its close until the listing is
/// applied).
pub async fn first(probes: &mut Probes, decoder: &mut Decoder, mut agg: Option<&mut Aggregator>) {
    if let Some(agg) = agg.as_deref_mut() {
        agg.begin_listing(Clock::monotonic_now_ns());
    }
    match take(probes, decoder).await {
        Ok(listed) => {
            let (adopted, seeded) = apply(listed, probes, decoder, agg, "start-up listing");
            log::info!("start-up listing: {adopted} existing sockets, {seeded} listeners named");
        }
        Err(e) => log::warn!("start-up listing failed, existing sockets appear as they change: {e}"),
    }
}
