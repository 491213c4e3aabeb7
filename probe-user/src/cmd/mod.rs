//! The subcommands, on top of everything else: each wires the data path
//! (kernel → decode → aggregate → export) for its purpose.
pub mod check;
pub mod daemon_client;
pub mod doctor;
pub mod run;
pub mod signals;
pub mod top;
pub mod trace;

use crate::{
    aggregate::Aggregator,
    decode::Decoder,
    identity::{Clock, sock_diag, sockets::Listing},
    kernel::{Probes, listing},
};

/// One listing and what it cost.
struct Listed {
    listing: Listing,
    /// Records read (sockets, and listeners' queued connections).
    records: usize,
    took: std::time::Duration,
    /// CPU time of the listing thread, the kernel's pass included.
    cpu: std::time::Duration,
}

/// CPU time this thread has used (user + system).
fn thread_cpu() -> std::time::Duration {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
    let tv = |t: libc::timeval| std::time::Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Prepares one listing of every process's sockets, to run off the event
/// path: the socket-listing iterator where it attached (every network
/// namespace in one pass), else sock_diag entered into each namespace.
fn listing_job(probes: &mut Probes) -> impl FnOnce() -> Result<Listed, String> + Send + 'static {
    let states = probes.states;
    let iterator = probes.socket_listing();
    move || {
        let (started, cpu) = (std::time::Instant::now(), thread_cpu());
        let entries = match iterator.map_err(|e| e.to_string())? {
            Some(file) => {
                let (entries, dropped) = listing::read_entries(file).map_err(|e| format!("socket listing: {e}"))?;
                if dropped > 0 {
                    log::warn!(
                        "socket listing: {dropped} sockets past the first {} not looked at",
                        listing::MAX_ENTRIES
                    );
                }
                entries
            }
            None => sock_diag::list_by_namespace(&states).map_err(|e| format!("socket listing (sock_diag): {e}"))?,
        };
        let listing = Listing::from_entries(&entries, &states);
        Ok(Listed { listing, records: entries.len(), took: started.elapsed(), cpu: thread_cpu().saturating_sub(cpu) })
    }
}

/// A listing applied: gauges corrected, listeners named to the kernel side,
/// directions learnt. Returns (sockets adopted, listeners named).
fn apply(
    agg: &mut Aggregator,
    decoder: &mut Decoder,
    probes: &mut Probes,
    listed: Listed,
    what: &str,
) -> (usize, usize) {
    let r = agg.apply_listing(decoder, &listed.listing, Clock::monotonic_now_ns());
    let seeded = probes.seed_listeners(&listed.listing.listeners).unwrap_or(0);
    log::debug!("{what}: {} records listed in {:?} ({:?} CPU); {r:?}", listed.records, listed.took, listed.cpu);
    decoder.set_ports(listed.listing.ports);
    (r.adopted, seeded)
}
