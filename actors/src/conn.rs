//! Handles on client connections: what actors hold to push frames to a
//! connection and to ask it to close. The connection's own tasks (in the
//! node crate) own the socket and the other end of the queue.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use chat_protocol::{close_code, ServerFrame, SharedFrame};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A connection's id, unique on its node.
pub type ConnId = u64;

/// A frame queued towards a connection.
#[derive(Debug)]
pub enum Outbound {
    /// A reply or error for this connection only (boxed: queue slots stay
    /// small, and an idle connection's queue costs little).
    Frame(Box<ServerFrame>),
    /// An event shared with other connections, encoded once per codec.
    Shared(Arc<SharedFrame>),
}

impl Outbound {
    /// A frame for this connection only.
    pub fn frame(frame: ServerFrame) -> Self {
        Outbound::Frame(Box::new(frame))
    }
}

/// One event of a fan-out.
#[derive(Debug)]
pub struct Delivery {
    /// The event.
    pub frame: Arc<SharedFrame>,
    /// The connection not to send it to (the sender's, which has the `ok`).
    pub skip_conn: Option<ConnId>,
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

/// The session's handle on one connection.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Its id.
    pub id: ConnId,
    tx: mpsc::Sender<Outbound>,
    closer: Arc<Closer>,
}

impl Connection {
    /// A handle and the receiving end of its outbound queue of `capacity` frames.
    pub fn new(id: ConnId, capacity: usize) -> (Connection, mpsc::Receiver<Outbound>, Arc<Closer>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let closer = Arc::new(Closer::default());
        (
            Connection {
                id,
                tx,
                closer: closer.clone(),
            },
            rx,
            closer,
        )
    }

    /// Queues a frame; a full queue closes the connection with 4003, since a
    /// client that reads this slowly must reconnect and catch up with history.
    pub fn push(&self, frame: Outbound) -> bool {
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.closer.close(close_code::SLOW_CONSUMER);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Asks the connection to close.
    pub fn close(&self, code: u16) {
        self.closer.close(code);
    }
}
