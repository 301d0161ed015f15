//! Handles on client connections: what actors hold to push frames to a
//! connection and to ask it to close. The connection's own tasks (in the
//! node crate) own the socket and the other end of the queue.
//!
//! Everything queued towards a connection is counted in bytes, as encoded
//! for the connection's codec (an event is encoded once per codec, however
//! many connections get it). Its reader stops taking requests while the
//! bytes not yet written pass a soft limit, so replies alone can never pile
//! up; events, which cannot wait, are refused past a hard limit (twice the
//! soft one), and the connection is then closed with 4003: a client that
//! reads this slowly must reconnect and catch up with history.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chat_protocol::{close_code, Codec, SharedFrame};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A connection's id, unique on its node.
pub type ConnId = u64;

/// One event of a fan-out.
#[derive(Debug)]
pub struct Delivery {
    /// The event.
    pub frame: Arc<SharedFrame>,
    /// The connection not to send it to (the sender's, which has the `ok`).
    pub skip_conn: Option<ConnId>,
    /// The sampled trace of the send, if any.
    pub trace: Option<crate::telemetry::TraceParent>,
}

/// Asks a connection to close with a code; the connection's tasks watch it.
#[derive(Debug, Default)]
pub struct Closer {
    code: AtomicU16,
    token: CancellationToken,
}

impl Closer {
    /// Closes with `code` (the first code asked for wins).
    pub fn close(&self, code: u16) {
        let _ = self
            .code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
        self.token.cancel();
    }

    /// The close code asked for, if any.
    pub fn code(&self) -> Option<u16> {
        match self.code.load(Ordering::Acquire) {
            0 => None,
            c => Some(c),
        }
    }

    /// Resolves once a close is asked for.
    pub async fn closed(&self) {
        self.token.cancelled().await
    }
}

/// The frames queued towards one connection and not yet written to its
/// socket, and their bytes; shared by whoever queues (fan-out, the reader's
/// replies) and the writer that drains them.
///
/// A queue that holds nothing holds no memory (a channel would keep a block
/// of slots per connection, idle or not), and the writer takes everything
/// queued at once: one lock and one wake-up per batch, not per frame.
#[derive(Debug)]
pub struct Outbound {
    frames: Mutex<Frames>,
    capacity: usize,
    queued: AtomicUsize,
    soft: usize,
    /// The writer waits on it for frames.
    ready: Notify,
    /// The reader waits on it for bytes written.
    written: Notify,
}

#[derive(Debug, Default)]
struct Frames {
    queue: VecDeque<Bytes>,
    /// The writer is gone: nothing queued would be written.
    closed: bool,
}

/// Why a frame was not queued.
#[derive(Debug, PartialEq, Eq)]
enum Refused {
    Full,
    Closed,
}

impl Outbound {
    /// A queue of at most `capacity` frames whose reader stops past `soft`
    /// bytes (events are refused past twice that).
    pub fn new(capacity: usize, soft: usize) -> Self {
        Outbound {
            frames: Mutex::new(Frames::default()),
            capacity: capacity.max(1),
            queued: AtomicUsize::new(0),
            soft: soft.max(1),
            ready: Notify::new(),
            written: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Frames> {
        // Nothing panics while holding it; a poisoned queue is still whole.
        self.frames.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Frames queued and not yet taken by the writer.
    pub fn frames(&self) -> usize {
        self.lock().queue.len()
    }

    /// Past this, the reader takes no new request.
    pub fn soft(&self) -> usize {
        self.soft
    }

    fn hard(&self) -> usize {
        self.soft.saturating_mul(2)
    }

    fn push(&self, bytes: Bytes) -> Result<(), Refused> {
        let n = bytes.len();
        let was_empty = {
            let mut f = self.lock();
            if f.closed {
                return Err(Refused::Closed);
            }
            if f.queue.len() >= self.capacity {
                return Err(Refused::Full);
            }
            // Counted before the writer can see it (it gives the bytes back
            // once written).
            self.queued.fetch_add(n, Ordering::AcqRel);
            f.queue.push_back(bytes);
            f.queue.len() == 1
        };
        // Only the first frame of a batch wakes the writer: it takes the
        // rest with it.
        if was_empty {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Waits until something is queued and moves all of it to `batch`
    /// (which should be empty: the two swap their storage, so neither
    /// allocates once both have grown to a batch's size).
    pub async fn take(&self, batch: &mut VecDeque<Bytes>) {
        while !self.try_take(batch) {
            // A push after the look above leaves a permit: not lost.
            self.ready.notified().await;
        }
    }

    /// Moves everything queued to `batch`, if anything is; see
    /// [`Outbound::take`].
    pub fn try_take(&self, batch: &mut VecDeque<Bytes>) -> bool {
        let mut f = self.lock();
        if f.queue.is_empty() {
            return false;
        }
        std::mem::swap(&mut f.queue, batch);
        // A burst's storage is not kept by an idle connection.
        if f.queue.capacity() > SHRINK_ABOVE {
            f.queue = VecDeque::new();
        }
        true
    }

    /// The writer is gone: refuses what comes and frees what is queued.
    pub fn close(&self) {
        let dropped = {
            let mut f = self.lock();
            f.closed = true;
            std::mem::take(&mut f.queue)
        };
        self.written(dropped.iter().map(Bytes::len).sum());
    }

    /// `n` bytes left the queue (written, or dropped with the connection).
    pub fn written(&self, n: usize) {
        // Exact: every byte counted in is given back once.
        self.queued.fetch_sub(n, Ordering::AcqRel);
        // One waiter (the connection's reader), and a wake-up is kept for
        // it if it is not waiting yet: none is lost between its check and
        // its wait.
        self.written.notify_one();
    }

    /// Resolves at the next [`Outbound::written`] (or at once if one came
    /// since the last wait).
    pub async fn wait_written(&self) {
        self.written.notified().await
    }
}

/// Frames a queue keeps room for once drained.
const SHRINK_ABOVE: usize = 64;

/// The session's handle on one connection.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Its id.
    pub id: ConnId,
    /// The login its token named (`sid`), if any.
    login: Option<Arc<str>>,
    codec: Codec,
    outbound: Arc<Outbound>,
    closer: Arc<Closer>,
}

/// The connection's own end: the queue to write from, and its controls.
pub struct ConnectionEnd {
    /// Encoded frames, in the order they were queued, and their bytes.
    pub outbound: Arc<Outbound>,
    /// Asks for a close.
    pub closer: Arc<Closer>,
}

impl Connection {
    /// A handle and the connection's end, with a queue of `capacity` frames
    /// and a soft budget of `soft_bytes`.
    pub fn new(
        id: ConnId,
        codec: Codec,
        capacity: usize,
        soft_bytes: usize,
    ) -> (Connection, ConnectionEnd) {
        let closer = Arc::new(Closer::default());
        let outbound = Arc::new(Outbound::new(capacity, soft_bytes));
        let conn = Connection {
            id,
            login: None,
            codec,
            outbound: outbound.clone(),
            closer: closer.clone(),
        };
        (conn, ConnectionEnd { outbound, closer })
    }

    /// The same connection, signed in with `login`: revoking that login
    /// closes it.
    pub fn signed_in(mut self, login: Option<Arc<str>>) -> Self {
        self.login = login;
        self
    }

    /// The login its token named.
    pub fn login(&self) -> Option<&str> {
        self.login.as_deref()
    }

    /// The codec the connection speaks.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Bytes queued and not yet written (replies and pongs included).
    pub fn queued_bytes(&self) -> usize {
        self.outbound.queued()
    }

    /// Frames queued and not yet taken by the writer.
    pub fn queued_frames(&self) -> usize {
        self.outbound.frames()
    }

    /// Queues an event. A full queue, or one whose bytes pass the hard
    /// limit, closes the connection with 4003 and refuses the event.
    pub fn push_event(&self, frame: &SharedFrame) -> bool {
        let bytes = match frame.encoded(self.codec) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode an event");
                return false;
            }
        };
        if self.outbound.queued() + bytes.len() > self.outbound.hard() {
            self.closer.close(close_code::SLOW_CONSUMER);
            return false;
        }
        self.queue(bytes)
    }

    /// Queues a reply, already encoded for this connection. Not refused for
    /// its size: the reader holds back requests while the queue is over
    /// its soft limit, so replies are bounded where they are asked for.
    pub fn push_reply(&self, bytes: Bytes) -> bool {
        self.queue(bytes)
    }

    fn queue(&self, bytes: Bytes) -> bool {
        match self.outbound.push(bytes) {
            Ok(()) => true,
            Err(Refused::Full) => {
                self.closer.close(close_code::SLOW_CONSUMER);
                false
            }
            Err(Refused::Closed) => false,
        }
    }

    /// Asks the connection to close.
    pub fn close(&self, code: u16) {
        self.closer.close(code);
    }
}

#[cfg(test)]
mod tests {
    use chat_protocol::{MessageId, ServerFrame};

    use super::*;

    fn event(body_len: usize) -> SharedFrame {
        let message = crate::testing::message(
            crate::testing::conversation("g:1"),
            crate::testing::user("ann"),
            MessageId(1),
            "x".repeat(body_len),
            "k",
        );
        SharedFrame::new(ServerFrame::Message { message })
    }

    #[tokio::test]
    async fn events_past_twice_the_budget_close_the_connection_replies_do_not() {
        let (conn, end) = Connection::new(1, Codec::Json, 1000, 20_000);
        let big = event(3_000);
        let mut queued = 0;
        while conn.push_event(&big) {
            queued += 1;
            assert!(queued < 100, "never refused");
        }
        let size = big.encoded(Codec::Json).unwrap().len();
        assert_eq!(queued, 40_000 / size, "as many as twice the budget holds");
        assert_eq!(end.closer.code(), Some(close_code::SLOW_CONSUMER));
        assert!(end.outbound.queued() <= 40_000);

        // The writer's side takes everything queued and gives the bytes
        // back as it writes.
        let mut batch = VecDeque::new();
        end.outbound.take(&mut batch).await;
        assert_eq!(batch.len(), queued);
        assert_eq!(conn.queued_frames(), 0);
        let first = batch.pop_front().unwrap();
        end.outbound.written(first.len());
        assert_eq!(end.outbound.queued(), (queued - 1) * first.len());

        // A reply is queued whatever the bytes: the reader bounds replies.
        let (conn, end) = Connection::new(2, Codec::Json, 1000, 10);
        assert!(conn.push_reply(Bytes::from(vec![b'{'; 1_000])));
        assert_eq!(end.outbound.queued(), 1_000);
        assert_eq!(end.closer.code(), None);
    }

    #[test]
    fn a_full_queue_closes_and_gives_the_bytes_back() {
        let (conn, end) = Connection::new(1, Codec::MsgPack, 2, 1 << 20);
        let e = event(10);
        assert!(conn.push_event(&e) && conn.push_event(&e));
        let two = end.outbound.queued();
        assert!(!conn.push_event(&e), "the queue holds two frames");
        assert_eq!(end.outbound.queued(), two, "the refused one is not counted");
        assert_eq!(end.closer.code(), Some(close_code::SLOW_CONSUMER));
    }

    #[test]
    fn a_closed_queue_refuses_and_gives_back_what_it_held() {
        let (conn, end) = Connection::new(1, Codec::Json, 8, 1 << 20);
        let e = event(10);
        assert!(conn.push_event(&e) && conn.push_event(&e));
        end.outbound.close();
        assert_eq!(end.outbound.queued(), 0);
        assert_eq!(conn.queued_frames(), 0);
        assert!(
            !conn.push_event(&e),
            "nothing is queued after the writer left"
        );
        assert_eq!(end.outbound.queued(), 0);
        assert_eq!(
            end.closer.code(),
            None,
            "a closed queue is not a slow consumer"
        );
    }

    #[tokio::test]
    async fn the_writer_wakes_for_a_frame_queued_after_it_looked() {
        let (conn, end) = Connection::new(1, Codec::Json, 8, 1 << 20);
        let mut batch = VecDeque::new();
        let taker = {
            let outbound = end.outbound.clone();
            tokio::spawn(async move {
                outbound.take(&mut batch).await;
                batch
            })
        };
        // Let the taker find the queue empty and wait.
        tokio::task::yield_now().await;
        assert!(conn.push_event(&event(10)));
        let batch = tokio::time::timeout(chat_testkit::DEADLINE, taker)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(batch.len(), 1);
    }
}
