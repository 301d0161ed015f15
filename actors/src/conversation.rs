//! The conversation actor: the single writer of one conversation.
//!
//! ```text
//!  dispatch / Router ──Request──► ConversationActor ──append_new──► store (group commit)
//!                                     │   ▲ BatchWritten               │
//!                                     │   └────────────────────────────┘
//!                                     └──Fanout──► members' connections, here and on other nodes
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
//! so any node can take a conversation over. Membership changes are in
//! [`members`], read markers and typing in [`signals`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_protocol::request::ConversationRequest;
use chat_protocol::{
    now_ms, Attachment, ClientMsgId, Conversation, ConversationId, ConversationKind, HeldMessage,
    IdGenerator, Message, MessageId, MessageKind, OkReply, Role, ServerFrame, SharedFrame, UserId,
};
use chat_storage::{Lease, LeaseGrant, MessageStore, PageQuery, StoreError};

use crate::leases::NodeLeases;
use chat_storage::NodeLeaseHolder;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::conn::{ConnId, Delivery};
use crate::error::ChatError;
use crate::events::ConversationEvents;
use crate::fanout::Fanout;
use crate::maps::IdMap;
use crate::media::{shown, MediaLinks};
use crate::metrics::Metrics;
use crate::msg::{answer, ConversationMsg, Reply, Request, RouterMsg};
use crate::telemetry::{parent_of, Span};
use crate::tuning::Tuning;

mod attachments;
mod blocks;
mod lifecycle;
mod members;
mod roles;
mod signals;
mod tail;
#[cfg(test)]
mod tests;
mod unannounced;

/// What every conversation actor of a node uses, shared by all of them.
pub struct ConversationDeps {
    /// This node's name: the owner named in the conversations' leases.
    pub node: Arc<str>,
    /// History and conversation records.
    pub store: Arc<dyn MessageStore>,
    /// This node's lease, which its conversations' claims live by.
    pub leases: Arc<NodeLeases>,
    /// This node's message ids.
    pub ids: Arc<IdGenerator>,
    /// Where events go.
    pub fanout: Arc<dyn Fanout>,
    /// Counters and histograms.
    pub metrics: Arc<Metrics>,
    /// Knobs.
    pub tuning: Tuning,
    /// Who hears of stored membership changes (operators' webhooks).
    pub events: Arc<dyn ConversationEvents>,
    /// Attachments' links and the release of deleted messages' files.
    pub media: Arc<dyn MediaLinks>,
}

/// Starting arguments.
pub struct ConversationArgs {
    /// Which conversation.
    pub id: ConversationId,
    /// What it uses.
    pub deps: Arc<ConversationDeps>,
    /// The Router, which decides when it stops.
    pub router: ActorRef<RouterMsg>,
}

/// The actor (it holds no data; see [`ConversationState`]).
pub struct ConversationActor;

enum Known {
    /// Held in the tail too.
    Acked(Arc<HeldMessage>),
    Pending(MessageId),
}

struct Pending {
    message: Message,
    origin: Option<ConnId>,
    received: Instant,
    reply: Option<Reply>,
    span: Option<Span>,
}

/// The one write in flight: a batch of sends or a batch of updates (the
/// other is empty), so that revisions land in order.
struct InFlight {
    batch: Vec<Pending>,
    updates: Vec<lifecycle::PendingUpdate>,
    started: Instant,
    /// The highest revision the batch was given.
    top_rev: u64,
}

/// Everything a conversation actor knows.
pub struct ConversationState {
    id: ConversationId,
    deps: Arc<ConversationDeps>,
    router: ActorRef<RouterMsg>,
    loaded: bool,
    conversation: Option<Conversation>,
    roles: IdMap<UserId, Role>,
    last_id: MessageId,
    tail: tail::Tail,
    known: HashMap<(UserId, ClientMsgId), Known>,
    /// Sends that may be stored unannounced: kept through a reload.
    unannounced: unannounced::Unannounced,
    waiters: HashMap<MessageId, Vec<Reply>>,
    pending: Vec<Pending>,
    /// Edits, deletes and reactions waiting for the next batch.
    updates: Vec<lifecycle::PendingUpdate>,
    in_flight: Option<InFlight>,
    /// The last revision given out.
    rev: u64,
    /// The highest revision whose writes, and those of all below, are done.
    durable_rev: u64,
    /// Whether the last batch was of sends: updates go next, so a stream of
    /// sends does not hold them back.
    last_batch_sends: bool,
    markers: HashMap<UserId, MessageId>,
    typing: HashMap<UserId, u64>,
    typing_seq: u64,
    reads_in_flight: usize,
    retiring: bool,
    handled: u64,
    /// Tokio's clock, so that tests can pause it.
    last_activity: tokio::time::Instant,
    /// The claim on the conversation, on a store shared by several nodes:
    /// valid while this node's lease of the incarnation that took it is.
    lease: Option<Lease>,
    /// A direct conversation's members' blocks, as last read (`blocks`).
    direct_blocks: DirectBlocks,
}

/// What a direct conversation last read: which of its two members the
/// other blocked, and when.
#[derive(Default)]
struct DirectBlocks {
    read_at: Option<tokio::time::Instant>,
    refused: Vec<UserId>,
}

/// How long a starting actor waits for another node to give the
/// conversation up (a departing owner finishing its writes), or for this
/// node's own lease, before it answers `unavailable`; the client retries. A
/// crashed owner's claims are free once its node lease ran out and the
/// store's grace passed.
const LEASE_WAIT: Duration = Duration::from_secs(5);

impl Actor for ConversationActor {
    type Msg = ConversationMsg;
    type State = ConversationState;
    type Arguments = ConversationArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: ConversationArgs,
    ) -> Result<ConversationState, ActorProcessingErr> {
        args.deps.metrics.conversations_active.inc();
        let tuning = &args.deps.tuning;
        let tail = tail::Tail::new(
            tail::TailBounds {
                len: tuning.tail,
                bytes: tuning.tail_bytes,
                node_bytes: tuning.tail_node_bytes,
                floor: tuning.tail_floor,
            },
            args.deps.metrics.held_message_bytes.clone(),
        );
        Ok(ConversationState {
            id: args.id,
            deps: args.deps,
            router: args.router,
            loaded: false,
            conversation: None,
            roles: IdMap::default(),
            last_id: MessageId(0),
            tail,
            known: HashMap::new(),
            unannounced: unannounced::Unannounced::default(),
            waiters: HashMap::new(),
            pending: Vec::new(),
            updates: Vec::new(),
            in_flight: None,
            rev: 0,
            durable_rev: 0,
            last_batch_sends: false,
            markers: HashMap::new(),
            typing: HashMap::new(),
            typing_seq: 0,
            reads_in_flight: 0,
            retiring: false,
            handled: 0,
            last_activity: tokio::time::Instant::now(),
            direct_blocks: DirectBlocks::default(),
            lease: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut ConversationState,
    ) -> Result<(), ActorProcessingErr> {
        // Loading here rather than in pre_start keeps the Router from waiting
        // on the store; requests queue in the mailbox meanwhile. Without
        // waiting for a lease another node holds: the first request waits.
        if let Err(e) = state.load(Duration::ZERO).await {
            tracing::warn!(conversation = %state.id, error = %e, "loading conversation failed; will retry");
        }
        let period = state.deps.tuning.conversation_idle / 2;
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
        state.deps.metrics.conversations_active.dec();
        if let Some(lease) = state.lease.take() {
            // Given up at once, so the next owner need not wait for this
            // node's lease to run out: nothing of this actor's is in flight
            // any more. Awaited, so that a draining node has released its
            // claims when it exits.
            let release = state.deps.store.release_lease(&lease);
            match tokio::time::timeout(Duration::from_secs(2), release).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "claim not released; released later");
                    state.deps.leases.release_later(lease);
                }
                Err(_) => {
                    tracing::debug!("claim release timed out; released later");
                    state.deps.leases.release_later(lease);
                }
            }
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: ConversationMsg,
        state: &mut ConversationState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ConversationMsg::Request(request) => state.request(&myself, request).await,
            ConversationMsg::BatchWritten(result) => state.batch_written(&myself, result),
            ConversationMsg::UpdatesWritten(done) => state.updates_written(&myself, done),
            ConversationMsg::TypingExpired { user, token } => state.typing_expired(user, token),
            ConversationMsg::ReadStored {
                user,
                up_to,
                result,
                reply,
            } => state.read_stored(user, up_to, result, reply),
            ConversationMsg::IdleCheck => state.idle_check(&myself),
            ConversationMsg::Retire => state.retiring = true,
        }
        if state.retiring && state.is_settled() {
            myself.stop(Some("moved to another node".into()));
        }
        Ok(())
    }
}

fn ok() -> OkReply {
    OkReply::default()
}

/// One event for everyone, from nobody's connection in particular.
fn event(frame: ServerFrame) -> [Delivery; 1] {
    [Delivery {
        frame: Arc::new(SharedFrame::new(frame)),
        skip_conn: None,
        trace: None,
    }]
}

impl ConversationState {
    /// One client request: the dispatcher of the actor.
    async fn request(&mut self, myself: &ActorRef<ConversationMsg>, request: Request) {
        self.handled += 1;
        self.last_activity = tokio::time::Instant::now();
        if !self.lease_valid() {
            self.lose_lease("it ran out");
        }
        if !self.loaded {
            // Waiting counts from when the node received the request: one
            // queued behind others that waited for the claim has waited
            // already, and gets one look, not five more seconds (a queue of
            // such waits would hold a later request for minutes).
            let wait = LEASE_WAIT.saturating_sub(request.received.elapsed());
            if let Err(e) = self.load(wait).await {
                return request.fail(e);
            }
        }
        let Request {
            user,
            conn,
            received,
            body,
            reply,
            trace,
        } = request;
        match body {
            ConversationRequest::Send {
                client_msg_id,
                body,
                kind,
                reply_to,
                attachments,
                ..
            } => {
                if let Some(target) = reply_to {
                    if let Err(e) = self.check_reply_to(&user, target).await {
                        return answer(reply, Err(e));
                    }
                }
                if let Err(e) = self.check_direct_send(&user).await {
                    return answer(reply, Err(e));
                }
                let attachments = match self.attach(&user, &client_msg_id, attachments).await {
                    Ok(a) => a,
                    Err(e) => return answer(reply, Err(e)),
                };
                let mut span = Span::child("conversation.send", trace);
                if let Some(span) = &mut span {
                    span.set("chat.conversation", self.id.to_string());
                }
                let draft = Draft {
                    sender: user,
                    client_msg_id,
                    body,
                    kind,
                    reply_to,
                    attachments,
                    span,
                };
                self.send(myself, draft, conn, received, reply)
            }
            ConversationRequest::History {
                before,
                after,
                limit,
                ..
            } => {
                let query = PageQuery {
                    max_bytes: chat_protocol::limits::MAX_PAGE_BYTES,
                    ..PageQuery::new(before, after, limit as usize)
                };
                self.history(user, query, reply)
            }
            ConversationRequest::Typing { active, .. } => self.typing(myself, user, active),
            ConversationRequest::Read { up_to, .. } => self.read(myself, user, up_to, reply),
            ConversationRequest::Create {
                kind,
                members,
                title,
                ..
            } => self.create(user, kind, members, title, reply).await,
            ConversationRequest::Invite { users, .. } => self.invite(user, users, reply).await,
            ConversationRequest::Kick { user: target, .. } => self.kick(user, target, reply).await,
            ConversationRequest::SetRole {
                user: target, role, ..
            } => self.set_role(user, target, role, reply).await,
            ConversationRequest::SetTitle { title, .. } => self.set_title(user, title, reply).await,
            ConversationRequest::Leave { .. } => self.leave(user, reply).await,
            ConversationRequest::Members { after, limit, .. } => {
                self.members_page(&user, after, limit, reply)
            }
            ConversationRequest::Edit { message, body, .. } => {
                let change = lifecycle::Change::Edit {
                    body,
                    mentions: Vec::new(),
                };
                self.update(myself, user, message, change, conn, reply, false)
            }
            ConversationRequest::Delete { message, .. } => self.update(
                myself,
                user,
                message,
                lifecycle::Change::Delete,
                conn,
                reply,
                false,
            ),
            ConversationRequest::OperatorDelete { message, .. } => self.update(
                myself,
                user,
                message,
                lifecycle::Change::Delete,
                conn,
                reply,
                true,
            ),
            ConversationRequest::React {
                message, emoji, on, ..
            } => {
                let change = lifecycle::Change::React { emoji, on };
                self.update(myself, user, message, change, conn, reply, false)
            }
            ConversationRequest::Changes {
                after_rev, limit, ..
            } => self.changes(&user, after_rev, limit, reply),
        }
    }

    /// A reply must answer a message of this conversation (checked for
    /// members only, so that outsiders learn nothing of its messages).
    async fn check_reply_to(&self, sender: &UserId, target: MessageId) -> Result<(), ChatError> {
        self.member_role(sender)?;
        let missing = || ChatError::BadRequest(format!("reply_to: no message {} here", target.0));
        if self.tail.get(target).is_some() {
            return Ok(());
        }
        if self.tail.first_id().is_some_and(|first| target > first) {
            // Newer than the oldest message in the tail, yet not in it.
            return Err(missing());
        }
        let around = PageQuery::new(
            Some(MessageId(target.0.saturating_add(1))),
            Some(MessageId(target.0.saturating_sub(1))),
            1,
        );
        let page = self.deps.store.page(&self.id, around).await?;
        match page.messages.first() {
            Some(m) if m.id == target => Ok(()),
            _ => Err(missing()),
        }
    }

    /// Nothing in flight: no batch, no pending send, no marker being written.
    fn is_settled(&self) -> bool {
        self.in_flight.is_none()
            && self.pending.is_empty()
            && self.updates.is_empty()
            && self.reads_in_flight == 0
    }

    fn idle_check(&self, myself: &ActorRef<ConversationMsg>) {
        let quiet = self.last_activity.elapsed() >= self.deps.tuning.conversation_idle;
        if quiet && self.is_settled() && self.typing.is_empty() {
            let _ = self.router.cast(RouterMsg::ConversationIdle {
                conversation: self.id.clone(),
                actor: myself.get_id(),
                handled: self.handled,
            });
        }
    }

    /// Claims the conversation under this node's lease, on a store shared
    /// by several nodes, waiting at most `wait` for a departing owner to
    /// give it up (and for this node's own lease). Taken before anything is
    /// read, so what is read includes every write of the previous owner, and
    /// ids continue above its last.
    async fn take_lease(&mut self, wait: Duration) -> Result<(), ChatError> {
        if self.lease_valid() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let node = self.deps.leases.wait_current(left).await.ok_or_else(|| {
                ChatError::Unavailable("this node holds no lease on the database yet".into())
            })?;
            match self.deps.store.claim(&self.id, &node).await? {
                LeaseGrant::Granted(lease) => {
                    self.deps.metrics.leases_acquired.inc();
                    self.lease = Some(lease);
                    return Ok(());
                }
                LeaseGrant::Held { owner, until_ms } => {
                    let budget = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if budget.is_zero() {
                        return Err(ChatError::Unavailable(format!(
                            "conversation {} is held by node {owner}",
                            self.id
                        )));
                    }
                    // The holder gives it up when it retires (the Router
                    // tells it), or its node lease runs out: look again soon.
                    let held_for = Duration::from_millis(until_ms.saturating_sub(now_ms()));
                    let pause = held_for
                        .clamp(Duration::from_millis(20), Duration::from_millis(250))
                        .min(budget);
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// The incarnation of the node lease this actor's claim lives by.
    fn claimed_under(&self) -> Option<u64> {
        self.lease.as_ref().and_then(|l| l.incarnation)
    }

    fn lease_valid(&self) -> bool {
        !self.deps.leases.needed()
            || self
                .claimed_under()
                .is_some_and(|i| self.deps.leases.valid_until(i).is_some())
    }

    /// The claim to write under, or why no write may start.
    fn fence(&self) -> Result<Option<Lease>, StoreError> {
        if !self.deps.leases.needed() {
            return Ok(None);
        }
        match &self.lease {
            Some(l) if self.lease_valid() => Ok(Some(l.clone())),
            _ => Err(StoreError::Unavailable(format!(
                "this node no longer holds conversation {}",
                self.id
            ))),
        }
    }

    /// The claim is void, or this node's lease ran out: nothing more is
    /// written until the next request claims it again (and reloads what
    /// another holder may have written).
    fn lose_lease(&mut self, why: &str) {
        if let Some(claim) = self.lease.take() {
            self.deps.metrics.leases_lost.inc();
            tracing::warn!(conversation = %self.id, why, "lost the conversation's claim");
            // Released once a write abandoned under it can no longer land,
            // unless claimed again first (a new epoch: the release then
            // frees nothing). Otherwise no other node could take it while
            // this one lives.
            self.deps.leases.release_later(claim);
        }
        if self.in_flight.is_none() {
            self.loaded = false;
            self.tail.reset(false);
            self.known.clear();
        }
    }

    async fn load(&mut self, wait_for_lease: Duration) -> Result<(), ChatError> {
        self.take_lease(wait_for_lease).await?;
        let store = &self.deps.store;
        let conversation = store.conversation(&self.id).await?;
        // Everything it gets from now on is held from its first message
        // when it has none yet.
        let mut from_start = true;
        if conversation.is_some() {
            if let Some(last) = store.last_message(&self.id).await? {
                self.last_id = last.id;
                from_start = false;
            }
            // Never below a revision given out here before (a retried send
            // answered from the store leaves a gap the store does not see).
            self.rev = self.rev.max(store.last_rev(&self.id).await?);
            self.durable_rev = self.rev;
            self.markers = store.read_markers(&self.id).await?.into_iter().collect();
        }
        self.set_conversation(conversation);
        self.tail.reset(from_start);
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

    /// The conversation as clients are shown it, at its current revision.
    fn shown(&self, c: &Conversation) -> Conversation {
        Conversation {
            rev: self.durable_rev,
            ..c.for_clients()
        }
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

    /// Sends `events` to the members listening, here and on other nodes,
    /// skipping `skip_user`.
    fn fan_out(&self, events: &[Delivery], skip_user: Option<&UserId>) {
        let roles = &self.roles;
        self.deps
            .fanout
            .to_listeners(&self.id, events, skip_user, &|u| roles.contains_key(u));
    }

    fn history(&self, reader: UserId, query: PageQuery, reply: Option<Reply>) {
        if let Err(e) = self.member_role(&reader) {
            return answer(reply, Err(e));
        }
        // Within the tail (catching up from a recent point, or scrolling
        // back through recent messages) a page is served from memory, each
        // message encoded once for every page that lists it.
        if let Some((page, more)) = self.tail.page(&query, |m| self.to_show(m)) {
            return answer(
                reply,
                Ok(OkReply {
                    held: Some(page),
                    more: Some(more),
                    ..ok()
                }),
            );
        }
        let store = self.deps.store.clone();
        let id = self.id.clone();
        let metrics = self.deps.metrics.clone();
        let media = self.deps.media.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let page = store.page(&id, query).await;
            metrics
                .store_read_latency
                .observe(started.elapsed().as_secs_f64());
            let result = page
                .map(|p| OkReply {
                    messages: Some(p.messages.iter().map(|m| shown(&*media, m)).collect()),
                    more: Some(p.more),
                    ..ok()
                })
                .map_err(ChatError::from);
            answer(reply, result);
        });
    }
}

/// A message as its sender asked for it, before it has an id.
struct Draft {
    sender: UserId,
    client_msg_id: ClientMsgId,
    body: String,
    kind: MessageKind,
    reply_to: Option<MessageId>,
    attachments: Vec<Attachment>,
    /// Its span on this node, when traced: ends when it is acknowledged.
    span: Option<Span>,
}

/// Sends: ids, dedupe of retried `client_msg_id`s, group commit, and the
/// fan-out of what was stored.
impl ConversationState {
    fn send(
        &mut self,
        myself: &ActorRef<ConversationMsg>,
        draft: Draft,
        origin: Option<ConnId>,
        received: Instant,
        reply: Option<Reply>,
    ) {
        let role = match self.member_role(&draft.sender) {
            Ok(r) => r,
            Err(e) => return answer(reply, Err(e)),
        };
        let kind_of = self.conversation.as_ref().map(|c| c.kind);
        if kind_of == Some(ConversationKind::Channel) && !role.moderates() {
            return answer(
                reply,
                Err(ChatError::Forbidden(
                    "only owners and admins write to a channel".into(),
                )),
            );
        }
        let key = (draft.sender, draft.client_msg_id);
        match self.known.get(&key) {
            Some(Known::Acked(m)) => {
                self.deps.metrics.sends_deduplicated.inc();
                return answer(reply, Ok(self.ack_of(m)));
            }
            Some(Known::Pending(id)) => {
                self.deps.metrics.sends_deduplicated.inc();
                if let Some(reply) = reply {
                    self.waiters.entry(*id).or_default().push(reply);
                }
                return;
            }
            // Older than the tail, or never sent: the store decides, in the
            // batch that writes it (`append_new`), without a lookup here.
            None => {}
        }
        let now = now_ms();
        let id = self.deps.ids.next(now, self.last_id);
        self.last_id = id;
        let (sender, client_msg_id) = key;
        let mentions = self.mentions_in(&draft.body, &sender);
        let message = Message {
            // Given when its batch starts: revisions land in order.
            rev: 0,
            edited_at: None,
            deleted: false,
            reactions: Vec::new(),
            mentions,
            id,
            conversation: self.id.clone(),
            sender: sender.clone(),
            body: draft.body,
            kind: draft.kind,
            ts: now,
            client_msg_id: client_msg_id.clone(),
            reply_to: draft.reply_to,
            attachments: draft.attachments,
        };
        self.known
            .insert((sender, client_msg_id), Known::Pending(id));
        self.pending.push(Pending {
            message,
            origin,
            received,
            reply,
            span: draft.span,
        });
        if self.in_flight.is_none() {
            self.start_batch(myself);
        }
    }

    /// Group commit: everything that queued while the previous batch was
    /// being written goes to the store as one batch.
    fn start_batch(&mut self, myself: &ActorRef<ConversationMsg>) {
        if !self.updates.is_empty() && (self.pending.is_empty() || self.last_batch_sends) {
            self.last_batch_sends = false;
            return self.start_updates(myself);
        }
        self.last_batch_sends = true;
        let mut batch = std::mem::take(&mut self.pending);
        for p in &mut batch {
            self.rev += 1;
            p.message.rev = self.rev;
        }
        let messages: Vec<Message> = batch.iter().map(|p| p.message.clone()).collect();
        self.deps
            .metrics
            .store_batch_size
            .observe(messages.len() as f64);
        self.in_flight = Some(InFlight {
            batch,
            updates: Vec::new(),
            started: Instant::now(),
            top_rev: self.rev,
        });
        let store = self.deps.store.clone();
        let me = myself.clone();
        let lease = self.fence();
        let leases = self.deps.leases.clone();
        // One store span per batch, under its first traced send.
        let mut span = self.in_flight.as_ref().and_then(|f| {
            Span::child(
                "store.append",
                f.batch.iter().find_map(|p| parent_of(&p.span)),
            )
        });
        if let Some(span) = &mut span {
            span.set_i64("chat.batch", messages.len() as i64);
        }
        tokio::spawn(async move {
            let result = match lease {
                Ok(Some(lease)) => {
                    let write = store.append_new_leased(&lease, &messages);
                    leases.guarded(lease.incarnation, write).await
                }
                Ok(None) => store.append_new(&messages).await,
                Err(e) => Err(e),
            };
            if let (Some(span), Err(e)) = (&mut span, &result) {
                span.fail(e.to_string());
            }
            drop(span);
            let _ = me.cast(ConversationMsg::BatchWritten(result));
        });
    }

    fn batch_written(
        &mut self,
        myself: &ActorRef<ConversationMsg>,
        result: Result<Vec<Option<Message>>, StoreError>,
    ) {
        let Some(InFlight {
            batch,
            started,
            top_rev,
            ..
        }) = self.in_flight.take()
        else {
            return;
        };
        self.durable_rev = top_rev;
        // Stored, but perhaps after the lease ran out and another node took
        // over: not acknowledged then (a retry gets the stored message from
        // the new owner).
        let result = result.and_then(|held| self.fence().map(|_| held));
        let deps = self.deps.clone();
        let metrics = &deps.metrics;
        metrics
            .store_batch_latency
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(held) => {
                let mut deliveries = Vec::with_capacity(batch.len());
                for (p, held) in batch.into_iter().zip(held) {
                    let unannounced = self.unannounced.settle(
                        &p.message.sender,
                        &p.message.client_msg_id,
                        held.as_ref().map(|f| f.id),
                    );
                    // Its own id found under its key is this send's own
                    // write (stores say `None` then; this guards the rule):
                    // new, so delivered.
                    if let Some(first) = held.filter(|f| f.id != p.message.id) {
                        // A retry of a send stored before the tail began.
                        metrics.sends_deduplicated.inc();
                        // Not kept in `known`, which only covers the tail:
                        // retries of old sends must not grow it.
                        self.known
                            .remove(&(first.sender.clone(), first.client_msg_id.clone()));
                        if unannounced {
                            // Stored by a write that failed to answer:
                            // nobody was told, so it is announced now,
                            // late (below ids already delivered).
                            metrics.sends_announced_late.inc();
                            let m = Arc::new(HeldMessage::new(first));
                            let event =
                                self.stored_event(&m, p.message.id, p.reply, p.origin, &p.span);
                            deliveries.push(event);
                        } else {
                            let body = OkReply {
                                message: Some(shown(&*self.deps.media, &first)),
                                ..ok()
                            };
                            self.acknowledge(p.message.id, p.reply, body);
                        }
                        continue;
                    }
                    let m = Arc::new(HeldMessage::new(p.message));
                    metrics.messages_accepted.inc();
                    metrics.observe_send(p.received.elapsed().as_secs_f64());
                    let event = self.stored_event(&m, m.id, p.reply, p.origin, &p.span);
                    deliveries.push(event);
                    self.push_tail(m);
                }
                if !deliveries.is_empty() {
                    self.fan_out(&deliveries, None);
                }
            }
            Err(e) => {
                metrics.store_errors.inc();
                tracing::warn!(conversation = %self.id, error = %e, "batch not stored");
                let err = ChatError::from(e);
                // It may have landed all the same: the tail, which must
                // hold every stored message above its first, starts again
                // above it, and its retries announce what did land.
                self.forget_tail();
                for p in batch {
                    self.unannounced.note(
                        &p.message.sender,
                        &p.message.client_msg_id,
                        p.message.id,
                    );
                    self.known
                        .remove(&(p.message.sender.clone(), p.message.client_msg_id.clone()));
                    for w in self.waiters.remove(&p.message.id).into_iter().flatten() {
                        let _ = w.send(Err(err.clone()));
                    }
                    answer(p.reply, Err(err.clone()));
                }
            }
        }
        if !self.lease_valid() {
            // Lost while this batch was in flight: reload on the next
            // request, after claiming it again.
            self.lose_lease("lost while writing");
        }
        if !self.pending.is_empty() || !self.updates.is_empty() {
            self.start_batch(myself);
        }
    }

    /// Acknowledges the send given id `id` with the stored `m`, and gives
    /// the event that announces `m` to the members (all but the sender's
    /// `origin` connection, which has the acknowledgement).
    fn stored_event(
        &mut self,
        m: &Arc<HeldMessage>,
        id: MessageId,
        reply: Option<Reply>,
        origin: Option<ConnId>,
        span: &Option<Span>,
    ) -> Delivery {
        // Encoded once, for the event, the acknowledgement and the pages
        // that will list it (see `to_show`).
        let frame = SharedFrame::message_event(&self.to_show(m));
        let body = self.ack_of(m);
        self.acknowledge(id, reply, body);
        Delivery {
            frame: Arc::new(frame),
            skip_conn: origin,
            trace: parent_of(span),
        }
    }

    /// Answers the send given id `id`, and every retry of it that waited,
    /// with `message`.
    fn acknowledge(&mut self, id: MessageId, reply: Option<Reply>, body: OkReply) {
        for w in self.waiters.remove(&id).into_iter().flatten() {
            let _ = w.send(Ok(body.clone()));
        }
        answer(reply, Ok(body));
    }

    /// What a client is shown of a held message: the held one itself, whose
    /// JSON is made once and shared, unless it has attachments, whose links
    /// are signed afresh for each use.
    fn to_show(&self, m: &Arc<HeldMessage>) -> Arc<HeldMessage> {
        if m.attachments.is_empty() {
            m.clone()
        } else {
            Arc::new(HeldMessage::new(shown(&*self.deps.media, m)))
        }
    }

    /// The acknowledgement of a held message's send.
    fn ack_of(&self, m: &Arc<HeldMessage>) -> OkReply {
        OkReply {
            held_message: Some(self.to_show(m)),
            ..ok()
        }
    }

    /// Drops the held messages (pages below the next one stored come from
    /// the store), and the retries they answered.
    fn forget_tail(&mut self) {
        self.tail.reset(false);
        self.known.retain(|_, k| matches!(k, Known::Pending(_)));
    }

    /// Holds a stored message, which retries of its send are answered
    /// with while it is held.
    fn push_tail(&mut self, held: Arc<HeldMessage>) {
        let known = &mut self.known;
        known.insert(
            (held.sender.clone(), held.client_msg_id.clone()),
            Known::Acked(held.clone()),
        );
        self.tail.push(held, |old| {
            known.remove(&(old.sender.clone(), old.client_msg_id.clone()));
        });
    }
}
