//! One Socket.IO socket seen as a WebSocket by the connection's reader and
//! writer: its events come in as client frames, the frames the writer sends
//! go out as events or as acknowledgements.
//!
//! The reader and writer are the WebSocket path's own (`ws::serve`), so a
//! Socket.IO client has the same window of requests in flight, the same
//! byte budget, the same slow-consumer cut (4003) and the same idle and
//! token deadlines. What differs is only how frames cross the wire:
//!
//! - in: an event `send` with `{conversation, ...}` and an acknowledgement
//!   becomes the frame `{"type":"send","req":N,...}`, `N` numbering the
//!   socket's acknowledgements; the frames wait in a channel as long as the
//!   reader's window (the reader stops taking them when its budget is
//!   spent). A client that sends past that gets `rate_limited` at once and
//!   nothing is queued: Socket.IO gives no way to stop reading a client.
//!   A refusal Socket.IO has no room for (the client is not reading its
//!   answers) is owed and paid in order as room comes; past a window's
//!   worth owed, or one that cannot go out for the idle timeout, the client
//!   is cut with 4003 as a WebSocket client would be. An answer is never
//!   dropped while the connection stays open.
//! - out: an `ok` or `error` whose `req` is an acknowledgement's goes to
//!   that acknowledgement; every other frame is emitted as the event named
//!   by its `type`. When Socket.IO's own buffer is full (the client is not
//!   reading, a polling client not polling), the write waits, so that the
//!   writer's stall deadline and the outbound queue's bound apply as they
//!   do to a WebSocket.
//! - the writer's pings are answered here while the socket is connected:
//!   Engine.IO's heartbeat is what notices a dead Socket.IO client, and its
//!   disconnect ends the reader.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::ws::Message as WsMessage;
use bytes::Bytes;
use chat_actors::conn::Closer;
use chat_protocol::{close_code, ServerFrame};
use futures_util::{Sink, Stream, StreamExt};
use serde::Deserialize;
use socketioxide::extract::AckSender;
use socketioxide::handler::{FromMessageParts, Value};
use socketioxide::socket::Socket;
use socketioxide::{SendError, SocketError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a socket's reader reads.
type Incoming = Result<WsMessage, axum::Error>;

/// The state one socket shares between its events, its reader and its
/// writer.
pub(super) struct Bridge {
    inbound: mpsc::Sender<Incoming>,
    /// Acknowledgement ids awaiting their reply, by the `req` given to
    /// their frame: at most the channel's capacity plus the reader's window.
    acks: Mutex<HashMap<u64, i64>>,
    next_req: AtomicU64,
    /// The MessagePack parser: frames go out as values, not JSON text.
    binary: bool,
    /// Cancelled when the socket disconnects.
    gone: CancellationToken,
    /// Refusals not yet handed to Socket.IO, oldest first (see `refuse`).
    owed: Mutex<VecDeque<(Option<i64>, ServerFrame)>>,
    /// Most refusals owed before the client is cut.
    most_owed: usize,
    /// Cuts the connection (4003) when it is not reading its answers.
    closer: Arc<Closer>,
    /// How long an owed refusal may wait for room: the idle timeout, the
    /// writer's stall deadline.
    stall: Duration,
}

/// Where a bridge's connection is cut and how long a write may stall.
pub(super) struct Cut {
    pub(super) closer: Arc<Closer>,
    pub(super) stall: Duration,
}

/// The halves `ws::serve` runs on.
pub(super) type Halves = (
    std::pin::Pin<Box<dyn Sink<WsMessage, Error = axum::Error> + Send>>,
    std::pin::Pin<Box<dyn Stream<Item = Incoming> + Send>>,
);

impl Bridge {
    /// A bridge for `socket` holding up to `capacity` frames not yet read,
    /// and the halves its connection runs on.
    pub(super) fn new(
        socket: Arc<Socket>,
        capacity: usize,
        binary: bool,
        cut: Cut,
    ) -> (Arc<Bridge>, Halves) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let bridge = Arc::new(Bridge {
            inbound: tx,
            acks: Mutex::new(HashMap::new()),
            next_req: AtomicU64::new(1),
            binary,
            gone: CancellationToken::new(),
            owed: Mutex::new(VecDeque::new()),
            most_owed: capacity.max(1),
            closer: cut.closer,
            stall: cut.stall,
        });
        let stream =
            futures_util::stream::unfold((rx, bridge.gone.clone()), |(mut rx, gone)| async move {
                let next = tokio::select! {
                    biased;
                    m = rx.recv() => m,
                    _ = gone.cancelled() => None,
                };
                next.map(|m| (m, (rx, gone)))
            })
            // The reader reads on (and discards) after the end while its
            // close goes out: an ended stream stays ended.
            .fuse();
        let sink = futures_util::sink::unfold(
            Out {
                socket,
                bridge: bridge.clone(),
            },
            |out, msg: WsMessage| async move {
                out.write(msg).await?;
                Ok::<_, axum::Error>(out)
            },
        );
        (bridge, (Box::pin(sink), Box::pin(stream)))
    }

    /// The socket is gone: the reader stops.
    pub(super) fn disconnected(&self) {
        self.gone.cancel();
        self.lock_acks().clear();
        self.lock_owed().clear();
    }

    fn lock_acks(&self) -> std::sync::MutexGuard<'_, HashMap<u64, i64>> {
        self.acks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_owed(&self) -> std::sync::MutexGuard<'_, VecDeque<(Option<i64>, ServerFrame)>> {
        self.owed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers an event the reader never saw (on its acknowledgement
    /// `ack`, or as an `error` event). This runs in Socket.IO's read loop,
    /// which cannot wait: when Socket.IO's buffer is full the refusal is
    /// owed, and a task pays what is owed, in order, as room comes.
    pub(super) fn refuse(
        self: &Arc<Self>,
        socket: &Arc<Socket>,
        ack: Option<i64>,
        refusal: ServerFrame,
    ) {
        let mut owed = self.lock_owed();
        if owed.is_empty() {
            match reply(socket, ack, "error", &refusal) {
                Err(SendError::Socket(SocketError::InternalChannelFull)) => {}
                // Sent, or the socket is gone and nobody is left to answer.
                _ => return,
            }
        }
        if owed.len() >= self.most_owed {
            // A window's worth of answers unread: the client has stopped
            // reading, as a WebSocket client whose queue overflows.
            owed.clear();
            drop(owed);
            self.closer.close(close_code::SLOW_CONSUMER);
            return;
        }
        owed.push_back((ack, refusal));
        if owed.len() == 1 {
            tokio::spawn(self.clone().pay(socket.clone()));
        }
    }

    /// Hands the owed refusals to Socket.IO, oldest first, each waiting
    /// for room at most the stall deadline. The refusal being paid stays
    /// in the list until it is out, so that later ones queue behind it.
    async fn pay(self: Arc<Self>, socket: Arc<Socket>) {
        loop {
            let Some((ack, refusal)) = self.lock_owed().front().cloned() else {
                return;
            };
            let sent = tokio::time::timeout(
                self.stall,
                until_room(&self.gone, || reply(&socket, ack, "error", &refusal)),
            )
            .await;
            let mut owed = self.lock_owed();
            match sent {
                Ok(Ok(())) => {
                    owed.pop_front();
                    if owed.is_empty() {
                        return;
                    }
                }
                Ok(Err(_)) => {
                    owed.clear();
                    return;
                }
                Err(_stalled) => {
                    owed.clear();
                    drop(owed);
                    self.closer.close(close_code::SLOW_CONSUMER);
                    return;
                }
            }
        }
    }

    /// A client frame, encoded with its `req` (one when the client asked
    /// for an acknowledgement `ack`), queued for the reader; `Err` when the
    /// client is too far ahead, and nothing was queued.
    pub(super) fn take(
        &self,
        frame: impl FnOnce(Option<u64>) -> Vec<u8>,
        ack: Option<i64>,
    ) -> Result<(), ()> {
        let permit = self.inbound.try_reserve().map_err(|_| ())?;
        let req = ack.map(|_| self.next_req.fetch_add(1, Ordering::Relaxed));
        let text = String::from_utf8(frame(req)).map_err(|_| ())?;
        if let (Some(req), Some(ack)) = (req, ack) {
            self.lock_acks().insert(req, ack);
        }
        permit.send(Ok(WsMessage::Text(text.into())));
        Ok(())
    }
}

/// Sends `v` on acknowledgement `ack`, or, when none was asked for, as the
/// event named `event`.
fn reply<T: serde::Serialize + ?Sized>(
    socket: &Arc<Socket>,
    ack: Option<i64>,
    event: &str,
    v: &T,
) -> Result<(), SendError> {
    match ack {
        Some(id) => acknowledge(socket, id, v),
        None => socket.emit(event, v),
    }
}

/// Sends `v` on acknowledgement `id` of `socket`.
fn acknowledge<T: serde::Serialize + ?Sized>(
    socket: &Arc<Socket>,
    id: i64,
    v: &T,
) -> Result<(), SendError> {
    // The sender is made for each try: it is spent by a send, even one
    // refused for want of room.
    let Ok(ack) = AckSender::from_message_parts(socket, &mut Value::Bytes(Bytes::new()), &Some(id));
    ack.send(v)
}

/// The writer's side: the socket to emit on.
struct Out {
    socket: Arc<Socket>,
    bridge: Arc<Bridge>,
}

/// The two fields of an outgoing frame that decide where it goes.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    ty: &'a str,
    #[serde(default)]
    req: Option<serde_json::Value>,
}

impl Out {
    async fn write(&self, msg: WsMessage) -> Result<(), axum::Error> {
        match msg {
            WsMessage::Text(t) => self.frame(Bytes::from(t)).await,
            WsMessage::Binary(b) => self.frame(b).await,
            WsMessage::Ping(p) => {
                if self.socket.connected() {
                    let _ = self.bridge.inbound.try_send(Ok(WsMessage::Pong(p)));
                }
                Ok(())
            }
            WsMessage::Pong(_) => Ok(()),
            WsMessage::Close(frame) => {
                // Socket.IO has no close codes: the reason goes first as
                // an event, so that a client can tell 4001 from 4003.
                // Both wait for room in Socket.IO's buffer, as long as the
                // writer lets a close take; a client that reads nothing is
                // then closed by Engine.IO's heartbeat, whose ping finds no
                // room either.
                if let Some(f) = frame {
                    let why = serde_json::json!({"code": f.code, "reason": f.reason.as_str()});
                    let _ = until_room(&self.bridge.gone, || self.socket.emit("close", &why)).await;
                }
                let _ = until_room(&self.bridge.gone, || {
                    self.socket.clone().disconnect().map_err(SendError::Socket)
                })
                .await;
                Ok(())
            }
        }
    }

    /// One frame out: to its acknowledgement, or as an event.
    async fn frame(&self, bytes: Bytes) -> Result<(), axum::Error> {
        let Ok(head) = serde_json::from_slice::<Head>(&bytes) else {
            tracing::error!("a frame for a Socket.IO client has no type");
            return Ok(());
        };
        let ack = match (&head.req, head.ty) {
            (Some(serde_json::Value::Number(n)), "ok" | "error") => {
                n.as_u64().and_then(|r| self.bridge.lock_acks().remove(&r))
            }
            _ => None,
        };
        let event = head.ty;
        // The MessagePack parser encodes values; the common one writes the
        // JSON text as it is, borrowed from the frame (no copy per frame).
        let value: Payload = if self.bridge.binary {
            Payload::Value(serde_json::from_slice(&bytes).map_err(axum::Error::new)?)
        } else {
            Payload::Raw(serde_json::from_slice(&bytes).map_err(axum::Error::new)?)
        };
        until_room(&self.bridge.gone, || match &value {
            Payload::Value(v) => reply(&self.socket, ack, event, v),
            Payload::Raw(r) => reply(&self.socket, ack, event, r),
        })
        .await
    }
}

/// Retries `send` while Socket.IO's buffer is full (or the socket not
/// yet connected), until the socket is `gone`: the caller bounds the wait
/// (the writer's stall deadline, or `Bridge::pay`'s).
async fn until_room(
    gone: &CancellationToken,
    mut send: impl FnMut() -> Result<(), SendError>,
) -> Result<(), axum::Error> {
    let mut pause = Duration::from_millis(1);
    loop {
        match send() {
            Ok(()) => return Ok(()),
            Err(SendError::Socket(SocketError::InternalChannelFull | SocketError::Closed))
                if !gone.is_cancelled() =>
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(axum::Error::new(e)),
        }
    }
}

/// A frame as the parser takes it.
enum Payload<'a> {
    Value(serde_json::Value),
    Raw(&'a serde_json::value::RawValue),
}
