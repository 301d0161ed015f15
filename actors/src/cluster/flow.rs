//! How much this node may have queued for each peer. ractor_cluster queues
//! what is cast to a peer without a bound (the session's channel, then its
//! writer) and says nothing of how much waits, so a peer that stops reading
//! (stopped, swapping, its network stalled) would grow this node's memory
//! until it is dropped for silence. Instead this node counts the bytes it
//! casts to each peer and learns from its pings how far the peer got: the
//! peer answers a ping after it handled everything cast before it (one
//! ordered stream), so what was cast after the last answered ping is all
//! that can be waiting. Past the bound nothing more is cast and the peer is
//! dropped; it reconnects, and its clients catch up with `history after`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Instant;

/// Pings remembered per peer; older ones are forgotten (their answers then
/// confirm nothing, a later one's will).
const MARKS: usize = 64;

/// One peer's stream.
#[derive(Default)]
pub(crate) struct PeerFlow {
    /// Bytes cast to it since it connected.
    sent: AtomicU64,
    /// Bytes it has handled, as its last answered ping says.
    confirmed: AtomicU64,
    /// `sent` when the last ping went.
    pinged_at: AtomicU64,
    /// Pings unanswered: their `sent_us`, and `sent` with them.
    marks: Mutex<VecDeque<(u64, u64)>>,
    /// Past the bound once: it is being dropped.
    over: AtomicBool,
}

/// What may be cast.
pub(crate) enum Admit {
    /// Cast it; `ping` when a ping should follow (a bound's worth of bytes
    /// went since the last one).
    Cast { ping: bool },
    /// Past the bound now: cast nothing more, drop the peer.
    Tripped,
    /// Past the bound already.
    Refused,
}

impl PeerFlow {
    /// Bytes cast since it connected.
    pub(crate) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Acquire)
    }

    /// Bytes cast and not yet confirmed handled.
    pub(crate) fn backlog(&self) -> u64 {
        let sent = self.sent.load(Ordering::Acquire);
        sent.saturating_sub(self.confirmed.load(Ordering::Acquire))
    }

    /// Counts `len` bytes about to be cast, within `bound`.
    pub(crate) fn admit(&self, len: u64, bound: u64) -> Admit {
        if self.over.load(Ordering::Acquire) {
            return Admit::Refused;
        }
        if self.backlog() + len > bound {
            return if self.over.swap(true, Ordering::AcqRel) {
                Admit::Refused
            } else {
                Admit::Tripped
            };
        }
        let sent = self.sent.fetch_add(len, Ordering::AcqRel) + len;
        let since = sent.saturating_sub(self.pinged_at.load(Ordering::Acquire));
        Admit::Cast {
            ping: since > bound / 8,
        }
    }

    /// A ping of `len` bytes stamped `sent_us` is being cast (a ping is never
    /// refused: it is how the backlog shrinks).
    pub(crate) fn ping(&self, sent_us: u64, len: u64) {
        let sent = self.sent.fetch_add(len, Ordering::AcqRel) + len;
        self.pinged_at.store(sent, Ordering::Release);
        let mut marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        if marks.len() == MARKS {
            marks.pop_front();
        }
        marks.push_back((sent_us, sent));
    }

    /// The peer answered the ping stamped `sent_us`: all before it is handled.
    pub(crate) fn pong(&self, sent_us: u64) {
        let mut marks = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(&(at, sent)) = marks.front() {
            if at > sent_us {
                break;
            }
            marks.pop_front();
            if at == sent_us {
                self.confirmed.fetch_max(sent, Ordering::AcqRel);
            }
        }
    }
}

/// Microseconds on this process's monotonic clock: what a ping carries and
/// its pong brings back, so only this node's clock times the round trip.
pub(crate) fn monotonic_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backlog_is_what_was_cast_after_the_last_answered_ping() {
        let flow = PeerFlow::default();
        assert!(matches!(flow.admit(100, 1000), Admit::Cast { ping: false }));
        flow.ping(1, 10);
        assert!(matches!(flow.admit(200, 1000), Admit::Cast { .. }));
        assert_eq!(flow.backlog(), 310);
        flow.pong(1);
        assert_eq!(flow.backlog(), 200, "what went after the ping");
        // A peer that stops answering: the bound trips once, then refuses.
        assert!(matches!(flow.admit(700, 1000), Admit::Cast { ping: true }));
        assert!(matches!(flow.admit(200, 1000), Admit::Tripped));
        assert!(matches!(flow.admit(1, 1000), Admit::Refused));
        assert_eq!(flow.backlog(), 900, "nothing refused was counted");
    }

    #[test]
    fn an_answer_to_a_forgotten_or_older_ping_confirms_no_more_than_it_covers() {
        let flow = PeerFlow::default();
        flow.ping(1, 10);
        let _ = flow.admit(100, 1_000_000);
        flow.ping(2, 10);
        let _ = flow.admit(100, 1_000_000);
        flow.pong(1);
        assert_eq!(flow.backlog(), 210);
        flow.pong(2);
        assert_eq!(flow.backlog(), 100);
        flow.pong(1);
        assert_eq!(flow.backlog(), 100, "a late answer changes nothing");
    }
}
