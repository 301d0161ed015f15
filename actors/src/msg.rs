//! Every actor's messages, in one leaf module, so that actors import
//! messages and never each other (as ractor_cluster keeps
//! `NodeServerMessage` and `NodeSessionMessage` in its parent `node.rs`).
//!
//! ```text
//!  dispatch ──Request──► ConversationActor (running here)
//!      │                      ▲
//!      └──RouterMsg::Route──► Router ──► starts it, or PeerMsg::Request to the owner's Router
//!  Router ──Attach──► UserSession ◄──Watch/Unwatch── dispatch
//! ```
//!
//! Queries carry an [`RpcReplyPort`]; events are named in the past tense.
//! Only [`RouterMsg`] travels between nodes, and only as its `Peer`/`Wire`
//! variants ([`wire`]); the others carry reply ports and actor refs and are
//! local (ractor's `RactorMessage`), so peers never get stand-ins for
//! conversation actors or sessions.

use std::sync::Arc;
use std::time::Instant;

use chat_protocol::peer::PeerMsg;
use chat_protocol::request::ConversationRequest;
use chat_protocol::{
    ConversationId, Message, MessageId, OkReply, ServerFrame, SharedFrame, UserId,
};
use chat_storage::replicated::ReplicatedOp;
use chat_storage::StoreError;
use ractor::{ActorId, ActorRef, RpcReplyPort};

use crate::conn::{ConnId, Connection};
use crate::error::ChatError;

pub mod wire;

/// Where a request's answer goes.
pub type Reply = RpcReplyPort<Result<OkReply, ChatError>>;

/// Answers `reply`, if there is one (typing has none).
pub fn answer(reply: Option<Reply>, result: Result<OkReply, ChatError>) {
    if let Some(reply) = reply {
        let _ = reply.send(result);
    }
}

/// A client's request to one conversation, read on this node or forwarded
/// by the node that read it.
pub struct Request {
    /// Who asks (authenticated).
    pub user: UserId,
    /// The connection it came from: a send's own connection gets the `ok`,
    /// not the `message` event. `None` over HTTP.
    pub conn: Option<ConnId>,
    /// When this node received it, for the latency histogram.
    pub received: Instant,
    /// What is asked; the conversation is inside. Also the request's wire
    /// form towards an owner on another node.
    pub body: ConversationRequest,
    /// Where the answer goes; `None` for typing, which is never answered.
    pub reply: Option<Reply>,
    /// The sampled trace it is part of, if any.
    pub trace: Option<crate::telemetry::TraceParent>,
}

impl Request {
    /// A request made now.
    pub fn new(
        user: UserId,
        conn: Option<ConnId>,
        body: ConversationRequest,
        reply: Option<Reply>,
    ) -> Self {
        Request {
            user,
            conn,
            received: Instant::now(),
            body,
            reply,
            trace: None,
        }
    }

    /// Answers the request.
    pub fn answer(self, result: Result<OkReply, ChatError>) {
        answer(self.reply, result)
    }

    /// Answers the request with `err`.
    pub fn fail(self, err: ChatError) {
        self.answer(Err(err))
    }
}

/// How a batch of message updates (edits, deletes, reactions) went.
pub struct UpdatesDone {
    /// For each update, in order: the message's state after it and whether
    /// it changed anything (a repeated reaction, a second delete do not), or
    /// why it was refused or not stored.
    pub outcomes: Vec<Result<(Message, bool), ChatError>>,
    /// The states stored, one per message changed.
    pub written: Vec<Message>,
    /// The last revision an update took (one below the batch's first when
    /// none changed anything).
    pub last_rev: u64,
    /// Messages whose delete was stored, as they were before it: their
    /// attachments are released.
    pub deleted: Vec<Message>,
}

/// Messages a conversation actor handles.
pub enum ConversationMsg {
    /// A client's request.
    Request(Request),
    /// The store finished the batch in flight.
    BatchWritten(Result<Vec<Option<Message>>, StoreError>),
    /// The batch of edits, deletes and reactions in flight is done.
    UpdatesWritten(UpdatesDone),
    /// The store finished writing a read marker.
    ReadStored {
        /// Whose.
        user: UserId,
        /// The marker written.
        up_to: MessageId,
        /// Whether it was stored.
        result: Result<(), StoreError>,
        /// The request to answer.
        reply: Option<Reply>,
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

// Local only: peers never get a stand-in for a conversation actor (ractor
// unregisters by name any local actor that shares a departed stand-in's
// name), so the message has no wire form.
impl ractor::Message for ConversationMsg {}

/// Messages a session handles.
pub enum SessionMsg {
    /// A new connection of the user (from the Router).
    Attach {
        /// The connection.
        conn: Connection,
        /// Answered with the session, or `TooManyConnections`.
        reply: RpcReplyPort<Result<SessionHandle, ChatError>>,
    },
    /// A connection closed.
    Detach {
        /// Which.
        conn: ConnId,
    },
    /// A connection watches the presence of `users`.
    Watch {
        /// Which connection.
        conn: ConnId,
        /// Whom.
        users: Vec<UserId>,
        /// Answered with their presence.
        reply: Reply,
    },
    /// A connection stops watching `users`.
    Unwatch {
        /// Which connection.
        conn: ConnId,
        /// Whom.
        users: Vec<UserId>,
        /// Answered empty.
        reply: Reply,
    },
    /// A watched user's presence changed.
    PresenceChanged {
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
    /// A login of the user was revoked: close its connections with 4001.
    LoginRevoked {
        /// The login (the access tokens' `sid`).
        login: Arc<str>,
    },
    /// `user` no longer shows the session's user their presence (a block,
    /// or a stricter privacy setting): stop watching them and say they are
    /// offline.
    HidePresence {
        /// Whose presence.
        user: UserId,
    },
}

// Local only, like conversation messages: events reach remote sessions
// through their node's Router.
impl ractor::Message for SessionMsg {}

/// How a connection, and whoever acts for it, reaches its user's session.
///
/// A session's actor sleeps while it has nothing to do (see
/// [`crate::session`]): a message for the actor it was given then comes
/// back (or finds no actor), and goes to the Router, which wakes the
/// session and hands it over. The handle names the actor by id, not by
/// reference: a reference would keep a stopped actor's mailboxes allocated
/// for as long as the connection lives, which is what sleeping saves.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    user: UserId,
    actor: ActorId,
    router: ActorRef<RouterMsg>,
}

impl SessionHandle {
    /// The handle of `user`'s session `actor`.
    pub fn new(user: UserId, actor: ActorId, router: ActorRef<RouterMsg>) -> Self {
        SessionHandle {
            user,
            actor,
            router,
        }
    }

    /// The actor this handle was made with (a woken session has another).
    pub fn id(&self) -> ActorId {
        self.actor
    }

    /// Whose session.
    pub fn user(&self) -> &UserId {
        &self.user
    }

    /// Sends `msg` to the session, awake or asleep; gives it back when the
    /// node's Router is gone (the node is stopping).
    pub fn send(&self, msg: SessionMsg) -> Result<(), SessionMsg> {
        // Running actors are found by id (ractor's registry of local pids).
        let msg = match ractor::registry::where_is_pid(self.actor) {
            Some(cell) => match cell.send_message(msg) {
                Ok(()) => return Ok(()),
                Err(ractor::MessagingErr::SendErr(msg)) => msg,
                // Not a session: ids are not reused, so it cannot be.
                Err(_) => return Ok(()),
            },
            None => msg,
        };
        let to_router = RouterMsg::ToSession {
            user: self.user.clone(),
            msg,
        };
        match self.router.cast(to_router) {
            Ok(()) => Ok(()),
            Err(ractor::MessagingErr::SendErr(RouterMsg::ToSession { msg, .. })) => Err(msg),
            Err(_) => Ok(()),
        }
    }
}

/// Messages the Router handles.
pub enum RouterMsg {
    /// Deliver a request to its conversation's actor, starting it if
    /// needed, or forward it to the owner node.
    Route(Request),
    /// A conversation actor has been idle; stop it if nothing is on its way.
    ConversationIdle {
        /// Which conversation.
        conversation: chat_protocol::ConversationId,
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
        reply: RpcReplyPort<Result<SessionHandle, ChatError>>,
    },
    /// For `user`'s session, whose actor sleeps (or is falling asleep):
    /// wake it and hand it over.
    ToSession {
        /// Whose.
        user: UserId,
        /// The message.
        msg: SessionMsg,
    },
    /// Time to end the empty sessions whose linger is over (sent to
    /// itself every [`crate::router::LINGER_SWEEP`]).
    EndLingered,
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
        /// The conversations its ops changed here: an actor running for
        /// one holds stale state.
        changed: Vec<ConversationId>,
    },
    /// A peer's write changed these conversations here: an actor running
    /// for one holds stale state (a previous owner's last write, landing
    /// after this node took the conversation over).
    ReplicaChanged(Vec<ConversationId>),
    /// A login was revoked: close its connections here and on every
    /// other node.
    LoginRevoked {
        /// Whose.
        user: UserId,
        /// The login (the access tokens' `sid`).
        login: String,
    },
    /// An event for every connection of `users`, here and on every other
    /// node (one that belongs to no conversation: a profile change).
    ToUsers {
        /// Whose connections.
        users: Vec<UserId>,
        /// The event (boxed: it is far larger than the other variants).
        frame: Box<ServerFrame>,
    },
    /// `user` shows their presence to fewer people than before: the
    /// watches of it, here and on every other node, are checked again.
    PresenceRestricted {
        /// Whose presence.
        user: UserId,
    },
    /// An operator closes every connection of a user with `code`, here
    /// and on every other node.
    CloseUser {
        /// Whose.
        user: UserId,
        /// The WebSocket close code.
        code: u16,
    },
    /// An operator asks another node to drain; answered `false` when no
    /// such node is connected.
    DrainPeer {
        /// The node.
        node: String,
        /// The admin who asked.
        by: UserId,
        /// Answered whether the node was asked.
        reply: RpcReplyPort<bool>,
    },
    /// What this node sees of the cluster.
    Status {
        /// Answered with the status.
        reply: RpcReplyPort<ClusterStatus>,
    },
}

/// What the Router tells the node's membership layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// A peer has not been heard from within the deadline, or did not
    /// acknowledge a replicated write in time: drop its session so the rest
    /// of the cluster goes on without it (it resyncs when it comes back).
    Stale(String),
    /// Another node uses this node's numeric id.
    DuplicateId {
        /// The other node's name.
        name: String,
        /// The id both use.
        node_id: u16,
    },
    /// An operator asked this node to drain and exit.
    Drain {
        /// The admin who asked.
        by: UserId,
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
    /// This node's load over its last second.
    pub stats: chat_protocol::peer::NodeStats,
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
    /// Its load, from its last heartbeat.
    pub stats: Option<chat_protocol::peer::NodeStats>,
    /// The peer protocol it speaks (`chat_protocol::peer::PEER_PROTOCOL`).
    pub protocol: u16,
    /// The round trip of the last ping it answered, in ms.
    pub rtt_ms: Option<f64>,
}
