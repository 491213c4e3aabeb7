// Builds probe-ebpf for the BPF target and puts the object in OUT_DIR, from
// where src/kernel/loader.rs embeds it into the one `sockprobe` binary.
fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../probe-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package { name: "probe-ebpf", root_dir: root, ..Default::default() }],
        aya_build::Toolchain::default(),
    )
}
