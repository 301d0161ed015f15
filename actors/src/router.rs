//! The Router: one per node; finds or starts the actors requests are for.
//!
//! ```text
//!            ┌───────────── Router (supervisor) ─────────────┐
//!  Route ──► │ conversations: id ──► ConversationActor       │ ──► owner node's Router (peers)
//!  Connect ► │ sessions:      user ─► UserSession            │
//!            └───────────────────────────────────────────────┘
//! ```
//!
//! It alone starts and stops conversation actors and sessions. Requests reach
//! a running conversation actor straight from the dispatcher through
//! [`crate::running::Conversations`], which counts every cast; the Router
//! handles the rest (starting the actor, or forwarding to the owner). That
//! count keeps stopping idle actors safe: an actor reports how many requests
//! it has handled, and the Router stops it only if that equals what was cast
//! to it, so nothing is ever left in a stopping actor's mailbox. Requests
//! for an actor that died are re-routed to a fresh one.
//!
//! In a cluster the Router is also the node's only remotable actor
//! (`router@<node>`): a request for a conversation owned by another node goes
//! to that node's Router and its answer comes back here ([`peers`]);
//! deliveries, heartbeats, store replication ([`replication`]) and
//! anti-entropy travel the same way. Only the `Peer`/`Wire` variants of
//! [`RouterMsg`] have a wire form (see [`crate::msg::wire`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_protocol::peer::PeerMsg;
use chat_protocol::{ConversationId, UserId};
use chat_storage::StoreError;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::cluster::{Owner, NODES_GROUP, ROUTERS_GROUP};
use crate::conversation::{ConversationActor, ConversationArgs};
use crate::error::ChatError;
use crate::msg::{ConversationMsg, Reply, Request, RouterMsg, SessionMsg};
use crate::services::Services;

mod load;
mod peers;
mod replication;
mod retiring;
mod sessions;
#[cfg(test)]
mod tests;

/// How often heartbeats go out and deadlines are checked.
const TICK: Duration = Duration::from_millis(500);
/// How often empty sessions past their linger are ended: a session lingers
/// up to this much longer than its `session_linger`.
pub const LINGER_SWEEP: Duration = Duration::from_millis(500);
/// A peer silent this long is dropped.
const PEER_DEADLINE: Duration = Duration::from_secs(5);
/// A request at a remote owner answered after this is answered `unavailable`.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// A replicated write not acknowledged by a peer within this drops the peer.
const REPLICATION_DEADLINE: Duration = Duration::from_secs(5);
/// Requests in flight to one peer; past this, new ones fail at once rather
/// than queue in ractor_cluster's unbounded channels.
const MAX_IN_FLIGHT_PER_PEER: usize = 20_000;
/// The same, in bytes ([`chat_protocol::request::ConversationRequest::weight`]):
/// 20,000 sends of the largest body would otherwise hold hundreds of MiB for
/// a peer that stopped answering.
const MAX_IN_FLIGHT_BYTES_PER_PEER: usize = 32 << 20;
/// How long a draining node waits for a conversation actor to finish its
/// writes.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);
/// Anti-entropy with each peer this often, to repair anything a dropped
/// link lost.
const RESYNC_EVERY: Duration = Duration::from_secs(10);
/// How often a peer is asked for its interest while this node does not hold
/// it under its own view.
const INTEREST_ASK_EVERY: Duration = Duration::from_secs(2);

/// Ops per anti-entropy chunk, and about how many bytes.
const SYNC_CHUNK_OPS: usize = 512;
const SYNC_CHUNK_BYTES: usize = 2 << 20;

/// The actor (no data; see [`RouterState`]).
pub struct Router;

/// Everything the Router knows.
pub struct RouterState {
    services: Arc<Services>,
    sessions: sessions::Sessions,
    draining: bool,
    serving: bool,
    serve_waiters: Vec<RpcReplyPort<()>>,
    serve_expect: HashSet<Arc<str>>,
    peers: HashMap<Arc<str>, Peer>,
    /// Requests waiting for a remote owner's answer, by id.
    remote: HashMap<u64, RemoteRequest>,
    next_request: u64,
    /// Local writes waiting for peers' acks, by (origin, seq).
    replication: HashMap<(String, u64), Replication>,
    /// This node's recent load, as heartbeats and the console show it.
    load: load::Load,
    /// Conversation actors retiring here, and requests waiting for them.
    retiring: retiring::Retiring,
}

struct Peer {
    router: ActorRef<RouterMsg>,
    since: Instant,
    heard: Option<Instant>,
    node_id: Option<u16>,
    serving: bool,
    synced: bool,
    /// When this node last asked it for a chunk of ops (anti-entropy).
    last_pull: Instant,
    in_flight: InFlight,
    reported_stale: Option<Instant>,
    /// When this node last asked it for its interest.
    interest_asked: Option<Instant>,
    /// Its load, from its last heartbeat.
    stats: Option<chat_protocol::peer::NodeStats>,
    /// The peer protocol it speaks (1 until heard, or from releases that
    /// did not say): what may be sent to it.
    protocol: u16,
    /// Bytes sent to it, as last counted in the metrics.
    sent_counted: u64,
    /// The round trip of the last ping answered.
    rtt: Option<Duration>,
}

struct RemoteRequest {
    reply: Reply,
    peer: Arc<str>,
    deadline: Instant,
    /// Its [`chat_protocol::request::ConversationRequest::weight`], given back to the
    /// peer's budget.
    weight: usize,
}

/// Requests sent to one peer and not answered yet, bounded in number and
/// in bytes.
#[derive(Debug, Default)]
struct InFlight {
    requests: usize,
    bytes: usize,
}

impl InFlight {
    /// Requests and bytes in flight now.
    fn load(&self) -> (usize, usize) {
        (self.requests, self.bytes)
    }

    /// Counts a request of `weight` bytes in, if it fits.
    fn admit(&mut self, weight: usize) -> bool {
        if self.requests >= MAX_IN_FLIGHT_PER_PEER
            || self.bytes.saturating_add(weight) > MAX_IN_FLIGHT_BYTES_PER_PEER
        {
            return false;
        }
        self.requests += 1;
        self.bytes += weight;
        true
    }

    /// An admitted request of `weight` bytes was answered or gave up.
    fn release(&mut self, weight: usize) {
        self.requests = self.requests.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(weight);
    }
}

struct Replication {
    waiting: HashSet<Arc<str>>,
    reply: RpcReplyPort<Result<(), StoreError>>,
    deadline: Instant,
}

impl Actor for Router {
    type Msg = RouterMsg;
    type State = RouterState;
    type Arguments = Arc<Services>;

    async fn pre_start(
        &self,
        _myself: ActorRef<RouterMsg>,
        services: Arc<Services>,
    ) -> Result<RouterState, ActorProcessingErr> {
        Ok(RouterState {
            load: load::Load::new(&services),
            retiring: retiring::Retiring::default(),
            serving: !services.cluster.enabled(),
            services,
            sessions: sessions::Sessions::default(),
            draining: false,
            serve_waiters: Vec::new(),
            serve_expect: HashSet::new(),
            peers: HashMap::new(),
            remote: HashMap::new(),
            next_request: 1,
            replication: HashMap::new(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<RouterMsg>,
        state: &mut RouterState,
    ) -> Result<(), ActorProcessingErr> {
        if !state.services.session_deps.linger.is_zero() {
            myself.send_interval(LINGER_SWEEP, || RouterMsg::EndLingered);
        }
        if state.services.cluster.enabled() {
            // Connected nodes replicate to us from now on; we own nothing
            // until Serve finds us caught up.
            ractor::pg::monitor(NODES_GROUP.into(), myself.get_cell());
            ractor::pg::monitor(ROUTERS_GROUP.into(), myself.get_cell());
            ractor::pg::join(NODES_GROUP.into(), vec![myself.get_cell()]);
            myself.send_interval(TICK, || RouterMsg::Tick);
            state.refresh_view(&myself);
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<RouterMsg>,
        msg: RouterMsg,
        state: &mut RouterState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RouterMsg::Route(request) => {
                if state.draining {
                    request.fail(ChatError::Unavailable("node is shutting down".into()));
                    return Ok(());
                }
                match state.services.cluster.owner(request.body.conversation()) {
                    Owner::Local => state.route(&myself, request).await,
                    Owner::Remote(node, router) => state.forward(node, router, request),
                }
            }
            RouterMsg::ConversationIdle {
                conversation,
                actor,
                handled,
            } => {
                let running = &state.services.conversations;
                if let Some(a) = running.remove_if_idle(&conversation, actor, handled) {
                    a.stop(Some("idle".into()));
                }
            }
            RouterMsg::Connect { user, conn, reply } => {
                if state.draining {
                    let _ = reply.send(Err(ChatError::Unavailable("node is shutting down".into())));
                    return Ok(());
                }
                state
                    .hand_to_session(&myself, user, SessionMsg::Attach { conn, reply })
                    .await;
            }
            RouterMsg::ToSession { user, msg } => state.hand_to_session(&myself, user, msg).await,
            RouterMsg::EndLingered => state.sessions.end_lingered(std::time::Instant::now()),
            RouterMsg::SessionEmpty { user, actor, seen } => {
                state.sessions.empty(&user, actor, seen);
            }
            RouterMsg::Drain { reply } => {
                state.draining = true;
                if state.services.cluster.enabled() {
                    // Others take our conversations over while we finish.
                    ractor::pg::leave(ROUTERS_GROUP.into(), vec![myself.get_cell()]);
                }
                state.sessions.drain().await;
                // Retired, an actor handles what is queued and stops once its
                // batch in flight is written and answered. (ractor's drain
                // would refuse that batch's completion, which arrives after
                // the drain marker, and drop its senders' answers.)
                let cells: Vec<_> = state
                    .services
                    .conversations
                    .drain()
                    .into_iter()
                    .map(|(_, c)| {
                        let _ = c.cast(ConversationMsg::Retire);
                        c.get_cell()
                    })
                    .collect();
                // Waited for away from the Router, which goes on handling
                // messages meanwhile: on a cluster of embedded stores an
                // actor's write reaches the peers through it (and their acks,
                // and its heartbeats, come back to it). Waiting here held
                // those writes, unreplicated and unanswered, until the
                // deadline; the peers, hearing nothing, dropped this node and
                // its senders' retries stored the same sends a second time.
                tokio::spawn(async move {
                    for cell in cells {
                        let _ = cell.wait(Some(DRAIN_DEADLINE)).await;
                    }
                    let _ = reply.send(());
                });
            }
            RouterMsg::Wire(bytes) => match chat_protocol::peer::decode(&bytes) {
                Ok(msg) => state.peer(&myself, msg).await,
                Err(e) => tracing::warn!(error = %e, "undecodable local peer message"),
            },
            RouterMsg::Peer(msg) => state.peer(&myself, msg).await,
            RouterMsg::Tick => state.tick(&myself),
            RouterMsg::Replicate { op, reply } => state.replicate(op, reply),
            RouterMsg::ReplicaChanged(changed) => state.retire_changed(changed),
            RouterMsg::Serve { expect, reply } => {
                state
                    .serve_expect
                    .extend(expect.into_iter().map(Arc::<str>::from));
                state.serve_waiters.push(reply);
                state.check_serve(&myself);
            }
            RouterMsg::Pulled {
                peer,
                more,
                ok,
                changed,
            } => {
                // Writes from the other side of a partition (or from before
                // a restart) landed under running actors whose tails and
                // last ids do not have them: restart those from the store.
                state.retire_changed(changed);
                if ok && more {
                    state.pull(&peer);
                } else if let Some(p) = state.peers.get_mut(&peer) {
                    p.synced |= ok;
                }
                state.check_serve(&myself);
            }
            RouterMsg::LoginRevoked { user, login } => {
                let msg = PeerMsg::LoginRevoked {
                    user: user.clone(),
                    login: login.clone(),
                };
                if let Ok(bytes) = chat_protocol::peer::encode(&msg) {
                    state.services.cluster.broadcast(&Arc::from(bytes));
                }
                state.login_revoked(&myself, &user, login).await;
            }
            RouterMsg::Status { reply } => {
                let _ = reply.send(state.status());
            }
            RouterMsg::ToUsers { users, frame } => {
                let msg = PeerMsg::ToUsers { users, frame };
                if let Ok(bytes) = chat_protocol::peer::encode(&msg) {
                    state.services.cluster.broadcast(&Arc::from(bytes));
                }
                if let PeerMsg::ToUsers { users, frame } = msg {
                    state.services.to_users(&users, *frame);
                }
            }
            RouterMsg::PresenceRestricted { user } => {
                let msg = PeerMsg::PresenceRestricted { user: user.clone() };
                if let Ok(bytes) = chat_protocol::peer::encode(&msg) {
                    state.services.cluster.broadcast(&Arc::from(bytes));
                }
                let s = &state.services;
                s.watchers.recheck(s.store.clone(), user);
            }
            RouterMsg::CloseUser { user, code } => {
                let msg = PeerMsg::CloseUser {
                    user: user.clone(),
                    code,
                };
                if let Ok(bytes) = chat_protocol::peer::encode(&msg) {
                    state.services.cluster.broadcast(&Arc::from(bytes));
                }
                state.close_user(&myself, &user, code).await;
            }
            RouterMsg::DrainPeer { node, by, reply } => {
                let known = state.peers.contains_key(node.as_str());
                if known {
                    state.services.cluster.send(&node, &PeerMsg::Drain { by });
                }
                let _ = reply.send(known);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<RouterMsg>,
        evt: SupervisionEvent,
        state: &mut RouterState,
    ) -> Result<(), ActorProcessingErr> {
        // A child that stopped or failed leaves the tables, so the next
        // request starts a fresh one (which reloads from the store).
        // A session that fell asleep leaves its state for the Router.
        let (dead, left) = match evt {
            SupervisionEvent::ActorTerminated(cell, left, _) => (Some(cell.get_id()), left),
            SupervisionEvent::ActorFailed(cell, err) => {
                tracing::error!(actor = %cell.get_id(), error = %err, "actor failed");
                (Some(cell.get_id()), None)
            }
            SupervisionEvent::ProcessGroupChanged(_) => {
                state.refresh_view(&myself);
                (None, None)
            }
            _ => (None, None),
        };
        if let Some(id) = dead {
            state.services.conversations.remove_actor(id);
            if let Some((conversation, held)) = state.retiring.stopped(id) {
                // Its successor starts with the first of them, from the
                // store, which now holds everything the retired one wrote.
                for request in held {
                    state.route(&myself, request).await;
                }
                state.retire_if_foreign(&conversation);
            }
            let draining = state.draining;
            state.sessions.stopped(&myself, id, left, draining).await;
        }
        Ok(())
    }
}

impl RouterState {
    /// Hands `request` to its conversation's actor here, starting it if
    /// none runs.
    async fn route(&mut self, myself: &ActorRef<RouterMsg>, request: Request) {
        if self.draining {
            // Held for an actor that retired as the drain began: no new
            // actor starts here now.
            request.fail(ChatError::Unavailable("node is shutting down".into()));
            return;
        }
        let Some(mut request) = self.retiring.hold(request) else {
            return;
        };
        let conversation = request.body.conversation().clone();
        let running = &self.services.conversations;
        // Two tries: the actor found may have died since its last report.
        for _ in 0..2 {
            if !running.contains(&conversation) {
                match self.spawn_conversation(myself, &conversation).await {
                    Ok(actor) => running.insert(conversation.clone(), actor),
                    Err(e) => {
                        request.fail(ChatError::Internal(format!(
                            "cannot start conversation: {e}"
                        )));
                        return;
                    }
                }
            }
            match running.cast(request) {
                Ok(()) => return,
                Err(back) => {
                    running.remove(&conversation);
                    request = back;
                }
            }
        }
        request.fail(ChatError::Unavailable(
            "conversation unavailable, retry".into(),
        ));
    }

    async fn spawn_conversation(
        &self,
        myself: &ActorRef<RouterMsg>,
        id: &ConversationId,
    ) -> Result<ActorRef<ConversationMsg>, ractor::SpawnErr> {
        let args = ConversationArgs {
            id: id.clone(),
            deps: self.services.conversation_deps.clone(),
            router: myself.clone(),
        };
        let (actor, _) =
            Actor::spawn_linked(None, ConversationActor, args, myself.get_cell()).await?;
        Ok(actor)
    }

    /// Hands `msg` to `user`'s session here, starting or waking it.
    async fn hand_to_session(
        &mut self,
        myself: &ActorRef<RouterMsg>,
        user: UserId,
        msg: SessionMsg,
    ) {
        let deps = self.services.session_deps.clone();
        self.sessions.send(myself, &deps, user, msg).await;
    }

    /// Closes every connection of `user` here with `code`.
    async fn close_user(&mut self, myself: &ActorRef<RouterMsg>, user: &UserId, code: u16) {
        self.hand_to_session(myself, user.clone(), SessionMsg::CloseAll { code })
            .await;
    }

    /// Closes the connections here that signed in with `login`.
    async fn login_revoked(&mut self, myself: &ActorRef<RouterMsg>, user: &UserId, login: String) {
        let login = Arc::from(login);
        self.hand_to_session(myself, user.clone(), SessionMsg::LoginRevoked { login })
            .await;
    }

    /// Retires the actors here of `changed`, whose state a peer's write
    /// changed under them: each finishes its batch in flight, and the next
    /// request reloads the conversation from the store. (All writes of a
    /// conversation come from its owner's actor, so in steady state a
    /// node sees none for the conversations it runs.)
    fn retire_changed(&mut self, changed: Vec<ConversationId>) {
        for conversation in changed {
            if let Some(actor) = self.services.conversations.remove(&conversation) {
                self.services.metrics.conversations_reloaded.inc();
                self.retiring.retire(conversation, &actor);
            }
        }
    }

    /// Retires the actor here of `conversation` if this node's view gives
    /// the conversation to another node: it served a request a peer sent
    /// under an older view, and kept, it would hold the conversation's
    /// claim against its owner until idle, and the owner could write
    /// nothing meanwhile.
    fn retire_if_foreign(&mut self, conversation: &ConversationId) {
        if matches!(self.services.cluster.owner(conversation), Owner::Remote(..)) {
            if let Some(actor) = self.services.conversations.remove(conversation) {
                self.retiring.retire(conversation.clone(), &actor);
            }
        }
    }
}
