//! Which runtime a process runs, told from its executable: Go binaries carry
//! a `.go.buildinfo` section (with the Go version, Go 1.18+); Python, Java,
//! Node, Ruby, PHP and .NET by their runtime binary's name.
//!
//! Reads `/proc/PID/exe` (needs ptrace-read access: root, or the process's
//! own user) lazily and bounded: the ELF and section headers and a few
//! hundred bytes of one section, never the whole file. A process chooses its
//! executable, and it may sit on a slow filesystem, so callers run this off
//! the event path with a deadline.
use std::{
    collections::HashMap,
    fs::File,
    path::Path,
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use object::{Object, ObjectSection, read::ReadCache};

/// Languages remembered (by pid), and for how long (pids are reused).
const CACHED: usize = 4096;
const TTL: Duration = Duration::from_secs(600);
/// Pids waiting for the resolver; past it, new ones are dropped (and told
/// at request time, if still alive).
const QUEUED: usize = 1024;

type Cache = HashMap<u32, (Instant, Option<Language>)>;

/// Languages of the processes the daemon has seen, told by a thread of its
/// own as soon as a pid shows up, so short-lived processes are caught alive
/// and a stalled executable stalls only that thread.
#[derive(Clone)]
pub struct Languages {
    cache: Arc<Mutex<Cache>>,
    queue: mpsc::SyncSender<u32>,
}

impl Languages {
    pub fn start() -> Languages {
        let cache: Arc<Mutex<Cache>> = Arc::default();
        let (queue, pids) = mpsc::sync_channel::<u32>(QUEUED);
        let worker = cache.clone();
        let spawned = std::thread::Builder::new().name("sockprobe-lang".into()).spawn(move || {
            for pid in pids {
                if lookup(&worker, pid).is_none() {
                    let l = detect(pid);
                    store(&worker, pid, l);
                }
            }
        });
        if let Err(e) = spawned {
            log::warn!("cannot start the language resolver, languages are told on request only: {e}");
        }
        Languages { cache, queue }
    }

    /// A pid was seen: tell its language soon (never blocks).
    pub fn notice(&self, pid: u32) {
        if lookup(&self.cache, pid).is_none() {
            let _ = self.queue.try_send(pid);
        }
    }

    /// The language of `pid` if told already (`Some(None)`: looked, unknown).
    pub fn get(&self, pid: u32) -> Option<Option<Language>> {
        lookup(&self.cache, pid)
    }

    /// Tells `pid`'s language now (blocking: run it off async threads).
    pub fn resolve(&self, pid: u32) -> Option<Language> {
        if let Some(l) = lookup(&self.cache, pid) {
            return l;
        }
        let l = detect(pid);
        store(&self.cache, pid, l.clone());
        l
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
fn go_buildinfo(file: File) -> Option<Language> {
    go_buildinfo_in(&ReadCache::new(file))
}

/// [`go_buildinfo`] over any readable object (a file, or bytes when fuzzed).
pub fn go_buildinfo_in<'a, R: object::ReadRef<'a>>(data: R) -> Option<Language> {
    const MAGIC: &[u8] = b"\xff Go buildinf:";
    let elf = object::File::parse(data).ok()?;
    let section = elf.section_by_name(".go.buildinfo")?;
    // The header, the version's length and the version: never more.
    let len = section.size().min(32 + 10 + 64);
    let head = section.data_range(section.address(), len).ok().flatten()?;
    if !head.starts_with(MAGIC) {
        return None;
    }
    Some(Language { name: "go", version: inline_version(head) })
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

    /// This test binary is not Go; a Go binary is checked by the privileged
    /// diagnosis tests (tests/diagnosis.rs).
    #[test]
    fn own_process_is_not_go() {
        assert_eq!(detect(std::process::id()), None);
    }
}
