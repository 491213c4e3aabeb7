#![no_main]
// See probe-user/src/fuzzing.rs: the same entry point replays the corpus in `cargo xtask test`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sockprobe::fuzzing::kube_objects(data));
