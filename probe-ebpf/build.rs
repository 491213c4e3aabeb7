// Rebuild the eBPF object when the linker changes (a new LLVM may emit different code).
use which::which;

fn main() {
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
