//! When an application I/O is a turn of the conversation, and when a turn
//! starts a request/response exchange: one pure function, shared by the
//! kernel programs (`on_io` in probe-ebpf's handlers.rs) and the host's unit
//! tests below, which replay counter sequences with the peer's data
//! arriving before, during and after this side's I/O.
//!
//! Exchanges are counted on one direction of I/O (docs/architecture.md,
//! "Where turns are counted"): at receives, the signal is `data_segs_out`
//! (this socket's data segments sent); at sends, `copied_seq` (what this
//! socket's application has read). An I/O that finds the signal moved since
//! the last counting I/O (the mark) follows the application's own I/O the
//! other way: a turn. Neither signal moves when the peer's data merely
//! arrives, so the judgement depends on the application's order of calls
//! alone, not on when the tracepoint runs against the peer.

/// What one counting I/O decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Turn {
    /// A turn (or the socket's first counting I/O): the mark moves to the
    /// signal, and the owner is checked.
    pub turn: bool,
    /// An exchange starts here.
    pub exchange: bool,
}

/// `signal`: the turn signal now; `mark`: its value at the last counting
/// I/O (0 for a socket adopted at this I/O); `first`: no counting I/O seen
/// on this socket yet; `asks`: this side asks with this direction of I/O (a
/// client at sends, a server at receives; false where the direction is
/// unknown). A turn is an exchange whichever side this is; the asker's first
/// I/O starts one too.
#[inline(always)]
pub fn judge(signal: u32, mark: u32, first: bool, asks: bool) -> Turn {
    let moved = signal != mark;
    Turn { turn: moved || first, exchange: moved || (first && asks) }
}

#[cfg(test)]
mod tests {
    use std::{vec, vec::Vec};

    use super::*;

    /// What happens on a connection, in the order the kernel sees it.
    #[derive(Clone, Copy, Debug)]
    enum Step {
        /// A data segment from the peer arrives (softirq): `data_segs_in`.
        Arrive,
        /// This side's application reads what arrived: `copied_seq` moves.
        Read(u32),
        /// This side's application sends (the data leaves at once on
        /// loopback); the send tracepoint runs later, at `Traced`.
        Send,
        /// The send's tracepoint runs (the counting I/O at sends).
        Traced,
    }

    /// A server's exchanges counted at its sends, from either signal:
    /// `copied_seq` (the rule) or `data_segs_in` (what arrived: the rule
    /// before, raced by a fast peer). The server is born with its mark at
    /// the handshake's `copied_seq` (`isn`).
    fn server_exchanges(steps: &[Step], isn: u32, by_arrivals: bool) -> u32 {
        let (mut segs_in, mut copied) = (0u32, isn);
        let mut mark = if by_arrivals { 0 } else { isn };
        let (mut first, mut exchanges) = (true, 0);
        for step in steps {
            match *step {
                Step::Arrive => segs_in += 1,
                Step::Read(bytes) => copied = copied.wrapping_add(bytes),
                Step::Send => {}
                Step::Traced => {
                    let signal = if by_arrivals { segs_in } else { copied };
                    let t = judge(signal, mark, first, false);
                    if t.turn {
                        mark = signal;
                        first = false;
                    }
                    exchanges += t.exchange as u32;
                }
            }
        }
        exchanges
    }

    /// Keep-alive, the client asks only once the whole response is in.
    fn in_turn(e: usize) -> Vec<Step> {
        (0..e).flat_map(|_| [Step::Arrive, Step::Read(4), Step::Send, Step::Traced]).collect()
    }

    /// The next request reaches the server between its send and that send's
    /// tracepoint (a client that answers at once, on loopback), every time.
    fn overtaking(e: usize) -> Vec<Step> {
        let mut steps = vec![Step::Arrive];
        for i in 0..e {
            steps.extend([Step::Read(4), Step::Send]);
            if i + 1 < e {
                steps.push(Step::Arrive);
            }
            steps.push(Step::Traced);
        }
        steps
    }

    #[test]
    fn a_server_counts_every_exchange_however_fast_the_client_asks() {
        // The sequence numbers wrap: an ISN near 2^32 changes nothing.
        for isn in [1, 0x8000_0000, u32::MAX - 5] {
            assert_eq!(server_exchanges(&in_turn(7), isn, false), 7);
            assert_eq!(server_exchanges(&overtaking(7), isn, false), 7, "isn {isn}");
        }
        // What arrived, as the mark before: exact in turn, one short when
        // overtaken (the 6 of 7 seen on 6.12).
        assert_eq!(server_exchanges(&in_turn(7), 1, true), 7);
        assert_eq!(server_exchanges(&overtaking(7), 1, true), 6);
    }

    #[test]
    fn a_response_in_many_sends_is_one_exchange() {
        // One read, then the response in 64 sends, twice.
        let mut steps = Vec::new();
        for _ in 0..2 {
            steps.extend([Step::Arrive, Step::Read(4)]);
            for _ in 0..64 {
                steps.extend([Step::Send, Step::Traced]);
            }
        }
        assert_eq!(server_exchanges(&steps, 1, false), 2);
    }

    #[test]
    fn a_banner_before_any_request_is_no_exchange() {
        // Server speaks first (SMTP, MySQL): the greeting answers nothing,
        // even when the client's first request arrives before its tracepoint.
        let banner = [Step::Send, Step::Arrive, Step::Traced, Step::Read(4), Step::Send, Step::Traced];
        assert_eq!(server_exchanges(&banner[..3], 1, false), 0, "the greeting alone");
        assert_eq!(server_exchanges(&banner, 1, false), 1);
        // What arrived, as the mark before, took the greeting for an answer
        // and then missed the real one.
        assert_eq!(server_exchanges(&banner[..3], 1, true), 1);
        assert_eq!(server_exchanges(&banner, 1, true), 1);
    }

    #[test]
    fn pipelined_requests_read_together_are_one_turn() {
        // Three requests read in one go, three responses sent back to back:
        // one turn (the rule sees the application's order, not the protocol's).
        let steps = [
            Step::Arrive,
            Step::Arrive,
            Step::Arrive,
            Step::Read(12),
            Step::Send,
            Step::Traced,
            Step::Send,
            Step::Traced,
            Step::Send,
            Step::Traced,
        ];
        assert_eq!(server_exchanges(&steps, 1, false), 1);
    }

    #[test]
    fn the_asker_counts_its_first_io_and_every_turn() {
        // A client at sends: its first send asks; each send after a read too.
        let first = judge(1000, 0, true, true);
        assert_eq!(first, Turn { turn: true, exchange: true });
        assert_eq!(judge(1000, 1000, false, true), Turn { turn: false, exchange: false });
        assert_eq!(judge(1300, 1000, false, true), Turn { turn: true, exchange: true });
        // Unknown direction (adopted at this I/O, mark 0): a turn if the
        // signal moved from 0, which a sequence number all but always has.
        assert_eq!(judge(77, 0, true, false), Turn { turn: true, exchange: true });
        // Its signal still at 0 (nothing sent yet, at receives): a first
        // I/O, no exchange.
        assert_eq!(judge(0, 0, true, false), Turn { turn: true, exchange: false });
    }
}
