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
//! Every frame towards the client goes through one queue, bounded in frames
//! and in bytes ([`chat_actors::conn`]). The reader takes a new request only
//! while what is queued, what the requests in flight may answer with (a
//! reservation per request) and the pongs owed stay under the connection's
//! byte budget, and while the queue has room for every reply in flight: a
//! client that pipelines requests (or pings) without reading stalls, pushed
//! back through TCP, instead of growing the node's memory, and its replies
//! alone never overflow the queue. Events can, and then the connection is
//! closed with 4003; so is one whose socket accepts nothing for the idle
//! timeout. Frames over `max_frame_bytes` close with 1009, broken WebSocket
//! framing with 1002, text that is not UTF-8 with 1007, an expired token
//! with 4001, a node shutting down with 1001.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chat_actors::conn::{Closer, Connection, ConnectionEnd, Outbound};
use chat_actors::dispatch::Caller;
use chat_actors::msg::{RouterMsg, SessionHandle, SessionMsg};
use chat_actors::telemetry::{parent_of, Span};
use chat_actors::ChatError;
use chat_protocol::{close_code, ClientFrame, Codec, ErrorCode, ServerFrame};
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::Notify;

use crate::auth::Claims;
use crate::error::HttpError;
use crate::gate::Gate;
use crate::state::App;

/// `GET /v1/ws`.
pub async fn upgrade(
    State(app): State<Arc<App>>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // axum's own rejection is plain text with no code: a client that
    // reached this route without upgrading (a fetch, a proxy that drops
    // the upgrade headers) gets the JSON error every other route answers.
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            let why = rejection.body_text();
            return HttpError::new(
                ErrorCode::BadRequest,
                format!("a WebSocket upgrade is required here: {why}"),
            )
            .into_response();
        }
    };
    if app.shutdown.is_cancelled() {
        return HttpError::from(ChatError::Unavailable("node is shutting down".into()))
            .into_response();
    }
    let token = params.get("access_token").map(String::as_str);
    let store = app.services.store.as_ref();
    let claims = match app.auth.authorize(store, &headers, token).await {
        Ok(c) => c,
        Err(e) => return HttpError::from(e).into_response(),
    };
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
        // The writer waits for each frame to be accepted before the next,
        // so the buffer holds at most `WRITE_BUFFER` and one frame, plus
        // the pongs tungstenite answers pings with (which the reader also
        // bounds). The cap must exceed the largest frame: a page of
        // history or changes stops at `MAX_PAGE_BYTES` as encoded.
        .max_write_buffer_size(MAX_WRITE_BUFFER);
    // Attached before the 101 goes out: once a client sees its upgrade
    // accepted, whatever its conversations accept reaches it live (the
    // frames wait in its queue until the socket is there). In a task of its
    // own: a client that hangs up drops this handler, and an attachment
    // made after that must still be dropped, and so detached.
    let admitted = match tokio::spawn(admit(app.clone(), claims.clone(), codec)).await {
        Ok(admitted) => admitted,
        Err(e) => {
            tracing::error!(error = %e, "admitting a connection failed");
            return HttpError::from(ChatError::Unavailable("cannot admit the connection".into()))
                .into_response();
        }
    };
    let tracker = app.connections.clone();
    ws.on_upgrade(move |socket| {
        tracker.track_future(async move { serve(app, socket, claims, codec, admitted).await })
    })
}

/// A connection attached to its user's session before its upgrade, or the
/// close code and reason it gets instead.
struct Admitted {
    id: u64,
    conn: Connection,
    end: ConnectionEnd,
    attached: Result<Attachment, (u16, String)>,
}

/// Detaches the connection from its session when dropped: when it ends, or
/// when its upgrade never completes.
struct Attachment {
    session: SessionHandle,
    conn: u64,
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let _ = self.session.send(SessionMsg::Detach { conn: self.conn });
    }
}

async fn admit(app: Arc<App>, claims: Claims, codec: Codec) -> Admitted {
    let limits = &app.config.limits;
    let id = app.next_conn.fetch_add(1, Ordering::Relaxed);
    let (conn, end) = Connection::new(id, codec, limits.outbound_queue, limits.outbound_bytes);
    let conn = conn.signed_in(claims.sid.as_deref().map(Arc::from));
    let attached = ractor::call!(app.router, |reply| RouterMsg::Connect {
        user: claims.sub.clone(),
        conn: conn.clone(),
        reply,
    });
    let attached = match attached {
        Ok(Ok(session)) => Ok(Attachment { session, conn: id }),
        Ok(Err(ChatError::TooManyConnections)) => Err((
            close_code::TOO_MANY_CONNECTIONS,
            "too many connections".to_string(),
        )),
        Ok(Err(e)) => Err((1011, e.to_string())),
        Err(_) => Err((close_code::GOING_AWAY, "node is shutting down".to_string())),
    };
    Admitted {
        id,
        conn,
        end,
        attached,
    }
}

/// The future of one request's reply: its encoded frame (none for typing
/// without a `req`) and the bytes reserved for it.
type ReplyFuture = Pin<Box<dyn Future<Output = (Option<Bytes>, usize)> + Send>>;

/// Pongs the connection owes: tungstenite answers every ping read with a
/// pong in its write buffer. The reader counts them against the budget, and
/// the writer flushes them (and then forgets them), so a client that floods
/// pings without reading stops being read.
#[derive(Debug, Default)]
struct Pongs {
    owed: AtomicUsize,
    flush: Notify,
}

impl Pongs {
    fn owe(&self, ping_len: usize) {
        // A pong repeats the ping's payload behind a header of 2 to 6 bytes.
        self.owed.fetch_add(ping_len + 6, Ordering::AcqRel);
        self.flush.notify_one();
    }

    fn owed(&self) -> usize {
        self.owed.load(Ordering::Acquire)
    }

    /// `n` bytes of pongs, owed before a flush that went through, are out.
    fn paid(&self, n: usize) {
        if n > 0 {
            self.owed.fetch_sub(n, Ordering::AcqRel);
        }
    }
}

/// Runs one connection until it closes.
async fn serve(app: Arc<App>, socket: WebSocket, claims: Claims, codec: Codec, admitted: Admitted) {
    let limits = app.config.limits.clone();
    let Admitted {
        id,
        conn,
        end,
        attached,
    } = admitted;
    let ConnectionEnd { outbound, closer } = end;
    let (mut sink, mut stream) = socket.split();
    let attachment = match attached {
        Ok(a) => a,
        Err((code, reason)) => {
            let _ = close(&mut sink, code, &reason, CLOSE_TIMEOUT).await;
            return;
        }
    };
    let session = attachment.session.clone();
    let caller = Caller {
        user: claims.sub.clone(),
        conn: Some(id),
        session: Some(session.clone()),
    };
    let ping_every = Duration::from_secs(limits.idle_timeout_secs.max(2) / 2);
    let idle = Duration::from_secs(limits.idle_timeout_secs);
    let pongs = Arc::new(Pongs::default());
    // The same leeway the upgrade allowed, or a reconnect with this token
    // would be accepted and cut again at once.
    let token_deadline = deadline_of(claims.exp + app.config.auth.leeway_secs);
    let writer = tokio::spawn(write_loop(
        sink,
        Control {
            closer: closer.clone(),
            outbound: outbound.clone(),
            pongs: pongs.clone(),
            token_deadline,
        },
        codec,
        ping_every,
        idle,
    ));

    // Replies in flight plus frames queued stay under half the queue, so
    // that replies never fill it and events always have room until the
    // client stops reading.
    let window = limits
        .inflight_per_connection
        .min(limits.outbound_queue / 2)
        .max(1);
    let mut pending: FuturesUnordered<ReplyFuture> = FuturesUnordered::new();
    let mut reserved = 0usize;
    // When a frame was last heard, in ms since `started`: stamped per frame,
    // read only when the idle timer fires (it is not re-armed per frame).
    let started = Instant::now();
    let heard = AtomicU64::new(0);
    // Everything that ends the reader but its socket, in one future made
    // once and polled only once one of its parts fires (see `gate`):
    // re-registering waiters and timers on every frame read cost more than
    // the frame's routing.
    let gate = Gate::new();
    let ending = gate.wrap(async {
        let idle_passed = async {
            loop {
                let at = started + Duration::from_millis(heard.load(Ordering::Relaxed)) + idle;
                if at <= Instant::now() {
                    break;
                }
                tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
            }
        };
        tokio::select! {
            _ = closer.closed() => Ending::Closed,
            _ = app.shutdown.cancelled() => Ending::Shutdown,
            _ = tokio::time::sleep_until(token_deadline) => Ending::TokenExpired,
            _ = idle_passed => Ending::Idle,
        }
    });
    tokio::pin!(ending);
    loop {
        let room = pending.len() + conn.queued_frames() < window
            && outbound.queued() + reserved + pongs.owed() < outbound.soft();
        tokio::select! {
            why = &mut ending => {
                match why {
                    Ending::Closed => {}
                    Ending::Shutdown => {
                        // Answer what was already read before saying
                        // goodbye: those requests may be stored, and an
                        // answer spares a retry.
                        let answered = async {
                            while let Some((out, _)) = pending.next().await {
                                if let Some(bytes) = out {
                                    conn.push_reply(bytes);
                                }
                            }
                        };
                        let _ = tokio::time::timeout(SHUTDOWN_ANSWER_TIMEOUT, answered).await;
                        closer.close(close_code::GOING_AWAY);
                    }
                    Ending::TokenExpired => closer.close(close_code::TOKEN_EXPIRED),
                    Ending::Idle => closer.close(IDLE_CLOSE),
                }
                break;
            }
            Some((out, reservation)) = pending.next(), if !pending.is_empty() => {
                reserved -= reservation;
                if let Some(bytes) = out {
                    conn.push_reply(bytes);
                }
            }
            // Over budget: wait for the writer to make room.
            _ = outbound.wait_written(), if !room => {}
            incoming = stream.next(), if room => {
                heard.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                let bytes: Bytes = match incoming {
                    Some(Ok(WsMessage::Text(t))) => Bytes::from(t),
                    Some(Ok(WsMessage::Binary(b))) => b,
                    Some(Ok(WsMessage::Ping(p))) => {
                        pongs.owe(p.len());
                        continue;
                    }
                    Some(Ok(WsMessage::Pong(_))) => continue,
                    Some(Ok(WsMessage::Close(_))) | None => break,
                    Some(Err(e)) => {
                        if let Some(code) = close_code_of(&e) {
                            closer.close(code);
                        }
                        break;
                    }
                };
                match handle_frame(&app, &caller, &conn, codec, &bytes) {
                    Handled::Answered(reply) => {
                        conn.push_reply(reply);
                    }
                    Handled::Pending(fut, reservation) => {
                        reserved += reservation;
                        pending.push(fut);
                    }
                }
            }
        }
    }
    drop(attachment);
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

/// The close code a read error calls for: 1009 for a frame over the limit,
/// 1002 for broken WebSocket framing, 1007 for text that is not UTF-8; none
/// for a socket that failed (nobody would read it).
fn close_code_of(e: &axum::Error) -> Option<u16> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let inner = std::error::Error::source(e)?.downcast_ref::<WsError>()?;
    match inner {
        WsError::Capacity(_) => Some(close_code::TOO_BIG),
        WsError::Protocol(_) => Some(close_code::PROTOCOL_ERROR),
        WsError::Utf8(_) => Some(close_code::INVALID_DATA),
        _ => None,
    }
}

/// What ends a connection's reader, other than its socket.
enum Ending {
    /// A close was asked for (by the writer, the session, an operator).
    Closed,
    /// The node is shutting down.
    Shutdown,
    /// The token the connection was opened with expired.
    TokenExpired,
    /// Nothing heard for the idle timeout.
    Idle,
}

/// What became of one frame read.
enum Handled {
    /// Answered at once (an error, or a ping): the encoded reply.
    Answered(Bytes),
    /// Sent on: its reply's future, and the bytes reserved for that reply.
    Pending(ReplyFuture, usize),
}

/// Bytes reserved for the reply of a request in flight: a page of history,
/// of changes or of conversations may take up to a page's worth as encoded
/// (pages are cut by their encoded size); a send's `ok` echoes its message;
/// an edit's, a delete's or a reaction's echoes the message it changed,
/// which may be any message (its body escaped, its reactions); anything else
/// is small.
fn reservation(frame: &ClientFrame, limits: &chat_protocol::Limits) -> usize {
    const SMALL: usize = 512;
    match frame {
        ClientFrame::History { .. }
        | ClientFrame::Changes { .. }
        | ClientFrame::Conversations { .. } => chat_protocol::limits::MAX_PAGE_BYTES,
        ClientFrame::Send { body, .. } => body.len() + SMALL,
        ClientFrame::Edit { .. } | ClientFrame::Delete { .. } | ClientFrame::React { .. } => {
            chat_protocol::limits::message_reply_bound(limits.max_body_bytes)
        }
        // A member is an id of at most 64 bytes and a role.
        ClientFrame::Members { limit, .. } => {
            limit.unwrap_or(chat_protocol::peer::DEFAULT_MEMBERS_PAGE) as usize * 96 + SMALL
        }
        _ => SMALL,
    }
}

fn encode_reply(codec: Codec, frame: &ServerFrame) -> Bytes {
    match codec.encode(frame) {
        Ok(bytes) => Bytes::from(bytes),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a reply");
            let fallback = ServerFrame::error(None, ErrorCode::Internal, "reply not encodable");
            Bytes::from(codec.encode(&fallback).unwrap_or_default())
        }
    }
}

/// Decodes and checks one frame, and hands it to the dispatcher.
fn handle_frame(
    app: &App,
    caller: &Caller,
    conn: &Connection,
    codec: Codec,
    bytes: &[u8],
) -> Handled {
    let limits = &app.config.limits;
    let error = |reason: &'static str, req, code, message| {
        app.services.metrics.rejected(reason);
        app.services.metrics.error(code);
        Handled::Answered(encode_reply(codec, &ServerFrame::error(req, code, message)))
    };
    let frame = match codec.decode_client(bytes) {
        Ok(f) => f,
        Err(e) => {
            return error(
                "undecodable",
                e.req,
                ErrorCode::BadRequest,
                format!("invalid frame: {}", e.reason),
            )
        }
    };
    let req = frame.req().cloned();
    if let Err(r) = frame.validate(limits) {
        let reason = match r.code {
            ErrorCode::TooLarge => "too_large",
            _ => "invalid",
        };
        return error(reason, req, r.code, r.message);
    }
    if let ClientFrame::Ping { .. } = frame {
        return Handled::Answered(encode_reply(codec, &ServerFrame::ok(req)));
    }
    // Typing is answered only when the client asked for an answer.
    let silent = matches!(frame, ClientFrame::Typing { .. }) && req.is_none();
    let reserved = reservation(&frame, limits);
    let (tx, rx) = ractor::concurrency::oneshot();
    // Sends are what a trace follows across nodes; the root ends with the
    // answer.
    let mut span = match &frame {
        ClientFrame::Send { conversation, .. } => Span::root("chat.send").map(|mut s| {
            s.set("chat.conversation", conversation.to_string());
            s
        }),
        _ => None,
    };
    app.dispatch
        .dispatch_traced(caller, frame, tx.into(), parent_of(&span));
    let codec = conn.codec();
    let metrics = app.services.metrics.clone();
    Handled::Pending(
        Box::pin(async move {
            let result = rx
                .await
                .unwrap_or_else(|_| Err(ChatError::Unavailable("request lost; retry".into())));
            if let (Some(span), Err(e)) = (&mut span, &result) {
                span.fail(e.to_string());
            }
            drop(span);
            let out = match result {
                Ok(_) if silent => None,
                Ok(mut ok) => {
                    ok.req = req;
                    Some(encode_reply(codec, &ServerFrame::Ok(ok)))
                }
                Err(e) => {
                    metrics.error(e.code());
                    Some(encode_reply(codec, &e.to_frame(req)))
                }
            };
            (out, reserved)
        }),
        reserved,
    )
}

/// What the writer shares with the rest of the connection.
struct Control {
    closer: Arc<Closer>,
    outbound: Arc<Outbound>,
    pongs: Arc<Pongs>,
    /// When the connection's token expires: a 4001 before then is its
    /// login revoked (the same code, told apart in the reason).
    token_deadline: tokio::time::Instant,
}

fn message_of(codec: Codec, bytes: Bytes) -> Option<WsMessage> {
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

/// Bytes buffered before a write happens even within a batch.
const WRITE_BUFFER: usize = 32 * 1024;

/// Bytes the read buffer starts with, and reads at most at once: client
/// frames are small (a send is a few hundred bytes), and every connection
/// holds this much while idle. Larger frames grow it (up to
/// `max_frame_bytes`).
const READ_BUFFER: usize = 1024;

/// The largest write buffer tungstenite may hold: above the largest frame
/// the node writes (a page, cut at `MAX_PAGE_BYTES` as encoded) plus a
/// batch, with room left for the pongs the reader lets the client owe.
const MAX_WRITE_BUFFER: usize = 6 * chat_protocol::limits::MAX_PAGE_BYTES + 2 * WRITE_BUFFER;

/// Writes the outbound queue to the socket until the connection closes,
/// then sends the close frame. A write the socket does not take within
/// `stall` (the idle timeout) closes the connection with 4003: its client
/// stopped reading. `stall` also bounds how long a client cut with 4003 has
/// to read its backlog and so learn why it was cut.
async fn write_loop<S>(
    mut sink: S,
    control: Control,
    codec: Codec,
    ping_every: Duration,
    stall: Duration,
) where
    S: futures_util::Sink<WsMessage, Error = axum::Error> + Unpin,
{
    let Control {
        closer,
        outbound,
        pongs,
        token_deadline,
    } = control;
    let mut failed = false;
    // The frames taken from the queue and not yet written.
    let mut batch = VecDeque::new();
    // Made once, and polled only once one of them fires (see `gate`): a
    // close request and the ping timer are rare, frames are not.
    let gate = Gate::new();
    let closed = gate.wrap(closer.closed());
    let ping = gate.wrap(tokio::time::sleep(ping_every));
    tokio::pin!(closed, ping);
    /// What happened to one write.
    enum Wrote {
        Done,
        Failed,
        Closed,
        Stalled,
    }
    // One write, raced against a close request (a client that stops reading
    // must not pin this task) and against the stall deadline. Most writes
    // are done at their first poll: only one that has to wait pays for a
    // timer (a clock read and a timer-wheel entry per frame showed up in
    // the CPU a delivery costs).
    macro_rules! write {
        ($op:expr) => {{
            let op = $op;
            tokio::pin!(op);
            match futures_util::FutureExt::now_or_never(op.as_mut()) {
                Some(r) => {
                    if r.is_err() {
                        Wrote::Failed
                    } else {
                        Wrote::Done
                    }
                }
                None => tokio::select! {
                    biased;
                    r = op => if r.is_err() { Wrote::Failed } else { Wrote::Done },
                    _ = &mut closed => Wrote::Closed,
                    _ = tokio::time::sleep(stall) => Wrote::Stalled,
                },
            }
        }};
    }
    'outer: loop {
        let wrote = tokio::select! {
            biased;
            _ = &mut closed => break,
            () = outbound.take(&mut batch) => {
                // Given back to the budget once the batch is on the socket:
                // one update (and one wake-up of the reader) per batch.
                let mut bytes_fed = 0;
                while let Some(bytes) = batch.pop_front() {
                    bytes_fed += bytes.len();
                    if let Some(msg) = message_of(codec, bytes) {
                        match write!(sink.feed(msg)) {
                            Wrote::Done => {}
                            other => {
                                outbound.written(bytes_fed);
                                match other {
                                    Wrote::Failed => failed = true,
                                    Wrote::Stalled => closer.close(close_code::SLOW_CONSUMER),
                                    _ => {}
                                }
                                break 'outer;
                            }
                        }
                    }
                }
                // A flush writes the pongs buffered so far too.
                let owed = pongs.owed();
                let flushed = write!(sink.flush());
                if let Wrote::Done = flushed {
                    pongs.paid(owed);
                }
                // Last: it wakes the reader, which then sees both.
                outbound.written(bytes_fed);
                flushed
            }
            _ = &mut ping => {
                ping.as_mut()
                    .inner_mut()
                    .reset(tokio::time::Instant::now() + ping_every);
                write!(sink.send(WsMessage::Ping(Bytes::new())))
            }
            // Pongs tungstenite buffered for pings the reader took: out they
            // go, and the reader may read again.
            _ = pongs.flush.notified(), if pongs.owed() > 0 => {
                let owed = pongs.owed();
                let wrote = write!(sink.flush());
                if let Wrote::Done = wrote {
                    pongs.paid(owed);
                    outbound.written(0);
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
                closer.close(close_code::SLOW_CONSUMER);
                break;
            }
        }
    }
    // A node going away first writes what is queued (the answers the reader
    // just collected), within a bound.
    if !failed && closer.code() == Some(close_code::GOING_AWAY) {
        let flushed = async {
            outbound.try_take(&mut batch);
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
            close_code::TOKEN_EXPIRED if tokio::time::Instant::now() < token_deadline => {
                ("login revoked", CLOSE_TIMEOUT)
            }
            close_code::TOKEN_EXPIRED => ("token expired", CLOSE_TIMEOUT),
            close_code::TOO_MANY_CONNECTIONS => ("too many connections", CLOSE_TIMEOUT),
            // The close frame queues behind what the socket already holds:
            // a slow reader sees it once it has read that, and a reader
            // that does not read for as long as an idle client is dead.
            close_code::SLOW_CONSUMER => (
                "outbound queue overflowed; reconnect and catch up with history",
                stall,
            ),
            IDLE_CLOSE => ("idle timeout", CLOSE_TIMEOUT),
            _ => ("", CLOSE_TIMEOUT),
        };
        let _ = close(&mut sink, code, reason, within).await;
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
}
