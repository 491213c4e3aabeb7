//! The subcommands, on top of everything else: each wires the data path
//! (kernel → decode → aggregate → export) for its purpose.
pub mod check;
pub mod run;
pub mod signals;
pub mod trace;

use crate::{
    identity::{sock_diag, sockets::Listing},
    kernel::{Probes, listing},
};

/// Prepares one listing of every process's sockets, to run off the event
/// path: the socket-listing iterator where it attached (every network
/// namespace in one pass), else sock_diag entered into each namespace.
fn listing_job(probes: &mut Probes) -> impl FnOnce() -> Result<Listing, String> + Send + 'static {
    let states = probes.states;
    let iterator = probes.socket_listing();
    move || {
        let entries = match iterator.map_err(|e| e.to_string())? {
            Some(file) => {
                let (entries, dropped) = listing::read_entries(file).map_err(|e| format!("socket listing: {e}"))?;
                if dropped > 0 {
                    log::warn!("socket listing: {dropped} sockets past the first {} not looked at", listing::MAX_ENTRIES);
                }
                entries
            }
            None => sock_diag::list_by_namespace(&states).map_err(|e| format!("socket listing (sock_diag): {e}"))?,
        };
        Ok(Listing::from_entries(&entries, &states))
    }
}
