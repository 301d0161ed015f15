//! The ceiling: the least a server can do and still carry the benchmark's
//! traffic in protocol v1's wire format. A tokio-tungstenite listener, a map
//! of rooms and a map of connected users behind read-write locks, one reader
//! loop and one writer task per connection. No actors, no auth (the bearer
//! token, or `access_token`, is taken as the user id), no storage, no rate
//! limits. Whatever the chat node achieves is measured against this.
//!
//! It does keep the two things without which a comparison would flatter it:
//! a fan-out event is encoded once for all receivers (as the node does), and
//! a connection whose bounded outbound queue overflows is closed (4003), not
//! buffered without bound.
//!
//! It keeps no history: a `history` request gets an empty page, so a
//! reconnect storm against it costs only the connections coming back.
//!
//! With a [`Journal`] (`ceiling-server --journal DIR`) it also keeps history
//! as the node does with `durability = "sync"`: each sent message's event is
//! appended to a file and fsynced (one writer thread, group commit: what
//! queued during one fsync goes in the next) before it is fanned out and
//! acknowledged. That is the least a server that fsyncs its history must
//! do, so its CPU per delivery is the floor for any such server here.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use chat_protocol::{
    close_code, ClientFrame, Codec, Conversation, ConversationId, ConversationKind, ErrorCode,
    Member, Message, MessageId, OkReply, ReqId, Role, ServerFrame, SharedFrame, UserId,
};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message as WsMessage, Utf8Bytes};

/// Frames queued towards one connection before it is closed, as the node's
/// default `outbound_queue`.
pub const OUTBOUND_QUEUE: usize = 1024;
/// Frames written before one flush.
const WRITE_BATCH: usize = 64;

#[derive(Clone)]
struct Peer {
    id: u64,
    tx: mpsc::Sender<Utf8Bytes>,
    /// Asks the writer to close with 4003 (its queue is full, so it cannot
    /// be asked through the queue).
    kill: Arc<Notify>,
}

struct Room {
    members: Arc<[UserId]>,
}

/// A send accepted: the message, and the members who get it.
type Accepted = (Message, Arc<[UserId]>);

/// The event that carries `message` to the members.
fn message_event(message: &Message) -> SharedFrame {
    SharedFrame::new(ServerFrame::Message {
        message: message.clone(),
    })
}

#[derive(Default)]
struct State {
    journal: Option<Journal>,
    rooms: RwLock<HashMap<ConversationId, Room>>,
    users: RwLock<HashMap<UserId, Vec<Peer>>>,
    next_msg: AtomicU64,
    next_conv: AtomicU64,
    next_conn: AtomicU64,
    anonymous: AtomicU64,
}

fn encode(frame: &ServerFrame) -> Option<Utf8Bytes> {
    let bytes = Codec::Json.encode(frame).ok()?;
    Utf8Bytes::try_from(bytes).ok()
}

impl State {
    fn unregister(&self, user: &UserId, peer: u64) {
        let mut users = self.users.write().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = users.get_mut(user) {
            list.retain(|p| p.id != peer);
            if list.is_empty() {
                users.remove(user);
            }
        }
    }

    /// Queues `text` for `peer`; a full queue closes the peer.
    fn push(peer: &Peer, text: Utf8Bytes) {
        if let Err(mpsc::error::TrySendError::Full(_)) = peer.tx.try_send(text) {
            peer.kill.notify_one();
        }
    }

    /// Sends `frame` (encoded once) to every connection of `members`
    /// except the connection `skip`.
    fn fan_out(&self, members: &[UserId], frame: ServerFrame, skip: u64) {
        self.fan_out_shared(members, &SharedFrame::new(frame), skip);
    }

    fn fan_out_shared(&self, members: &[UserId], shared: &SharedFrame, skip: u64) {
        let Some(text) = shared
            .encoded(Codec::Json)
            .ok()
            .and_then(|b: Bytes| Utf8Bytes::try_from(b).ok())
        else {
            return;
        };
        let users = self.users.read().unwrap_or_else(|p| p.into_inner());
        for m in members {
            for peer in users.get(m).into_iter().flatten() {
                if peer.id != skip {
                    Self::push(peer, text.clone());
                }
            }
        }
    }

    /// A send from `user` checked and made a message, with who gets it
    /// (or why not).
    fn accept_send(
        &self,
        user: &UserId,
        send: ClientFrame,
    ) -> Result<Accepted, (ErrorCode, &'static str)> {
        let ClientFrame::Send {
            conversation,
            client_msg_id,
            body,
            kind,
            reply_to,
            ..
        } = send
        else {
            return Err((ErrorCode::Internal, "not a send"));
        };
        let members = {
            let rooms = self.rooms.read().unwrap_or_else(|p| p.into_inner());
            match rooms.get(&conversation) {
                Some(r) if r.members.contains(user) => r.members.clone(),
                Some(_) => return Err((ErrorCode::Forbidden, "not a member")),
                None => return Err((ErrorCode::NotFound, "no such conversation")),
            }
        };
        let message = Message {
            attachments: Vec::new(),
            rev: 0,
            edited_at: None,
            deleted: false,
            reactions: Vec::new(),
            mentions: Vec::new(),
            id: MessageId(self.next_msg.fetch_add(1, Ordering::Relaxed) + 1),
            conversation,
            sender: user.clone(),
            body,
            kind,
            ts: chat_protocol::now_ms(),
            client_msg_id,
            reply_to,
        };
        Ok((message, members))
    }

    /// A send kept in `journal` (fsynced) before it is fanned out and
    /// acknowledged; its event is encoded once, for the journal and the
    /// receivers alike.
    async fn durable_send(
        &self,
        journal: &Journal,
        user: &UserId,
        me: &Peer,
        send: ClientFrame,
    ) -> ServerFrame {
        let req = send.req().cloned();
        let accepted = match self.accept_send(user, send) {
            Ok(accepted) => accepted,
            Err((code, why)) => return ServerFrame::error(req, code, why),
        };
        let event = message_event(&accepted.0);
        let record = match event.encoded(Codec::Json) {
            Ok(bytes) => bytes,
            Err(_) => return ServerFrame::error(req, ErrorCode::Internal, "not encodable"),
        };
        if let Err(e) = journal.append(record).await {
            return ServerFrame::error(req, ErrorCode::Unavailable, format!("journal: {e}"));
        }
        self.deliver(req, accepted, &event, me.id)
    }

    /// Fans an accepted send's `event` out to its members (but the
    /// connection `skip`) and acknowledges it.
    fn deliver(
        &self,
        req: Option<ReqId>,
        (message, members): Accepted,
        event: &SharedFrame,
        skip: u64,
    ) -> ServerFrame {
        self.fan_out_shared(&members, event, skip);
        ServerFrame::Ok(OkReply {
            req,
            message: Some(message),
            ..OkReply::default()
        })
    }

    fn handle(&self, user: &UserId, me: &Peer, frame: ClientFrame) -> ServerFrame {
        let req = frame.req().cloned();
        match frame {
            ClientFrame::Create {
                kind,
                members,
                title,
                ..
            } => {
                let n = self.next_conv.fetch_add(1, Ordering::Relaxed);
                let Ok(id) = ConversationId::new(&format!("c:{n}")) else {
                    return ServerFrame::error(req, ErrorCode::Internal, "bad id");
                };
                let mut all = vec![user.clone()];
                for m in members {
                    if !all.contains(&m) {
                        all.push(m);
                    }
                }
                let conversation = Conversation {
                    rev: 0,
                    id: id.clone(),
                    kind,
                    title,
                    members: all
                        .iter()
                        .map(|u| Member {
                            user: u.clone(),
                            role: if u == user && kind != ConversationKind::Direct {
                                Role::Owner
                            } else {
                                Role::Member
                            },
                        })
                        .collect(),
                    member_count: None,
                    created_at: chat_protocol::now_ms(),
                };
                let members: Arc<[UserId]> = all.into();
                self.rooms
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(
                        id,
                        Room {
                            members: members.clone(),
                        },
                    );
                self.fan_out(
                    &members,
                    ServerFrame::Conversation {
                        conversation: conversation.clone(),
                    },
                    me.id,
                );
                ServerFrame::Ok(OkReply {
                    req,
                    conversation: Some(conversation),
                    ..OkReply::default()
                })
            }
            send @ ClientFrame::Send { .. } => match self.accept_send(user, send) {
                Ok(accepted) => {
                    let event = message_event(&accepted.0);
                    self.deliver(req, accepted, &event, me.id)
                }
                Err((code, why)) => ServerFrame::error(req, code, why),
            },
            ClientFrame::Ping { .. } => ServerFrame::ok(req),
            // Nothing to catch up: an empty page, so that a reconnect storm
            // against the ceiling measures what every server pays for a
            // client coming back (the connection, its upgrade, one request
            // answered) and nothing else: the floor under any catch-up.
            ClientFrame::History { .. } => ServerFrame::Ok(OkReply {
                req,
                messages: Some(Vec::new()),
                more: Some(false),
                ..OkReply::default()
            }),
            other => ServerFrame::error(
                req,
                ErrorCode::BadRequest,
                format!(
                    "{} is not supported by the ceiling server",
                    other.type_name()
                ),
            ),
        }
    }
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve_with(listener, None, shutdown).await
}

/// [`serve`], keeping history in `journal` if given.
pub async fn serve_with(
    listener: TcpListener,
    journal: Option<Journal>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let state = Arc::new(State {
        journal,
        ..State::default()
    });
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    // Out of descriptors or a reset before accept: keep serving.
                    Err(e) => {
                        eprintln!("ceiling-server: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection(state.clone(), stream));
            }
        }
    }
}

fn server_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        // A threshold, not an allocation: frames queue in the buffer until
        // the flush at the end of a batch, one syscall for many frames.
        .write_buffer_size(64 * 1024)
        .max_message_size(Some(64 * 1024))
        .max_frame_size(Some(64 * 1024))
}

fn user_of(req: &Request) -> Option<String> {
    let header = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    header.or_else(|| {
        req.uri().query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("access_token="))
                .map(str::to_string)
        })
    })
}

async fn connection(state: Arc<State>, stream: TcpStream) {
    let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(OUTBOUND_QUEUE);
    let peer = Peer {
        id: state.next_conn.fetch_add(1, Ordering::Relaxed),
        tx,
        kill: Arc::new(Notify::new()),
    };
    let mut user = None;
    // The peer is registered before the handshake answers: once a client
    // holds an open WebSocket, fan-out to its user reaches it.
    // The handshake API fixes the closure's error type.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        let id = user_of(req).and_then(|t| UserId::new(&t).ok()).or_else(|| {
            let n = state.anonymous.fetch_add(1, Ordering::Relaxed);
            UserId::new(&format!("anon-{n}")).ok()
        });
        if let Some(id) = &id {
            state
                .users
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .entry(id.clone())
                .or_default()
                .push(peer.clone());
        }
        user = id;
        let offered = req
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|p| p.trim() == Codec::JSON_PROTOCOL));
        if offered {
            resp.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_static(Codec::JSON_PROTOCOL),
            );
        }
        Ok(resp)
    };
    let accepted =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(server_config()))
            .await;
    let Some(user) = user else { return };
    let ws = match accepted {
        Ok(ws) => ws,
        Err(_) => {
            state.unregister(&user, peer.id);
            return;
        }
    };

    let (mut sink, mut source) = ws.split();
    let kill = peer.kill.clone();
    let writer = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(WRITE_BATCH);
        loop {
            tokio::select! {
                biased;
                _ = kill.notified() => {
                    let frame = CloseFrame {
                        code: CloseCode::from(close_code::SLOW_CONSUMER),
                        reason: "outbound queue overflowed".into(),
                    };
                    let _ = sink.send(WsMessage::Close(Some(frame))).await;
                    break;
                }
                n = rx.recv_many(&mut batch, WRITE_BATCH) => {
                    if n == 0 {
                        break;
                    }
                    for text in batch.drain(..) {
                        if sink.feed(WsMessage::Text(text)).await.is_err() {
                            return;
                        }
                    }
                    if sink.flush().await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = sink.close().await;
    });

    while let Some(Ok(msg)) = source.next().await {
        let reply = match msg {
            WsMessage::Text(t) => match Codec::Json.decode_client(t.as_bytes()) {
                Ok(frame) => match (&state.journal, frame) {
                    // Awaited here: this connection's next frame waits for
                    // the fsync, which at the benchmark's rates (a few
                    // messages per second per user) costs no throughput.
                    (Some(journal), send @ ClientFrame::Send { .. }) => {
                        state.durable_send(journal, &user, &peer, send).await
                    }
                    (_, frame) => state.handle(&user, &peer, frame),
                },
                Err(e) => ServerFrame::error(
                    e.req,
                    ErrorCode::BadRequest,
                    format!("invalid frame: {}", e.reason),
                ),
            },
            WsMessage::Close(_) => break,
            _ => continue,
        };
        if let Some(text) = encode(&reply) {
            State::push(&peer, text);
        }
    }

    state.unregister(&user, peer.id);
    // The writer ends once the queue's last sender is gone; bounded, so a
    // peer that stopped reading cannot keep it.
    drop(peer);
    let abort = writer.abort_handle();
    if tokio::time::timeout(Duration::from_secs(2), writer)
        .await
        .is_err()
    {
        abort.abort();
    }
}

/// An append-only history file, fsynced before each append is acknowledged.
pub struct Journal {
    tx: mpsc::Sender<(Bytes, oneshot::Sender<std::io::Result<()>>)>,
}

/// Appends queued while the writer is busy; it takes at most this many at once.
const JOURNAL_GROUP: usize = 2048;

impl Journal {
    /// Opens (or creates) `dir/history.jsonl` and starts its writer thread,
    /// which ends when the journal is dropped.
    pub fn open(dir: &std::path::Path) -> std::io::Result<Journal> {
        std::fs::create_dir_all(dir)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("history.jsonl"))?;
        let (tx, rx) = mpsc::channel(JOURNAL_GROUP);
        std::thread::Builder::new()
            .name("ceiling-journal".into())
            .spawn(move || journal_writer(file, rx))?;
        Ok(Journal { tx })
    }

    /// Appends `record` as one line; resolves once it is fsynced.
    pub async fn append(&self, record: Bytes) -> std::io::Result<()> {
        let (tx, rx) = oneshot::channel();
        let gone = || std::io::Error::other("journal writer stopped");
        self.tx.send((record, tx)).await.map_err(|_| gone())?;
        rx.await.unwrap_or_else(|_| Err(gone()))
    }
}

/// Group commit: everything queued when the writer wakes is written with
/// one `write` and one fsync, as chat-node's store writer does.
fn journal_writer(
    mut file: std::fs::File,
    mut rx: mpsc::Receiver<(Bytes, oneshot::Sender<std::io::Result<()>>)>,
) {
    use std::io::Write;
    let mut buf = Vec::new();
    let mut replies = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some((record, reply)) = next {
            buf.extend_from_slice(&record);
            buf.push(b'\n');
            replies.push(reply);
            next = if replies.len() < JOURNAL_GROUP {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        let result = file.write_all(&buf).and_then(|()| file.sync_all());
        buf.clear();
        for reply in replies.drain(..) {
            let _ = reply.send(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            });
        }
    }
}
