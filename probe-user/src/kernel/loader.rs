//! Loads the embedded eBPF object and attaches, per feature of the probe
//! table ([`super::probe_table`]), the first candidate this kernel accepts.
use aya::{
    Btf as AyaBtf, Ebpf, EbpfLoader,
    maps::{HashMap as AyaHashMap, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, FEntry, FExit, Iter, KProbe, Program, ProgramError},
};
use probe_common::{
    COUNTERS_MAP, DEFAULT_MAX_SOCKETS, DEFAULT_RING_BUFFER_BYTES, EVENTS_MAP, KernelLayout, LAYOUT_GLOBAL,
    LISTENERS_MAP, ListenerKey, NO_OFFSET, Owner, SOCKET_ITER_PROGRAM, SOCKETS_MAP, STATE_STORE_GLOBAL,
    STATE_TABLE_MAP, StateStore, TABLE_MASK_GLOBAL, TRACE_ALL_GLOBAL, TURNS_AT_SENDS_GLOBAL, TcpStates, table_slots,
};

use super::{
    btf::Btf,
    knobs::DevKnobs,
    layout, privileges,
    probe_table::{Candidate, Feature, Hook, PROBE_TABLE, TurnSource},
    stats::KernelStats,
};
use crate::error::Error;

/// The eBPF object, built by build.rs and embedded.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe-ebpf"));

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Attached,
    Unavailable(String),
    /// Not used: an earlier candidate already covers the feature (with
    /// `try_all`: it loaded and attached here, then was detached).
    Standby,
}

#[derive(Clone, Debug)]
pub struct ProbeStatus {
    pub candidate: Candidate,
    pub outcome: Outcome,
}

/// How the kernel side is set up: map sizes, where per-socket state lives,
/// and the development knobs.
#[derive(Clone, Debug)]
pub struct ProbeSettings {
    pub max_sockets: u32,
    pub ring_buffer_bytes: u32,
    /// Preferred store; the cookie table and socket-local storage fall back
    /// to the LRU hash where they cannot work (kprobes; kernels before 5.11
    /// for socket storage).
    pub state_store: StateStore,
    /// Every event, as `sockprobe trace` shows them (`TRACE_ALL_GLOBAL`);
    /// off for the daemon, which needs one record per ordinary connection.
    pub trace_all: bool,
    pub knobs: DevKnobs,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        ProbeSettings {
            max_sockets: DEFAULT_MAX_SOCKETS,
            ring_buffer_bytes: DEFAULT_RING_BUFFER_BYTES,
            state_store: StateStore::default(),
            trace_all: false,
            knobs: DevKnobs::default(),
        }
    }
}

/// The loaded and attached kernel side. Dropping it detaches everything.
pub struct Probes {
    ebpf: Ebpf,
    pub status: Vec<ProbeStatus>,
    pub reasons: layout::ResetReasons,
    /// TCP states as this kernel numbers them.
    pub states: TcpStates,
    pub store: StoreChoice,
    /// Where exchanges are counted in this run.
    pub turns: TurnSource,
    /// Loaded for `sockprobe trace` (trace-only features wanted).
    trace_all: bool,
    /// Loaded without attaching the BTF-typed programs (`SOCKPROBE_LOAD_ONLY`).
    load_only: bool,
}

/// Where per-socket state lives in this run, and why.
#[derive(Clone, Debug)]
pub struct StoreChoice {
    pub store: StateStore,
    /// The store asked for, and why it was not used (then `store` is the LRU hash).
    pub refused: Option<(StateStore, String)>,
}

impl StoreChoice {
    pub fn describe(&self) -> String {
        let what = match self.store {
            StateStore::CookieTable => "cookie table (BPF_MAP_TYPE_ARRAY indexed by socket cookie)",
            StateStore::SocketLocal => "socket-local storage (BPF_MAP_TYPE_SK_STORAGE)",
            StateStore::LruHash => "LRU hash",
        };
        match &self.refused {
            None => format!("{what} (--probe.state-store={})", self.store.name()),
            Some((asked, why)) => format!("{what} (--probe.state-store={} unavailable: {why})", asked.name()),
        }
    }
}

struct LoadContext<'a> {
    btf: &'a Btf,
    aya_btf: &'a AyaBtf,
    layout: &'a KernelLayout,
    sizes: &'a ProbeSettings,
    turns: TurnSource,
    try_all: bool,
}

/// One attempt: the object loaded with one state store and its probes attached.
struct Loaded {
    ebpf: Ebpf,
    status: Vec<ProbeStatus>,
}

impl Loaded {
    /// The kprobe hooks attached, if any.
    fn kprobe_in_use(&self) -> Option<String> {
        let hooks: Vec<String> = self
            .status
            .iter()
            .filter(|s| s.outcome == Outcome::Attached)
            .flat_map(|s| s.candidate.programs.iter())
            .filter(|(_, h)| matches!(h, Hook::KProbe(_) | Hook::KRetProbe(_)))
            .map(|(_, h)| h.to_string())
            .collect();
        (!hooks.is_empty()).then(|| hooks.join(", "))
    }

    fn into_probes(
        self,
        reasons: layout::ResetReasons,
        states: TcpStates,
        store: StoreChoice,
        turns: TurnSource,
        sizes: &ProbeSettings,
    ) -> Probes {
        let (trace_all, load_only) = (sizes.trace_all, sizes.knobs.load_only);
        Probes { ebpf: self.ebpf, status: self.status, reasons, states, store, turns, trace_all, load_only }
    }
}

impl LoadContext<'_> {
    fn load(&self, store: StateStore) -> Result<Loaded, Error> {
        if store == StateStore::CookieTable && self.layout.skc_cookie.offset == NO_OFFSET {
            return Err(Error::Load("this kernel's BTF has no sock_common.skc_cookie".into()));
        }
        // Both maps are preallocated: the one not used is kept to one entry.
        let max_sockets = if store == StateStore::LruHash { self.sizes.max_sockets } else { 1 };
        let table_slots = if store == StateStore::CookieTable { table_slots(self.sizes.max_sockets) } else { 1 };
        let table_mask = table_slots - 1;
        let store_value = store as u32;
        let trace_all = self.sizes.trace_all as u32;
        let turns_at_sends = (self.turns == TurnSource::Sends) as u32;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(self.aya_btf))
            .override_global(LAYOUT_GLOBAL, self.layout, true)
            .override_global(STATE_STORE_GLOBAL, &store_value, true)
            .override_global(TRACE_ALL_GLOBAL, &trace_all, true)
            .override_global(TURNS_AT_SENDS_GLOBAL, &turns_at_sends, true)
            .override_global(TABLE_MASK_GLOBAL, &table_mask, true)
            .map_max_entries(SOCKETS_MAP, max_sockets)
            .map_max_entries(STATE_TABLE_MAP, table_slots)
            .map_max_entries(EVENTS_MAP, self.sizes.ring_buffer_bytes.next_power_of_two().max(4096))
            .load(OBJECT)
            .map_err(|e| Error::Load(with_policy_hint(one_line(&e))))?;

        let (btf, aya_btf) = (self.btf, self.aya_btf);
        let mut status = Vec::new();
        for feature in Feature::ALL {
            // A feature only `trace` needs is, for the daemon, covered by
            // nothing: its candidates stand by (and `check` still tries them).
            let mut covered = feature.trace_only(self.turns) && !self.sizes.trace_all;
            for candidate in PROBE_TABLE.iter().filter(|c| c.feature == feature) {
                let outcome = if covered {
                    if self.try_all && !shares_programs_with_attached(&status, candidate) {
                        match try_attach(&mut ebpf, candidate, btf, aya_btf, &self.sizes.knobs) {
                            Ok(()) => {
                                for (name, _) in candidate.programs {
                                    unload(&mut ebpf, name);
                                }
                                Outcome::Standby
                            }
                            Err(reason) => Outcome::Unavailable(reason),
                        }
                    } else if self.try_all {
                        // Shares a program with the attached candidate, so it
                        // cannot be loaded beside it: at least its BTF needs.
                        match candidate.needs.iter().try_for_each(|n| n.check(btf)) {
                            Ok(()) => Outcome::Standby,
                            Err(reason) => Outcome::Unavailable(reason),
                        }
                    } else {
                        Outcome::Standby
                    }
                } else {
                    match try_attach(&mut ebpf, candidate, btf, aya_btf, &self.sizes.knobs) {
                        Ok(()) => {
                            covered = true;
                            Outcome::Attached
                        }
                        Err(reason) => Outcome::Unavailable(reason),
                    }
                };
                status.push(ProbeStatus { candidate: *candidate, outcome });
            }
            if !covered && feature.loss(self.turns).is_none() {
                let why = status
                    .iter()
                    .filter(|s| s.candidate.feature == feature)
                    .filter_map(|s| match &s.outcome {
                        Outcome::Unavailable(r) => Some(format!("{}: {r}", s.candidate.hooks())),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(Error::RequiredProbe(format!("{} ({why})", feature.name())));
            }
        }
        Ok(Loaded { ebpf, status })
    }
}

impl Probes {
    /// Loads the object and attaches, per feature, the first candidate this
    /// kernel accepts. Fails only when no candidate covers a required feature.
    pub fn attach(sizes: ProbeSettings) -> Result<Probes, Error> {
        Self::attach_with(sizes, false)
    }

    /// As [`Probes::attach`]; with `try_all`, also loads every fallback once
    /// (then detaches it) so `sockprobe check` can say whether it would work.
    ///
    /// A `state_store` other than the LRU hash is tried first; when a kprobe
    /// had to stand in (kprobes can neither ask for cookies nor use socket
    /// storage) or it did not load, everything is loaded again with the LRU
    /// hash, which every hook can share.
    pub fn attach_with(sizes: ProbeSettings, try_all: bool) -> Result<Probes, Error> {
        privileges::require()?;
        let btf_path = sizes.knobs.btf_path();
        let btf = Btf::from_file(&btf_path)?;
        let kernel_layout = layout::resolve(&btf)?;
        let reasons = layout::ResetReasons::from_btf(&btf);
        let aya_btf = AyaBtf::parse_file(&btf_path, Default::default()).map_err(|e| Error::Btf(one_line(&e)))?;
        let turns = TurnSource::for_kernel(&btf, sizes.knobs.turns);
        let ctx = LoadContext { btf: &btf, aya_btf: &aya_btf, layout: &kernel_layout, sizes: &sizes, turns, try_all };

        let asked = sizes.state_store;
        let refused = if asked == StateStore::LruHash {
            None
        } else {
            let why = match ctx.load(asked) {
                Ok(loaded) => match loaded.kprobe_in_use() {
                    None => {
                        let store = StoreChoice { store: asked, refused: None };
                        return Ok(loaded.into_probes(reasons, kernel_layout.states, store, turns, &sizes));
                    }
                    Some(hooks) => format!("{hooks} stand in and cannot use it"),
                },
                Err(e) => e.to_string(),
            };
            log::warn!("state store {} unavailable, using the LRU hash: {why}", asked.name());
            Some((asked, why))
        };
        let loaded = ctx.load(StateStore::LruHash)?;
        let store = StoreChoice { store: StateStore::LruHash, refused };
        Ok(loaded.into_probes(reasons, kernel_layout.states, store, turns, &sizes))
    }

    pub fn attached(&self, feature: Feature) -> bool {
        self.status.iter().any(|s| s.candidate.feature == feature && s.outcome == Outcome::Attached)
    }

    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, Error> {
        let map = self.ebpf.take_map(EVENTS_MAP).ok_or_else(|| Error::Load("no EVENTS map".into()))?;
        RingBuf::try_from(map).map_err(|e| Error::Load(e.to_string()))
    }

    /// Tells the kernel side who owns listening sockets that predate it, so
    /// the connections they accept start with an owner. Ports that a
    /// `listen()` seen since attaching already named are left alone.
    /// Returns how many were added.
    pub fn seed_listeners<'a>(
        &mut self,
        listeners: impl IntoIterator<Item = &'a (ListenerKey, Owner)>,
    ) -> Result<usize, Error> {
        let map = self.ebpf.map_mut(LISTENERS_MAP).ok_or_else(|| Error::Load("no LISTENERS map".into()))?;
        let mut map: AyaHashMap<_, ListenerKey, Owner> =
            AyaHashMap::try_from(map).map_err(|e| Error::Load(e.to_string()))?;
        const BPF_NOEXIST: u64 = 1;
        let mut added = 0;
        for (key, owner) in listeners {
            if map.insert(key, owner, BPF_NOEXIST).is_ok() {
                added += 1;
            }
        }
        Ok(added)
    }

    /// A fresh run of the socket-listing iterator, to read (off the event
    /// path: reading it is what runs it); `None` where it did not attach.
    pub fn socket_listing(&mut self) -> Result<Option<std::fs::File>, Error> {
        if !self.attached(Feature::SocketListing) {
            return Ok(None);
        }
        let program = self.ebpf.program_mut(SOCKET_ITER_PROGRAM).ok_or_else(|| Error::Load("no iterator".into()))?;
        let iter: &mut Iter = program.try_into().map_err(|e: ProgramError| Error::Load(describe(&e)))?;
        let link = iter.attach().map_err(|e| Error::Load(describe(&e)))?;
        let link = iter.take_link(link).map_err(|e| Error::Load(describe(&e)))?;
        link.into_file().map(Some).map_err(|e| Error::Load(one_line(&e)))
    }

    /// Hands out the kernel-side state userspace reports on (counters, map size).
    pub fn take_stats(&mut self) -> Result<KernelStats, Error> {
        let sockets = self.ebpf.take_map(SOCKETS_MAP).ok_or_else(|| Error::Load("no SOCKETS map".into()))?;
        let counters = self.ebpf.take_map(COUNTERS_MAP).ok_or_else(|| Error::Load("no COUNTERS map".into()))?;
        let sockets = AyaHashMap::try_from(sockets).map_err(|e| Error::Load(e.to_string()))?;
        let counters = PerCpuArray::try_from(counters).map_err(|e| Error::Load(e.to_string()))?;
        Ok(KernelStats::new((self.store.store == StateStore::LruHash).then_some(sockets), counters))
    }

    /// Logs, at the start of `run` and `trace`, which probes attached and what is lost.
    pub fn log_status(&self) {
        for s in &self.status {
            match &s.outcome {
                Outcome::Attached => {
                    log::info!("probe {} attached ({})", s.candidate.hooks(), s.candidate.feature.name())
                }
                Outcome::Unavailable(why) => log::debug!("probe {} unavailable: {why}", s.candidate.hooks()),
                Outcome::Standby => {}
            }
        }
        if self.load_only {
            log::warn!(
                "SOCKPROBE_LOAD_ONLY=1: BTF-typed programs loaded but not attached; nothing is traced until a benchmark attaches them"
            );
        }
        // A trace-only feature is not missed by the daemon.
        log::info!("exchanges counted at {}", self.turns.name());
        for f in Feature::ALL.into_iter().filter(|f| self.trace_all || !f.trace_only(self.turns)) {
            if self.attached(f) {
                continue;
            }
            let level = if f.refinement() { log::Level::Info } else { log::Level::Warn };
            log::log!(level, "no probe for {}: {}", f.name(), f.loss(self.turns).unwrap_or("required"));
        }
    }
}

fn shares_programs_with_attached(status: &[ProbeStatus], c: &Candidate) -> bool {
    status
        .iter()
        .filter(|s| s.outcome == Outcome::Attached)
        .any(|s| s.candidate.programs.iter().any(|(n, _)| c.programs.iter().any(|(m, _)| m == n)))
}

/// Hook kinds named in `SOCKPROBE_SKIP_HOOKS` (e.g. `fentry,fexit`) are not
/// tried: a diagnostic knob to exercise the fallbacks on kernels that would
/// not choose them (the QEMU kernel matrix uses it).
fn skipped(c: &Candidate, kinds: &[String]) -> Option<String> {
    c.programs.iter().find_map(|(_, hook)| {
        let kind = hook.to_string();
        let kind = kind.split('/').next().unwrap_or("");
        kinds.iter().any(|k| k == kind).then(|| format!("skipped: SOCKPROBE_SKIP_HOOKS={}", kinds.join(",")))
    })
}

fn try_attach(ebpf: &mut Ebpf, c: &Candidate, btf: &Btf, aya_btf: &AyaBtf, knobs: &DevKnobs) -> Result<(), String> {
    if let Some(why) = skipped(c, &knobs.skip_hooks) {
        return Err(why);
    }
    for need in c.needs {
        need.check(btf)?;
    }
    let mut done: Vec<&str> = Vec::new();
    for (name, hook) in c.programs {
        if let Err(e) = attach_one(ebpf, name, *hook, aya_btf, knobs.load_only) {
            // All or nothing: a half-attached candidate would double-count.
            for prev in done {
                unload(ebpf, prev);
            }
            unload(ebpf, name);
            return Err(format!("{hook}: {e}"));
        }
        done.push(name);
    }
    Ok(())
}

/// With `load_only` (`SOCKPROBE_LOAD_ONLY=1`) the BTF-typed hooks (tp_btf,
/// fentry, fexit) are loaded and verified but not attached: `cargo xtask
/// bench`'s paired phase attaches and detaches these very programs by id many
/// times a second (a raw tracepoint link cannot be detached from outside its
/// owner). kprobes and the iterator still attach.
fn attach_one(ebpf: &mut Ebpf, name: &str, hook: Hook, btf: &AyaBtf, load_only: bool) -> Result<(), String> {
    let program = ebpf.program_mut(name).ok_or_else(|| format!("program {name} missing from object"))?;
    let err = |e: ProgramError| describe(&e);
    match hook {
        Hook::TpBtf(tp) => {
            let p: &mut BtfTracePoint = program.try_into().map_err(err)?;
            p.load(tp, btf).map_err(err)?;
            if !load_only {
                p.attach().map_err(err)?;
            }
        }
        Hook::FEntry(func) => {
            let p: &mut FEntry = program.try_into().map_err(err)?;
            p.load(func, btf).map_err(err)?;
            if !load_only {
                p.attach().map_err(err)?;
            }
        }
        Hook::FExit(func) => {
            let p: &mut FExit = program.try_into().map_err(err)?;
            p.load(func, btf).map_err(err)?;
            if !load_only {
                p.attach().map_err(err)?;
            }
        }
        Hook::KProbe(func) | Hook::KRetProbe(func) => {
            let p: &mut KProbe = program.try_into().map_err(err)?;
            p.load().map_err(err)?;
            p.attach(func, 0).map_err(err)?;
        }
        Hook::Iter(target) => {
            // Attached once to prove it works; each listing attaches anew.
            let p: &mut Iter = program.try_into().map_err(err)?;
            p.load(target, btf).map_err(err)?;
            p.attach().map_err(err)?;
        }
    }
    Ok(())
}

fn unload(ebpf: &mut Ebpf, name: &str) {
    let _ = match ebpf.program_mut(name) {
        Some(Program::BtfTracePoint(p)) => p.unload(),
        Some(Program::FEntry(p)) => p.unload(),
        Some(Program::FExit(p)) => p.unload(),
        Some(Program::KProbe(p)) => p.unload(),
        Some(Program::Iter(p)) => p.unload(),
        _ => Ok(()),
    };
}

/// One line for a program error: the errno, plus the verifier's last word.
fn describe(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError { io_error, verifier_log } => {
            let log = verifier_log.to_string();
            if !log.trim().is_empty() {
                log::debug!("verifier log:\n{log}");
            }
            // The verifier ends with statistics; the reason is the line before them.
            let stats = ["processed ", "stack depth", "verification time", "mark_read"];
            let last =
                log.lines().rev().map(str::trim).find(|l| !l.is_empty() && !stats.iter().any(|p| l.starts_with(p)));
            let hint = if io_error.raw_os_error() == Some(libc::EPERM) {
                " (refused by kernel policy, e.g. lockdown or an LSM)"
            } else {
                ""
            };
            match last {
                Some(l) => format!("load refused: {io_error}{hint}; verifier: {}", l.trim()),
                None => format!("load refused: {io_error}{hint}"),
            }
        }
        other => {
            let s = one_line(other);
            if s.contains("event_source/devices/kprobe") {
                format!("kprobes not supported by this kernel (CONFIG_KPROBES unset): {s}")
            } else {
                s
            }
        }
    }
}

pub(crate) fn one_line(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s.replace('\n', " ")
}

/// The privileges were checked before loading, so EPERM from bpf(2) is a
/// policy's: say which to look at.
fn with_policy_hint(message: String) -> String {
    if message.contains("Operation not permitted") {
        format!(
            "{message}; the capabilities are there, so a policy refused bpf(2): a seccomp profile (in a container, \
             use deploy/kubernetes/seccomp/sockprobe.json: the runtime's default allows bpf only with CAP_SYS_ADMIN) \
             or an LSM"
        )
    } else {
        message
    }
}
