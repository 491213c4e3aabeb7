//! Replays the fuzz corpora (`fuzz/corpus/<target>/`, grown by `cargo xtask
//! fuzz`) and the inputs that once crashed (`fuzz/regressions/<target>/`,
//! kept apart since `cargo fuzz cmin` may drop them) through the same entry
//! points the fuzz targets call: each must be handled without a panic.
use std::path::Path;

use sockprobe::fuzzing;

fn replay(target: &str, entry: fn(&[u8])) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let dir = fuzz.join("corpus").join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .chain(std::fs::read_dir(fuzz.join("regressions").join(target)).into_iter().flatten())
        .flatten()
        .map(|e| e.path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no corpus for {target} in {}", dir.display());
    for input in &inputs {
        let data = std::fs::read(input).unwrap();
        let outcome = std::panic::catch_unwind(|| entry(&data));
        assert!(outcome.is_ok(), "{target}: {} panics", input.display());
    }
}

#[test]
fn btf_corpus() {
    replay("btf", fuzzing::btf);
}

#[test]
fn events_corpus() {
    replay("events", fuzzing::events);
}

#[test]
fn socket_listing_corpus() {
    replay("socket_listing", fuzzing::socket_listing);
}

#[test]
fn config_corpus() {
    replay("config", fuzzing::config);
}

#[test]
fn web_config_corpus() {
    replay("web_config", fuzzing::web_config);
}

#[test]
fn http_request_corpus() {
    replay("http_request", fuzzing::http_request);
}

#[test]
fn http_response_corpus() {
    replay("http_response", fuzzing::http_response);
}

#[test]
fn executable_corpus() {
    replay("executable", fuzzing::executable);
}

#[test]
fn findings_corpus() {
    replay("findings", fuzzing::findings);
}

#[test]
fn kube_objects_corpus() {
    replay("kube_objects", fuzzing::kube_objects);
}
