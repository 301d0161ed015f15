//! WebSocket connections: authentication before the upgrade, the codec chosen
//! by subprotocol, and the two tasks of each connection.
//!
//! ```text
//!  socket ─► reader task: decode, validate ─► Dispatch (frame + reply port) ─► actors
//!               │ awaits replies (bounded in flight), pushes them ─┐
//!               ▼                                                  ▼
//!  socket ◄─ writer task ◄──────────── bounded outbound queue ◄── fan-out (events)
//! ```
//!
//! Every frame towards the client goes through one bounded queue; when it is
//! full the connection is closed with 4003 instead of growing. Frames over
//! `max_frame_bytes` close with 1009, an expired token with 4001, a node
//! shutting down with 1001. The reader stops reading while too many requests
//! are in flight or have replies not yet written to the socket, which pushes
//! back on the client through TCP: a client that pipelines requests without
//! reading the replies stalls instead of growing the node's memory, and its
//! replies alone never overflow the queue (only events can, which is what
//! 4003 is for).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chat_actors::conn::{Closer, Connection, Outbound};
use chat_actors::dispatch::Caller;
use chat_actors::msg::{RouterMsg, SessionMsg};
use chat_actors::ChatError;
use chat_protocol::{close_code, ClientFrame, Codec, ErrorCode, ReqId, ServerFrame};
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use ractor::ActorRef;
use tokio::sync::{mpsc, Notify};

use crate::auth::{ensure_user, Claims};
use crate::error::HttpError;
use crate::state::App;

/// `GET /v1/ws`.
pub async fn upgrade(
    State(app): State<Arc<App>>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let claims = match app
        .auth
        .verify_request(&headers, params.get("access_token").map(String::as_str))
    {
        Ok(c) => c,
        Err(e) => return HttpError::from(e).into_response(),
    };
    if app.shutdown.is_cancelled() {
        return HttpError::from(ChatError::Unavailable("node is shutting down".into()))
            .into_response();
    }
    if let Err(e) = ensure_user(app.services.store.as_ref(), &claims.sub).await {
        return HttpError::from(e).into_response();
    }
    let ws = ws.protocols([Codec::JSON_PROTOCOL, Codec::MSGPACK_PROTOCOL]);
    let codec = ws
        .selected_protocol()
        .and_then(|p| p.to_str().ok())
        .and_then(Codec::from_subprotocol)
        .unwrap_or(Codec::Json);
    let limits = &app.config.limits;
    let ws = ws
        .max_frame_size(limits.max_frame_bytes)
        .max_message_size(limits.max_frame_bytes)
        // Small buffers keep an idle connection cheap; tungstenite grows
        // them for larger frames as needed.
        .read_buffer_size(READ_BUFFER)
        // Frames gather in the write buffer until the writer flushes at the
        // end of a batch (or this much is buffered): one syscall per batch,
        // not per frame, which is what a busy connection's fan-out needs.
        // The buffer only grows to what a batch holds.
        .write_buffer_size(WRITE_BUFFER)
        // No cap of its own beyond that: the writer waits for each frame to
        // be accepted before the next, so the buffer holds at most
        // `WRITE_BUFFER` and one frame. A cap would have to exceed the
        // largest reply, a history page of 200 messages of up to
        // `max_body_bytes` each, escaped: frames above it fail to send.
        .max_write_buffer_size(usize::MAX);
    let tracker = app.connections.clone();
    ws.on_upgrade(move |socket| {
        tracker.track_future(async move { serve(app, socket, claims, codec).await })
    })
}

type ReplyFuture = Pin<Box<dyn Future<Output = Option<Outbound>> + Send>>;

/// The replies (and errors) of one connection that are queued but not yet
/// written to the socket. The reader counts them with the requests in
/// flight, so a client that does not read its replies stops being read.
///
/// Only replies travel as [`Outbound::Frame`]; events are
/// [`Outbound::Shared`] and do not count.
#[derive(Debug, Default)]
struct ReplyWindow {
    unwritten: AtomicUsize,
    written: Notify,
}

impl ReplyWindow {
    /// Most requests in flight plus unwritten replies: at most half the
    /// outbound queue, so that replies never fill it and events always have
    /// room until the client stops reading.
    fn size(limits: &chat_protocol::Limits) -> usize {
        limits
            .inflight_per_connection
            .min(limits.outbound_queue / 2)
            .max(1)
    }

    fn unwritten(&self) -> usize {
        self.unwritten.load(Ordering::Acquire)
    }

    /// Queues a reply for the writer.
    fn push(&self, conn: &Connection, reply: Outbound) {
        // Counted before it is queued: the writer may write it at once.
        self.unwritten.fetch_add(1, Ordering::AcqRel);
        if !conn.push(reply) {
            self.written_one();
        }
    }

    /// The writer wrote (or dropped) a reply.
    fn written_one(&self) {
        let _ = self
            .unwritten
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        self.written.notify_one();
    }
}

/// Runs one connection until it closes.
pub async fn serve(app: Arc<App>, socket: WebSocket, claims: Claims, codec: Codec) {
    let limits = app.config.limits.clone();
    let id = app.next_conn.fetch_add(1, Ordering::Relaxed);
    let (conn, rx, closer) = Connection::new(id, limits.outbound_queue);
    let (mut sink, mut stream) = socket.split();

    let attached = ractor::call!(app.router, |reply| RouterMsg::Connect {
        user: claims.sub.clone(),
        conn: conn.clone(),
        reply,
    });
    let session: ActorRef<SessionMsg> = match attached {
        Ok(Ok(s)) => s,
        Ok(Err(ChatError::TooManyConnections)) => {
            let _ = close(
                &mut sink,
                close_code::TOO_MANY_CONNECTIONS,
                "too many connections",
                CLOSE_TIMEOUT,
            )
            .await;
            return;
        }
        Ok(Err(e)) => {
            let _ = close(&mut sink, 1011, &e.to_string(), CLOSE_TIMEOUT).await;
            return;
        }
        Err(_) => {
            let _ = close(
                &mut sink,
                close_code::GOING_AWAY,
                "node is shutting down",
                CLOSE_TIMEOUT,
            )
            .await;
            return;
        }
    };

    let caller = Caller {
        user: claims.sub.clone(),
        conn: Some(id),
        session: Some(session.clone()),
    };
    let ping_every = Duration::from_secs(limits.idle_timeout_secs.max(2) / 2);
    let idle = Duration::from_secs(limits.idle_timeout_secs);
    let window = Arc::new(ReplyWindow::default());
    let window_size = ReplyWindow::size(&limits);
    let writer = tokio::spawn(write_loop(
        sink,
        rx,
        closer.clone(),
        window.clone(),
        codec,
        ping_every,
        idle,
    ));

    // The same leeway the upgrade allowed, or a reconnect with this token
    // would be accepted and cut again at once.
    let token_deadline = deadline_of(claims.exp + app.config.auth.leeway_secs);
    let mut last_heard = Instant::now();
    let mut pending: FuturesUnordered<ReplyFuture> = FuturesUnordered::new();
    // Made once, not per frame: re-arming timers and re-registering waiters
    // on every frame read cost more than the frame's routing.
    let closed = closer.closed();
    let shutdown = app.shutdown.cancelled();
    let token_expired = tokio::time::sleep_until(token_deadline);
    let idle_timer = tokio::time::sleep_until(tokio::time::Instant::from_std(last_heard + idle));
    tokio::pin!(closed, shutdown, token_expired, idle_timer);
    loop {
        let room = pending.len() + window.unwritten() < window_size;
        tokio::select! {
            _ = &mut closed => break,
            _ = &mut shutdown => {
                // Answer what was already read before saying goodbye: those
                // requests may be stored, and an answer spares a retry.
                let answered = async {
                    while let Some(out) = pending.next().await {
                        if let Some(frame) = out {
                            window.push(&conn, frame);
                        }
                    }
                };
                let _ = tokio::time::timeout(SHUTDOWN_ANSWER_TIMEOUT, answered).await;
                closer.close(close_code::GOING_AWAY);
                break;
            }
            _ = &mut token_expired => {
                closer.close(close_code::TOKEN_EXPIRED);
                break;
            }
            _ = &mut idle_timer => {
                // The timer is pushed back only when it fires, not on every
                // frame heard.
                let idle_at = last_heard + idle;
                if idle_at > Instant::now() {
                    idle_timer.as_mut().reset(tokio::time::Instant::from_std(idle_at));
                    continue;
                }
                closer.close(IDLE_CLOSE);
                break;
            }
            Some(out) = pending.next(), if !pending.is_empty() => {
                if let Some(frame) = out {
                    window.push(&conn, frame);
                }
            }
            // Full: wait for the writer to make room.
            _ = window.written.notified(), if !room => {}
            incoming = stream.next(), if room => {
                last_heard = Instant::now();
                let bytes: Bytes = match incoming {
                    Some(Ok(WsMessage::Text(t))) => Bytes::from(t),
                    Some(Ok(WsMessage::Binary(b))) => b,
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
                    Some(Ok(WsMessage::Close(_))) | None => break,
                    Some(Err(e)) => {
                        if is_too_big(&e) {
                            closer.close(close_code::TOO_BIG);
                        }
                        break;
                    }
                };
                if let Some(fut) = handle_frame(&app, &caller, &conn, &window, codec, &bytes) {
                    pending.push(fut);
                }
            }
        }
    }
    let _ = session.cast(SessionMsg::Detach { conn: id });
    if closer.code() == Some(close_code::SLOW_CONSUMER) {
        app.services.metrics.slow_consumers.inc();
    }
    // The writer sends the close frame (if one was asked for) and stops.
    if closer.code().is_none() {
        closer.close(1000);
    }
    // Keep reading (and discarding) while the close frame goes out: closing a
    // socket with unread input makes the kernel send a reset, and the client
    // would lose the close frame and the last replies with it.
    let discard = async {
        while let Some(Ok(msg)) = stream.next().await {
            if matches!(msg, WsMessage::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::join!(
        tokio::time::timeout(Duration::from_secs(5), writer),
        tokio::time::timeout(Duration::from_secs(2), discard),
    );
}

fn deadline_of(exp_unix_secs: u64) -> tokio::time::Instant {
    let now = chat_protocol::now_ms() / 1000;
    let left = exp_unix_secs.saturating_sub(now);
    tokio::time::Instant::now() + Duration::from_secs(left.min(10 * 365 * 24 * 3600))
}

fn is_too_big(e: &axum::Error) -> bool {
    let text = format!("{e:?}");
    text.contains("Capacity") || text.contains("too long") || text.contains("too big")
}

fn error_frame(req: Option<ReqId>, code: ErrorCode, message: String) -> Outbound {
    Outbound::frame(ServerFrame::error(req, code, message))
}

/// Decodes and checks one frame; returns the future of its reply when an
/// actor answers it.
fn handle_frame(
    app: &App,
    caller: &Caller,
    conn: &Connection,
    window: &ReplyWindow,
    codec: Codec,
    bytes: &[u8],
) -> Option<ReplyFuture> {
    let limits = &app.config.limits;
    let frame = match codec.decode_client(bytes) {
        Ok(f) => f,
        Err(e) => {
            app.services.metrics.frames_rejected.inc();
            window.push(
                conn,
                error_frame(
                    e.req,
                    ErrorCode::BadRequest,
                    format!("invalid frame: {}", e.reason),
                ),
            );
            return None;
        }
    };
    let req = frame.req().cloned();
    if let Err(r) = frame.validate(limits) {
        app.services.metrics.frames_rejected.inc();
        window.push(conn, error_frame(req, r.code, r.message));
        return None;
    }
    if let ClientFrame::Ping { .. } = frame {
        window.push(conn, Outbound::frame(ServerFrame::ok(req)));
        return None;
    }
    let silent = matches!(frame, ClientFrame::Typing { .. });
    let (tx, rx) = ractor::concurrency::oneshot();
    app.dispatch.dispatch(caller, frame, tx.into());
    Some(Box::pin(async move {
        let result = rx
            .await
            .unwrap_or_else(|_| Err(ChatError::Unavailable("request lost; retry".into())));
        match result {
            Ok(_) if silent => None,
            Ok(mut ok) => {
                ok.req = req;
                Some(Outbound::frame(ServerFrame::Ok(ok)))
            }
            Err(e) => Some(Outbound::frame(e.to_frame(req))),
        }
    }))
}

fn encode(codec: Codec, out: &Outbound) -> Option<WsMessage> {
    let bytes = match out {
        Outbound::Frame(f) => Bytes::from(codec.encode(f.as_ref()).ok()?),
        Outbound::Shared(s) => s.encoded(codec).ok()?,
    };
    Some(if codec.is_binary() {
        WsMessage::Binary(bytes)
    } else {
        WsMessage::Text(Utf8Bytes::try_from(bytes).ok()?)
    })
}

/// How long a close frame may take to go out, except after 4003.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a draining node waits for the answers of requests already read.
const SHUTDOWN_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Closing a client that stopped answering pings: a normal closure, since
/// 1001 tells clients the node is going away.
const IDLE_CLOSE: u16 = 1000;

async fn close<S>(
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

/// Most frames written before one flush: batching writes into fewer
/// syscalls pays under fan-out bursts.
const WRITE_BATCH: usize = 64;

/// Bytes buffered before a write happens even within a batch.
const WRITE_BUFFER: usize = 32 * 1024;

/// Bytes the read buffer starts with, and reads at most at once: client
/// frames are small (a send is a few hundred bytes), and every connection
/// holds this much while idle. Larger frames grow it (up to
/// `max_frame_bytes`).
const READ_BUFFER: usize = 1024;

/// Writes the outbound queue to the socket until the connection closes,
/// then sends the close frame. `close_grace` bounds how long a client cut
/// with 4003 has to read its backlog and so learn why it was cut.
async fn write_loop<S>(
    mut sink: S,
    mut rx: mpsc::Receiver<Outbound>,
    closer: Arc<Closer>,
    window: Arc<ReplyWindow>,
    codec: Codec,
    ping_every: Duration,
    close_grace: Duration,
) where
    S: futures_util::Sink<WsMessage, Error = axum::Error> + Unpin,
{
    let mut ping = tokio::time::interval(ping_every);
    ping.tick().await;
    let mut failed = false;
    // Made once: a waiter registered per frame costs a lock each time.
    let closed = closer.closed();
    tokio::pin!(closed);
    'outer: loop {
        tokio::select! {
            biased;
            _ = &mut closed => break,
            item = rx.recv() => {
                let Some(first) = item else { break };
                let mut next = Some(first);
                let mut fed = 0;
                while let Some(out) = next.take() {
                    if let Some(msg) = encode(codec, &out) {
                        // A client that stops reading must not pin this
                        // task: a close request interrupts a blocked write.
                        tokio::select! {
                            biased;
                            r = sink.feed(msg) => if r.is_err() {
                                failed = true;
                                break 'outer;
                            },
                            _ = &mut closed => break 'outer,
                        }
                    }
                    if matches!(out, Outbound::Frame(_)) {
                        window.written_one();
                    }
                    fed += 1;
                    if fed < WRITE_BATCH {
                        next = rx.try_recv().ok();
                    }
                }
                tokio::select! {
                    biased;
                    r = sink.flush() => if r.is_err() {
                        failed = true;
                        break;
                    },
                    _ = &mut closed => break,
                }
            }
            _ = ping.tick() => {
                tokio::select! {
                    biased;
                    r = sink.send(WsMessage::Ping(Bytes::new())) => if r.is_err() {
                        failed = true;
                        break;
                    },
                    _ = &mut closed => break,
                }
            }
        }
    }
    // A node going away first writes what is queued (the answers the reader
    // just collected), within a bound.
    if !failed && closer.code() == Some(close_code::GOING_AWAY) {
        let flushed = async {
            while let Ok(out) = rx.try_recv() {
                if let Some(msg) = encode(codec, &out) {
                    sink.feed(msg).await?;
                }
            }
            sink.flush().await
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, flushed).await;
    }
    // Nothing more will be written: free what is queued now rather than
    // after the close, and make the reader stop if the socket failed.
    rx.close();
    drop(rx);
    if failed {
        closer.close(1011);
    }
    if let Some(code) = closer.code() {
        let (reason, within) = match code {
            close_code::GOING_AWAY => ("going away", CLOSE_TIMEOUT),
            close_code::TOO_BIG => ("frame too big", CLOSE_TIMEOUT),
            close_code::TOKEN_EXPIRED => ("token expired", CLOSE_TIMEOUT),
            close_code::TOO_MANY_CONNECTIONS => ("too many connections", CLOSE_TIMEOUT),
            // The close frame queues behind what the socket already holds:
            // a slow reader sees it once it has read that, and a reader
            // that does not read for as long as an idle client is dead.
            close_code::SLOW_CONSUMER => (
                "outbound queue overflowed; reconnect and catch up with history",
                close_grace,
            ),
            IDLE_CLOSE => ("idle timeout", CLOSE_TIMEOUT),
            _ => ("", CLOSE_TIMEOUT),
        };
        let _ = close(&mut sink, code, reason, within).await;
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
}
