//! What a TCP state change means to sockprobe: one pure function, shared by
//! the kernel programs and the host's unit tests, so every transition's
//! meaning is checked without a kernel.
//!
//! The facts it encodes (kernel source, checked on 6.18; docs/kernel-facts.md,
//! "1. The close path", and docs/architecture.md, "The state machine"):
//! - CLOSE→SYN_SENT is `connect()`, in the caller's context; LISTEN→SYN_RECV
//!   is a child socket born in softirq. Other moves out of CLOSE are not new
//!   lives of a socket sockprobe reports.
//! - ESTABLISHED→FIN_WAIT1 and CLOSE_WAIT→LAST_ACK are `close()`/`shutdown()`
//!   by the process, in its context.
//! - ESTABLISHED/SYN_RECV→CLOSE_WAIT is the peer's FIN (`tcp_fin`, softirq).
//! - X→CLOSE is a close with unread data (an abort from `close()`, process
//!   context, `sk_shutdown == SHUTDOWN_MASK`), a RST received, a timeout, or
//!   the end of FIN_WAIT2/LAST_ACK/CLOSING; only the first two end an open
//!   connection early. Which one is told by `sk_shutdown`, read by the caller.
//! - Entering TIME_WAIT appears as FIN_WAIT2→CLOSE on the full socket.
use crate::{Direction, TcpStates};

/// The meaning of `old → new`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Nothing sockprobe follows (moves out of CLOSE other than `connect()`,
    /// into SYN_SENT other than from CLOSE).
    Ignore,
    /// `listen()`: the listener's owner is recorded for the sockets it accepts.
    Listen,
    /// A listener closed (LISTEN to anything but SYN_RECV).
    ListenerClosed,
    /// `connect()` (CLOSE→SYN_SENT): a new outbound life, in process context.
    Connect,
    /// A listener's child (LISTEN→SYN_RECV): a new inbound life, in softirq.
    Accept,
    /// The handshake completed: the connection opens.
    Established,
    /// A `connect()` ended without a connection (SYN_SENT→CLOSE): refused,
    /// timed out, unreachable, no local port, or given up by the process.
    ConnectFailed,
    /// The peer's FIN arrived first: CLOSE_WAIT begins.
    PeerClosed,
    /// The process closed (or shut down) an open connection with a FIN.
    LocalClose {
        /// From CLOSE_WAIT: the close ends a CLOSE_WAIT.
        from_close_wait: bool,
    },
    /// The socket reached CLOSE.
    Closed {
        /// From ESTABLISHED or CLOSE_WAIT: the connection ends here (else it
        /// ended before, or never opened).
        was_open: bool,
        from_close_wait: bool,
        /// The peer's FIN was received (CLOSE_WAIT, CLOSING, LAST_ACK): its
        /// sequence number is not unread data.
        fin_received: bool,
    },
    /// Any other move of a socket sockprobe may follow (e.g. FIN_WAIT1→FIN_WAIT2).
    Other,
}

/// Classifies `old → new` with the running kernel's state numbers.
#[inline(always)]
pub fn classify(old: u32, new: u32, s: &TcpStates) -> Transition {
    if new == s.listen {
        return Transition::Listen;
    }
    if old == s.listen {
        return if new == s.syn_recv { Transition::Accept } else { Transition::ListenerClosed };
    }
    if old == s.close {
        return if new == s.syn_sent { Transition::Connect } else { Transition::Ignore };
    }
    if new == s.syn_sent {
        return Transition::Ignore;
    }
    let from_close_wait = old == s.close_wait;
    let was_open = old == s.established || from_close_wait;
    if new == s.established {
        Transition::Established
    } else if new == s.close_wait {
        Transition::PeerClosed
    } else if was_open && (new == s.fin_wait1 || new == s.last_ack) {
        Transition::LocalClose { from_close_wait }
    } else if new == s.close && old == s.syn_sent {
        Transition::ConnectFailed
    } else if new == s.close {
        let fin_received = from_close_wait || old == s.closing || old == s.last_ack;
        Transition::Closed { was_open, from_close_wait, fin_received }
    } else {
        Transition::Other
    }
}

/// The direction of a socket first seen leaving `old` (it predates the
/// probes): SYN_SENT only follows `connect()`, SYN_RECV only `accept`.
#[inline(always)]
pub fn direction_from(old: u32, s: &TcpStates) -> Direction {
    if old == s.syn_sent {
        Direction::Outbound
    } else if old == s.syn_recv {
        Direction::Inbound
    } else {
        Direction::Unknown
    }
}

#[cfg(test)]
mod tests {
    use std::{format, string::String, vec::Vec};

    use super::*;

    /// Linux's numbering; the tests also run with a shuffled one, since the
    /// kernel side gets the numbers from BTF.
    const LINUX: TcpStates = TcpStates::LINUX;

    const NAMES: [&str; 11] = [
        "ESTABLISHED",
        "SYN_SENT",
        "SYN_RECV",
        "FIN_WAIT1",
        "FIN_WAIT2",
        "TIME_WAIT",
        "CLOSE",
        "CLOSE_WAIT",
        "LAST_ACK",
        "LISTEN",
        "CLOSING",
    ];

    fn numbers(s: &TcpStates) -> [u32; 11] {
        [
            s.established,
            s.syn_sent,
            s.syn_recv,
            s.fin_wait1,
            s.fin_wait2,
            s.time_wait,
            s.close,
            s.close_wait,
            s.last_ack,
            s.listen,
            s.closing,
        ]
    }

    /// The expected meaning of every one of the 121 (old, new) pairs, by name.
    fn expected(old: &str, new: &str) -> Transition {
        use Transition::*;
        let open = matches!(old, "ESTABLISHED" | "CLOSE_WAIT");
        match (old, new) {
            (_, "LISTEN") => Listen,
            ("LISTEN", "SYN_RECV") => Accept,
            ("LISTEN", _) => ListenerClosed,
            ("CLOSE", "SYN_SENT") => Connect,
            ("CLOSE", _) | (_, "SYN_SENT") => Ignore,
            (_, "ESTABLISHED") => Established,
            (_, "CLOSE_WAIT") => PeerClosed,
            ("ESTABLISHED", "FIN_WAIT1") => LocalClose { from_close_wait: false },
            ("CLOSE_WAIT", "FIN_WAIT1" | "LAST_ACK") => LocalClose { from_close_wait: true },
            ("ESTABLISHED", "LAST_ACK") => LocalClose { from_close_wait: false },
            ("SYN_SENT", "CLOSE") => ConnectFailed,
            (_, "CLOSE") => Closed {
                was_open: open,
                from_close_wait: old == "CLOSE_WAIT",
                fin_received: matches!(old, "CLOSE_WAIT" | "CLOSING" | "LAST_ACK"),
            },
            _ => Other,
        }
    }

    fn check_all(s: &TcpStates) {
        let nums = numbers(s);
        let mut wrong = Vec::<String>::new();
        for (i, old) in NAMES.iter().enumerate() {
            for (j, new) in NAMES.iter().enumerate() {
                let got = classify(nums[i], nums[j], s);
                let want = expected(old, new);
                if got != want {
                    wrong.push(format!("{old}->{new}: got {got:?}, want {want:?}"));
                }
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn every_transition_with_linux_numbers() {
        check_all(&LINUX);
    }

    #[test]
    fn every_transition_with_other_numbers() {
        // Nothing may depend on the values themselves.
        let shuffled = TcpStates {
            established: 11,
            syn_sent: 10,
            syn_recv: 9,
            fin_wait1: 8,
            fin_wait2: 7,
            time_wait: 6,
            close: 5,
            close_wait: 4,
            last_ack: 3,
            listen: 2,
            closing: 1,
        };
        check_all(&shuffled);
    }

    #[test]
    fn the_close_paths_that_matter() {
        let s = &LINUX;
        assert_eq!(classify(s.established, s.fin_wait1, s), Transition::LocalClose { from_close_wait: false });
        assert_eq!(classify(s.close_wait, s.last_ack, s), Transition::LocalClose { from_close_wait: true });
        // An abort from close() with unread bytes, or a RST received.
        assert_eq!(
            classify(s.established, s.close, s),
            Transition::Closed { was_open: true, from_close_wait: false, fin_received: false }
        );
        assert_eq!(
            classify(s.close_wait, s.close, s),
            Transition::Closed { was_open: true, from_close_wait: true, fin_received: true }
        );
        // TIME_WAIT entry: the connection closed at FIN_WAIT1 already.
        assert_eq!(
            classify(s.fin_wait2, s.close, s),
            Transition::Closed { was_open: false, from_close_wait: false, fin_received: false }
        );
        assert_eq!(classify(s.established, s.close_wait, s), Transition::PeerClosed);
        assert_eq!(classify(s.fin_wait1, s.fin_wait2, s), Transition::Other);
    }

    #[test]
    fn directions_of_sockets_that_predate_the_probes() {
        let s = &LINUX;
        assert_eq!(direction_from(s.syn_sent, s), Direction::Outbound);
        assert_eq!(direction_from(s.syn_recv, s), Direction::Inbound);
        assert_eq!(direction_from(s.established, s), Direction::Unknown);
    }
}
