//! The subcommands, on top of everything else: each wires the data path
//! (kernel → decode → aggregate → export) for its purpose. [`start`] and
//! [`listing`] are the start-up and the socket listing they share.
pub mod check;
pub mod cluster;
pub mod daemon_client;
pub mod display;
pub mod doctor;
pub mod listing;
pub mod run;
pub mod signals;
pub mod top;
pub mod trace;

use probe_common::Event;

use crate::{
    aggregate::Aggregator,
    decode::Decoder,
    error::Error,
    kernel::{ProbeSettings, Probes},
};

/// Probes attached and the decoder for their events.
struct Started {
    probes: Probes,
    decoder: Decoder,
}

/// Loads and attaches the probes on a blocking thread (start-up parses
/// megabytes of BTF and waits for the verifier), never the async runtime's.
async fn start(settings: ProbeSettings) -> Result<Started, Error> {
    let probes = tokio::task::spawn_blocking(move || Probes::attach(settings))
        .await
        .map_err(|e| Error::Load(format!("attach task: {e}")))??;
    probes.log_status();
    let decoder = Decoder::new(probes.reasons.clone());
    Ok(Started { probes, decoder })
}

/// One event down the daemon's path: decoded (labels resolved), then counted.
fn observe(decoder: &mut Decoder, agg: &mut Aggregator, ev: &Event) {
    decoder.feed(ev, &mut |d| agg.observe(d));
}
