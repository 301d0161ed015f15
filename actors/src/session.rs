//! The user session: one actor per user connected to this node.
//!
//! ```text
//!  connection task ──(route_request)──► ConversationActor (or Router: start / forward)
//!        │ ▲ (awaits its reply port)                          │
//!        │ └──── outbound queue ◄── Directory::deliver ◄──────┘
//!        └──Request (watches, list)──► UserSession
//! ```
//!
//! It owns the user's connections on this node (several devices), each with a
//! bounded outbound queue: a connection whose queue is full is closed with
//! 4003 rather than buffered without bound. It publishes them in the
//! [`crate::services::Directory`], through which conversations push events
//! straight into the queues. It registers the user's interest in its
//! conversations when it starts and withdraws it when the Router stops it,
//! and keeps each connection's presence watches. Requests to conversations
//! (sends, with the rate limit, history, typing, receipts, membership) need
//! none of its state: [`route_request`] sends them from the connection's task
//! to the Router directly.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_protocol::{
    close_code, ClientFrame, ConversationId, ConversationKind, ConversationSummary, OkReply,
    ServerFrame, SharedFrame, UserId,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::conversation::{direct_id, ConversationMsg, Reply};
use crate::error::ChatError;
use crate::presence::ConnKey;
use crate::router::RouterMsg;
use crate::services::Services;
use crate::store::PageQuery;

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

/// Messages a session handles.
pub enum SessionMsg {
    /// A new connection of the user (from the Router).
    Attach {
        /// The connection.
        conn: Connection,
        /// Answered with the session, or `TooManyConnections`.
        reply: RpcReplyPort<Result<ActorRef<SessionMsg>, ChatError>>,
    },
    /// A connection closed.
    Detach {
        /// Which.
        conn: ConnId,
    },
    /// A client request (validated already).
    Request {
        /// From which connection.
        conn: ConnId,
        /// The request.
        frame: ClientFrame,
        /// Where the answer goes.
        reply: Reply,
    },
    /// A watched user's presence changed.
    Presence {
        /// Whose.
        user: UserId,
        /// The `presence` event.
        frame: Arc<SharedFrame>,
    },
    /// Close every connection of the user with `code`.
    CloseAll {
        /// The close code.
        code: u16,
    },
}

/// Starting arguments.
pub struct SessionArgs {
    /// Whose session.
    pub user: UserId,
    /// The node's services.
    pub services: Arc<Services>,
    /// The Router, which owns the session's life.
    pub router: ActorRef<RouterMsg>,
}

/// The actor (no data; see [`SessionState`]).
pub struct UserSession;

struct Attached {
    conn: Connection,
    watching: HashSet<UserId>,
}

/// Everything a session knows.
pub struct SessionState {
    user: UserId,
    services: Arc<Services>,
    /// Ends when the last presence report made is done: each report waits
    /// for the one before, so a quick disconnect never overtakes its
    /// connect. Nothing is held between reports but this small handle.
    presence_done: Option<oneshot::Receiver<()>>,
    router: ActorRef<RouterMsg>,
    conns: Vec<Attached>,
    attaches_seen: u64,
}

impl Actor for UserSession {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        args.services.metrics.sessions_active.inc();
        args.services.directory.insert(args.user.clone(), myself);
        Ok(SessionState {
            presence_done: None,
            user: args.user,
            services: args.services,
            router: args.router,
            conns: Vec::new(),
            attaches_seen: 0,
        })
    }

    async fn post_start(
        &self,
        _myself: ActorRef<SessionMsg>,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        // Registered in the directory before the list is read, so a
        // conversation that adds the user meanwhile sees the session and
        // registers the interest itself. Read before the first attach is
        // handled: once a client is told it is connected, everything sent
        // to its conversations reaches it live, on this node or from the
        // owners the interest was just reported to.
        let services = &state.services;
        match services.store.user_conversations(&state.user).await {
            Ok(list) => {
                let acks = services
                    .interest
                    .join(&state.user, &list, &services.cluster);
                let all = async {
                    for ack in acks {
                        let _ = ack.await;
                    }
                };
                if tokio::time::timeout(INTEREST_ACK_DEADLINE, all)
                    .await
                    .is_err()
                {
                    // Live delivery from that owner starts when it gets the
                    // report; the client's catch-up covers the gap.
                    tracing::warn!(user = %state.user, "an owner did not acknowledge interest in time");
                }
            }
            Err(e) => {
                tracing::warn!(user = %state.user, error = %e, "cannot list conversations; live delivery limited");
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<SessionMsg>,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        let services = &state.services;
        services.metrics.sessions_active.dec();
        if services
            .directory
            .get(&state.user)
            .is_some_and(|s| s.get_id() == myself.get_id())
        {
            services.directory.remove(&state.user);
            services
                .interest
                .remove_user(&state.user, &services.cluster);
        }
        for a in std::mem::take(&mut state.conns) {
            state.drop_watches(myself.get_id(), &a.watching);
            a.conn.close(close_code::GOING_AWAY);
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        msg: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SessionMsg::Attach { conn, reply } => {
                state.attaches_seen += 1;
                if state.conns.len() >= state.services.limits.connections_per_user {
                    let _ = reply.send(Err(ChatError::TooManyConnections));
                    state.maybe_empty(&myself);
                    return Ok(());
                }
                state.presence_change(conn.id, true);
                state.conns.push(Attached {
                    conn,
                    watching: HashSet::new(),
                });
                state.publish_conns(&myself);
                state.services.metrics.connections_open.inc();
                let _ = reply.send(Ok(myself.clone()));
            }
            SessionMsg::Detach { conn } => {
                if let Some(pos) = state.conns.iter().position(|a| a.conn.id == conn) {
                    let a = state.conns.swap_remove(pos);
                    state.publish_conns(&myself);
                    state.drop_watches(myself.get_id(), &a.watching);
                    state.presence_change(conn, false);
                    state.services.metrics.connections_open.dec();
                }
                state.maybe_empty(&myself);
            }
            SessionMsg::Request { conn, frame, reply } => {
                state.request(&myself, conn, frame, reply)
            }
            SessionMsg::Presence { user, frame } => {
                for a in &state.conns {
                    if a.watching.contains(&user) {
                        a.conn.push(Outbound::Shared(frame.clone()));
                    }
                }
            }
            SessionMsg::CloseAll { code } => {
                for a in &state.conns {
                    a.conn.close(code);
                }
            }
        }
        Ok(())
    }
}

impl SessionState {
    /// Events reach the connections through the directory.
    fn publish_conns(&self, myself: &ActorRef<SessionMsg>) {
        let conns: Arc<[Connection]> = self.conns.iter().map(|a| a.conn.clone()).collect();
        self.services
            .directory
            .set_conns(&self.user, myself.get_id(), conns);
    }

    fn maybe_empty(&self, myself: &ActorRef<SessionMsg>) {
        if self.conns.is_empty() {
            let _ = self.router.cast(RouterMsg::SessionEmpty {
                user: self.user.clone(),
                actor: myself.get_id(),
                seen: self.attaches_seen,
            });
        }
    }

    /// Reports a connection coming or going. The reports of one session go
    /// through one task, in order: from separate tasks, a quick disconnect
    /// could reach the backend before its connect and leave a ghost online.
    fn presence_change(&mut self, conn: ConnId, online: bool) {
        let key = ConnKey {
            node: self.services.node_name.clone(),
            conn,
        };
        let before = self.presence_done.take();
        let (done, after) = oneshot::channel();
        self.presence_done = Some(after);
        let (services, user) = (self.services.clone(), self.user.clone());
        tokio::spawn(async move {
            if let Some(before) = before {
                // Err: the previous report's task is gone; go on.
                let _ = before.await;
            }
            let r = if online {
                services.presence.connected(&user, &key).await
            } else {
                services.presence.disconnected(&user, &key).await
            };
            if let Err(e) = r {
                services.metrics.presence_errors.inc();
                tracing::warn!(%user, error = %e, "presence update failed");
            }
            let _ = done.send(());
        });
    }

    fn drop_watches(&self, me: ractor::ActorId, users: &HashSet<UserId>) {
        if users.is_empty() {
            return;
        }
        // Other connections of this session may still watch some of them.
        let still: HashSet<&UserId> = self.conns.iter().flat_map(|a| a.watching.iter()).collect();
        let gone: Vec<UserId> = users
            .iter()
            .filter(|u| !still.contains(u))
            .cloned()
            .collect();
        let unwatched = self.services.watchers.remove(me, &gone);
        if !unwatched.is_empty() {
            let presence = self.services.presence.clone();
            tokio::spawn(async move {
                let _ = presence.unwatch(&unwatched).await;
            });
        }
    }

    fn request(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        conn: ConnId,
        frame: ClientFrame,
        reply: Reply,
    ) {
        let Some((frame, reply)) =
            route_request(&self.services, &self.router, &self.user, conn, frame, reply)
        else {
            return;
        };
        let user = self.user.clone();
        match frame {
            ClientFrame::Conversations { limit, before, .. } => {
                let services = self.services.clone();
                tokio::spawn(async move {
                    let limit =
                        limit.unwrap_or(chat_protocol::limits::DEFAULT_HISTORY_LIMIT) as usize;
                    let r = list_conversations(&services, &user, limit, before).await;
                    let _ = reply.send(r.map(|conversations| OkReply {
                        conversations: Some(conversations),
                        ..OkReply::default()
                    }));
                });
            }
            ClientFrame::Watch { users, .. } => self.watch(myself, conn, users, reply),
            ClientFrame::Unwatch { users, .. } => {
                let me = myself.get_id();
                if let Some(pos) = self.conns.iter().position(|a| a.conn.id == conn) {
                    let removed: HashSet<UserId> = users
                        .iter()
                        .filter(|u| self.conns[pos].watching.remove(*u))
                        .cloned()
                        .collect();
                    self.drop_watches(me, &removed);
                }
                let _ = reply.send(Ok(OkReply::default()));
            }
            ClientFrame::Ping { .. } => {
                let _ = reply.send(Ok(OkReply::default()));
            }
            // Routed above.
            _ => {}
        }
    }

    fn watch(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        conn: ConnId,
        users: Vec<UserId>,
        reply: Reply,
    ) {
        let limit = self.services.limits.watch_per_connection;
        let Some(attached) = self.conns.iter_mut().find(|a| a.conn.id == conn) else {
            let _ = reply.send(Err(ChatError::BadRequest("connection is closing".into())));
            return;
        };
        let new: HashSet<&UserId> = users
            .iter()
            .filter(|u| !attached.watching.contains(*u))
            .collect();
        if attached.watching.len() + new.len() > limit {
            let _ = reply.send(Err(ChatError::BadRequest(format!(
                "a connection may watch at most {limit} users"
            ))));
            return;
        }
        attached.watching.extend(new.into_iter().cloned());
        let fresh = self.services.watchers.add(myself, &users);
        let services = self.services.clone();
        tokio::spawn(async move {
            if !fresh.is_empty() {
                if let Err(e) = services.presence.watch(&fresh).await {
                    services.metrics.presence_errors.inc();
                    tracing::warn!(error = %e, "presence watch failed");
                }
            }
            let r = services
                .presence
                .query(&users)
                .await
                .map(|presence| OkReply {
                    presence: Some(presence),
                    ..OkReply::default()
                })
                .map_err(|e| {
                    services.metrics.presence_errors.inc();
                    ChatError::Unavailable(e.to_string())
                });
            let _ = reply.send(r);
        });
    }
}

/// Routes `frame` of `user` to its conversation through the Router, if it is
/// a request to a conversation (all but watches, the conversation list and
/// pings); otherwise hands it back. These need nothing of the session's
/// state, so a connection's reader calls this itself and spares each of them
/// a pass through the session actor.
pub fn route_request(
    services: &Services,
    router: &ActorRef<RouterMsg>,
    user: &UserId,
    conn: ConnId,
    frame: ClientFrame,
    reply: Reply,
) -> Option<(ClientFrame, Reply)> {
    let user = user.clone();
    match frame {
        ClientFrame::Send {
            conversation,
            client_msg_id,
            body,
            kind,
            reply_to,
            ..
        } => {
            if let Err(retry_after_ms) = services.rate.take(&user) {
                services.metrics.rate_limited.inc();
                let _ = reply.send(Err(ChatError::RateLimited { retry_after_ms }));
                return None;
            }
            route(
                services,
                router,
                conversation,
                ConversationMsg::Send {
                    sender: user,
                    client_msg_id,
                    body,
                    kind,
                    reply_to,
                    origin: Some(conn),
                    received: Instant::now(),
                    reply,
                },
            );
        }
        ClientFrame::History {
            conversation,
            before,
            after,
            limit,
            ..
        } => route(
            services,
            router,
            conversation,
            ConversationMsg::History {
                reader: user,
                query: PageQuery {
                    before,
                    after,
                    limit: limit.unwrap_or(chat_protocol::limits::DEFAULT_HISTORY_LIMIT) as usize,
                },
                reply,
            },
        ),
        ClientFrame::Typing {
            conversation,
            active,
            ..
        } => {
            let _ = reply.send(Ok(OkReply::default()));
            route(
                services,
                router,
                conversation,
                ConversationMsg::Typing { user, active },
            );
        }
        ClientFrame::Read {
            conversation,
            up_to,
            ..
        } => route(
            services,
            router,
            conversation,
            ConversationMsg::Read { user, up_to, reply },
        ),
        ClientFrame::Create {
            kind,
            members,
            title,
            ..
        } => {
            let id = match kind {
                ConversationKind::Direct => {
                    let Some(other) = members.first() else {
                        let _ =
                            reply.send(Err(ChatError::BadRequest("direct needs a user".into())));
                        return None;
                    };
                    if *other == user {
                        let _ = reply.send(Err(ChatError::BadRequest(
                            "a direct conversation is with another user".into(),
                        )));
                        return None;
                    }
                    direct_id(&user, other)
                }
                _ => {
                    let unique = services
                        .ids
                        .next(chat_protocol::now_ms(), Default::default());
                    match ConversationId::new(&format!("g:{unique}")) {
                        Ok(id) => id,
                        Err(e) => {
                            let _ = reply.send(Err(ChatError::Internal(e.to_string())));
                            return None;
                        }
                    }
                }
            };
            route(
                services,
                router,
                id,
                ConversationMsg::Create {
                    creator: user,
                    kind,
                    members,
                    title,
                    reply,
                },
            );
        }
        ClientFrame::Invite {
            conversation,
            users,
            ..
        } => route(
            services,
            router,
            conversation,
            ConversationMsg::Invite {
                by: user,
                users,
                reply,
            },
        ),
        ClientFrame::Kick {
            conversation,
            user: target,
            ..
        } => route(
            services,
            router,
            conversation,
            ConversationMsg::Kick {
                by: user,
                user: target,
                reply,
            },
        ),
        ClientFrame::Leave { conversation, .. } => route(
            services,
            router,
            conversation,
            ConversationMsg::Leave { user, reply },
        ),
        other => return Some((other, reply)),
    }
    None
}

/// To the conversation's actor if it runs here, else through the Router
/// (which starts it, or forwards to the owner on another node).
fn route(
    services: &Services,
    router: &ActorRef<RouterMsg>,
    conversation: ConversationId,
    msg: ConversationMsg,
) {
    let Err(msg) = services.conversations.cast(&conversation, msg) else {
        return;
    };
    if let Err(ractor::MessagingErr::SendErr(RouterMsg::Route { msg, .. })) =
        router.cast(RouterMsg::Route { conversation, msg })
    {
        msg.fail(ChatError::Unavailable("node is shutting down".into()));
    }
}

/// Upper bound on the unread count reported per conversation; counting
/// further would make a long-absent user's list slow to load.
const UNREAD_CAP: u64 = 9_999;

/// How long a starting session waits for the owners of its conversations
/// to acknowledge its interest before it lets the client in anyway.
const INTEREST_ACK_DEADLINE: Duration = Duration::from_secs(2);

/// The user's conversations, newest activity first, each with its last
/// message and unread count. Reads the store directly: everything it shows is
/// durable, so it needs no actor.
pub async fn list_conversations(
    services: &Services,
    user: &UserId,
    limit: usize,
    before: Option<chat_protocol::MessageId>,
) -> Result<Vec<ConversationSummary>, ChatError> {
    let store = &services.store;
    let mut entries = Vec::new();
    for id in store.user_conversations(user).await? {
        let Some(conversation) = store.conversation(&id).await? else {
            continue;
        };
        let last_message = store.last_message(&id).await?;
        let activity = last_message
            .as_ref()
            .map(|m| m.id)
            .unwrap_or_else(|| chat_protocol::MessageId::floor_at(conversation.created_at));
        if before.is_some_and(|b| activity >= b) {
            continue;
        }
        entries.push((activity, conversation, last_message));
    }
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    entries.truncate(limit);
    let mut out = Vec::with_capacity(entries.len());
    for (_, conversation, last_message) in entries {
        let marker = store
            .read_marker(&conversation.id, user)
            .await?
            .unwrap_or_default();
        let unread = match &last_message {
            Some(m) if m.id > marker => {
                store
                    .count_unread(&conversation.id, user, marker, UNREAD_CAP)
                    .await?
            }
            _ => 0,
        };
        out.push(ConversationSummary {
            conversation,
            last_message,
            unread,
        });
    }
    Ok(out)
}

// Local only, like conversation messages: events reach remote sessions
// through their node's Router.
impl ractor::Message for SessionMsg {}
