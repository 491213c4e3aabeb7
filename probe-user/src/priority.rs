//! The event thread first. Every other thread (HTTP renders, the listing's
//! reader, cgroup walks, language lookups) runs at a lower priority: when
//! they compete for the daemon's CPU (one CPU in the DaemonSet) the
//! scheduler gives the event thread ~9 times the share of each of them (CFS
//! weights 1024 against 110); when the CPU is idle nothing changes. Raising
//! one's own nice value needs no privilege. It does not help against other
//! cgroups (a throttled or starved container stalls every thread in it):
//! the ring buffer absorbs those stalls (docs/operations.md, sizing).

/// The nice value of every thread but the event thread.
pub const BACKGROUND_NICE: i32 = 10;

/// A named thread that runs `f` behind the event thread.
pub fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<T>> {
    std::thread::Builder::new().name(name.into()).spawn(move || {
        background();
        f()
    })
}

/// Moves the calling thread (only it: Linux keeps a nice value per thread)
/// behind the event thread. Failure (a filter refusing setpriority) is
/// harmless: the thread keeps its priority.
pub fn background() {
    // SAFETY: plain syscalls on the calling thread's own id.
    let ok = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, BACKGROUND_NICE) } == 0;
    if !ok {
        log::debug!("cannot lower a thread's priority: {}", std::io::Error::last_os_error());
    }
}
