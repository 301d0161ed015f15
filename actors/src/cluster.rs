//! This node's view of the cluster: which nodes serve conversations (and so
//! own them, by rendezvous hashing), and how to reach each connected node's
//! Router.
//!
//! ```text
//!  pg "chat.nodes"    every connected node's Router: replication, heartbeats,
//!                     deliveries go to all of these
//!  pg "chat.routers"  the nodes that serve: placement is computed over these
//! ```
//!
//! A node joins `chat.nodes` as soon as it runs, and `chat.routers` only once
//! it has caught up with every connected node (anti-entropy), so a node never
//! owns a conversation whose history it has not got. The Router keeps the
//! [`View`] in step with both groups; everything else reads it through
//! [`Cluster`] without asking the Router.
//!
//! Everything here is off on a single node (no `listen.cluster`): the view is
//! empty and every conversation is local, at no cost on the hot path.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use chat_protocol::peer::{PeerDelivery, PeerError, PeerMsg, PeerRequest};
use chat_protocol::{ConversationId, ErrorCode, UserId};
use ractor::ActorRef;
use tokio::sync::mpsc;

use crate::conversation::{ConversationMsg, Reply};
use crate::error::ChatError;
use crate::placement::Placement;
use crate::router::RouterMsg;
use crate::store::replicated::{ReplicaLink, ReplicatedOp};
use crate::store::{PageQuery, StoreError};

/// The group of every running node's Router.
pub const NODES_GROUP: &str = "chat.nodes";
/// The group of the Routers that serve conversations.
pub const ROUTERS_GROUP: &str = "chat.routers";

/// The registered name of a node's Router.
pub fn router_name(node: &str) -> String {
    format!("router@{node}")
}

/// The node name in a Router's registered name.
pub fn node_of_router(name: &str) -> Option<&str> {
    name.strip_prefix("router@")
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
}

/// The cluster as this node sees it.
#[derive(Default, Clone)]
pub struct View {
    /// The serving nodes, this one included once it serves.
    pub placement: Placement,
    /// Connected nodes' Routers by node name (never this node).
    pub peers: HashMap<Arc<str>, ActorRef<RouterMsg>>,
}

/// Where a conversation's requests go.
pub enum Owner {
    /// This node.
    Local,
    /// Another node's Router.
    Remote(Arc<str>, ActorRef<RouterMsg>),
}

/// This node's name, id and view of the cluster.
pub struct Cluster {
    name: Arc<str>,
    node_id: u16,
    enabled: bool,
    view: RwLock<Arc<View>>,
    events: RwLock<Option<mpsc::UnboundedSender<ClusterEvent>>>,
}

impl Cluster {
    /// A node that is alone: every conversation is local.
    pub fn single(name: &str, node_id: u16) -> Self {
        Cluster {
            name: Arc::from(name),
            node_id,
            enabled: false,
            view: RwLock::default(),
            events: RwLock::default(),
        }
    }

    /// A node that will join a cluster; events go to `events`.
    pub fn clustered(
        name: &str,
        node_id: u16,
        events: mpsc::UnboundedSender<ClusterEvent>,
    ) -> Self {
        Cluster {
            name: Arc::from(name),
            node_id,
            enabled: true,
            view: RwLock::default(),
            events: RwLock::new(Some(events)),
        }
    }

    /// This node's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// This node's numeric id.
    pub fn node_id(&self) -> u16 {
        self.node_id
    }

    /// Whether this node is part of a cluster.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The current view.
    pub fn view(&self) -> Arc<View> {
        self.view
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_view(&self, view: View) {
        *self.view.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(view);
    }

    pub(crate) fn emit(&self, event: ClusterEvent) {
        if let Some(tx) = self
            .events
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            let _ = tx.send(event);
        }
    }

    /// Which node serves `conversation`. Local when alone, when no node
    /// serves yet, or when the owner's Router is not connected (a view in
    /// flux: serving here beats failing).
    pub fn owner(&self, conversation: &ConversationId) -> Owner {
        if !self.enabled {
            return Owner::Local;
        }
        let view = self.view();
        match view.placement.owner(conversation) {
            Some(n) if **n != *self.name => match view.peers.get(n) {
                Some(r) => Owner::Remote(n.clone(), r.clone()),
                None => Owner::Local,
            },
            _ => Owner::Local,
        }
    }

    /// Sends pre-encoded `bytes` to every connected node.
    pub fn broadcast(&self, bytes: &Arc<[u8]>) {
        if !self.enabled {
            return;
        }
        for r in self.view().peers.values() {
            let _ = r.cast(RouterMsg::Wire(bytes.clone()));
        }
    }

    /// Sends `msg` to node `to`, if connected.
    pub fn send(&self, to: &str, msg: &PeerMsg) -> bool {
        let Some(r) = self.view().peers.get(to).cloned() else {
            return false;
        };
        match chat_protocol::peer::encode(msg) {
            Ok(bytes) => r.cast(RouterMsg::Wire(Arc::from(bytes))).is_ok(),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a peer message");
                false
            }
        }
    }

    /// Hands events of a conversation to every other connected node's
    /// sessions: one message per node, whatever the number of members there.
    pub fn deliver(&self, delivery: PeerDelivery) {
        if !self.has_peers() {
            return;
        }
        match chat_protocol::peer::encode(&PeerMsg::Deliver(Box::new(delivery))) {
            Ok(bytes) => self.broadcast(&Arc::from(bytes)),
            Err(e) => tracing::error!(error = %e, "cannot encode a delivery"),
        }
    }

    /// Whether any other node is connected (fan-out across nodes is needed).
    pub fn has_peers(&self) -> bool {
        self.enabled && !self.view().peers.is_empty()
    }
}

impl From<&ChatError> for PeerError {
    fn from(e: &ChatError) -> Self {
        PeerError {
            code: e.code(),
            message: e.to_string(),
            retry_after_ms: match e {
                ChatError::RateLimited { retry_after_ms } => Some(*retry_after_ms),
                _ => None,
            },
        }
    }
}

impl From<PeerError> for ChatError {
    fn from(e: PeerError) -> Self {
        match e.code {
            ErrorCode::BadRequest => ChatError::BadRequest(e.message),
            ErrorCode::Forbidden => ChatError::Forbidden(e.message),
            ErrorCode::NotFound => ChatError::NotFound(e.message),
            ErrorCode::TooLarge => ChatError::TooLarge(e.message),
            ErrorCode::RateLimited => ChatError::RateLimited {
                retry_after_ms: e.retry_after_ms.unwrap_or(1000),
            },
            ErrorCode::Unavailable => ChatError::Unavailable(e.message),
            _ => ChatError::Internal(e.message),
        }
    }
}

/// A routed request split into its wire form and where its answer goes.
pub struct Outgoing {
    /// Who asks.
    pub user: UserId,
    /// From which connection.
    pub conn: u64,
    /// The request.
    pub request: PeerRequest,
    /// Where the answer goes (typing has none).
    pub reply: Option<Reply>,
}

impl ConversationMsg {
    /// The wire form of a request from a client, for the owner on another
    /// node; `Err(self)` for the actor's own messages, which never travel.
    #[allow(clippy::result_large_err)] // moved, not copied: Err hands the message back
    pub fn into_peer(self, conversation: ConversationId) -> Result<Outgoing, Self> {
        let out = |user, conn: Option<u64>, request, reply| Outgoing {
            user,
            conn: conn.unwrap_or(0),
            request,
            reply,
        };
        Ok(match self {
            ConversationMsg::Send {
                sender,
                client_msg_id,
                body,
                kind,
                reply_to,
                origin,
                reply,
                ..
            } => out(
                sender,
                origin,
                PeerRequest::Send {
                    conversation,
                    client_msg_id,
                    body,
                    kind,
                    reply_to,
                },
                Some(reply),
            ),
            ConversationMsg::History {
                reader,
                query,
                reply,
            } => out(
                reader,
                None,
                PeerRequest::History {
                    conversation,
                    before: query.before,
                    after: query.after,
                    limit: query.limit.min(u32::MAX as usize) as u32,
                },
                Some(reply),
            ),
            ConversationMsg::Typing { user, active } => out(
                user,
                None,
                PeerRequest::Typing {
                    conversation,
                    active,
                },
                None,
            ),
            ConversationMsg::Read { user, up_to, reply } => out(
                user,
                None,
                PeerRequest::Read {
                    conversation,
                    up_to,
                },
                Some(reply),
            ),
            ConversationMsg::Create {
                creator,
                kind,
                members,
                title,
                reply,
            } => out(
                creator,
                None,
                PeerRequest::Create {
                    conversation,
                    kind,
                    members,
                    title,
                },
                Some(reply),
            ),
            ConversationMsg::Invite { by, users, reply } => out(
                by,
                None,
                PeerRequest::Invite {
                    conversation,
                    users,
                },
                Some(reply),
            ),
            ConversationMsg::Kick { by, user, reply } => out(
                by,
                None,
                PeerRequest::Kick { conversation, user },
                Some(reply),
            ),
            ConversationMsg::Leave { user, reply } => {
                out(user, None, PeerRequest::Leave { conversation }, Some(reply))
            }
            other => return Err(other),
        })
    }

    /// The request a peer routed here, answered through `reply`.
    pub fn from_peer(user: UserId, conn: u64, request: PeerRequest, reply: Reply) -> Self {
        match request {
            PeerRequest::Send {
                client_msg_id,
                body,
                kind,
                reply_to,
                ..
            } => ConversationMsg::Send {
                sender: user,
                client_msg_id,
                body,
                kind,
                reply_to,
                origin: (conn != 0).then_some(conn),
                received: std::time::Instant::now(),
                reply,
            },
            PeerRequest::History {
                before,
                after,
                limit,
                ..
            } => ConversationMsg::History {
                reader: user,
                query: PageQuery {
                    before,
                    after,
                    limit: limit as usize,
                },
                reply,
            },
            PeerRequest::Typing { active, .. } => ConversationMsg::Typing { user, active },
            PeerRequest::Read { up_to, .. } => ConversationMsg::Read { user, up_to, reply },
            PeerRequest::Create {
                kind,
                members,
                title,
                ..
            } => ConversationMsg::Create {
                creator: user,
                kind,
                members,
                title,
                reply,
            },
            PeerRequest::Invite { users, .. } => ConversationMsg::Invite {
                by: user,
                users,
                reply,
            },
            PeerRequest::Kick { user: target, .. } => ConversationMsg::Kick {
                by: user,
                user: target,
                reply,
            },
            PeerRequest::Leave { .. } => ConversationMsg::Leave { user, reply },
        }
    }
}

/// Replicates a store's writes through this node's Router (see
/// [`RouterMsg::Replicate`]).
pub struct RouterLink {
    router: ActorRef<RouterMsg>,
}

impl RouterLink {
    /// Through `router`.
    pub fn new(router: ActorRef<RouterMsg>) -> Self {
        RouterLink { router }
    }
}

#[async_trait::async_trait]
impl ReplicaLink for RouterLink {
    async fn replicate(&self, op: ReplicatedOp) -> Result<(), StoreError> {
        let (tx, rx) = ractor::concurrency::oneshot();
        self.router
            .cast(RouterMsg::Replicate {
                op,
                reply: tx.into(),
            })
            .map_err(|_| StoreError::Unavailable("node is stopping".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("node is stopping".into()))?
    }
}
