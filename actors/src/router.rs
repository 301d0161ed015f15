//! The Router: one per node; finds or starts the actors requests are for.
//!
//! ```text
//!            ┌───────────── Router (supervisor) ─────────────┐
//!  Route ──► │ conversations: id ──► ConversationActor       │
//!  Connect ► │ sessions:      user ─► UserSession            │
//!            └───────────────────────────────────────────────┘
//! ```
//!
//! It alone starts and stops conversation actors and sessions. Requests reach
//! a running conversation actor straight from a connection's task through
//! [`crate::services::Conversations`], which counts every cast; the Router
//! handles the rest (starting the actor, or forwarding to the owner). That
//! count keeps stopping idle actors safe: an actor reports how many routed
//! messages it has handled, and the Router stops it only if that equals what
//! was cast to it, so nothing is ever left in a stopping actor's mailbox.
//! Requests for an actor that died are re-routed to a fresh one.
//!
//! In a cluster the Router is also the node's only remotable actor
//! (`router@<node>`): a request for a conversation owned by another node goes
//! to that node's Router and its answer comes back here ([`crate::cluster`]);
//! deliveries, heartbeats, store replication and anti-entropy travel the same
//! way. Only the `Peer`/`Wire` variants have a wire form (MessagePack, see
//! `chat_protocol::peer`); everything else is local.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_protocol::peer::{Audience, PeerDelivery, PeerMsg, PeerOp};
use chat_protocol::{ConversationId, OkReply, SharedFrame, UserId};
use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::cluster::{self, ClusterEvent, Owner, View, NODES_GROUP, ROUTERS_GROUP};
use crate::conversation::{ConversationActor, ConversationArgs, ConversationMsg};
use crate::error::ChatError;
use crate::placement::Placement;
use crate::services::Services;
use crate::session::{Connection, Delivery, SessionArgs, SessionMsg, UserSession};
use crate::store::replicated::ReplicatedOp;
use crate::store::StoreError;

/// Peer messages that could not be decoded (ractor_cluster drops them).
pub static PEER_DECODE_FAILURES: AtomicU64 = AtomicU64::new(0);

/// How often heartbeats go out and deadlines are checked.
const TICK: Duration = Duration::from_millis(500);
/// A peer silent this long is dropped.
const PEER_DEADLINE: Duration = Duration::from_secs(5);
/// A request at a remote owner answered after this is answered `unavailable`.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// A replicated write not acknowledged by a peer within this drops the peer.
const REPLICATION_DEADLINE: Duration = Duration::from_secs(5);
/// Requests in flight to one peer; past this, new ones fail at once rather
/// than queue in ractor_cluster's unbounded channels.
const MAX_IN_FLIGHT_PER_PEER: usize = 20_000;
/// The same, in bytes ([`chat_protocol::peer::PeerRequest::weight`]):
/// 20,000 sends of the largest body would otherwise hold hundreds of MiB for
/// a peer that stopped answering.
const MAX_IN_FLIGHT_BYTES_PER_PEER: usize = 32 << 20;
/// Anti-entropy with each peer this often, to repair anything a dropped
/// link lost.
const RESYNC_EVERY: Duration = Duration::from_secs(10);
/// How often a peer is asked for its interest while this node does not hold
/// it under its own view.
const INTEREST_ASK_EVERY: Duration = Duration::from_secs(2);

/// Ops per anti-entropy chunk, and about how many bytes.
const SYNC_CHUNK_OPS: usize = 512;
const SYNC_CHUNK_BYTES: usize = 2 << 20;

/// Messages the Router handles.
pub enum RouterMsg {
    /// Deliver `msg` to the conversation's actor, starting it if needed.
    Route {
        /// Which conversation.
        conversation: ConversationId,
        /// The message.
        msg: ConversationMsg,
    },
    /// A conversation actor has been idle; stop it if nothing is on its way.
    ConversationIdle {
        /// Which conversation.
        conversation: ConversationId,
        /// Which actor (a newer one may have replaced it).
        actor: ActorId,
        /// Routed messages it has handled.
        handled: u64,
    },
    /// A connection of `user` opened: attach it to the user's session.
    Connect {
        /// Whose.
        user: UserId,
        /// The connection.
        conn: Connection,
        /// Answered by the session.
        reply: RpcReplyPort<Result<ActorRef<SessionMsg>, ChatError>>,
    },
    /// A session has no connection left; stop it if none is on its way.
    SessionEmpty {
        /// Whose.
        user: UserId,
        /// Which actor.
        actor: ActorId,
        /// Attaches it has seen.
        seen: u64,
    },
    /// Stop every actor, letting in-flight batches finish first; answered
    /// when all have stopped.
    Drain {
        /// Answered when done.
        reply: RpcReplyPort<()>,
    },
    /// A message from another node.
    Peer(PeerMsg),
    /// A message for another node, encoded once however many nodes get it.
    Wire(Arc<[u8]>),
    /// Heartbeats, deadlines and periodic anti-entropy.
    Tick,
    /// Make a local store write durable on every connected node.
    Replicate {
        /// The write.
        op: ReplicatedOp,
        /// Answered when every connected node has it (or was dropped).
        reply: RpcReplyPort<Result<(), StoreError>>,
    },
    /// Start owning conversations once caught up with every connected node;
    /// answered then.
    Serve {
        /// Nodes this node holds a session with: wait for each of them too
        /// (its Router may not have been announced yet).
        expect: Vec<String>,
        /// Answered when serving.
        reply: RpcReplyPort<()>,
    },
    /// An anti-entropy chunk from `peer` was applied.
    Pulled {
        /// From whom.
        peer: Arc<str>,
        /// Whether to pull again.
        more: bool,
        /// Whether every op of the chunk was applied.
        ok: bool,
        /// Whether it held any op (then cached conversation state may be
        /// stale).
        applied: bool,
    },
    /// What this node sees of the cluster.
    Status {
        /// Answered with the status.
        reply: RpcReplyPort<ClusterStatus>,
    },
}

/// What a node sees of the cluster, for operators and tests.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterStatus {
    /// This node.
    pub node: String,
    /// Whether it is part of a cluster.
    pub clustered: bool,
    /// Whether it owns conversations.
    pub serving: bool,
    /// The serving nodes (placement is computed over these).
    pub serving_nodes: Vec<String>,
    /// Connected nodes.
    pub peers: Vec<PeerStatus>,
    /// Conversation actors running here.
    pub conversations: usize,
    /// Sessions here.
    pub sessions: usize,
}

/// One connected node.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeerStatus {
    /// Its name.
    pub name: String,
    /// Its numeric id, once heard.
    pub node_id: Option<u16>,
    /// Whether it serves.
    pub serving: bool,
    /// Whether this node has caught up with it.
    pub synced: bool,
    /// Milliseconds since its last heartbeat.
    pub heard_ms_ago: Option<u64>,
    /// Whether deliveries to it are filtered by what its sessions listen to
    /// (it has sent its interest under this node's view).
    pub interest_synced: bool,
    /// How many of the conversations this node owns its sessions listen to
    /// (0 until synced).
    pub listening: usize,
}

impl ractor::Message for RouterMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        let args = match self {
            RouterMsg::Wire(bytes) => bytes.to_vec(),
            RouterMsg::Peer(msg) => {
                chat_protocol::peer::encode(&msg).map_err(|_| BoxedDowncastErr)?
            }
            // Everything else carries ports or actor refs: local only.
            _ => return Err(BoxedDowncastErr),
        };
        Ok(SerializedMessage::Cast {
            variant: "peer".into(),
            args,
            metadata: None,
        })
    }

    fn deserialize(msg: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        match msg {
            SerializedMessage::Cast { variant, args, .. } if variant == "peer" => {
                chat_protocol::peer::decode(&args)
                    .map(RouterMsg::Peer)
                    .map_err(|e| {
                        PEER_DECODE_FAILURES.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "undecodable message from a peer");
                        BoxedDowncastErr
                    })
            }
            _ => {
                PEER_DECODE_FAILURES.fetch_add(1, Ordering::Relaxed);
                Err(BoxedDowncastErr)
            }
        }
    }
}

struct Entry<M> {
    actor: ActorRef<M>,
    forwarded: u64,
}

/// The actor (no data; see [`RouterState`]).
pub struct Router;

/// Everything the Router knows.
pub struct RouterState {
    services: Arc<Services>,
    sessions: HashMap<UserId, Entry<SessionMsg>>,
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
}

struct Peer {
    router: ActorRef<RouterMsg>,
    since: Instant,
    heard: Option<Instant>,
    node_id: Option<u16>,
    serving: bool,
    synced: bool,
    pulling: bool,
    last_pull: Instant,
    in_flight: InFlight,
    reported_stale: Option<Instant>,
    /// When this node last asked it for its interest.
    interest_asked: Option<Instant>,
}

struct RemoteRequest {
    reply: crate::conversation::Reply,
    peer: Arc<str>,
    deadline: Instant,
    /// Its [`chat_protocol::peer::PeerRequest::weight`], given back to the
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
            serving: !services.cluster.enabled(),
            services,
            sessions: HashMap::new(),
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
            RouterMsg::Route { conversation, msg } => {
                if state.draining {
                    msg.fail(ChatError::Unavailable("node is shutting down".into()));
                    return Ok(());
                }
                match state.services.cluster.owner(&conversation) {
                    Owner::Local => state.route(&myself, conversation, msg).await,
                    Owner::Remote(node, router) => {
                        state
                            .forward(&myself, node, router, conversation, msg)
                            .await
                    }
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
                state.connect(&myself, user, conn, reply).await;
            }
            RouterMsg::SessionEmpty { user, actor, seen } => {
                if let Some(e) = state.sessions.get(&user) {
                    if e.actor.get_id() == actor && e.forwarded == seen {
                        if let Some(e) = state.sessions.remove(&user) {
                            e.actor.stop(Some("no connections".into()));
                        }
                    }
                }
            }
            RouterMsg::Drain { reply } => {
                state.draining = true;
                if state.services.cluster.enabled() {
                    // Others take our conversations over while we finish.
                    ractor::pg::leave(ROUTERS_GROUP.into(), vec![myself.get_cell()]);
                }
                let sessions: Vec<_> = state.sessions.drain().map(|(_, e)| e.actor).collect();
                for s in sessions {
                    let _ = s.stop_and_wait(Some("node draining".into()), None).await;
                }
                // drain_and_wait lets every queued message (and so every
                // batch in flight) be handled before the actor stops.
                let convs = state.services.conversations.drain();
                for c in convs {
                    let _ = c
                        .drain_and_wait(Some(std::time::Duration::from_secs(10)))
                        .await;
                }
                let _ = reply.send(());
            }
            RouterMsg::Wire(bytes) => match chat_protocol::peer::decode(&bytes) {
                Ok(msg) => state.peer(&myself, msg).await,
                Err(e) => tracing::warn!(error = %e, "undecodable local peer message"),
            },
            RouterMsg::Peer(msg) => state.peer(&myself, msg).await,
            RouterMsg::Tick => state.tick(&myself),
            RouterMsg::Replicate { op, reply } => state.replicate(op, reply),
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
                applied,
            } => {
                if applied {
                    // Writes from the other side of a partition (or from
                    // before a restart) landed under running actors whose
                    // tails and last ids do not have them: restart them from
                    // the store.
                    state.retire_all();
                }
                if ok && more {
                    state.pull(&peer);
                } else if let Some(p) = state.peers.get_mut(&peer) {
                    p.pulling = false;
                    p.synced |= ok;
                }
                state.check_serve(&myself);
            }
            RouterMsg::Status { reply } => {
                let _ = reply.send(state.status());
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
        let dead = match &evt {
            SupervisionEvent::ActorTerminated(cell, _, _) => Some(cell.get_id()),
            SupervisionEvent::ActorFailed(cell, err) => {
                tracing::error!(actor = %cell.get_id(), error = %err, "actor failed");
                Some(cell.get_id())
            }
            _ => None,
        };
        if let Some(id) = dead {
            state.services.conversations.remove_actor(id);
            state.sessions.retain(|_, e| e.actor.get_id() != id);
        }
        if let SupervisionEvent::ProcessGroupChanged(_) = evt {
            state.refresh_view(&myself);
        }
        Ok(())
    }
}

impl RouterState {
    async fn route(
        &mut self,
        myself: &ActorRef<RouterMsg>,
        conversation: ConversationId,
        msg: ConversationMsg,
    ) {
        let mut msg = msg;
        let running = &self.services.conversations;
        // Two tries: the actor found may have died since its last report.
        for _ in 0..2 {
            if !running.contains(&conversation) {
                match self.spawn_conversation(myself, &conversation).await {
                    Ok(actor) => running.insert(conversation.clone(), actor),
                    Err(e) => {
                        msg.fail(ChatError::Internal(format!(
                            "cannot start conversation: {e}"
                        )));
                        return;
                    }
                }
            }
            match running.cast(&conversation, msg) {
                Ok(()) => return,
                Err(back) => {
                    running.remove(&conversation);
                    msg = back;
                }
            }
        }
        msg.fail(ChatError::Unavailable(
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
            services: self.services.clone(),
            router: myself.clone(),
        };
        let (actor, _) =
            Actor::spawn_linked(None, ConversationActor, args, myself.get_cell()).await?;
        Ok(actor)
    }

    async fn connect(
        &mut self,
        myself: &ActorRef<RouterMsg>,
        user: UserId,
        conn: Connection,
        reply: RpcReplyPort<Result<ActorRef<SessionMsg>, ChatError>>,
    ) {
        let (mut conn, mut reply) = (conn, reply);
        for _ in 0..2 {
            if !self.sessions.contains_key(&user) {
                let args = SessionArgs {
                    user: user.clone(),
                    services: self.services.clone(),
                    router: myself.clone(),
                };
                match Actor::spawn_linked(None, UserSession, args, myself.get_cell()).await {
                    Ok((actor, _)) => {
                        self.sessions.insert(
                            user.clone(),
                            Entry {
                                actor,
                                forwarded: 0,
                            },
                        );
                    }
                    Err(e) => {
                        let _ = reply.send(Err(ChatError::Internal(format!(
                            "cannot start session: {e}"
                        ))));
                        return;
                    }
                }
            }
            let Some(entry) = self.sessions.get_mut(&user) else {
                break;
            };
            match entry.actor.cast(SessionMsg::Attach { conn, reply }) {
                Ok(()) => {
                    entry.forwarded += 1;
                    return;
                }
                Err(ractor::MessagingErr::SendErr(SessionMsg::Attach { conn: c, reply: r })) => {
                    self.sessions.remove(&user);
                    conn = c;
                    reply = r;
                }
                Err(_) => {
                    self.sessions.remove(&user);
                    return;
                }
            }
        }
        let _ = reply.send(Err(ChatError::Unavailable(
            "session unavailable, retry".into(),
        )));
    }
}

/// The cluster side of the Router.
impl RouterState {
    fn me(&self) -> String {
        self.services.cluster.name().to_string()
    }

    /// Sends a request to the owner's Router and remembers where the answer
    /// goes.
    async fn forward(
        &mut self,
        myself: &ActorRef<RouterMsg>,
        node: Arc<str>,
        router: ActorRef<RouterMsg>,
        conversation: ConversationId,
        msg: ConversationMsg,
    ) {
        let out = match msg.into_peer(conversation.clone()) {
            Ok(out) => out,
            // The actor's own messages never come through Route; serve here.
            Err(msg) => return self.route(myself, conversation, msg).await,
        };
        let id = self.next_request;
        self.next_request += 1;
        if let Some(reply) = out.reply {
            let Some(peer) = self.peers.get_mut(&node) else {
                let _ = reply.send(Err(ChatError::Unavailable(
                    "owner node unreachable, retry".into(),
                )));
                return;
            };
            let weight = out.request.weight();
            if !peer.in_flight.admit(weight) {
                self.services.metrics.peer_rejected.inc();
                let _ = reply.send(Err(ChatError::Unavailable(
                    "owner node overloaded, retry".into(),
                )));
                return;
            }
            self.remote.insert(
                id,
                RemoteRequest {
                    reply,
                    peer: node.clone(),
                    deadline: Instant::now() + REQUEST_DEADLINE,
                    weight,
                },
            );
        }
        let msg = PeerMsg::Request {
            from: self.me(),
            id,
            user: out.user,
            conn: out.conn,
            request: out.request,
        };
        self.services.metrics.peer_requests.inc();
        if router.cast(RouterMsg::Peer(msg)).is_err() {
            self.finish_remote(
                id,
                Err(ChatError::Unavailable(
                    "owner node unreachable, retry".into(),
                )),
            );
        }
    }

    fn finish_remote(&mut self, id: u64, result: Result<OkReply, ChatError>) {
        if let Some(r) = self.remote.remove(&id) {
            if let Some(p) = self.peers.get_mut(&r.peer) {
                p.in_flight.release(r.weight);
            }
            let _ = r.reply.send(result);
        }
    }

    async fn peer(&mut self, myself: &ActorRef<RouterMsg>, msg: PeerMsg) {
        match msg {
            PeerMsg::Heartbeat {
                from,
                node_id,
                serving,
            } => {
                if node_id == self.services.cluster.node_id()
                    && *from != **self.services.cluster.name()
                {
                    self.services.cluster.emit(ClusterEvent::DuplicateId {
                        name: from.clone(),
                        node_id,
                    });
                }
                if let Some(p) = self.peers.get_mut(from.as_str()) {
                    p.heard = Some(Instant::now());
                    p.node_id = Some(node_id);
                    p.serving = serving;
                    p.reported_stale = None;
                }
                self.check_serve(myself);
            }
            PeerMsg::Request {
                from,
                id,
                user,
                conn,
                request,
            } => {
                let conversation = request.conversation().clone();
                let typing = matches!(request, chat_protocol::peer::PeerRequest::Typing { .. });
                let (tx, rx) = ractor::concurrency::oneshot();
                let msg = ConversationMsg::from_peer(user, conn, request, tx.into());
                if self.draining {
                    msg.fail(ChatError::Unavailable("node is shutting down".into()));
                } else {
                    // Served here even if our view names another owner: a
                    // second hop could loop while views settle.
                    self.route(myself, conversation, msg).await;
                }
                if typing {
                    return;
                }
                let services = self.services.clone();
                tokio::spawn(async move {
                    let result = match tokio::time::timeout(REQUEST_DEADLINE, rx).await {
                        Ok(Ok(r)) => r,
                        Ok(Err(_)) => Err(ChatError::Unavailable("request dropped, retry".into())),
                        Err(_) => Err(ChatError::Unavailable("request timed out, retry".into())),
                    };
                    let reply = PeerMsg::Reply {
                        id,
                        result: result.map_err(|e| (&e).into()),
                    };
                    services.cluster.send(&from, &reply);
                });
            }
            PeerMsg::Reply { id, result } => {
                self.finish_remote(id, result.map_err(ChatError::from));
            }
            PeerMsg::Deliver(d) => self.deliver(*d),
            PeerMsg::Replicate { from, op } => {
                let Some(replica) = self.services.replica.clone() else {
                    return;
                };
                let services = self.services.clone();
                tokio::spawn(async move {
                    let (origin, seq) = (op.origin.clone(), op.seq);
                    match replica.apply_remote(op_from_wire(op)).await {
                        Ok(()) => {
                            let me = services.cluster.name().to_string();
                            services.cluster.send(
                                &from,
                                &PeerMsg::Ack {
                                    from: me,
                                    origin,
                                    seq,
                                },
                            );
                        }
                        Err(e) => {
                            services.metrics.store_errors.inc();
                            tracing::warn!(%origin, seq, error = %e, "cannot apply a replicated write");
                        }
                    }
                });
            }
            PeerMsg::Ack { from, origin, seq } => {
                let key = (origin, seq);
                if let Some(r) = self.replication.get_mut(&key) {
                    r.waiting.remove(from.as_str());
                    if r.waiting.is_empty() {
                        if let Some(r) = self.replication.remove(&key) {
                            let _ = r.reply.send(Ok(()));
                        }
                    }
                }
            }
            PeerMsg::Pull { from, vector } => {
                let Some(replica) = self.services.replica.clone() else {
                    return;
                };
                let services = self.services.clone();
                tokio::spawn(async move {
                    let me = services.cluster.name().to_string();
                    match replica
                        .ops_after(&vector, SYNC_CHUNK_OPS, SYNC_CHUNK_BYTES)
                        .await
                    {
                        Ok(ops) => {
                            let more = !ops.is_empty();
                            let ops = ops.into_iter().map(op_to_wire).collect();
                            services.cluster.send(
                                &from,
                                &PeerMsg::Ops {
                                    from: me,
                                    ops,
                                    more,
                                },
                            );
                        }
                        Err(e) => {
                            tracing::warn!(peer = %from, error = %e, "cannot read ops for a peer")
                        }
                    }
                });
            }
            PeerMsg::Interest {
                from,
                view,
                listening,
                conversations,
                ack,
            } => {
                let cluster = &self.services.cluster;
                cluster.peer_interest(&from, view, listening, conversations);
                if let Some(id) = ack {
                    cluster.send(&from, &PeerMsg::InterestAck { id });
                }
            }
            PeerMsg::InterestAck { id } => self.services.cluster.interest_acked(id),
            PeerMsg::InterestSync {
                from,
                view,
                conversations,
                first,
                last,
            } => {
                self.services
                    .cluster
                    .peer_interest_sync(&from, view, conversations, first, last);
            }
            PeerMsg::InterestAsk { from } => {
                let services = &self.services;
                services.interest.sync(Some(&from), &services.cluster);
            }
            PeerMsg::Ops { from, ops, more } => {
                let Some(replica) = self.services.replica.clone() else {
                    return;
                };
                let me = myself.clone();
                let peer: Arc<str> = Arc::from(from.as_str());
                let applied = !ops.is_empty();
                tokio::spawn(async move {
                    let mut ok = true;
                    for op in ops {
                        if let Err(e) = replica.apply_remote(op_from_wire(op)).await {
                            tracing::warn!(%peer, error = %e, "anti-entropy op not applied");
                            ok = false;
                            break;
                        }
                    }
                    let _ = me.cast(RouterMsg::Pulled {
                        peer,
                        more,
                        ok,
                        applied,
                    });
                });
            }
        }
    }

    /// Hands a remote conversation's events to the local sessions.
    fn deliver(&mut self, d: PeerDelivery) {
        let services = &self.services;
        services.metrics.peer_deliveries_received.inc();
        let conv = [d.conversation.clone()];
        for u in &d.unlisten {
            services
                .interest
                .remove(u, &d.conversation, &services.cluster);
        }
        for u in &d.listen {
            if services.directory.get(u).is_some() {
                services.interest.add(u, &conv, &services.cluster);
            }
        }
        if !d.listen.is_empty() {
            services
                .interest
                .confirm(&d.conversation, &services.cluster);
        }
        let deliveries: Arc<[Delivery]> = d
            .events
            .into_iter()
            .map(|(frame, skip_conn)| Delivery {
                frame: Arc::new(SharedFrame::new(frame)),
                skip_conn,
            })
            .collect();
        let targets: Vec<UserId> = match d.to {
            Audience::Users(users) => users,
            Audience::Listeners { except } => match services.interest.listeners(&d.conversation) {
                Some(l) => l
                    .iter()
                    .filter(|u| Some(*u) != except.as_ref())
                    .cloned()
                    .collect(),
                None => {
                    services.metrics.peer_deliveries_unheard.inc();
                    return;
                }
            },
        };
        services.deliver_local(&targets, &deliveries);
    }

    fn replicate(&mut self, op: ReplicatedOp, reply: RpcReplyPort<Result<(), StoreError>>) {
        let waiting: HashSet<Arc<str>> = self.peers.keys().cloned().collect();
        if waiting.is_empty() {
            let _ = reply.send(Ok(()));
            return;
        }
        let key = (op.origin.clone(), op.seq);
        let msg = PeerMsg::Replicate {
            from: self.me(),
            op: op_to_wire(op),
        };
        let bytes: Arc<[u8]> = match chat_protocol::peer::encode(&msg) {
            Ok(b) => Arc::from(b),
            Err(e) => {
                let _ = reply.send(Err(StoreError::Unavailable(e.to_string())));
                return;
            }
        };
        // The view's peers are this table's (both come from refresh_view).
        self.services.cluster.broadcast(&bytes);
        self.replication.insert(
            key,
            Replication {
                waiting,
                reply,
                deadline: Instant::now() + REPLICATION_DEADLINE,
            },
        );
    }

    /// A peer is gone (or dropped): nothing waits on it any more.
    fn forget_peer(&mut self, node: &Arc<str>) {
        self.serve_expect.remove(node);
        let failed: Vec<u64> = self
            .remote
            .iter()
            .filter(|(_, r)| r.peer == *node)
            .map(|(id, _)| *id)
            .collect();
        for id in failed {
            self.finish_remote(
                id,
                Err(ChatError::Unavailable("owner node left, retry".into())),
            );
        }
        let done: Vec<(String, u64)> = self
            .replication
            .iter_mut()
            .filter_map(|(k, r)| {
                r.waiting.remove(node);
                r.waiting.is_empty().then(|| k.clone())
            })
            .collect();
        for k in done {
            if let Some(r) = self.replication.remove(&k) {
                let _ = r.reply.send(Ok(()));
            }
        }
    }

    fn pull(&mut self, node: &Arc<str>) {
        let Some(replica) = self.services.replica.clone() else {
            if let Some(p) = self.peers.get_mut(node) {
                p.synced = true;
            }
            return;
        };
        if let Some(p) = self.peers.get_mut(node) {
            p.pulling = true;
            p.last_pull = Instant::now();
        }
        let msg = PeerMsg::Pull {
            from: self.me(),
            vector: replica.vector(),
        };
        if !self.services.cluster.send(node, &msg) {
            if let Some(p) = self.peers.get_mut(node) {
                p.pulling = false;
            }
        }
    }

    fn tick(&mut self, myself: &ActorRef<RouterMsg>) {
        let now = Instant::now();
        let heartbeat = PeerMsg::Heartbeat {
            from: self.me(),
            node_id: self.services.cluster.node_id(),
            serving: self.serving,
        };
        if let Ok(bytes) = chat_protocol::peer::encode(&heartbeat) {
            let bytes: Arc<[u8]> = Arc::from(bytes);
            self.services.cluster.broadcast(&bytes);
        }
        // ractor_cluster pings but never times a session out: we do.
        let mut stale = Vec::new();
        for (name, p) in self.peers.iter_mut() {
            let last = p.heard.unwrap_or(p.since);
            if now.duration_since(last) > PEER_DEADLINE
                && p.reported_stale
                    .is_none_or(|t| now.duration_since(t) > PEER_DEADLINE)
            {
                p.reported_stale = Some(now);
                stale.push(name.clone());
            }
        }
        for (_, r) in self.replication.iter() {
            if r.deadline <= now {
                stale.extend(r.waiting.iter().cloned());
            }
        }
        stale.sort();
        stale.dedup();
        for name in stale {
            tracing::warn!(peer = %name, "peer is not answering; dropping it");
            self.services.metrics.peers_dropped.inc();
            self.services
                .cluster
                .emit(ClusterEvent::Stale(name.to_string()));
            // Writes go on without it; it catches up when it is back.
            self.forget_peer(&name);
        }
        let expired: Vec<u64> = self
            .remote
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.finish_remote(
                id,
                Err(ChatError::Unavailable(
                    "owner node did not answer, retry".into(),
                )),
            );
        }
        let due: Vec<Arc<str>> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.pulling && now.duration_since(p.last_pull) > RESYNC_EVERY)
            .map(|(n, _)| n.clone())
            .collect();
        for n in due {
            self.pull(&n);
        }
        self.ask_interest(now);
        self.check_serve(myself);
    }

    /// Asks each peer whose interest this node does not hold under its view
    /// (a sync lost, or sent while views differed) to send it again; until
    /// then the peer gets every delivery.
    fn ask_interest(&mut self, now: Instant) {
        let cluster = &self.services.cluster;
        let me = self.me();
        for (name, p) in self.peers.iter_mut() {
            let due = p
                .interest_asked
                .is_none_or(|t| now.duration_since(t) >= INTEREST_ASK_EVERY);
            if p.heard.is_none() || !due || cluster.interest_synced(name) {
                continue;
            }
            p.interest_asked = Some(now);
            cluster.send(name, &PeerMsg::InterestAsk { from: me.clone() });
        }
    }

    /// Joins the serving group once every connected node has been heard and
    /// caught up with.
    fn check_serve(&mut self, myself: &ActorRef<RouterMsg>) {
        if self.serving || self.serve_waiters.is_empty() || self.draining {
            return;
        }
        if self
            .peers
            .values()
            .any(|p| p.node_id.is_none() || !p.synced)
            || self
                .serve_expect
                .iter()
                .any(|n| !self.peers.contains_key(n))
        {
            return;
        }
        self.serving = true;
        ractor::pg::join(ROUTERS_GROUP.into(), vec![myself.get_cell()]);
        tracing::info!(peers = self.peers.len(), "caught up; serving conversations");
        for w in self.serve_waiters.drain(..) {
            let _ = w.send(());
        }
        self.refresh_view(myself);
    }

    /// Rebuilds the view from the two groups; stops local conversation
    /// actors whose conversations another node owns now.
    fn refresh_view(&mut self, myself: &ActorRef<RouterMsg>) {
        let me = myself.get_id();
        let mut peers = HashMap::new();
        for cell in ractor::pg::get_members(&NODES_GROUP.to_string()) {
            if cell.get_id() == me {
                continue;
            }
            let Some(name) = cell.get_name() else {
                continue;
            };
            let Some(node) = cluster::node_of_router(&name) else {
                continue;
            };
            peers.insert(Arc::<str>::from(node), ActorRef::<RouterMsg>::from(cell));
        }
        let mut serving: Vec<Arc<str>> = Vec::new();
        for cell in ractor::pg::get_members(&ROUTERS_GROUP.to_string()) {
            if cell.get_id() == me {
                serving.push(self.services.cluster.name().clone());
                continue;
            }
            if let Some(node) = cell.get_name().as_deref().and_then(cluster::node_of_router) {
                serving.push(Arc::from(node));
            }
        }
        // Peers that left: fail what waits on them.
        let gone: Vec<Arc<str>> = self
            .peers
            .keys()
            .filter(|n| !peers.contains_key(*n))
            .cloned()
            .collect();
        for n in gone {
            tracing::info!(peer = %n, "node left");
            self.forget_peer(&n);
            self.peers.remove(&n);
            self.services.cluster.forget_interest(&n);
        }
        let now = Instant::now();
        let mut joined = Vec::new();
        for (n, r) in &peers {
            match self.peers.get_mut(n) {
                Some(p) if p.router.get_id() == r.get_id() => {}
                _ => {
                    tracing::info!(peer = %n, "node connected");
                    self.peers.insert(
                        n.clone(),
                        Peer {
                            router: r.clone(),
                            since: now,
                            heard: None,
                            node_id: None,
                            serving: false,
                            synced: false,
                            pulling: false,
                            last_pull: now,
                            in_flight: InFlight::default(),
                            reported_stale: None,
                            interest_asked: None,
                        },
                    );
                    joined.push(n.clone());
                }
            }
        }
        let view = View::new(Placement::new(serving), peers);
        self.services
            .metrics
            .cluster_members
            .set(view.placement.nodes().len() as i64);
        let old = self.services.cluster.view();
        let changed = old.fingerprint != view.fingerprint
            || old.peers.len() != view.peers.len()
            || old
                .peers
                .iter()
                .any(|(n, r)| view.peers.get(n).is_none_or(|v| v.get_id() != r.get_id()));
        self.services.cluster.set_view(view);
        if changed {
            // Every owner may have changed: each peer learns what it owns
            // that sessions here listen to.
            let services = &self.services;
            services.interest.sync(None, &services.cluster);
        }
        for n in joined {
            self.pull(&n);
        }
        // Conversations that moved: their actors finish what they hold and
        // stop; new requests already go to the new owner.
        let running = &self.services.conversations;
        let moved: Vec<ConversationId> = running
            .ids()
            .into_iter()
            .filter(|c| matches!(self.services.cluster.owner(c), Owner::Remote(..)))
            .collect();
        for c in moved {
            if let Some(a) = running.remove(&c) {
                let _ = a.cast(ConversationMsg::Retire);
            }
        }
    }

    fn retire_all(&mut self) {
        for a in self.services.conversations.drain() {
            let _ = a.cast(ConversationMsg::Retire);
        }
    }

    fn status(&self) -> ClusterStatus {
        let view = self.services.cluster.view();
        let now = Instant::now();
        let mut peers: Vec<PeerStatus> = self
            .peers
            .iter()
            .map(|(n, p)| PeerStatus {
                name: n.to_string(),
                node_id: p.node_id,
                serving: p.serving,
                synced: p.synced,
                heard_ms_ago: p.heard.map(|h| now.duration_since(h).as_millis() as u64),
                interest_synced: self.services.cluster.interest_synced(n),
                listening: self.services.cluster.listening(n),
            })
            .collect();
        peers.sort_by(|a, b| a.name.cmp(&b.name));
        ClusterStatus {
            node: self.me(),
            clustered: self.services.cluster.enabled(),
            serving: self.serving,
            serving_nodes: view
                .placement
                .nodes()
                .iter()
                .map(|n| n.to_string())
                .collect(),
            peers,
            conversations: self.services.conversations.len(),
            sessions: self.sessions.len(),
        }
    }
}

fn op_to_wire(op: ReplicatedOp) -> PeerOp {
    PeerOp {
        origin: op.origin,
        seq: op.seq,
        bytes: op.bytes,
    }
}

fn op_from_wire(op: PeerOp) -> ReplicatedOp {
    ReplicatedOp {
        origin: op.origin,
        seq: op.seq,
        bytes: op.bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peers_budget_bounds_requests_in_number_and_in_bytes() {
        // Few large requests: the bytes run out long before the count.
        let mut f = InFlight::default();
        let big = MAX_IN_FLIGHT_BYTES_PER_PEER / 4;
        for _ in 0..4 {
            assert!(f.admit(big));
        }
        assert!(!f.admit(1), "admitted past the byte budget");
        assert_eq!(f.requests, 4, "a refused request is not counted");
        f.release(big);
        assert!(f.admit(big), "an answer gives its bytes back");
        assert!(!f.admit(1));

        // Many small ones: the count runs out first.
        let mut f = InFlight::default();
        for _ in 0..MAX_IN_FLIGHT_PER_PEER {
            assert!(f.admit(64));
        }
        assert!(!f.admit(64), "admitted past the request budget");
        f.release(64);
        assert!(f.admit(64));
    }
}
