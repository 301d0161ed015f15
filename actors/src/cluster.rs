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
//! Interest across nodes: a conversation's events go only to the nodes where
//! a session listens to it. Each node tells the owner when its first session
//! starts listening to a conversation and when its last one stops
//! ([`PeerMsg::Interest`]), and after every change of its view it sends each
//! peer the whole set that peer owns ([`PeerMsg::InterestSync`]). Both are
//! stamped with the sender's placement fingerprint. The owner filters a
//! peer's deliveries only while the set it holds for that peer was built
//! under the owner's own fingerprint; otherwise (a view in flux, a sync not
//! yet in) it sends the peer everything, as if every conversation were
//! listened to. So a disagreement costs traffic, never a missed event.
//! Reports leave with the local interest table locked, so a peer receives
//! them in the order the changes happened. A starting session reports all
//! its conversations and waits (briefly) for each owner's ack before its
//! client is let in: whatever is accepted after that reaches it live.
//!
//! What may wait for a peer is bounded by bytes (`flow.rs`).
//!
//! Everything here is off on a single node (no `listen.cluster`): the view is
//! empty and every conversation is local, at no cost on the hot path.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use chat_protocol::peer::{Audience, ConnRef, PeerDelivery, PeerMsg, TraceParent};
use chat_protocol::{ConversationId, ServerFrame, UserId};
use chat_storage::replicated::{ReplicaLink, ReplicatedOp};
use chat_storage::StoreError;
use ractor::ActorRef;
use tokio::sync::{mpsc, oneshot};

use crate::msg::{ClusterEvent, RouterMsg};
use crate::placement::Placement;

mod flow;

pub(crate) use flow::monotonic_us;
use flow::{Admit, PeerFlow};

/// What may wait for one peer by default (`cluster.peer_queue_bytes`).
pub const DEFAULT_PEER_QUEUE_BYTES: u64 = 64 << 20;

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

/// The cluster as this node sees it.
#[derive(Default, Clone)]
pub struct View {
    /// The serving nodes, this one included once it serves.
    pub placement: Placement,
    /// `placement`'s fingerprint.
    pub fingerprint: u64,
    /// Connected nodes' Routers by node name (never this node).
    pub peers: HashMap<Arc<str>, ActorRef<RouterMsg>>,
}

impl View {
    /// A view of `placement` and `peers`.
    pub fn new(placement: Placement, peers: HashMap<Arc<str>, ActorRef<RouterMsg>>) -> Self {
        View {
            fingerprint: placement.fingerprint(),
            placement,
            peers,
        }
    }
}

/// Conversation ids per [`PeerMsg::InterestSync`] chunk: about 300 KiB.
const SYNC_CHUNK: usize = 8192;

/// An interest report waiting for its owner's ack: which owner, whom to tell.
type PendingAck = (Arc<str>, oneshot::Sender<()>);

/// What a peer listens to among the conversations this node owns.
#[derive(Default)]
struct PeerInterest {
    /// The fingerprint the set was built under; `None` while a sync is
    /// arriving (or none has).
    view: Option<u64>,
    /// The fingerprint of the sync whose chunks are arriving.
    building: Option<u64>,
    conversations: HashSet<ConversationId>,
}

/// An interest report waiting for its owner's ack, as its reporter sees it.
pub struct PendingInterest {
    /// The conversations reported to that owner.
    pub conversations: Vec<ConversationId>,
    /// Ends when the owner applied the report; errs if it left first.
    pub acked: oneshot::Receiver<()>,
}

/// Where a conversation's requests go.
pub enum Owner {
    /// This node.
    Local,
    /// Another node's Router.
    Remote(Arc<str>, ActorRef<RouterMsg>),
}

/// Delays a test sets to widen the windows live delivery must survive;
/// zero (off) otherwise.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// As owner, apply and acknowledge a peer's interest report this late.
    pub interest_ack_delay: Duration,
    /// As owner, hand deliveries to the other nodes this long after they
    /// were acknowledged.
    pub peer_fanout_delay: Duration,
}

/// Work a fault delay holds back, in the order it came.
type Delayed = (tokio::time::Instant, Box<dyn FnOnce() + Send>);

/// This node's name, id and view of the cluster.
pub struct Cluster {
    faults: Faults,
    /// Runs what the fault delays hold back, each at its time and in order
    /// (started on first use).
    delayed: Mutex<Option<mpsc::UnboundedSender<Delayed>>>,
    name: Arc<str>,
    node_id: u16,
    enabled: bool,
    view: RwLock<Arc<View>>,
    events: RwLock<Option<mpsc::UnboundedSender<ClusterEvent>>>,
    interest: Mutex<HashMap<Arc<str>, PeerInterest>>,
    /// Interest reports waiting for their owner's ack, by id: which owner,
    /// and whom to tell.
    acks: Mutex<HashMap<u64, PendingAck>>,
    next_ack: AtomicU64,
    /// Each peer's stream, and how much of it may wait.
    flows: Mutex<HashMap<Arc<str>, Arc<PeerFlow>>>,
    peer_queue_bytes: u64,
    /// Peers dropped for their backlog, not yet counted in the metrics.
    overloaded: AtomicU64,
}

impl Cluster {
    /// A node that is alone: every conversation is local.
    pub fn single(name: &str, node_id: u16) -> Self {
        Cluster {
            faults: Faults::default(),
            delayed: Mutex::default(),
            name: Arc::from(name),
            node_id,
            enabled: false,
            view: RwLock::default(),
            events: RwLock::default(),
            interest: Mutex::default(),
            acks: Mutex::default(),
            next_ack: AtomicU64::new(1),
            flows: Mutex::default(),
            peer_queue_bytes: DEFAULT_PEER_QUEUE_BYTES,
            overloaded: AtomicU64::new(0),
        }
    }

    /// A node that will join a cluster; events go to `events`.
    pub fn clustered(
        name: &str,
        node_id: u16,
        events: mpsc::UnboundedSender<ClusterEvent>,
    ) -> Self {
        Cluster {
            faults: Faults::default(),
            delayed: Mutex::default(),
            name: Arc::from(name),
            node_id,
            enabled: true,
            view: RwLock::default(),
            events: RwLock::new(Some(events)),
            interest: Mutex::default(),
            acks: Mutex::default(),
            next_ack: AtomicU64::new(1),
            flows: Mutex::default(),
            peer_queue_bytes: DEFAULT_PEER_QUEUE_BYTES,
            overloaded: AtomicU64::new(0),
        }
    }

    /// The same node with at most `bytes` waiting for each peer.
    pub fn with_peer_queue_bytes(mut self, bytes: u64) -> Self {
        self.peer_queue_bytes = bytes;
        self
    }

    /// The same node with `faults` set.
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// The fault delays set.
    pub fn faults(&self) -> Faults {
        self.faults
    }

    /// Runs `work` after `delay`, after everything delayed before it (so a
    /// delay never reorders what a peer is sent or applies). Only the
    /// fault delays use it.
    pub(crate) fn after(&self, delay: Duration, work: impl FnOnce() + Send + 'static) {
        let at = tokio::time::Instant::now() + delay;
        let mut slot = self.delayed.lock().unwrap_or_else(PoisonError::into_inner);
        let tx = slot.get_or_insert_with(|| {
            let (tx, mut rx) = mpsc::unbounded_channel::<Delayed>();
            tokio::spawn(async move {
                while let Some((at, work)) = rx.recv().await {
                    tokio::time::sleep_until(at).await;
                    work();
                }
            });
            tx
        });
        let _ = tx.send((at, Box::new(work)));
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
        for (name, r) in &self.view().peers {
            self.wire(name, r, bytes);
        }
    }

    /// Sends `msg` to node `to`, if connected.
    pub fn send(&self, to: &str, msg: &PeerMsg) -> bool {
        self.send_in(&self.view(), to, msg)
    }

    /// Sends `msg` to node `to` of `view`, if connected there.
    fn send_in(&self, view: &View, to: &str, msg: &PeerMsg) -> bool {
        let Some((name, r)) = view.peers.get_key_value(to) else {
            return false;
        };
        match chat_protocol::peer::encode(msg) {
            Ok(bytes) => self.wire(name, r, &Arc::from(bytes)),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a peer message");
                false
            }
        }
    }

    /// Hands events of a conversation to the other nodes whose sessions
    /// listen to it: one message per node, whatever the number of members
    /// there; `events` is called only if some node gets them. Returns how
    /// many nodes they went to and how many were skipped.
    pub fn deliver(
        &self,
        conversation: &ConversationId,
        to: Audience,
        listen: &[UserId],
        unlisten: &[UserId],
        events: impl FnOnce() -> Vec<(ServerFrame, Option<ConnRef>)>,
        trace: Option<TraceParent>,
    ) -> (u64, u64) {
        if !self.enabled {
            return (0, 0);
        }
        let view = self.view();
        if view.peers.is_empty() {
            return (0, 0);
        }
        // A conversation this node does not own in its view (an actor
        // finishing before it retires) is listened to through another owner:
        // nothing here says who listens, so everyone gets it.
        let owned = view
            .placement
            .owner(conversation)
            .is_some_and(|o| **o == *self.name);
        let mut targets = Vec::with_capacity(view.peers.len());
        let mut skipped = 0;
        {
            let mut interest = self.lock_interest();
            for (name, router) in &view.peers {
                let held = interest
                    .get_mut(name)
                    .filter(|p| owned && p.view == Some(view.fingerprint));
                match (held, &to) {
                    (None, _) => targets.push((name, router)),
                    (Some(p), Audience::Users(_)) => {
                        // A member added: the peer may have a session of
                        // theirs. It confirms or withdraws once it applied
                        // the change (`Interest::confirm`).
                        if !listen.is_empty() {
                            p.conversations.insert(conversation.clone());
                        }
                        targets.push((name, router));
                    }
                    (Some(p), Audience::Listeners { .. }) => {
                        if p.conversations.contains(conversation) {
                            targets.push((name, router));
                        } else {
                            skipped += 1;
                        }
                    }
                }
            }
        }
        if targets.is_empty() {
            return (0, skipped);
        }
        let delivery = PeerDelivery {
            conversation: conversation.clone(),
            to,
            listen: listen.to_vec(),
            unlisten: unlisten.to_vec(),
            events: events(),
            trace,
        };
        match chat_protocol::peer::encode(&PeerMsg::Deliver(Box::new(delivery))) {
            Ok(bytes) => {
                let bytes: Arc<[u8]> = Arc::from(bytes);
                let sent = targets.len() as u64;
                let delay = self.faults.peer_fanout_delay;
                if !delay.is_zero() {
                    // Tests' fault delays only: not counted in the flows.
                    let targets: Vec<ActorRef<RouterMsg>> =
                        targets.into_iter().map(|(_, r)| r.clone()).collect();
                    self.after(delay, move || {
                        for r in &targets {
                            let _ = r.cast(RouterMsg::Wire(bytes.clone()));
                        }
                    });
                    return (sent, skipped);
                }
                for (name, r) in &targets {
                    self.wire(name, r, &bytes);
                }
                (sent, skipped)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a delivery");
                (0, skipped)
            }
        }
    }

    fn lock_interest(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, PeerInterest>> {
        // Sets of conversation ids: nothing a panicking writer could
        // half-break that the next sync does not repair.
        self.interest.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells the owners of `conversations` that this node's sessions started
    /// (`listening`) or stopped listening to them. Called with the local
    /// interest table locked, so that reports leave in the order of changes.
    /// With `ack`, each owner answers once it applied the report: each
    /// receiver (with the conversations reported to that owner) ends then,
    /// or errs when the owner is gone.
    pub(crate) fn report_interest(
        &self,
        conversations: &[ConversationId],
        listening: bool,
        ack: bool,
    ) -> Vec<PendingInterest> {
        let mut acked = Vec::new();
        if !self.enabled || conversations.is_empty() {
            return acked;
        }
        let view = self.view();
        if view.peers.is_empty() {
            return acked;
        }
        let mut by_owner: HashMap<&Arc<str>, Vec<ConversationId>> = HashMap::new();
        for c in conversations {
            if let Some(owner) = view.placement.owner(c) {
                if view.peers.contains_key(owner) {
                    by_owner.entry(owner).or_default().push(c.clone());
                }
            }
        }
        for (owner, conversations) in by_owner {
            let ack = ack.then(|| {
                let id = self.next_ack.fetch_add(1, Ordering::Relaxed);
                let (tx, rx) = oneshot::channel();
                self.lock_acks().insert(id, (owner.clone(), tx));
                acked.push(PendingInterest {
                    conversations: conversations.clone(),
                    acked: rx,
                });
                id
            });
            let sent = self.send_in(
                &view,
                owner,
                &PeerMsg::Interest {
                    from: self.name.to_string(),
                    view: view.fingerprint,
                    listening,
                    conversations,
                    ack,
                },
            );
            if let (false, Some(id)) = (sent, ack) {
                self.lock_acks().remove(&id);
            }
        }
        acked
    }

    fn lock_acks(&self) -> std::sync::MutexGuard<'_, HashMap<u64, PendingAck>> {
        self.acks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An owner applied the report with ack `id`.
    pub(crate) fn interest_acked(&self, id: u64) {
        if let Some((_, tx)) = self.lock_acks().remove(&id) {
            let _ = tx.send(());
        }
    }

    /// Sends peer `to` (or every peer) the conversations of `listened` it
    /// owns in this node's view. Called with the local interest table locked.
    pub(crate) fn sync_interest<'a>(
        &self,
        to: Option<&str>,
        listened: impl Iterator<Item = &'a ConversationId>,
    ) {
        if !self.enabled {
            return;
        }
        let view = self.view();
        let mut by_owner: HashMap<&Arc<str>, Vec<ConversationId>> = view
            .peers
            .keys()
            .filter(|n| to.is_none_or(|t| ***n == *t))
            .map(|n| (n, Vec::new()))
            .collect();
        if by_owner.is_empty() {
            return;
        }
        for c in listened {
            if let Some(list) = view.placement.owner(c).and_then(|o| by_owner.get_mut(o)) {
                list.push(c.clone());
            }
        }
        for (peer, conversations) in by_owner {
            let chunks: Vec<&[ConversationId]> = if conversations.is_empty() {
                vec![&[]]
            } else {
                conversations.chunks(SYNC_CHUNK).collect()
            };
            let last = chunks.len() - 1;
            for (i, chunk) in chunks.into_iter().enumerate() {
                self.send_in(
                    &view,
                    peer,
                    &PeerMsg::InterestSync {
                        from: self.name.to_string(),
                        view: view.fingerprint,
                        conversations: chunk.to_vec(),
                        first: i == 0,
                        last: i == last,
                    },
                );
            }
        }
    }

    /// Applies a peer's [`PeerMsg::Interest`]. A report made under another
    /// view than the peer's last whole sync is dropped: that peer is sent
    /// everything until a sync under this node's view arrives.
    pub(crate) fn peer_interest(
        &self,
        from: &str,
        view: u64,
        listening: bool,
        conversations: Vec<ConversationId>,
    ) {
        let mut interest = self.lock_interest();
        let Some(p) = interest.get_mut(from).filter(|p| p.view == Some(view)) else {
            return;
        };
        if listening {
            p.conversations.extend(conversations);
        } else {
            for c in &conversations {
                p.conversations.remove(c);
            }
        }
    }

    /// Applies a chunk of a peer's [`PeerMsg::InterestSync`].
    pub(crate) fn peer_interest_sync(
        &self,
        from: &str,
        view: u64,
        conversations: Vec<ConversationId>,
        first: bool,
        last: bool,
    ) {
        let mut interest = self.lock_interest();
        let p = interest.entry(Arc::from(from)).or_default();
        if first {
            p.view = None;
            p.building = Some(view);
            p.conversations.clear();
        }
        if p.building != Some(view) {
            // The rest of a sync whose start was not seen.
            return;
        }
        p.conversations.extend(conversations);
        if last {
            p.view = Some(view);
            p.building = None;
        }
    }

    /// Whether deliveries to `peer` are filtered by what it listens to (its
    /// last sync was made under this node's view).
    pub fn interest_synced(&self, peer: &str) -> bool {
        let fingerprint = self.view().fingerprint;
        self.lock_interest()
            .get(peer)
            .is_some_and(|p| p.view == Some(fingerprint))
    }

    /// How many conversations `peer` listens to, as far as this node knows
    /// (0 until its sync is whole).
    pub fn listening(&self, peer: &str) -> usize {
        self.lock_interest()
            .get(peer)
            .filter(|p| p.view.is_some())
            .map_or(0, |p| p.conversations.len())
    }

    /// Forgets what a departed peer listened to, and stops waiting for its
    /// acks.
    pub(crate) fn forget_interest(&self, peer: &str) {
        self.lock_interest().remove(peer);
        self.lock_acks().retain(|_, (owner, _)| **owner != *peer);
    }
}

/// Flow control toward each peer (see `flow.rs`).
impl Cluster {
    fn flow(&self, peer: &Arc<str>) -> Arc<PeerFlow> {
        let mut flows = self.flows.lock().unwrap_or_else(PoisonError::into_inner);
        flows.entry(peer.clone()).or_default().clone()
    }

    /// Casts `bytes` to `peer`'s Router within the peer's bound; `false`
    /// when nothing was cast. Past the bound the peer is dropped.
    fn wire(&self, peer: &Arc<str>, router: &ActorRef<RouterMsg>, bytes: &Arc<[u8]>) -> bool {
        let flow = self.flow(peer);
        match flow.admit(bytes.len() as u64, self.peer_queue_bytes) {
            Admit::Cast { ping } => {
                let cast = router.cast(RouterMsg::Wire(bytes.clone())).is_ok();
                if ping {
                    if let Some((sent_us, ping)) = self.ping_bytes() {
                        flow.ping(sent_us, ping.len() as u64);
                        let _ = router.cast(RouterMsg::Wire(ping));
                    }
                }
                cast
            }
            Admit::Tripped => {
                tracing::warn!(
                    peer = %peer,
                    backlog = flow.backlog(),
                    bound = self.peer_queue_bytes,
                    "peer is not keeping up: nothing more is sent to it; dropping it"
                );
                self.overloaded.fetch_add(1, Ordering::Relaxed);
                self.emit(ClusterEvent::Stale(peer.to_string()));
                false
            }
            Admit::Refused => false,
        }
    }

    fn ping_bytes(&self) -> Option<(u64, Arc<[u8]>)> {
        let sent_us = monotonic_us();
        let ping = PeerMsg::Ping {
            from: self.name.to_string(),
            sent_us,
        };
        let bytes = chat_protocol::peer::encode(&ping).ok()?;
        Some((sent_us, Arc::from(bytes)))
    }

    /// Pings every connected peer (the Router's tick): the answers time the
    /// round trips and confirm what each peer has handled.
    pub(crate) fn ping_all(&self) {
        let Some((sent_us, ping)) = self.ping_bytes() else {
            return;
        };
        for (name, r) in &self.view().peers {
            self.flow(name).ping(sent_us, ping.len() as u64);
            let _ = r.cast(RouterMsg::Wire(ping.clone()));
        }
    }

    /// `peer` answered the ping stamped `sent_us`.
    pub(crate) fn ponged(&self, peer: &str, sent_us: u64) {
        let flow = self
            .flows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(peer)
            .cloned();
        if let Some(flow) = flow {
            flow.pong(sent_us);
        }
    }

    /// A peer connected anew, or left: its stream starts from nothing.
    pub(crate) fn forget_flow(&self, peer: &str) {
        self.flows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(peer);
    }

    /// Bytes cast to `peer` on its current connection.
    pub fn peer_sent(&self, peer: &str) -> u64 {
        let flows = self.flows.lock().unwrap_or_else(PoisonError::into_inner);
        flows.get(peer).map_or(0, |f| f.sent())
    }

    /// Bytes cast to `peer` that it has not yet confirmed handling.
    pub fn peer_backlog(&self, peer: &str) -> u64 {
        let flows = self.flows.lock().unwrap_or_else(PoisonError::into_inner);
        flows.get(peer).map_or(0, |f| f.backlog())
    }

    /// Peers dropped for their backlog since the last call.
    pub(crate) fn take_overloaded(&self) -> u64 {
        self.overloaded.swap(0, Ordering::Relaxed)
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

#[cfg(test)]
mod tests;
