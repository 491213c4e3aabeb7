//! The probe table: for each thing sockprobe needs to see, the programs that
//! can deliver it, best first, with the kernel that introduced each and what
//! it stands in for. Data only: [`super::loader`] walks it at start-up, and
//! the first candidate this kernel accepts wins.
use std::fmt;

use probe_common::SOCKET_ITER_PROGRAM;

use crate::kernel::btf::Btf;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// TCP state transitions: opens, closes, CLOSE_WAIT, unread closes.
    StateChanges,
    /// Application receives: bytes received (`trace`); exchanges and the
    /// owners of accepted sockets where turns are counted at receives
    /// ([`TurnSource`]).
    AppReceives,
    /// Application sends: bytes sent (`trace`); exchanges and the owners of
    /// accepted sockets where turns are counted at sends.
    AppSends,
    ResetsSent,
    ResetsReceived,
    /// Socket destruction: frees kernel state promptly (else LRU eviction).
    SocketDestroy,
    /// `tcp_close` entry: the exact closing task.
    CloseEntry,
    /// Retransmitted segments, SYNs included.
    Retransmits,
    /// Every task's TCP sockets, whatever their network namespace: the
    /// start-up scan and the periodic reconcile of live sockets.
    SocketListing,
}

impl Feature {
    pub const ALL: [Feature; 9] = [
        Feature::StateChanges,
        Feature::AppReceives,
        Feature::AppSends,
        Feature::ResetsSent,
        Feature::ResetsReceived,
        Feature::SocketDestroy,
        Feature::CloseEntry,
        Feature::Retransmits,
        Feature::SocketListing,
    ];

    /// Attached only for `sockprobe trace`: the direction of I/O that does
    /// not count turns.
    pub fn trace_only(self, turns: TurnSource) -> bool {
        matches!((self, turns), (Feature::AppSends, TurnSource::Receives) | (Feature::AppReceives, TurnSource::Sends))
    }

    /// A refinement of what the state changes already tell: going without
    /// it is no reason to warn (6.18 here refuses both its hooks).
    pub fn refinement(self) -> bool {
        self == Feature::CloseEntry
    }

    pub fn name(self) -> &'static str {
        match self {
            Feature::StateChanges => "state-changes",
            Feature::AppReceives => "app-receives",
            Feature::AppSends => "app-sends",
            Feature::ResetsSent => "resets-sent",
            Feature::ResetsReceived => "resets-received",
            Feature::SocketDestroy => "socket-destroy",
            Feature::CloseEntry => "close-entry",
            Feature::Retransmits => "retransmits",
            Feature::SocketListing => "socket-listing",
        }
    }

    /// What is lost when no candidate attaches; `None` = sockprobe cannot run.
    pub fn loss(self, turns: TurnSource) -> Option<&'static str> {
        const TURNS: &str = "no exchanges; inbound sockets get owners only at close";
        match self {
            Feature::StateChanges => None,
            Feature::AppReceives if turns == TurnSource::Receives => Some(TURNS),
            Feature::AppReceives => Some("no bytes received in `trace`"),
            Feature::AppSends if turns == TurnSource::Sends => Some(TURNS),
            Feature::AppSends => Some("no bytes sent in `trace`"),
            Feature::ResetsSent => Some("no reset_sent and no unread_close events"),
            Feature::ResetsReceived => Some("no reset_received events"),
            Feature::SocketDestroy => Some("socket state freed only by LRU eviction"),
            Feature::CloseEntry => Some("none: closers are recognised from state changes"),
            Feature::Retransmits => Some("no retransmits and no SYN retransmits"),
            Feature::SocketListing => Some(
                "live sockets are listed per network namespace through /proc (needs CAP_SYS_ADMIN and CAP_SYS_PTRACE), without sockets whose connection is over",
            ),
        }
    }
}

/// Which direction of application I/O counts the turns of a conversation
/// (its exchanges) and names the owners of accepted sockets; the other is
/// watched only for `sockprobe trace` (docs/architecture.md, "Where turns
/// are counted").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TurnSource {
    /// Far fewer than receives where a response is read in small pieces;
    /// only where every send goes through `sendmsg`.
    Sends,
    Receives,
}

impl TurnSource {
    /// Sends where splice and sendfile go through `sendmsg` too: from 6.5,
    /// which removed `proto_ops.sendpage`, the path they took before (and no
    /// send hook saw). `forced` (`SOCKPROBE_TURNS`, a knob for tests) wins.
    pub fn for_kernel(btf: &Btf, forced: Option<TurnSource>) -> TurnSource {
        if let Some(turns) = forced {
            return turns;
        }
        let has_proto_ops = btf.member("proto_ops", &["release"]).is_some();
        if has_proto_ops && btf.member("proto_ops", &["sendpage"]).is_none() {
            TurnSource::Sends
        } else {
            TurnSource::Receives
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TurnSource::Sends => "sends",
            TurnSource::Receives => "receives",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    TpBtf(&'static str),
    FEntry(&'static str),
    FExit(&'static str),
    KProbe(&'static str),
    KRetProbe(&'static str),
    /// A BPF iterator (`iter/<target>`): loaded, then run by reading it.
    Iter(&'static str),
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hook::TpBtf(t) => write!(f, "tp_btf/{t}"),
            Hook::FEntry(t) => write!(f, "fentry/{t}"),
            Hook::FExit(t) => write!(f, "fexit/{t}"),
            Hook::KProbe(t) => write!(f, "kprobe/{t}"),
            Hook::KRetProbe(t) => write!(f, "kretprobe/{t}"),
            Hook::Iter(t) => write!(f, "iter/{t}"),
        }
    }
}

/// What the kernel's BTF must show for a candidate to be tried.
#[derive(Clone, Copy, Debug)]
pub enum Needs {
    /// `btf_trace_<name>` with this many arguments.
    Tracepoint(&'static str, u32),
    /// Kernel function with this many parameters.
    Function(&'static str, u32),
    /// Kernel function present in BTF (any signature).
    AnyFunction(&'static str),
    /// Kernel function with at most this many parameters.
    MaxParams(&'static str, u32),
}

impl Needs {
    pub(super) fn check(&self, btf: &Btf) -> Result<(), String> {
        match *self {
            Needs::Tracepoint(tp, n) => match btf.tracepoint_arity(tp) {
                Some(a) if a == n => Ok(()),
                Some(a) => Err(format!("tracepoint {tp} has {a} arguments here, this program takes {n}")),
                None => Err(format!("tracepoint {tp} not in this kernel")),
            },
            Needs::Function(func, n) => match btf.function_arity(func) {
                Some(a) if a == n => Ok(()),
                Some(a) => Err(format!("{func}() takes {a} parameters here, this program expects {n}")),
                None => Err(format!("{func}() not in this kernel's BTF")),
            },
            Needs::MaxParams(func, n) => match btf.function_arity(func) {
                Some(a) if a <= n => Ok(()),
                Some(a) => Err(format!("{func}() takes {a} parameters here, this program expects at most {n}")),
                None => Err(format!("{func}() not in this kernel's BTF")),
            },
            Needs::AnyFunction(func) => match btf.function_arity(func) {
                Some(_) => Ok(()),
                None => Err(format!("{func}() not in this kernel's BTF")),
            },
        }
    }
}

/// One row of the probe table.
#[derive(Clone, Copy, Debug)]
pub struct Candidate {
    pub feature: Feature,
    /// Programs (by name in the object) that must all attach.
    pub programs: &'static [(&'static str, Hook)],
    pub needs: &'static [Needs],
    pub min_kernel: &'static str,
    /// What this candidate replaces when chosen, for humans.
    pub note: &'static str,
}

impl Candidate {
    pub fn hooks(&self) -> String {
        self.programs.iter().map(|(_, h)| h.to_string()).collect::<Vec<_>>().join(" + ")
    }
}

use Hook::*;
use Needs::*;

pub const PROBE_TABLE: &[Candidate] = &[
    Candidate {
        feature: Feature::StateChanges,
        programs: &[("tp_inet_sock_set_state", TpBtf("inet_sock_set_state"))],
        needs: &[Tracepoint("inet_sock_set_state", 3)],
        min_kernel: "5.12",
        note: "preferred",
    },
    Candidate {
        feature: Feature::StateChanges,
        programs: &[("fentry_tcp_set_state", FEntry("tcp_set_state"))],
        needs: &[Function("tcp_set_state", 2)],
        min_kernel: "5.12",
        note: "replaces inet_sock_set_state; misses LISTEN→SYN_RECV (direction from SYN_RECV→ESTABLISHED instead)",
    },
    Candidate {
        feature: Feature::StateChanges,
        programs: &[("kprobe_tcp_set_state", KProbe("tcp_set_state"))],
        needs: &[AnyFunction("tcp_set_state")],
        min_kernel: "5.12 (sockprobe's floor)",
        note: "replaces inet_sock_set_state; no socket cookies (kprobes may not call the helper)",
    },
    Candidate {
        feature: Feature::AppReceives,
        programs: &[("tp_sock_recv_length", TpBtf("sock_recv_length"))],
        needs: &[Tracepoint("sock_recv_length", 3)],
        min_kernel: "6.3",
        note: "preferred",
    },
    Candidate {
        feature: Feature::AppReceives,
        programs: &[("fexit_tcp_recvmsg_4", FExit("tcp_recvmsg"))],
        needs: &[Function("tcp_recvmsg", 4)],
        min_kernel: "6.x (tcp_recvmsg without addr_len)",
        note: "replaces sock_recv_length (TCP only, misses splice)",
    },
    Candidate {
        feature: Feature::AppReceives,
        programs: &[("fexit_tcp_recvmsg", FExit("tcp_recvmsg"))],
        needs: &[Function("tcp_recvmsg", 5)],
        min_kernel: "5.19",
        note: "replaces sock_recv_length (TCP only, misses splice)",
    },
    Candidate {
        feature: Feature::AppReceives,
        programs: &[("fexit_tcp_recvmsg_nonblock", FExit("tcp_recvmsg"))],
        needs: &[Function("tcp_recvmsg", 6)],
        min_kernel: "5.12 (before 5.19)",
        note: "as above, tcp_recvmsg with its pre-5.19 `nonblock` parameter",
    },
    Candidate {
        feature: Feature::AppReceives,
        programs: &[("kprobe_tcp_recvmsg", KProbe("tcp_recvmsg")), ("kretprobe_tcp_recvmsg", KRetProbe("tcp_recvmsg"))],
        needs: &[MaxParams("tcp_recvmsg", 5)],
        min_kernel: "5.19 (kprobes)",
        note: "replaces sock_recv_length; costlier (entry+return probes); flags are the 4th argument",
    },
    Candidate {
        feature: Feature::AppReceives,
        programs: &[
            ("kprobe_tcp_recvmsg_nonblock", KProbe("tcp_recvmsg")),
            ("kretprobe_tcp_recvmsg", KRetProbe("tcp_recvmsg")),
        ],
        needs: &[Function("tcp_recvmsg", 6)],
        min_kernel: "5.12 (before 5.19)",
        note: "as above, with tcp_recvmsg's pre-5.19 `nonblock` parameter",
    },
    Candidate {
        feature: Feature::AppSends,
        programs: &[("tp_sock_send_length", TpBtf("sock_send_length"))],
        needs: &[Tracepoint("sock_send_length", 3)],
        min_kernel: "6.3",
        note: "preferred",
    },
    Candidate {
        feature: Feature::AppSends,
        programs: &[("fexit_tcp_sendmsg", FExit("tcp_sendmsg"))],
        needs: &[Function("tcp_sendmsg", 3)],
        min_kernel: "5.12",
        note: "replaces sock_send_length (TCP only; misses splice and sendfile before 6.5)",
    },
    Candidate {
        feature: Feature::AppSends,
        programs: &[("kprobe_tcp_sendmsg", KProbe("tcp_sendmsg")), ("kretprobe_tcp_sendmsg", KRetProbe("tcp_sendmsg"))],
        needs: &[AnyFunction("tcp_sendmsg")],
        min_kernel: "5.12 (kprobes)",
        note: "replaces sock_send_length; costlier (entry+return probes)",
    },
    Candidate {
        feature: Feature::ResetsSent,
        programs: &[("tp_tcp_send_reset_reason", TpBtf("tcp_send_reset"))],
        needs: &[Tracepoint("tcp_send_reset", 3)],
        min_kernel: "6.10 (reason; real active reasons 6.12)",
        note: "preferred",
    },
    Candidate {
        feature: Feature::ResetsSent,
        programs: &[("tp_tcp_send_reset", TpBtf("tcp_send_reset"))],
        needs: &[Tracepoint("tcp_send_reset", 2)],
        min_kernel: "5.12",
        note: "no reset reason (reported as `unknown`)",
    },
    Candidate {
        feature: Feature::ResetsReceived,
        programs: &[("tp_tcp_receive_reset", TpBtf("tcp_receive_reset"))],
        needs: &[Tracepoint("tcp_receive_reset", 1)],
        min_kernel: "5.12",
        note: "preferred",
    },
    Candidate {
        feature: Feature::SocketDestroy,
        programs: &[("tp_tcp_destroy_sock", TpBtf("tcp_destroy_sock"))],
        needs: &[Tracepoint("tcp_destroy_sock", 1)],
        min_kernel: "5.12",
        note: "preferred",
    },
    Candidate {
        feature: Feature::CloseEntry,
        programs: &[("fentry_tcp_close", FEntry("tcp_close"))],
        needs: &[Function("tcp_close", 2)],
        min_kernel: "5.12",
        note: "preferred: the exact closer even when close() does not change state",
    },
    Candidate {
        feature: Feature::CloseEntry,
        programs: &[("kprobe_tcp_close", KProbe("tcp_close"))],
        needs: &[AnyFunction("tcp_close")],
        min_kernel: "5.12 (sockprobe's floor)",
        note: "as above, via kprobe",
    },
    Candidate {
        feature: Feature::Retransmits,
        programs: &[("tp_tcp_retransmit_skb_err", TpBtf("tcp_retransmit_skb"))],
        needs: &[Tracepoint("tcp_retransmit_skb", 3)],
        min_kernel: "6.x (with its err argument)",
        note: "preferred",
    },
    Candidate {
        feature: Feature::Retransmits,
        programs: &[("tp_tcp_retransmit_skb", TpBtf("tcp_retransmit_skb"))],
        needs: &[Tracepoint("tcp_retransmit_skb", 2)],
        min_kernel: "5.12",
        note: "the same, from before the tracepoint saw failed retransmits",
    },
    Candidate {
        feature: Feature::SocketListing,
        programs: &[(SOCKET_ITER_PROGRAM, Iter("task_file"))],
        needs: &[AnyFunction("bpf_iter_task_file"), AnyFunction("bpf_sock_from_file")],
        min_kernel: "5.11 (bpf_sock_from_file)",
        note: "preferred: every network namespace in one pass, in the kernel",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_feature_has_a_candidate_and_required_ones_come_first() {
        for f in Feature::ALL {
            assert!(PROBE_TABLE.iter().any(|c| c.feature == f), "{f:?} has no candidate");
        }
        // The loader walks Feature::ALL in order and stops at the first
        // required feature nothing covers: required ones first, so a kernel
        // that cannot run sockprobe is told so before optional probes load.
        for turns in [TurnSource::Sends, TurnSource::Receives] {
            assert!(Feature::StateChanges.loss(turns).is_none());
            let required: Vec<bool> = Feature::ALL.iter().map(|f| f.loss(turns).is_none()).collect();
            let first_optional = required.iter().position(|r| !r).unwrap_or(required.len());
            assert!(
                required[first_optional..].iter().all(|r| !r),
                "{turns:?}: a required feature after an optional one in {:?}",
                Feature::ALL
            );
        }
        // Each feature's candidates sit together, best first, features in
        // Feature::ALL's order: the table reads as the loader tries it.
        let order: Vec<Feature> = PROBE_TABLE.iter().map(|c| c.feature).fold(Vec::new(), |mut v, f| {
            if v.last() != Some(&f) {
                v.push(f);
            }
            v
        });
        assert_eq!(order, Feature::ALL, "candidates grouped by feature, in Feature::ALL's order");
        for f in Feature::ALL {
            let first = PROBE_TABLE.iter().find(|c| c.feature == f).expect("checked above");
            assert!(first.note.starts_with("preferred"), "{f:?}'s first candidate is not the preferred one");
        }
    }

    #[test]
    fn the_daemon_watches_exactly_the_direction_that_counts_turns() {
        use TurnSource::*;
        for (turns, counting, other) in
            [(Sends, Feature::AppSends, Feature::AppReceives), (Receives, Feature::AppReceives, Feature::AppSends)]
        {
            assert!(!counting.trace_only(turns) && other.trace_only(turns), "{turns:?}");
            assert!(counting.loss(turns).unwrap().contains("no exchanges"), "{turns:?}");
            assert!(!other.loss(turns).unwrap().contains("no exchanges"), "{turns:?}");
        }
        let others = Feature::ALL.into_iter().filter(|f| !matches!(f, Feature::AppSends | Feature::AppReceives));
        for f in others {
            assert!(!f.trace_only(Sends) && !f.trace_only(Receives), "{f:?}");
        }
    }

    #[test]
    fn program_names_are_unique_per_hook() {
        let mut seen = std::collections::HashSet::new();
        for c in PROBE_TABLE {
            for (name, hook) in c.programs {
                // A program may appear in two rows only with the same hook.
                if !seen.insert(*name) {
                    let same = PROBE_TABLE
                        .iter()
                        .flat_map(|c| c.programs.iter())
                        .filter(|(n, _)| n == name)
                        .all(|(_, h)| h == hook);
                    assert!(same, "{name} used with different hooks");
                }
            }
        }
    }
}
