//! How many bytes one label set costs the daemon, at rest and while a
//! scrape renders: real events through the real decoder and aggregator,
//! every allocation counted. `cargo run --release -p probe-user --example
//! label_set_memory [LABEL_SETS]` (docs/security.md quotes it).
use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicIsize, AtomicUsize, Ordering},
};

use probe_common::{AF_INET, Closer, Event, EventKind};
use sockprobe::{
    aggregate::{Aggregator, Limits, exposition},
    decode::Decoder,
    kernel::layout::ResetReasons,
};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(l.size() as isize, Ordering::Relaxed) + l.size() as isize;
        PEAK.fetch_max(now.max(0) as usize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed).max(0) as usize
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let mut decoder = Decoder::new(ResetReasons::default());
    let mut agg = Aggregator::new(
        Limits { max_series: n, max_series_per_container: n, ..Limits::DEFAULT },
        std::time::Duration::from_secs(600),
        "0",
        "k",
    );
    let before = live();
    // 100 endpoints per process, as the attack: each label set gets
    // an open, a close with exchanges and duration, an unread close.
    for i in 0..n {
        let mut ev: Event = unsafe { std::mem::zeroed() };
        ev.owner.tgid = 1000 + (i / 100) as u32;
        let name = format!("proc{}", i / 100);
        ev.owner.comm[..name.len()].copy_from_slice(name.as_bytes());
        ev.family = AF_INET;
        ev.daddr[..4].copy_from_slice(&[10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        ev.dport = 8080;
        ev.direction = probe_common::Direction::Outbound as u8;
        ev.ts_ns = 1_000_000 + i as u64;
        for (kind, value) in [(EventKind::Close, 5_000_000u64), (EventKind::UnreadClose, 100)] {
            ev.kind = kind as u8;
            ev.value = value;
            ev.exchanges = 3;
            ev.closer = Closer::Local as u8;
            ev.flags = probe_common::event_flags::OPEN_FOLDED;
            if let Some(d) = decoder.decode(&ev) {
                agg.observe(&d);
            }
        }
    }
    agg.refresh(2_000_000_000);
    let at_rest = live() - before;
    let exported = agg.exported();
    // As the daemon renders: streamed (written to a sink chunk by chunk),
    // and gzipped into one shared body.
    PEAK.store(live(), Ordering::Relaxed);
    let base = live();
    let mut sink = Counted(0);
    exposition::write(
        &mut std::io::BufWriter::with_capacity(64 * 1024, &mut sink),
        &exported.cells.snapshot(),
        &exported.registry,
    )
    .unwrap();
    let streamed_peak = PEAK.load(Ordering::Relaxed) - base;
    PEAK.store(live(), Ordering::Relaxed);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    exposition::write(&mut gz, &exported.cells.snapshot(), &exported.registry).unwrap();
    let gzipped = gz.finish().unwrap();
    let gzip_peak = PEAK.load(Ordering::Relaxed) - base;
    println!(
        "{n} label sets: {} bytes each at rest ({} MiB); a render: {} MiB of text, streamed with a peak of {} KiB \
         above rest, gzipped to {} MiB with a peak of {} MiB",
        at_rest / n,
        at_rest >> 20,
        sink.0 >> 20,
        streamed_peak >> 10,
        gzipped.len() >> 20,
        gzip_peak >> 20,
    );
}

struct Counted(usize);

impl std::io::Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
