//! Which runtime a process runs, told from its executable: Go binaries carry
//! a `.go.buildinfo` section (with the Go version, Go 1.18+); Python, Java,
//! Node, Ruby, PHP and .NET by their runtime binary's name.
//!
//! Reads `/proc/PID/exe` (needs ptrace-read access: root, or the process's
//! own user) bounded: the ELF header, the section headers and their names
//! (each refused past [`MAX_READ`] bytes), and at most 106 bytes of one
//! section; never a symbol table, never the whole file. A process chooses
//! its executable, and it may sit on a filesystem that never answers, so
//! one worker thread reads them, with a deadline per file: a worker stuck
//! past it is abandoned (it exits when its read returns) and another takes
//! the queue, at most [`MAX_STRANDED`] at a time. Requests only wait for
//! the cache, with a deadline; they never read an executable themselves.
use std::{
    collections::{HashMap, VecDeque},
    fs::File,
    path::Path,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use object::{
    Endianness, ReadRef,
    elf::{FileHeader32, FileHeader64},
    read::{
        ReadCache, ReadCacheOps,
        elf::{FileHeader, SectionHeader},
    },
};

/// Languages remembered (by pid), and for how long (pids are reused).
const CACHED: usize = 4096;
const TTL: Duration = Duration::from_secs(600);
/// Pids waiting for the worker; past it, new ones are dropped (and noticed
/// again at their next request).
const QUEUED: usize = 1024;
/// One executable's reading, after which its worker is abandoned.
const FILE_DEADLINE: Duration = Duration::from_secs(2);
/// Abandoned workers still stuck at once; past it, no new worker until one
/// returns (languages then wait, and show as unknown).
const MAX_STRANDED: u64 = 4;
/// Longest single read of an executable (the section headers of a
/// 4096-section file; name tables beyond it are refused).
pub const MAX_READ: u64 = 256 * 1024;

type Cache = HashMap<u32, (Instant, Option<Language>)>;

struct Shared {
    /// Tells a pid's language: [`detect`] (tests slow it down).
    detect: fn(u32) -> Option<Language>,
    cache: Mutex<Cache>,
    queue: Mutex<VecDeque<u32>>,
    wake: Condvar,
    /// The worker generation allowed to take from the queue.
    generation: AtomicU64,
    /// When the current worker began its file (0: idle), as ns since `epoch`.
    busy_since: AtomicU64,
    stranded: AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.epoch.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1
    }
}

/// Languages of the processes the daemon has seen, told by a worker of its
/// own as soon as a pid shows up, so short-lived processes are caught alive
/// and a stalled executable stalls only that worker.
#[derive(Clone)]
pub struct Languages {
    shared: Arc<Shared>,
}

impl Languages {
    pub fn start() -> Languages {
        Languages::start_with(detect)
    }

    fn start_with(detect: fn(u32) -> Option<Language>) -> Languages {
        let shared = Arc::new(Shared {
            detect,
            cache: Mutex::default(),
            queue: Mutex::default(),
            wake: Condvar::new(),
            generation: AtomicU64::new(0),
            busy_since: AtomicU64::new(0),
            stranded: AtomicU64::new(0),
            epoch: std::sync::OnceLock::new(),
        });
        shared.now_ns();
        spawn_worker(&shared, 0);
        let watch = shared.clone();
        let spawned = crate::priority::spawn("sockprobe-langwd", move || watchdog(&watch));
        if let Err(e) = spawned {
            log::warn!("cannot start the language resolver's watchdog, a stalled executable stalls it: {e}");
        }
        Languages { shared }
    }

    /// A pid was seen: tell its language soon (never blocks).
    pub fn notice(&self, pid: u32) {
        if lookup(&self.shared.cache, pid).is_some() {
            return;
        }
        let mut q = self.shared.queue.lock().unwrap();
        if q.len() < QUEUED && !q.contains(&pid) {
            q.push_back(pid);
            self.shared.wake.notify_one();
        }
    }

    /// The language of `pid` if told already (`Some(None)`: looked, unknown).
    pub fn get(&self, pid: u32) -> Option<Option<Language>> {
        lookup(&self.shared.cache, pid)
    }

    /// Asks for every pid of `pids` and waits until all are told, or
    /// `deadline` passes (those not told show as unknown). No thread is
    /// spawned or blocked for it: the wait is async.
    pub async fn told(&self, pids: &[u32], deadline: Duration) {
        pids.iter().for_each(|p| self.notice(*p));
        let until = Instant::now() + deadline;
        while pids.iter().any(|p| self.get(*p).is_none()) && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn spawn_worker(shared: &Arc<Shared>, generation: u64) {
    let own = shared.clone();
    let spawned = crate::priority::spawn("sockprobe-lang", move || worker(&own, generation));
    if let Err(e) = spawned {
        log::warn!("cannot start a language resolver: {e}");
    }
}

fn worker(shared: &Shared, generation: u64) {
    loop {
        let pid = {
            let mut q = shared.queue.lock().unwrap();
            loop {
                if shared.generation.load(Ordering::SeqCst) != generation {
                    return;
                }
                if let Some(pid) = q.pop_front() {
                    break pid;
                }
                q = shared.wake.wait_timeout(q, Duration::from_secs(1)).unwrap().0;
            }
        };
        if lookup(&shared.cache, pid).is_some() {
            continue;
        }
        shared.busy_since.store(shared.now_ns(), Ordering::SeqCst);
        let l = (shared.detect)(pid);
        store(&shared.cache, pid, l);
        if shared.generation.load(Ordering::SeqCst) != generation {
            // Abandoned while reading: the watchdog counted it stranded.
            shared.stranded.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        shared.busy_since.store(0, Ordering::SeqCst);
    }
}

/// Abandons a worker stuck on one file past [`FILE_DEADLINE`]: its pid is
/// told as unknown, and a new worker takes the queue.
fn watchdog(shared: &Arc<Shared>) {
    loop {
        std::thread::sleep(FILE_DEADLINE / 4);
        let since = shared.busy_since.load(Ordering::SeqCst);
        if since == 0 || shared.now_ns().saturating_sub(since) < FILE_DEADLINE.as_nanos() as u64 {
            continue;
        }
        if shared.stranded.load(Ordering::SeqCst) >= MAX_STRANDED {
            continue;
        }
        shared.stranded.fetch_add(1, Ordering::SeqCst);
        let generation = shared.generation.fetch_add(1, Ordering::SeqCst) + 1;
        shared.busy_since.store(0, Ordering::SeqCst);
        log::warn!("an executable took over {FILE_DEADLINE:?} to read (a stalled filesystem?): left to its thread");
        spawn_worker(shared, generation);
        shared.wake.notify_all();
    }
}

fn lookup(cache: &Mutex<Cache>, pid: u32) -> Option<Option<Language>> {
    cache.lock().unwrap().get(&pid).filter(|(at, _)| at.elapsed() < TTL).map(|(_, l)| l.clone())
}

fn store(cache: &Mutex<Cache>, pid: u32, l: Option<Language>) {
    let mut c = cache.lock().unwrap();
    if c.len() >= CACHED {
        c.retain(|_, (at, _)| at.elapsed() < TTL);
        if c.len() >= CACHED {
            c.clear();
        }
    }
    c.insert(pid, (Instant::now(), l));
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Language {
    /// `go`, `python`, `java`, `node`, `ruby`, `php`, `dotnet`.
    pub name: &'static str,
    pub version: Option<String>,
}

/// Interpreters and VMs by the file name of their binary.
fn by_name(file_name: &str) -> Option<&'static str> {
    let n = file_name.to_ascii_lowercase();
    let starts = |p: &str| n.starts_with(p);
    Some(if starts("python") || starts("pypy") {
        "python"
    } else if n == "java" || starts("java") {
        "java"
    } else if n == "node" || n == "nodejs" || n == "bun" || n == "deno" {
        "node"
    } else if starts("ruby") {
        "ruby"
    } else if starts("php") {
        "php"
    } else if n == "dotnet" {
        "dotnet"
    } else {
        return None;
    })
}

/// The language of process `pid`, if its executable tells.
pub fn detect(pid: u32) -> Option<Language> {
    let exe = Path::new("/proc").join(pid.to_string()).join("exe");
    let target = std::fs::read_link(&exe).ok()?;
    let name = target.file_name()?.to_string_lossy().trim_end_matches(" (deleted)").to_string();
    if let Some(name) = by_name(&name) {
        return Some(Language { name, version: None });
    }
    // The link opens the file the process runs, even if it was replaced.
    go_buildinfo(File::open(&exe).ok()?)
}

/// `.go.buildinfo`: a 32-byte header ("\xff Go buildinf:", pointer size,
/// flags); with flag 2 (Go 1.18+) the version follows inline as a uvarint
/// length and the bytes.
fn go_buildinfo(file: impl ReadCacheOps) -> Option<Language> {
    go_buildinfo_in(&Bounded(ReadCache::new(file)))
}

/// A file read through `object` with every single read capped at
/// [`MAX_READ`] bytes: a header claiming a 4 GB name table is refused, not
/// read.
struct Bounded<R: ReadCacheOps>(ReadCache<R>);

impl<'a, R: ReadCacheOps> ReadRef<'a> for &'a Bounded<R> {
    fn len(self) -> Result<u64, ()> {
        self.0.len()
    }

    fn read_bytes_at(self, offset: u64, size: u64) -> Result<&'a [u8], ()> {
        if size > MAX_READ {
            return Err(());
        }
        self.0.read_bytes_at(offset, size)
    }

    fn read_bytes_at_until(self, range: std::ops::Range<u64>, delimiter: u8) -> Result<&'a [u8], ()> {
        let end = range.end.min(range.start.saturating_add(MAX_READ));
        self.0.read_bytes_at_until(range.start..end, delimiter)
    }
}

/// [`go_buildinfo`] over any readable object (a file, or bytes when fuzzed).
/// Only the ELF header, the section headers and the section names are
/// parsed (object's low-level ELF reader: no symbol table is touched).
pub fn go_buildinfo_in<'a, R: ReadRef<'a>>(data: R) -> Option<Language> {
    let head = match data.read_bytes_at(0, 5).ok()? {
        [0x7f, b'E', b'L', b'F', 2] => buildinfo_head::<FileHeader64<Endianness>, R>(data)?,
        [0x7f, b'E', b'L', b'F', 1] => buildinfo_head::<FileHeader32<Endianness>, R>(data)?,
        _ => return None,
    };
    const MAGIC: &[u8] = b"\xff Go buildinf:";
    if !head.starts_with(MAGIC) {
        return None;
    }
    Some(Language { name: "go", version: inline_version(head) })
}

/// The first bytes of `.go.buildinfo`: the header, the version's length and
/// the version, never more.
fn buildinfo_head<'a, H: FileHeader<Endian = Endianness>, R: ReadRef<'a>>(data: R) -> Option<&'a [u8]> {
    let header = H::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let sections = header.sections(endian, data).ok()?;
    let (_, section) = sections.section_by_name(endian, b".go.buildinfo")?;
    let (offset, size) = section.file_range(endian)?;
    data.read_bytes_at(offset, size.min(32 + 10 + 64)).ok()
}

fn inline_version(head: &[u8]) -> Option<String> {
    if head.len() <= 32 || head[15] & 2 == 0 {
        return None;
    }
    let (mut len, mut shift, mut i) = (0usize, 0, 32);
    loop {
        let b = *head.get(i)?;
        len |= ((b & 0x7f) as usize) << shift;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 28 {
            return None;
        }
    }
    let v = head.get(i..i.checked_add(len)?)?;
    let v = std::str::from_utf8(v).ok()?;
    (v.starts_with("go") && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic())).then(|| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_by_name() {
        assert_eq!(by_name("python3.11"), Some("python"));
        assert_eq!(by_name("java"), Some("java"));
        assert_eq!(by_name("node"), Some("node"));
        assert_eq!(by_name("curl"), None);
    }

    #[test]
    fn buildinfo_versions() {
        let mut head = b"\xff Go buildinf:\x08\x02".to_vec();
        head.resize(32, 0);
        head.push(8);
        head.extend_from_slice(b"go1.22.3");
        assert_eq!(inline_version(&head).as_deref(), Some("go1.22.3"));
        // Lengths past the data, overlong varints, non-versions: nothing.
        let mut long = head[..32].to_vec();
        long.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(inline_version(&long), None);
        let mut junk = head[..32].to_vec();
        junk.extend_from_slice(&[3, b'a', b'b', b'c']);
        assert_eq!(inline_version(&junk), None);
    }

    /// A real ELF (/bin/true) with a `.go.buildinfo` section added by objcopy
    /// (the fuzz corpus's seed), and the same without the version.
    #[test]
    fn buildinfo_in_an_elf() {
        let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/executable/");
        let new = std::fs::read(format!("{corpus}true-buildinfo-new")).unwrap();
        assert_eq!(go_buildinfo_in(new.as_slice()), Some(Language { name: "go", version: Some("go1.22.3".into()) }));
        let old = std::fs::read(format!("{corpus}true-buildinfo-old")).unwrap();
        assert_eq!(go_buildinfo_in(old.as_slice()), Some(Language { name: "go", version: None }));
        let plain = std::fs::read(format!("{corpus}truncated-elf")).unwrap();
        assert_eq!(go_buildinfo_in(plain.as_slice()), None);
    }

    /// An executable whose headers claim a 3 GB symbol table and a 3 GB
    /// section-name table (a sparse 4 GB file): a few KB read, the version
    /// still found. (object's `File::parse`, used before, reads symbol
    /// tables whole: 3 GB here.)
    #[test]
    fn a_hostile_elf_is_not_read_whole() {
        use std::{
            cell::Cell,
            io::{Read, Seek, SeekFrom},
            rc::Rc,
        };
        struct Counting(File, Rc<Cell<u64>>);
        impl Read for Counting {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = Read::read(&mut self.0, buf)?;
                self.1.set(self.1.get() + n as u64);
                Ok(n)
            }
        }
        impl Seek for Counting {
            fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
                Seek::seek(&mut self.0, to)
            }
        }
        let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/executable/");
        let mut bytes = std::fs::read(format!("{corpus}true-buildinfo-new")).unwrap();
        let path = std::env::temp_dir().join(format!("sockprobe-hostile-elf-{}", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        let read = Rc::new(Cell::new(0));
        let open = |read: &Rc<Cell<u64>>| Counting(File::open(&path).unwrap(), read.clone());
        assert_eq!(go_buildinfo(open(&read)).map(|l| l.version), Some(Some("go1.22.3".into())));
        assert!(read.get() < 64 * 1024, "{} bytes read for a well-formed file", read.get());
        // The name table's and the dynamic symbol table's sh_size (at 32 in
        // an ELF64 section header) to 3 GB.
        let u = |b: &[u8], at: usize, n: usize| b[at..at + n].iter().rev().fold(0u64, |a, b| a << 8 | *b as u64);
        let (shoff, shentsize) = (u(&bytes, 0x28, 8) as usize, u(&bytes, 0x3a, 2) as usize);
        let (shnum, shstrndx) = (u(&bytes, 0x3c, 2) as usize, u(&bytes, 0x3e, 2) as usize);
        let mut patched = 0;
        for i in 0..shnum {
            let at = shoff + i * shentsize;
            if i == shstrndx || u(&bytes, at + 4, 4) == 11 {
                bytes[at + 32..at + 40].copy_from_slice(&(3u64 << 30).to_le_bytes());
                patched += 1;
            }
        }
        assert_eq!(patched, 2, "a name table and a .dynsym to bloat");
        std::fs::write(&path, &bytes).unwrap();
        File::options().write(true).open(&path).unwrap().set_len(4 << 30).unwrap();
        let read = Rc::new(Cell::new(0));
        assert_eq!(go_buildinfo(open(&read)).map(|l| l.version), Some(Some("go1.22.3".into())));
        assert!(read.get() < 2 * MAX_READ, "{} bytes read for 3 GB tables", read.get());
        std::fs::remove_file(&path).unwrap();
    }

    /// A worker stuck on one executable (a stalled filesystem) is abandoned
    /// after the deadline: the pids behind it are told by a new worker.
    #[tokio::test]
    async fn a_stalled_executable_stalls_only_its_own_pid() {
        fn slow(pid: u32) -> Option<Language> {
            if pid == 1 {
                std::thread::sleep(Duration::from_secs(30));
            }
            Some(Language { name: "go", version: None })
        }
        let l = Languages::start_with(slow);
        l.notice(1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        l.told(&[2], FILE_DEADLINE * 4).await;
        assert!(l.get(2).is_some(), "pid 2 waited behind the stalled one");
        assert!(l.get(1).is_none(), "the stalled one is still being read");
    }

    /// This test binary is not Go; a Go binary is checked by the privileged
    /// diagnosis tests (tests/diagnosis.rs).
    #[test]
    fn own_process_is_not_go() {
        assert_eq!(detect(std::process::id()), None);
    }
}
