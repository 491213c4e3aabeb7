//! The benchmark's floor tracer (not part of sockprobe): loads empty `tp_btf`
//! programs (probe-ebpf/src/floor.rs) on the tracepoints sockprobe uses and
//! holds them until SIGINT/SIGTERM. `cargo xtask bench` runs it beside no
//! tracer, sockprobe and bpftrace: the per-event cost of merely running a
//! program there, bpf_stats' own clock reads included.
use aya::{Btf, Ebpf, programs::BtfTracePoint};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floor"));

fn main() -> anyhow::Result<()> {
    let btf = Btf::from_sys_fs()?;
    let mut ebpf = Ebpf::load(OBJECT)?;
    let names: Vec<String> = ebpf.programs().map(|(name, _)| name.to_string()).collect();
    for name in &names {
        let tracepoint = name.strip_prefix("floor_").unwrap_or(name);
        let program: &mut BtfTracePoint = ebpf.program_mut(name).expect("listed").try_into()?;
        // Kernels without a tracepoint (sock_*_length before 6.3) skip it.
        // SOCKPROBE_LOAD_ONLY=1 leaves attaching to the bench's paired phase,
        // as it does for sockprobe.
        let load_only = sockprobe::kernel::DevKnobs::from_env().load_only;
        match program.load(tracepoint, &btf).and_then(|()| if load_only { Ok(()) } else { program.attach().map(drop) })
        {
            Ok(()) => eprintln!("floor: {tracepoint} attached"),
            Err(e) => eprintln!("floor: {tracepoint} skipped: {e}"),
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        anyhow::Ok(())
    })?;
    drop(ebpf);
    Ok(())
}
