//! The writer task of a connection: the outbound queue to the socket, in
//! batches, with pings, the pongs owed, and the close frame at the end.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Message as WsMessage;
use bytes::Bytes;
use chat_actors::conn::{Closer, Outbound};
use chat_protocol::{close_code, Codec};
use futures_util::SinkExt;

use super::io::{close, message_of, Pongs, CLOSE_TIMEOUT, IDLE_CLOSE};
use crate::gate::Gate;

/// What the writer shares with the rest of the connection.
pub(super) struct Control {
    pub(super) closer: Arc<Closer>,
    pub(super) outbound: Arc<Outbound>,
    pub(super) pongs: Arc<Pongs>,
    /// When the connection's token expires: a 4001 before then is its
    /// login revoked (the same code, told apart in the reason).
    pub(super) token_deadline: tokio::time::Instant,
}

/// Writes the outbound queue to the socket until the connection closes,
/// then sends the close frame. A write the socket does not take within
/// `stall` (the idle timeout) closes the connection with 4003: its client
/// stopped reading. `stall` also bounds how long a client cut with 4003 has
/// to read its backlog and so learn why it was cut.
///
/// As for the reader, the future holds each part once and works on it in
/// place (see `reader::serve`).
pub(super) fn write_loop<S>(
    sink: S,
    control: Control,
    codec: Codec,
    ping_every: Duration,
    stall: Duration,
) -> impl Future<Output = ()> + Send + 'static
where
    S: futures_util::Sink<WsMessage, Error = axum::Error> + Send + Unpin + 'static,
{
    let mut writer = Writer {
        sink,
        control,
        codec,
        ping_every,
        stall,
        // The frames taken from the queue and not yet written.
        batch: VecDeque::new(),
    };
    async move { writer.run().await }
}

/// A connection's writer: what its future holds.
struct Writer<S> {
    sink: S,
    control: Control,
    codec: Codec,
    ping_every: Duration,
    stall: Duration,
    batch: VecDeque<Bytes>,
}

impl<S> Writer<S>
where
    S: futures_util::Sink<WsMessage, Error = axum::Error> + Unpin,
{
    async fn run(&mut self) {
        // Fields reached through `self`, not bound to locals: a local
        // held across a wait is room in the future.
        let mut failed = false;
        // A block: what it pins borrows the writer, which the close needs.
        {
            // Made once, and polled only once one of them fires (see `gate`): a
            // close request and the ping timer are rare, frames are not.
            let gate = Gate::new();
            let closed = gate.wrap(self.control.closer.closed());
            let ping = gate.wrap(tokio::time::sleep(self.ping_every));
            tokio::pin!(closed, ping);
            'outer: loop {
                let wrote = tokio::select! {
                    biased;
                    _ = &mut closed => break,
                    () = self.control.outbound.take(&mut self.batch) => {
                        // Given back to the budget once the batch is on the
                        // socket: one update (and one wake-up of the reader)
                        // per batch.
                        let mut bytes_fed = 0;
                        while let Some(bytes) = self.batch.pop_front() {
                            bytes_fed += bytes.len();
                            if let Some(msg) = message_of(self.codec, bytes) {
                                match write_one(self.sink.feed(msg), closed.as_mut(), self.stall).await {
                                    Wrote::Done => {}
                                    other => {
                                        self.control.outbound.written(bytes_fed);
                                        match other {
                                            Wrote::Failed => failed = true,
                                            Wrote::Stalled => self.control.closer.close(close_code::SLOW_CONSUMER),
                                            _ => {}
                                        }
                                        break 'outer;
                                    }
                                }
                            }
                        }
                        // A flush writes the pongs buffered so far too.
                        let owed = self.control.pongs.owed();
                        let flushed = write_one(self.sink.flush(), closed.as_mut(), self.stall).await;
                        if let Wrote::Done = flushed {
                            self.control.pongs.paid(owed);
                        }
                        // Last: it wakes the reader, which then sees both.
                        self.control.outbound.written(bytes_fed);
                        flushed
                    }
                    _ = &mut ping => {
                        ping.as_mut()
                            .inner_mut()
                            .reset(tokio::time::Instant::now() + self.ping_every);
                        write_one(self.sink.send(WsMessage::Ping(Bytes::new())), closed.as_mut(), self.stall).await
                    }
                    // Pongs tungstenite buffered for pings the reader took: out
                    // they go, and the reader may read again.
                    _ = self.control.pongs.flush.notified(), if self.control.pongs.owed() > 0 => {
                        let owed = self.control.pongs.owed();
                        let wrote = write_one(self.sink.flush(), closed.as_mut(), self.stall).await;
                        if let Wrote::Done = wrote {
                            self.control.pongs.paid(owed);
                            self.control.outbound.written(0);
                        }
                        wrote
                    }
                };
                match wrote {
                    Wrote::Done => {}
                    Wrote::Failed => {
                        failed = true;
                        break;
                    }
                    Wrote::Closed => break,
                    Wrote::Stalled => {
                        self.control.closer.close(close_code::SLOW_CONSUMER);
                        break;
                    }
                }
            }
        }
        // The close, in a future of its own: its timers and the close frame
        // would otherwise be room every idle connection keeps.
        Box::pin(self.finish(failed)).await
    }

    /// After the last write: what is queued written (for a node going
    /// away) or freed, then the close frame and the socket's close.
    async fn finish(&mut self, failed: bool) {
        let Writer {
            sink,
            control,
            codec,
            stall,
            batch,
            ..
        } = self;
        let (codec, stall) = (*codec, *stall);
        let Control {
            closer,
            outbound,
            token_deadline,
            ..
        } = control;
        // A node going away first writes what is queued (the answers the
        // reader just collected), within a bound.
        if !failed && closer.code() == Some(close_code::GOING_AWAY) {
            let flushed = async {
                outbound.try_take(batch);
                while let Some(bytes) = batch.pop_front() {
                    let n = bytes.len();
                    if let Some(msg) = message_of(codec, bytes) {
                        sink.feed(msg).await?;
                    }
                    outbound.written(n);
                }
                sink.flush().await
            };
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, flushed).await;
        }
        // Nothing more will be written: free what is queued now rather than
        // after the close, and make the reader stop if the socket failed.
        outbound.written(batch.drain(..).map(|b| b.len()).sum());
        outbound.close();
        if failed {
            closer.close(1011);
        }
        if let Some(code) = closer.code() {
            let (reason, within) = match code {
                close_code::GOING_AWAY => ("going away", CLOSE_TIMEOUT),
                close_code::TOO_BIG => ("frame too big", CLOSE_TIMEOUT),
                close_code::PROTOCOL_ERROR => ("websocket protocol error", CLOSE_TIMEOUT),
                close_code::INVALID_DATA => ("text frame is not utf-8", CLOSE_TIMEOUT),
                close_code::TOKEN_EXPIRED if tokio::time::Instant::now() < *token_deadline => {
                    ("login revoked", CLOSE_TIMEOUT)
                }
                close_code::TOKEN_EXPIRED => ("token expired", CLOSE_TIMEOUT),
                close_code::TOO_MANY_CONNECTIONS => ("too many connections", CLOSE_TIMEOUT),
                // The close frame queues behind what the socket already
                // holds: a slow reader sees it once it has read that, and a
                // reader that does not read for as long as an idle client
                // is dead.
                close_code::SLOW_CONSUMER => (
                    "outbound queue overflowed; reconnect and catch up with history",
                    stall,
                ),
                IDLE_CLOSE => ("idle timeout", CLOSE_TIMEOUT),
                _ => ("", CLOSE_TIMEOUT),
            };
            let _ = close(sink, code, reason, within).await;
        }
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
    }
}

/// What happened to one write.
enum Wrote {
    Done,
    Failed,
    Closed,
    Stalled,
}

/// One write, raced against a close request (a client that stops reading
/// must not pin the writer) and against the stall deadline. Most writes
/// are done at their first poll: only one that has to wait pays for a timer
/// (a clock read and a timer-wheel entry per frame showed up in the CPU a
/// delivery costs).
async fn write_one<F, C>(op: F, closed: Pin<&mut C>, stall: Duration) -> Wrote
where
    F: Future<Output = Result<(), axum::Error>>,
    C: Future<Output = ()>,
{
    tokio::pin!(op);
    match futures_util::FutureExt::now_or_never(op.as_mut()) {
        Some(Ok(())) => Wrote::Done,
        Some(Err(_)) => Wrote::Failed,
        // Boxed: a timer is room every idle connection would keep.
        None => {
            let stalled = Box::pin(tokio::time::sleep(stall));
            tokio::select! {
                biased;
                r = op => if r.is_err() { Wrote::Failed } else { Wrote::Done },
                _ = closed => Wrote::Closed,
                _ = stalled => Wrote::Stalled,
            }
        }
    }
}
