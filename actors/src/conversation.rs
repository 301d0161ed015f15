//! The conversation actor: the single writer of one conversation.
//!
//! ```text
//!  session ──Route──► Router ──► ConversationActor ──append──► store (group commit)
//!                                     │   ▲ BatchWritten
//!                                     │   └──────────────────────┘
//!                                     └──Deliver──► local sessions listening (interest)
//! ```
//!
//! Guarantees it keeps:
//! - ids increase in the order sends are accepted (one writer, one node-wide
//!   generator that never goes below the conversation's last id);
//! - a send is answered only after the batch holding it is durable; sends
//!   arriving while a batch is being written go in the next batch;
//! - a retried `client_msg_id` is answered with the first message, whether that
//!   message is still being written, in the recent tail, or only in the store;
//! - fan-out happens after the acknowledgement's batch is durable, once per
//!   listening user's session, never to non-members.
//!
//! The actor keeps a bounded tail of recent messages, asks the Router to stop
//! it after an idle period, and loads its state from the store when it starts,
//! so any node can take a conversation over.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_protocol::peer::Audience;
use chat_protocol::{
    now_ms, ClientMsgId, Conversation, ConversationId, ConversationKind, Member, Message,
    MessageId, MessageKind, OkReply, ReceiptKind, Role, ServerFrame, SharedFrame, UserId,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use sha2::{Digest, Sha256};

use crate::error::ChatError;
use crate::router::RouterMsg;
use crate::services::Services;
use crate::session::{ConnId, Delivery};
use crate::store::{ConversationChange, PageQuery, StoreError};

/// Where a request's answer goes.
pub type Reply = RpcReplyPort<Result<OkReply, ChatError>>;

/// The id of the direct conversation between two users: the same whoever
/// creates it, so the one actor owning it decides whether it exists.
pub fn direct_id(a: &UserId, b: &UserId) -> ConversationId {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut h = Sha256::new();
    h.update(lo.as_str().as_bytes());
    h.update([0u8]);
    h.update(hi.as_str().as_bytes());
    let digest = h.finalize();
    let id = format!("d:{}", hex::encode(&digest[..16]));
    ConversationId::new(&id).unwrap_or_else(|_| unreachable!("hex ids are valid"))
}

/// Messages a conversation actor handles.
pub enum ConversationMsg {
    /// Store and deliver a message.
    Send {
        /// Who sends.
        sender: UserId,
        /// The sender's idempotency key.
        client_msg_id: ClientMsgId,
        /// The text.
        body: String,
        /// The kind.
        kind: MessageKind,
        /// The message answered.
        reply_to: Option<MessageId>,
        /// The connection that sent it (it gets the `ok`, not the event).
        origin: Option<ConnId>,
        /// When the node received it, for the latency histogram.
        received: Instant,
        /// Answered with `message`.
        reply: Reply,
    },
    /// A page of history.
    History {
        /// Who reads.
        reader: UserId,
        /// Which page.
        query: PageQuery,
        /// Answered with `messages` and `more`.
        reply: Reply,
    },
    /// A member started or stopped typing.
    Typing {
        /// Who.
        user: UserId,
        /// Started or stopped.
        active: bool,
    },
    /// Move a read marker forward.
    Read {
        /// Whose.
        user: UserId,
        /// The newest message read.
        up_to: MessageId,
        /// Answered empty.
        reply: Reply,
    },
    /// Create this conversation.
    Create {
        /// Becomes owner (of groups and channels).
        creator: UserId,
        /// Direct, group or channel.
        kind: ConversationKind,
        /// The other members.
        members: Vec<UserId>,
        /// An optional title.
        title: Option<String>,
        /// Answered with `conversation`.
        reply: Reply,
    },
    /// Add members.
    Invite {
        /// Who asks (owner or admin).
        by: UserId,
        /// Who joins.
        users: Vec<UserId>,
        /// Answered with `conversation`.
        reply: Reply,
    },
    /// Remove a member.
    Kick {
        /// Who asks (owner or admin).
        by: UserId,
        /// Who is removed.
        user: UserId,
        /// Answered with `conversation`.
        reply: Reply,
    },
    /// A member leaves.
    Leave {
        /// Who leaves.
        user: UserId,
        /// Answered empty.
        reply: Reply,
    },
    /// The store finished the batch in flight.
    BatchWritten(Result<Vec<Option<Message>>, StoreError>),
    /// The store finished writing a read marker.
    ReadStored {
        /// Whose.
        user: UserId,
        /// The marker written.
        up_to: MessageId,
        /// Whether it was stored.
        result: Result<(), StoreError>,
        /// The request to answer.
        reply: Reply,
    },
    /// A typing indicator was not refreshed in time.
    TypingExpired {
        /// Whose.
        user: UserId,
        /// Which refresh it was armed by.
        token: u64,
    },
    /// Time to check whether the actor is idle.
    IdleCheck,
    /// Another node owns the conversation now: finish the writes in flight,
    /// then stop. The Router sends nothing more.
    Retire,
}

impl ConversationMsg {
    /// Whether the message comes from outside (through the Router), as
    /// opposed to one the actor sends itself; the Router's idle handshake
    /// counts only those.
    pub fn is_routed(&self) -> bool {
        !matches!(
            self,
            ConversationMsg::BatchWritten(_)
                | ConversationMsg::ReadStored { .. }
                | ConversationMsg::TypingExpired { .. }
                | ConversationMsg::IdleCheck
                | ConversationMsg::Retire
        )
    }

    /// Answers the request (if it is one) with `err`.
    pub fn fail(self, err: ChatError) {
        match self {
            ConversationMsg::Send { reply, .. }
            | ConversationMsg::History { reply, .. }
            | ConversationMsg::Read { reply, .. }
            | ConversationMsg::Create { reply, .. }
            | ConversationMsg::Invite { reply, .. }
            | ConversationMsg::Kick { reply, .. }
            | ConversationMsg::Leave { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            _ => {}
        }
    }
}

/// Starting arguments.
pub struct ConversationArgs {
    /// Which conversation.
    pub id: ConversationId,
    /// The node's services.
    pub services: Arc<Services>,
    /// The Router that routes to it and decides when it stops.
    pub router: ActorRef<RouterMsg>,
}

/// The actor (it holds no data; see [`ConversationState`]).
pub struct ConversationActor;

enum Known {
    Acked(Message),
    Pending(MessageId),
}

struct Pending {
    message: Message,
    origin: Option<ConnId>,
    received: Instant,
    reply: Reply,
}

struct InFlight {
    batch: Vec<Pending>,
    started: Instant,
}

/// Everything a conversation actor knows.
pub struct ConversationState {
    id: ConversationId,
    services: Arc<Services>,
    router: ActorRef<RouterMsg>,
    loaded: bool,
    conversation: Option<Conversation>,
    roles: HashMap<UserId, Role>,
    last_id: MessageId,
    tail: VecDeque<Message>,
    known: HashMap<(UserId, ClientMsgId), Known>,
    waiters: HashMap<MessageId, Vec<Reply>>,
    pending: Vec<Pending>,
    in_flight: Option<InFlight>,
    markers: HashMap<UserId, MessageId>,
    typing: HashMap<UserId, u64>,
    typing_seq: u64,
    reads_in_flight: usize,
    retiring: bool,
    handled: u64,
    last_activity: Instant,
}

impl Actor for ConversationActor {
    type Msg = ConversationMsg;
    type State = ConversationState;
    type Arguments = ConversationArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: ConversationArgs,
    ) -> Result<ConversationState, ActorProcessingErr> {
        args.services.metrics.conversations_active.inc();
        Ok(ConversationState {
            id: args.id,
            services: args.services,
            router: args.router,
            loaded: false,
            conversation: None,
            roles: HashMap::new(),
            last_id: MessageId(0),
            tail: VecDeque::new(),
            known: HashMap::new(),
            waiters: HashMap::new(),
            pending: Vec::new(),
            in_flight: None,
            markers: HashMap::new(),
            typing: HashMap::new(),
            typing_seq: 0,
            reads_in_flight: 0,
            retiring: false,
            handled: 0,
            last_activity: Instant::now(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut ConversationState,
    ) -> Result<(), ActorProcessingErr> {
        // Loading here rather than in pre_start keeps the Router from waiting
        // on the store; requests queue in the mailbox meanwhile.
        if let Err(e) = state.load().await {
            tracing::warn!(conversation = %state.id, error = %e, "loading conversation failed; will retry");
        }
        let period = state.services.tuning.conversation_idle / 2;
        myself.send_interval(period.max(Duration::from_millis(10)), || {
            ConversationMsg::IdleCheck
        });
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut ConversationState,
    ) -> Result<(), ActorProcessingErr> {
        state.services.metrics.conversations_active.dec();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: ConversationMsg,
        state: &mut ConversationState,
    ) -> Result<(), ActorProcessingErr> {
        if msg.is_routed() {
            state.handled += 1;
            state.last_activity = Instant::now();
            if !state.loaded {
                if let Err(e) = state.load().await {
                    msg.fail(e);
                    return Ok(());
                }
            }
        }
        match msg {
            ConversationMsg::Send {
                sender,
                client_msg_id,
                body,
                kind,
                reply_to,
                origin,
                received,
                reply,
            } => {
                state
                    .send(
                        &myself,
                        sender,
                        client_msg_id,
                        body,
                        kind,
                        reply_to,
                        origin,
                        received,
                        reply,
                    )
                    .await
            }
            ConversationMsg::BatchWritten(result) => state.batch_written(&myself, result),
            ConversationMsg::History {
                reader,
                query,
                reply,
            } => state.history(reader, query, reply),
            ConversationMsg::Typing { user, active } => state.typing(&myself, user, active),
            ConversationMsg::TypingExpired { user, token } => {
                if state.typing.get(&user) == Some(&token) {
                    state.typing.remove(&user);
                    state.broadcast_typing(&user, false);
                }
            }
            ConversationMsg::Read { user, up_to, reply } => state.read(&myself, user, up_to, reply),
            ConversationMsg::ReadStored {
                user,
                up_to,
                result,
                reply,
            } => state.read_stored(user, up_to, result, reply),
            ConversationMsg::Create {
                creator,
                kind,
                members,
                title,
                reply,
            } => state.create(creator, kind, members, title, reply).await,
            ConversationMsg::Invite { by, users, reply } => state.invite(by, users, reply).await,
            ConversationMsg::Kick { by, user, reply } => state.kick(by, user, reply).await,
            ConversationMsg::Leave { user, reply } => state.leave(user, reply).await,
            ConversationMsg::IdleCheck => {
                let quiet =
                    state.last_activity.elapsed() >= state.services.tuning.conversation_idle;
                if quiet
                    && state.in_flight.is_none()
                    && state.pending.is_empty()
                    && state.reads_in_flight == 0
                    && state.typing.is_empty()
                {
                    let _ = state.router.cast(RouterMsg::ConversationIdle {
                        conversation: state.id.clone(),
                        actor: myself.get_id(),
                        handled: state.handled,
                    });
                }
            }
            ConversationMsg::Retire => state.retiring = true,
        }
        if state.retiring
            && state.in_flight.is_none()
            && state.pending.is_empty()
            && state.reads_in_flight == 0
        {
            myself.stop(Some("moved to another node".into()));
        }
        Ok(())
    }
}

fn ok() -> OkReply {
    OkReply::default()
}

impl ConversationState {
    async fn load(&mut self) -> Result<(), ChatError> {
        let store = &self.services.store;
        let conversation = store.conversation(&self.id).await?;
        if conversation.is_some() {
            if let Some(last) = store.last_message(&self.id).await? {
                self.last_id = last.id;
            }
            self.markers = store.read_markers(&self.id).await?.into_iter().collect();
        }
        self.set_conversation(conversation);
        self.loaded = true;
        Ok(())
    }

    fn set_conversation(&mut self, conversation: Option<Conversation>) {
        self.roles = conversation
            .iter()
            .flat_map(|c| c.members.iter().map(|m| (m.user.clone(), m.role)))
            .collect();
        self.conversation = conversation;
    }

    fn existing(&self) -> Result<&Conversation, ChatError> {
        self.conversation
            .as_ref()
            .ok_or_else(|| ChatError::NotFound(format!("no conversation {}", self.id)))
    }

    fn member_role(&self, user: &UserId) -> Result<Role, ChatError> {
        self.existing()?;
        self.roles
            .get(user)
            .copied()
            .ok_or_else(|| ChatError::Forbidden(format!("not a member of {}", self.id)))
    }

    #[allow(clippy::too_many_arguments)]
    async fn send(
        &mut self,
        myself: &ActorRef<ConversationMsg>,
        sender: UserId,
        client_msg_id: ClientMsgId,
        body: String,
        kind: MessageKind,
        reply_to: Option<MessageId>,
        origin: Option<ConnId>,
        received: Instant,
        reply: Reply,
    ) {
        let role = match self.member_role(&sender) {
            Ok(r) => r,
            Err(e) => return drop(reply.send(Err(e))),
        };
        let kind_of = self.conversation.as_ref().map(|c| c.kind);
        if kind_of == Some(ConversationKind::Channel) && !role.moderates() {
            let _ = reply.send(Err(ChatError::Forbidden(
                "only owners and admins write to a channel".into(),
            )));
            return;
        }
        let key = (sender, client_msg_id);
        match self.known.get(&key) {
            Some(Known::Acked(m)) => {
                self.services.metrics.sends_deduplicated.inc();
                let _ = reply.send(Ok(OkReply {
                    message: Some(m.clone()),
                    ..ok()
                }));
                return;
            }
            Some(Known::Pending(id)) => {
                self.services.metrics.sends_deduplicated.inc();
                self.waiters.entry(*id).or_default().push(reply);
                return;
            }
            // Older than the tail, or never sent: the store decides, in the
            // batch that writes it (`append_new`), without a lookup here.
            None => {}
        }
        let now = now_ms();
        let id = self.services.ids.next(now, self.last_id);
        self.last_id = id;
        let (sender, client_msg_id) = key;
        let message = Message {
            id,
            conversation: self.id.clone(),
            sender: sender.clone(),
            body,
            kind,
            ts: now,
            client_msg_id: client_msg_id.clone(),
            reply_to,
        };
        self.known
            .insert((sender, client_msg_id), Known::Pending(id));
        self.pending.push(Pending {
            message,
            origin,
            received,
            reply,
        });
        if self.in_flight.is_none() {
            self.start_batch(myself);
        }
    }

    /// Group commit: everything that queued while the previous batch was
    /// being written goes to the store as one batch.
    fn start_batch(&mut self, myself: &ActorRef<ConversationMsg>) {
        let batch = std::mem::take(&mut self.pending);
        let messages: Vec<Message> = batch.iter().map(|p| p.message.clone()).collect();
        self.services
            .metrics
            .store_batch_size
            .observe(messages.len() as f64);
        self.in_flight = Some(InFlight {
            batch,
            started: Instant::now(),
        });
        let store = self.services.store.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            let result = store.append_new(&messages).await;
            let _ = me.cast(ConversationMsg::BatchWritten(result));
        });
    }

    fn batch_written(
        &mut self,
        myself: &ActorRef<ConversationMsg>,
        result: Result<Vec<Option<Message>>, StoreError>,
    ) {
        let Some(InFlight { batch, started }) = self.in_flight.take() else {
            return;
        };
        let services = self.services.clone();
        let metrics = &services.metrics;
        metrics
            .store_batch_latency
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(held) => {
                let mut deliveries = Vec::with_capacity(batch.len());
                for (p, held) in batch.into_iter().zip(held) {
                    if let Some(first) = held {
                        // A retry of a send stored before the tail began.
                        metrics.sends_deduplicated.inc();
                        let reply_body = OkReply {
                            message: Some(first.clone()),
                            ..ok()
                        };
                        for w in self.waiters.remove(&p.message.id).into_iter().flatten() {
                            let _ = w.send(Ok(reply_body.clone()));
                        }
                        let _ = p.reply.send(Ok(reply_body));
                        // Not kept in `known`, which only covers the tail:
                        // retries of old sends must not grow it.
                        self.known
                            .remove(&(first.sender.clone(), first.client_msg_id.clone()));
                        continue;
                    }
                    let m = p.message;
                    metrics.messages_accepted.inc();
                    metrics
                        .send_latency
                        .observe(p.received.elapsed().as_secs_f64());
                    let reply_body = OkReply {
                        message: Some(m.clone()),
                        ..ok()
                    };
                    for w in self.waiters.remove(&m.id).into_iter().flatten() {
                        let _ = w.send(Ok(reply_body.clone()));
                    }
                    let _ = p.reply.send(Ok(reply_body));
                    self.known.insert(
                        (m.sender.clone(), m.client_msg_id.clone()),
                        Known::Acked(m.clone()),
                    );
                    deliveries.push(Delivery {
                        frame: Arc::new(SharedFrame::new(ServerFrame::Message {
                            message: m.clone(),
                        })),
                        skip_conn: p.origin,
                    });
                    self.push_tail(m);
                }
                self.fan_out(deliveries.into(), None);
            }
            Err(e) => {
                metrics.store_errors.inc();
                tracing::warn!(conversation = %self.id, error = %e, "batch not stored");
                let err = ChatError::from(e);
                for p in batch {
                    self.known
                        .remove(&(p.message.sender.clone(), p.message.client_msg_id.clone()));
                    for w in self.waiters.remove(&p.message.id).into_iter().flatten() {
                        let _ = w.send(Err(err.clone()));
                    }
                    let _ = p.reply.send(Err(err.clone()));
                }
            }
        }
        if !self.pending.is_empty() {
            self.start_batch(myself);
        }
    }

    fn push_tail(&mut self, m: Message) {
        self.tail.push_back(m);
        while self.tail.len() > self.services.tuning.tail {
            if let Some(old) = self.tail.pop_front() {
                self.known.remove(&(old.sender, old.client_msg_id));
            }
        }
    }

    /// Sends `deliveries` to the sessions of the members listening, on this
    /// node and (one message per node) on the others, skipping `skip_user`.
    fn fan_out(&self, deliveries: Arc<[Delivery]>, skip_user: Option<&UserId>) {
        let to = Audience::Listeners {
            except: skip_user.cloned(),
        };
        self.deliver_remote(&deliveries, to, &[], &[]);
        let Some(listeners) = self.services.interest.listeners(&self.id) else {
            return;
        };
        // Interest may name a user removed a moment ago: only members receive.
        let members: Vec<UserId> = listeners
            .iter()
            .filter(|u| self.roles.contains_key(*u) && Some(*u) != skip_user)
            .cloned()
            .collect();
        self.services.deliver_local(&members, &deliveries);
    }

    /// The same events for the sessions on other nodes: one message per node.
    fn deliver_remote(
        &self,
        deliveries: &[Delivery],
        to: Audience,
        listen: &[UserId],
        unlisten: &[UserId],
    ) {
        let cluster = &self.services.cluster;
        let (sent, skipped) = cluster.deliver(&self.id, to, listen, unlisten, || {
            deliveries
                .iter()
                .map(|d| (d.frame.frame().clone(), d.skip_conn))
                .collect()
        });
        // Nothing to count on a single node, the common case.
        if sent + skipped > 0 {
            let metrics = &self.services.metrics;
            metrics.peer_deliveries_sent.inc_by(sent);
            metrics.peer_deliveries_skipped.inc_by(skipped);
        }
    }

    fn history(&self, reader: UserId, query: PageQuery, reply: Reply) {
        if let Err(e) = self.member_role(&reader) {
            return drop(reply.send(Err(e)));
        }
        // Catching up from a recent point is served from the tail, without
        // touching the store: every message above `after` is in it.
        if let (Some(after), None, Some(first)) = (query.after, query.before, self.tail.front()) {
            if after >= first.id {
                let mut messages: Vec<Message> = self
                    .tail
                    .iter()
                    .filter(|m| m.id > after)
                    .take(query.limit + 1)
                    .cloned()
                    .collect();
                let more = messages.len() > query.limit;
                messages.truncate(query.limit);
                let _ = reply.send(Ok(OkReply {
                    messages: Some(messages),
                    more: Some(more),
                    ..ok()
                }));
                return;
            }
        }
        let store = self.services.store.clone();
        let id = self.id.clone();
        tokio::spawn(async move {
            let result = store
                .page(&id, query)
                .await
                .map(|p| OkReply {
                    messages: Some(p.messages),
                    more: Some(p.more),
                    ..ok()
                })
                .map_err(ChatError::from);
            let _ = reply.send(result);
        });
    }

    fn typing(&mut self, myself: &ActorRef<ConversationMsg>, user: UserId, active: bool) {
        if self.member_role(&user).is_err() {
            return;
        }
        if active {
            self.typing_seq += 1;
            let token = self.typing_seq;
            let was = self.typing.insert(user.clone(), token).is_some();
            let u = user.clone();
            myself.send_after(self.services.tuning.typing_timeout, move || {
                ConversationMsg::TypingExpired { user: u, token }
            });
            if !was {
                self.broadcast_typing(&user, true);
            }
        } else if self.typing.remove(&user).is_some() {
            self.broadcast_typing(&user, false);
        }
    }

    fn broadcast_typing(&self, user: &UserId, active: bool) {
        let frame = ServerFrame::Typing {
            conversation: self.id.clone(),
            user: user.clone(),
            active,
        };
        self.fan_out(
            Arc::from([Delivery {
                frame: Arc::new(SharedFrame::new(frame)),
                skip_conn: None,
            }]),
            Some(user),
        );
    }

    fn read(
        &mut self,
        myself: &ActorRef<ConversationMsg>,
        user: UserId,
        up_to: MessageId,
        reply: Reply,
    ) {
        if let Err(e) = self.member_role(&user) {
            return drop(reply.send(Err(e)));
        }
        // A marker past the newest message would mark future messages read.
        let up_to = up_to.min(self.last_id);
        let current = self.markers.get(&user).copied().unwrap_or_default();
        if up_to <= current {
            return drop(reply.send(Ok(ok())));
        }
        self.markers.insert(user.clone(), up_to);
        self.reads_in_flight += 1;
        let store = self.services.store.clone();
        let id = self.id.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            let result = store.set_read_marker(&id, &user, up_to).await;
            let _ = me.cast(ConversationMsg::ReadStored {
                user,
                up_to,
                result,
                reply,
            });
        });
    }

    fn read_stored(
        &mut self,
        user: UserId,
        up_to: MessageId,
        result: Result<(), StoreError>,
        reply: Reply,
    ) {
        self.reads_in_flight -= 1;
        match result {
            Ok(()) => {
                let _ = reply.send(Ok(ok()));
                let frame = ServerFrame::Receipt {
                    conversation: self.id.clone(),
                    user,
                    up_to,
                    kind: ReceiptKind::Read,
                };
                self.fan_out(
                    Arc::from([Delivery {
                        frame: Arc::new(SharedFrame::new(frame)),
                        skip_conn: None,
                    }]),
                    None,
                );
            }
            Err(e) => {
                self.services.metrics.store_errors.inc();
                // Forget the optimistic marker only if nothing newer replaced it.
                if self.markers.get(&user) == Some(&up_to) {
                    self.markers.remove(&user);
                }
                let _ = reply.send(Err(e.into()));
            }
        }
    }

    async fn check_users_exist(&self, users: &[UserId]) -> Result<(), ChatError> {
        for u in users {
            if self.services.store.user(u).await?.is_none() {
                return Err(ChatError::NotFound(format!("no user {u}")));
            }
        }
        Ok(())
    }

    async fn create(
        &mut self,
        creator: UserId,
        kind: ConversationKind,
        members: Vec<UserId>,
        title: Option<String>,
        reply: Reply,
    ) {
        if let Some(existing) = &self.conversation {
            // Only a direct conversation's id can be asked for twice.
            let result =
                if existing.kind == ConversationKind::Direct && self.roles.contains_key(&creator) {
                    Ok(OkReply {
                        conversation: Some(existing.clone()),
                        ..ok()
                    })
                } else {
                    Err(ChatError::BadRequest(format!(
                        "conversation {} exists",
                        self.id
                    )))
                };
            return drop(reply.send(result));
        }
        let mut list: Vec<Member> = Vec::with_capacity(members.len() + 1);
        let creator_role = if kind == ConversationKind::Direct {
            Role::Member
        } else {
            Role::Owner
        };
        list.push(Member {
            user: creator.clone(),
            role: creator_role,
        });
        for u in members {
            if !list.iter().any(|m| m.user == u) {
                list.push(Member {
                    user: u,
                    role: Role::Member,
                });
            }
        }
        if kind == ConversationKind::Direct && list.len() != 2 {
            return drop(reply.send(Err(ChatError::BadRequest(
                "a direct conversation takes exactly one other user".into(),
            ))));
        }
        let others: Vec<UserId> = list.iter().skip(1).map(|m| m.user.clone()).collect();
        if let Err(e) = self.check_users_exist(&others).await {
            return drop(reply.send(Err(e)));
        }
        let conversation = Conversation {
            id: self.id.clone(),
            kind,
            title,
            members: list.clone(),
            created_at: now_ms(),
        };
        let change = ConversationChange {
            conversation: conversation.clone(),
            upsert: list,
            remove: vec![],
        };
        if let Err(e) = self.services.store.apply_conversation(&change).await {
            self.services.metrics.store_errors.inc();
            return drop(reply.send(Err(e.into())));
        }
        self.set_conversation(Some(conversation.clone()));
        let all: Vec<UserId> = conversation
            .members
            .iter()
            .map(|m| m.user.clone())
            .collect();
        self.announce(&all, &[]);
        let _ = reply.send(Ok(OkReply {
            conversation: Some(conversation),
            ..ok()
        }));
    }

    /// Stores a membership change and tells everyone concerned.
    async fn commit_members(
        &mut self,
        mut next: Conversation,
        upsert: Vec<Member>,
        remove: Vec<UserId>,
    ) -> Result<Conversation, ChatError> {
        next.members.retain(|m| !remove.contains(&m.user));
        for m in &upsert {
            match next.members.iter_mut().find(|x| x.user == m.user) {
                Some(x) => x.role = m.role,
                None => next.members.push(m.clone()),
            }
        }
        let change = ConversationChange {
            conversation: next.clone(),
            upsert,
            remove: remove.clone(),
        };
        self.services
            .store
            .apply_conversation(&change)
            .await
            .inspect_err(|_| {
                self.services.metrics.store_errors.inc();
            })?;
        self.set_conversation(Some(next.clone()));
        let everyone: Vec<UserId> = next.members.iter().map(|m| m.user.clone()).collect();
        self.announce(&everyone, &remove);
        Ok(next)
    }

    /// Sends the `conversation` event to current members and to `removed`,
    /// and keeps the interest table in step: new members with a session here
    /// start listening, removed ones stop.
    fn announce(&self, members: &[UserId], removed: &[UserId]) {
        let Some(conversation) = self.conversation.clone() else {
            return;
        };
        let interest = &self.services.interest;
        let conv_list = [self.id.clone()];
        for u in removed {
            interest.remove(u, &self.id, &self.services.cluster);
        }
        let frame: Arc<[Delivery]> = Arc::from([Delivery {
            frame: Arc::new(SharedFrame::new(ServerFrame::Conversation { conversation })),
            skip_conn: None,
        }]);
        let directory = &self.services.directory;
        for u in members {
            if directory.get(u).is_some() {
                interest.add(u, &conv_list, &self.services.cluster);
            }
        }
        let mut targets: Vec<UserId> = members.to_vec();
        targets.extend(removed.iter().cloned());
        self.services.deliver_local(&targets, &frame);
        self.deliver_remote(&frame, Audience::Users(targets), members, removed);
    }

    async fn invite(&mut self, by: UserId, users: Vec<UserId>, reply: Reply) {
        let result = async {
            let role = self.member_role(&by)?;
            let conv = self.existing()?.clone();
            if conv.kind == ConversationKind::Direct {
                return Err(ChatError::Forbidden(
                    "a direct conversation has two members".into(),
                ));
            }
            if !role.moderates() {
                return Err(ChatError::Forbidden("only owners and admins invite".into()));
            }
            let fresh: Vec<UserId> = users
                .into_iter()
                .filter(|u| !self.roles.contains_key(u))
                .collect();
            if fresh.is_empty() {
                return Ok(conv);
            }
            self.check_users_exist(&fresh).await?;
            let upsert = fresh
                .into_iter()
                .map(|user| Member {
                    user,
                    role: Role::Member,
                })
                .collect();
            self.commit_members(conv, upsert, vec![]).await
        }
        .await;
        let _ = reply.send(result.map(|c| OkReply {
            conversation: Some(c),
            ..ok()
        }));
    }

    async fn kick(&mut self, by: UserId, user: UserId, reply: Reply) {
        let result = async {
            let role = self.member_role(&by)?;
            let conv = self.existing()?.clone();
            if conv.kind == ConversationKind::Direct || !role.moderates() {
                return Err(ChatError::Forbidden("only owners and admins kick".into()));
            }
            let target = self
                .roles
                .get(&user)
                .copied()
                .ok_or_else(|| ChatError::NotFound(format!("{user} is not a member")))?;
            if user == by {
                return Err(ChatError::BadRequest("use leave to leave".into()));
            }
            if target == Role::Owner || (target == Role::Admin && role != Role::Owner) {
                return Err(ChatError::Forbidden(
                    "cannot kick an owner or, unless owner, an admin".into(),
                ));
            }
            self.commit_members(conv, vec![], vec![user]).await
        }
        .await;
        let _ = reply.send(result.map(|c| OkReply {
            conversation: Some(c),
            ..ok()
        }));
    }

    async fn leave(&mut self, user: UserId, reply: Reply) {
        let result = async {
            let role = self.member_role(&user)?;
            let conv = self.existing()?.clone();
            if conv.kind == ConversationKind::Direct {
                return Err(ChatError::Forbidden(
                    "a direct conversation cannot be left".into(),
                ));
            }
            // A group keeps an owner: the longest-standing admin, else member.
            let mut upsert = vec![];
            if role == Role::Owner
                && !conv
                    .members
                    .iter()
                    .any(|m| m.role == Role::Owner && m.user != user)
            {
                let heir = conv
                    .members
                    .iter()
                    .filter(|m| m.user != user)
                    .min_by_key(|m| m.role)
                    .map(|m| m.user.clone());
                if let Some(heir) = heir {
                    upsert.push(Member {
                        user: heir,
                        role: Role::Owner,
                    });
                }
            }
            self.commit_members(conv, upsert, vec![user]).await
        }
        .await;
        let _ = reply.send(result.map(|_| ok()));
    }
}

// Local only: peers never get a stand-in for a conversation actor (DESIGN.md,
// "Traps"), so the message has no wire form.
impl ractor::Message for ConversationMsg {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_ids_ignore_order_and_are_valid() {
        let a = UserId::new("alice").unwrap();
        let b = UserId::new("bob").unwrap();
        assert_eq!(direct_id(&a, &b), direct_id(&b, &a));
        assert_ne!(direct_id(&a, &b), direct_id(&a, &a));
        assert!(direct_id(&a, &b).as_str().starts_with("d:"));
    }
}
