//! The reader task of a connection: frames decoded, checked and handed to
//! the dispatcher, their replies queued in order of arrival, within the
//! connection's byte budget and window of requests in flight.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::Message as WsMessage;
use bytes::Bytes;
use chat_actors::conn::{Closer, Connection, ConnectionEnd, Outbound};
use chat_actors::dispatch::Caller;
use chat_actors::telemetry::{parent_of, Span};
use chat_actors::ChatError;
use chat_protocol::{close_code, ClientFrame, Codec, ErrorCode, ServerFrame};
use futures_util::future::Either;
use futures_util::stream::FuturesUnordered;
use futures_util::{Sink, Stream, StreamExt};

use super::admission::Admitted;
use super::io::{close, Pongs, CLOSE_TIMEOUT, IDLE_CLOSE, SHUTDOWN_ANSWER_TIMEOUT};
use super::writer::{write_loop, Control};
use crate::app::App;
use crate::auth::Claims;
use crate::gate::Gate;

/// The future of one request's reply: its encoded frame (none for typing
/// without a `req`) and the bytes reserved for it.
type ReplyFuture = Pin<Box<dyn Future<Output = (Option<Bytes>, usize)> + Send>>;

/// Runs one connection until it closes: spawns its writer, reads until
/// the socket or something else ends it, then lets the close frame out.
/// `sink` and `stream` are a WebSocket's halves, or another transport's
/// frames dressed as WebSocket messages (the Socket.IO bridge).
///
/// Everything is set up here, outside the future, and the future holds it
/// once and works on it in place: an `async fn` keeps each argument twice
/// (as passed, and as bound), and an `async` block keeps whatever it moves
/// out of a capture twice, for the whole life of an idle connection.
pub(crate) fn serve<S, R>(
    app: Arc<App>,
    (sink, stream): (S, R),
    claims: Claims,
    codec: Codec,
    admitted: Admitted,
) -> impl Future<Output = ()> + Send + 'static
where
    S: Sink<WsMessage, Error = axum::Error> + Send + Unpin + 'static,
    R: Stream<Item = Result<WsMessage, axum::Error>> + Send + Unpin + 'static,
{
    let limits = &app.config.limits;
    let Admitted {
        id,
        conn,
        end,
        attached,
    } = admitted;
    let ConnectionEnd { outbound, closer } = end;
    let attachment = match attached {
        Ok(a) => a,
        Err((code, reason)) => {
            return Either::Left(Box::pin(async move {
                let mut sink = sink;
                let _ = close(&mut sink, code, &reason, CLOSE_TIMEOUT).await;
            }))
        }
    };
    let ping_every = Duration::from_secs(limits.idle_timeout_secs.max(2) / 2);
    let idle = Duration::from_secs(limits.idle_timeout_secs);
    let pongs = Arc::new(Pongs::default());
    // The same leeway the upgrade allowed, or a reconnect with this token
    // would be accepted and cut again at once.
    let token_deadline = deadline_of(claims.exp + app.config.auth.leeway_secs);
    let control = Control {
        closer: closer.clone(),
        outbound: outbound.clone(),
        pongs: pongs.clone(),
        token_deadline,
    };
    let writer = tokio::spawn(write_loop(sink, control, codec, ping_every, idle));
    let reader = Reader {
        caller: Caller {
            user: claims.sub,
            conn: Some(id),
            session: Some(attachment.session.clone()),
        },
        // Replies in flight plus frames queued stay under half the queue,
        // so that replies never fill it and events always have room until
        // the client stops reading.
        window: limits
            .inflight_per_connection
            .min(limits.outbound_queue / 2)
            .max(1),
        pending: FuturesUnordered::new(),
        reserved: 0,
        started: Instant::now(),
        heard: Arc::new(AtomicU64::new(0)),
        app,
        conn,
        codec,
        outbound,
        closer,
        pongs,
    };
    let mut serving = Serving {
        reader,
        stream,
        writer,
        attachment: Some(attachment),
        idle,
        token_deadline,
    };
    Either::Right(async move { serving.run().await })
}

/// A connection being served: what its future holds.
struct Serving<R> {
    reader: Reader,
    stream: R,
    writer: tokio::task::JoinHandle<()>,
    /// Detaches from the session when dropped, as the reading stops.
    attachment: Option<super::admission::Attachment>,
    idle: Duration,
    token_deadline: tokio::time::Instant,
}

impl<R> Serving<R>
where
    R: Stream<Item = Result<WsMessage, axum::Error>> + Unpin,
{
    async fn run(&mut self) {
        let reader = &mut self.reader;
        let stream = &mut self.stream;
        // Everything that ends the reader but its socket, in one future made
        // once and polled only once one of its parts fires (see `gate`):
        // re-registering waiters and timers on every frame read cost more
        // than the frame's routing.
        let gate = Gate::new();
        let ending = gate.wrap(reader.ending(self.idle, self.token_deadline));
        tokio::pin!(ending);
        let why = loop {
            let room = reader.has_room();
            let step = tokio::select! {
                why = &mut ending => Step::End(why),
                Some(done) = reader.pending.next(), if !reader.pending.is_empty() => {
                    reader.answered(done);
                    Step::Go
                }
                // Over budget: wait for the writer to make room.
                _ = reader.outbound.wait_written(), if !room => Step::Go,
                incoming = stream.next(), if room => reader.read(incoming),
            };
            match step {
                Step::Go => {}
                Step::Stop => break None,
                Step::End(why) => break Some(why),
            }
        };
        // The rare ends, in a future of their own: their timers and waits
        // would otherwise be room every idle connection keeps.
        Box::pin(self.finish(why)).await
    }

    /// Ends the reading (for `why`, unless the socket ended it), then lets
    /// the writer send the close frame while what the client still sends is
    /// discarded.
    async fn finish(&mut self, why: Option<Ending>) {
        if let Some(why) = why {
            self.reader.end(why).await;
        }
        self.attachment = None;
        let closer = &self.reader.closer;
        if closer.code() == Some(close_code::SLOW_CONSUMER) {
            self.reader.app.metrics.slow_consumers.inc();
        }
        // The writer sends the close frame (if one was asked for) and stops.
        if closer.code().is_none() {
            closer.close(1000);
        }
        // Keep reading (and discarding) while the close frame goes out:
        // closing a socket with unread input makes the kernel send a reset,
        // and the client would lose the close frame and the last replies
        // with it.
        let stream = &mut self.stream;
        let discard = async {
            while let Some(Ok(msg)) = stream.next().await {
                if matches!(msg, WsMessage::Close(_)) {
                    break;
                }
            }
        };
        let _ = tokio::join!(
            tokio::time::timeout(Duration::from_secs(5), &mut self.writer),
            tokio::time::timeout(Duration::from_secs(2), discard),
        );
    }
}

/// Whether the reader goes on.
enum Step {
    Go,
    /// The socket ended it.
    Stop,
    End(Ending),
}

/// A connection's reader: what it has in flight and what bounds it.
struct Reader {
    app: Arc<App>,
    caller: Caller,
    conn: Connection,
    codec: Codec,
    outbound: Arc<Outbound>,
    closer: Arc<Closer>,
    pongs: Arc<Pongs>,
    /// Most replies in flight plus frames queued.
    window: usize,
    pending: FuturesUnordered<ReplyFuture>,
    /// Bytes reserved for the replies in flight.
    reserved: usize,
    started: Instant,
    /// When a frame was last heard, in ms since `started`: stamped per
    /// frame, read only when the idle timer fires (it is not re-armed per
    /// frame).
    heard: Arc<AtomicU64>,
}

impl Reader {
    /// Whether another request may be read: the window has room, and what is
    /// queued, reserved and owed in pongs stays under the byte budget.
    fn has_room(&self) -> bool {
        self.pending.len() + self.conn.queued_frames() < self.window
            && self.outbound.queued() + self.reserved + self.pongs.owed() < self.outbound.soft()
    }

    /// What ends the reader other than its socket: a close asked for, the
    /// node shutting down, the token expiring, nothing heard for `idle`.
    fn ending(
        &self,
        idle: Duration,
        token_deadline: tokio::time::Instant,
    ) -> impl Future<Output = Ending> + Send + 'static {
        let (closer, app) = (self.closer.clone(), self.app.clone());
        let (heard, started) = (self.heard.clone(), self.started);
        async move {
            // One timer for both deadlines (a timer is room every idle
            // connection keeps): it sleeps until the nearer, then looks.
            let timed_out = async {
                loop {
                    if token_deadline <= tokio::time::Instant::now() {
                        break Ending::TokenExpired;
                    }
                    let at = started + Duration::from_millis(heard.load(Ordering::Relaxed)) + idle;
                    if at <= Instant::now() {
                        break Ending::Idle;
                    }
                    let at = tokio::time::Instant::from_std(at).min(token_deadline);
                    tokio::time::sleep_until(at).await;
                }
            };
            tokio::select! {
                _ = closer.closed() => Ending::Closed,
                _ = app.shutdown.cancelled() => Ending::Shutdown,
                why = timed_out => why,
            }
        }
    }

    /// Ends the connection for `why`.
    async fn end(&mut self, why: Ending) {
        match why {
            Ending::Closed => {}
            Ending::Shutdown => {
                // Answer what was already read before saying goodbye: those
                // requests may be stored, and an answer spares a retry.
                let answered = async {
                    while let Some((out, _)) = self.pending.next().await {
                        if let Some(bytes) = out {
                            self.conn.push_reply(bytes);
                        }
                    }
                };
                let _ = tokio::time::timeout(SHUTDOWN_ANSWER_TIMEOUT, answered).await;
                self.closer.close(close_code::GOING_AWAY);
            }
            Ending::TokenExpired => self.closer.close(close_code::TOKEN_EXPIRED),
            Ending::Idle => self.closer.close(IDLE_CLOSE),
        }
    }

    /// A request in flight was answered: its reply queued, its reservation
    /// given back.
    fn answered(&mut self, (out, reservation): (Option<Bytes>, usize)) {
        self.reserved -= reservation;
        if let Some(bytes) = out {
            self.conn.push_reply(bytes);
        }
    }

    /// One message from the socket, or its end.
    fn read(&mut self, incoming: Option<Result<WsMessage, axum::Error>>) -> Step {
        self.heard
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let bytes: Bytes = match incoming {
            Some(Ok(WsMessage::Text(t))) => Bytes::from(t),
            Some(Ok(WsMessage::Binary(b))) => b,
            Some(Ok(WsMessage::Ping(p))) => {
                self.pongs.owe(p.len());
                return Step::Go;
            }
            Some(Ok(WsMessage::Pong(_))) => return Step::Go,
            Some(Ok(WsMessage::Close(_))) | None => return Step::Stop,
            Some(Err(e)) => {
                if let Some(code) = close_code_of(&e) {
                    self.closer.close(code);
                }
                return Step::Stop;
            }
        };
        match handle_frame(&self.app, &self.caller, &self.conn, self.codec, &bytes) {
            Handled::Answered(reply) => {
                self.conn.push_reply(reply);
            }
            Handled::Pending(fut, reservation) => {
                self.reserved += reservation;
                self.pending.push(fut);
            }
        }
        Step::Go
    }
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
            limit.unwrap_or(chat_protocol::request::DEFAULT_MEMBERS_PAGE) as usize * 96 + SMALL
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
        app.metrics.rejected(reason);
        app.metrics.error(code);
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
    let metrics = app.metrics.clone();
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
