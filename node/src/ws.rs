//! WebSocket connections: authentication before the upgrade, the codec chosen
//! by subprotocol, and the two tasks of each connection.
//!
//! ```text
//!  socket ─► reader task: decode, validate ─► UserSession (Request + reply port)
//!               │ awaits replies (bounded in flight), pushes them ─┐
//!               ▼                                                  ▼
//!  socket ◄─ writer task ◄──────────── bounded outbound queue ◄── Deliver
//! ```
//!
//! Every frame towards the client goes through one bounded queue; when it is
//! full the connection is closed with 4003 instead of growing. Frames over
//! `max_frame_bytes` close with 1009, an expired token with 4001, a node
//! shutting down with 1001. The reader stops reading while too many requests
//! are in flight, which pushes back on the client through TCP.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chat_actors::router::RouterMsg;
use chat_actors::session::{Closer, Connection, Outbound, SessionMsg};
use chat_actors::ChatError;
use chat_protocol::{close_code, ClientFrame, Codec, ErrorCode, ReqId, ServerFrame};
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use ractor::ActorRef;
use tokio::sync::mpsc;

use crate::app::App;
use crate::auth::Claims;
use crate::http::{authenticate, ensure_user, HttpError};

/// `GET /v1/ws`.
pub async fn upgrade(
    State(app): State<Arc<App>>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let claims = match authenticate(
        &app,
        &headers,
        params.get("access_token").map(String::as_str),
    ) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    if app.shutdown.is_cancelled() {
        return HttpError::from(ChatError::Unavailable("node is shutting down".into()))
            .into_response();
    }
    if let Err(e) = ensure_user(&app, &claims.sub).await {
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
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(limits.max_frame_bytes * 4);
    let tracker = app.connections.clone();
    ws.on_upgrade(move |socket| {
        tracker.track_future(async move { serve(app, socket, claims, codec).await })
    })
}

type ReplyFuture = Pin<Box<dyn Future<Output = Option<Outbound>> + Send>>;

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
            )
            .await;
            return;
        }
        Ok(Err(e)) => {
            let _ = close(&mut sink, 1011, &e.to_string()).await;
            return;
        }
        Err(_) => {
            let _ = close(&mut sink, close_code::GOING_AWAY, "node is shutting down").await;
            return;
        }
    };

    let ping_every = Duration::from_secs(limits.idle_timeout_secs.max(2) / 2);
    let writer = tokio::spawn(write_loop(sink, rx, closer.clone(), codec, ping_every));

    let idle = Duration::from_secs(limits.idle_timeout_secs);
    let token_deadline = deadline_of(claims.exp);
    let mut last_heard = Instant::now();
    let mut pending: FuturesUnordered<ReplyFuture> = FuturesUnordered::new();
    loop {
        let idle_at = tokio::time::Instant::from_std(last_heard + idle);
        tokio::select! {
            _ = closer.closed() => break,
            _ = app.shutdown.cancelled() => {
                closer.close(close_code::GOING_AWAY);
                break;
            }
            _ = tokio::time::sleep_until(token_deadline) => {
                closer.close(close_code::TOKEN_EXPIRED);
                break;
            }
            _ = tokio::time::sleep_until(idle_at) => {
                closer.close(close_code::GOING_AWAY);
                break;
            }
            Some(out) = pending.next(), if !pending.is_empty() => {
                if let Some(frame) = out {
                    conn.push(frame);
                }
            }
            incoming = stream.next(), if pending.len() < limits.inflight_per_connection => {
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
                if let Some(fut) = handle_frame(&app, &session, &conn, &limits, codec, &bytes) {
                    pending.push(fut);
                }
            }
        }
    }
    let _ = session.cast(SessionMsg::Detach { conn: id });
    // The writer sends the close frame (if one was asked for) and stops.
    if closer.code().is_none() {
        closer.close(1000);
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
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
    session: &ActorRef<SessionMsg>,
    conn: &Connection,
    limits: &chat_protocol::Limits,
    codec: Codec,
    bytes: &[u8],
) -> Option<ReplyFuture> {
    let frame = match codec.decode_client(bytes) {
        Ok(f) => f,
        Err(e) => {
            app.services.metrics.frames_rejected.inc();
            conn.push(error_frame(
                e.req,
                ErrorCode::BadRequest,
                format!("invalid frame: {}", e.reason),
            ));
            return None;
        }
    };
    let req = frame.req().cloned();
    if let Err(r) = frame.validate(limits) {
        app.services.metrics.frames_rejected.inc();
        conn.push(error_frame(req, r.code, r.message));
        return None;
    }
    if let ClientFrame::Ping { .. } = frame {
        conn.push(Outbound::frame(ServerFrame::ok(req)));
        return None;
    }
    let silent = matches!(frame, ClientFrame::Typing { .. });
    let (tx, rx) = ractor::concurrency::oneshot();
    if session
        .cast(SessionMsg::Request {
            conn: conn.id,
            frame,
            reply: tx.into(),
        })
        .is_err()
    {
        conn.push(error_frame(
            req,
            ErrorCode::Unavailable,
            "session closed; reconnect".into(),
        ));
        return None;
    }
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

async fn close<S>(sink: &mut S, code: u16, reason: &str) -> Result<(), axum::Error>
where
    S: futures_util::Sink<WsMessage, Error = axum::Error> + Unpin,
{
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from(reason.to_string()),
    };
    tokio::time::timeout(
        Duration::from_secs(1),
        sink.send(WsMessage::Close(Some(frame))),
    )
    .await
    .unwrap_or(Ok(()))
}

/// Most frames written before one flush: batching writes into fewer
/// syscalls pays under fan-out bursts.
const WRITE_BATCH: usize = 64;

async fn write_loop<S>(
    mut sink: S,
    mut rx: mpsc::Receiver<Outbound>,
    closer: Arc<Closer>,
    codec: Codec,
    ping_every: Duration,
) where
    S: futures_util::Sink<WsMessage, Error = axum::Error> + Unpin,
{
    let mut ping = tokio::time::interval(ping_every);
    ping.tick().await;
    'outer: loop {
        tokio::select! {
            biased;
            _ = closer.closed() => break,
            item = rx.recv() => {
                let Some(first) = item else { break };
                let mut batch = Vec::with_capacity(8);
                batch.push(first);
                while batch.len() < WRITE_BATCH {
                    match rx.try_recv() {
                        Ok(o) => batch.push(o),
                        Err(_) => break,
                    }
                }
                for out in &batch {
                    let Some(msg) = encode(codec, out) else { continue };
                    // A client that stops reading must not pin this task:
                    // a close request interrupts a blocked write.
                    tokio::select! {
                        r = sink.feed(msg) => if r.is_err() { break 'outer },
                        _ = closer.closed() => break 'outer,
                    }
                }
                tokio::select! {
                    r = sink.flush() => if r.is_err() { break },
                    _ = closer.closed() => break,
                }
            }
            _ = ping.tick() => {
                tokio::select! {
                    r = sink.send(WsMessage::Ping(Bytes::new())) => if r.is_err() { break },
                    _ = closer.closed() => break,
                }
            }
        }
    }
    if let Some(code) = closer.code() {
        let reason = match code {
            close_code::GOING_AWAY => "going away",
            close_code::TOO_BIG => "frame too big",
            close_code::TOKEN_EXPIRED => "token expired",
            close_code::TOO_MANY_CONNECTIONS => "too many connections",
            close_code::SLOW_CONSUMER => {
                "outbound queue overflowed; reconnect and catch up with history"
            }
            _ => "",
        };
        let _ = close(&mut sink, code, reason).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
}
