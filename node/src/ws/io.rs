//! What both tasks of a connection share: the pongs owed, how a queued
//! frame becomes a WebSocket message, and the close handshake.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes};
use bytes::Bytes;
use chat_protocol::Codec;
use futures_util::SinkExt;
use tokio::sync::Notify;

/// Pongs the connection owes: tungstenite answers every ping read with a
/// pong in its write buffer. The reader counts them against the budget, and
/// the writer flushes them (and then forgets them), so a client that floods
/// pings without reading stops being read.
#[derive(Debug, Default)]
pub(super) struct Pongs {
    owed: AtomicUsize,
    pub(super) flush: Notify,
}

impl Pongs {
    pub(super) fn owe(&self, ping_len: usize) {
        // A pong repeats the ping's payload behind a header of 2 to 6 bytes.
        self.owed.fetch_add(ping_len + 6, Ordering::AcqRel);
        self.flush.notify_one();
    }

    pub(super) fn owed(&self) -> usize {
        self.owed.load(Ordering::Acquire)
    }

    /// `n` bytes of pongs, owed before a flush that went through, are out.
    pub(super) fn paid(&self, n: usize) {
        if n > 0 {
            self.owed.fetch_sub(n, Ordering::AcqRel);
        }
    }
}

/// A queued frame as the message its codec sends it in (text for JSON).
pub(super) fn message_of(codec: Codec, bytes: Bytes) -> Option<WsMessage> {
    Some(if codec.is_binary() {
        WsMessage::Binary(bytes)
    } else {
        WsMessage::Text(Utf8Bytes::try_from(bytes).ok()?)
    })
}

/// How long a close frame may take to go out, except after 4003.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a draining node waits for the answers of requests already read.
pub(super) const SHUTDOWN_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Closing a client that stopped answering pings: a normal closure, since
/// 1001 tells clients the node is going away.
pub(super) const IDLE_CLOSE: u16 = 1000;

/// Sends a close frame with `code` and `reason`, giving up after `within`.
pub(super) async fn close<S>(
    sink: &mut S,
    code: u16,
    reason: &str,
    within: Duration,
) -> Result<(), axum::Error>
where
    S: futures_util::Sink<WsMessage, Error = axum::Error> + Unpin,
{
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from(reason.to_string()),
    };
    tokio::time::timeout(within, sink.send(WsMessage::Close(Some(frame))))
        .await
        .unwrap_or(Ok(()))
}
