//! What every actor of a node shares: storage, presence, the id generator,
//! the interest table, the session directory, limits and metrics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use chat_protocol::{ConversationId, IdGenerator, Limits, UserId};
use ractor::{ActorId, ActorRef};

use crate::cluster::Cluster;
use crate::conversation::ConversationMsg;
use crate::interest::Interest;
use crate::metrics::Metrics;
use crate::presence::{Presence, Watchers};
use crate::session::{Connection, Delivery, Outbound, SessionMsg};
use crate::store::replicated::ReplicatedStore;
use crate::store::MessageStore;

/// Knobs of the actors that are not client limits.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// A conversation actor with no activity for this long stops.
    pub conversation_idle: Duration,
    /// Recent messages a conversation actor keeps in memory.
    pub tail: usize,
    /// A typing indicator ends after this long without a refresh.
    pub typing_timeout: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            conversation_idle: Duration::from_secs(120),
            tail: 256,
            typing_timeout: Duration::from_secs(6),
        }
    }
}

/// Local sessions by user, with their connections.
///
/// Events are pushed from here straight into the connections' outbound
/// queues, not through the session actor: a fan-out to G members costs G
/// queue pushes, not G actor messages and G more task wake-ups. The session
/// keeps the list in step as connections attach and detach.
#[derive(Default)]
pub struct Directory {
    sessions: RwLock<HashMap<UserId, Local>>,
}

struct Local {
    session: ActorRef<SessionMsg>,
    conns: Arc<[Connection]>,
}

impl Directory {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<UserId, Local>> {
        self.sessions.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<UserId, Local>> {
        self.sessions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The session of `user` on this node.
    pub fn get(&self, user: &UserId) -> Option<ActorRef<SessionMsg>> {
        self.read().get(user).map(|l| l.session.clone())
    }

    /// Queues `events` on every connection of each of `users` here, except
    /// an event's `skip_conn`; returns how many frames were queued.
    pub fn deliver(&self, users: &[UserId], events: &[Delivery]) -> u64 {
        let map = self.read();
        let mut n = 0;
        for u in users {
            let Some(local) = map.get(u) else { continue };
            for c in local.conns.iter() {
                for d in events {
                    if d.skip_conn != Some(c.id) && c.push(Outbound::Shared(d.frame.clone())) {
                        n += 1;
                    }
                }
            }
        }
        n
    }

    pub(crate) fn insert(&self, user: UserId, session: ActorRef<SessionMsg>) {
        self.write().insert(
            user,
            Local {
                session,
                conns: Arc::from([]),
            },
        );
    }

    /// The connections of `user`'s session `session` are now `conns`.
    pub(crate) fn set_conns(&self, user: &UserId, session: ActorId, conns: Arc<[Connection]>) {
        if let Some(l) = self.write().get_mut(user) {
            if l.session.get_id() == session {
                l.conns = conns;
            }
        }
    }

    pub(crate) fn remove(&self, user: &UserId) {
        self.write().remove(user);
    }

    /// Sessions on this node.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether no session lives here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The conversation actors running on this node, shared so that a request
/// reaches a running actor straight from a connection's task, without a pass
/// through the Router. The Router alone starts, stops and removes them.
///
/// Stopping an idle actor stays safe: every cast is counted before it is
/// made, under the read lock, and the Router stops an actor only under the
/// write lock and only when the count equals the messages the actor reported
/// handled, so nothing is ever left in a stopping actor's mailbox.
#[derive(Default)]
pub struct Conversations {
    running: RwLock<HashMap<ConversationId, Running>>,
}

struct Running {
    actor: ActorRef<ConversationMsg>,
    forwarded: AtomicU64,
}

impl Conversations {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ConversationId, Running>> {
        self.running.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<ConversationId, Running>> {
        self.running.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Casts `msg` to the actor of `conversation` if one runs here; hands it
    /// back otherwise (the Router then decides where it goes).
    #[allow(clippy::result_large_err)] // moved, not copied: Err hands the message back
    pub fn cast(
        &self,
        conversation: &ConversationId,
        msg: ConversationMsg,
    ) -> Result<(), ConversationMsg> {
        let running = self.read();
        let Some(r) = running.get(conversation) else {
            return Err(msg);
        };
        r.forwarded.fetch_add(1, Ordering::AcqRel);
        match r.actor.cast(msg) {
            Ok(()) => Ok(()),
            Err(ractor::MessagingErr::SendErr(back)) => {
                r.forwarded.fetch_sub(1, Ordering::AcqRel);
                Err(back)
            }
            // The message is gone with its reply port: the client is told
            // the request was lost and retries.
            Err(_) => Ok(()),
        }
    }

    pub(crate) fn contains(&self, conversation: &ConversationId) -> bool {
        self.read().contains_key(conversation)
    }

    pub(crate) fn insert(&self, conversation: ConversationId, actor: ActorRef<ConversationMsg>) {
        self.write().insert(
            conversation,
            Running {
                actor,
                forwarded: AtomicU64::new(0),
            },
        );
    }

    pub(crate) fn remove(
        &self,
        conversation: &ConversationId,
    ) -> Option<ActorRef<ConversationMsg>> {
        self.write().remove(conversation).map(|r| r.actor)
    }

    /// Removes the actor `actor` of `conversation` if every message cast to
    /// it is among the `handled` it reported.
    pub(crate) fn remove_if_idle(
        &self,
        conversation: &ConversationId,
        actor: ActorId,
        handled: u64,
    ) -> Option<ActorRef<ConversationMsg>> {
        let mut running = self.write();
        let r = running.get(conversation)?;
        if r.actor.get_id() != actor || r.forwarded.load(Ordering::Acquire) != handled {
            return None;
        }
        running.remove(conversation).map(|r| r.actor)
    }

    /// Removes the actor `actor`, which stopped.
    pub(crate) fn remove_actor(&self, actor: ActorId) {
        self.write().retain(|_, r| r.actor.get_id() != actor);
    }

    /// Removes every actor.
    pub(crate) fn drain(&self) -> Vec<ActorRef<ConversationMsg>> {
        self.write().drain().map(|(_, r)| r.actor).collect()
    }

    /// The conversations with an actor here.
    pub(crate) fn ids(&self) -> Vec<ConversationId> {
        self.read().keys().cloned().collect()
    }

    /// How many actors run.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether none runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Per-user token buckets for sends, shared by WebSocket and HTTP sends.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<UserId, Bucket>>,
}

/// Buckets kept before full (idle) ones are dropped, which bounds memory.
const MAX_BUCKETS: usize = 100_000;

impl RateLimiter {
    /// `per_second` sustained, bursts up to `burst`.
    pub fn new(per_second: u32, burst: u32) -> Self {
        RateLimiter {
            per_second: per_second.max(1) as f64,
            burst: burst.max(1) as f64,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `user`, or says how long until one is free.
    pub fn take(&self, user: &UserId) -> Result<(), u64> {
        self.take_at(user, Instant::now())
    }

    fn take_at(&self, user: &UserId, now: Instant) -> Result<(), u64> {
        let mut map = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_BUCKETS && !map.contains_key(user) {
            let (rate, burst) = (self.per_second, self.burst);
            map.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let b = map.entry(user.clone()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        b.tokens =
            (b.tokens + now.duration_since(b.at).as_secs_f64() * self.per_second).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - b.tokens) / self.per_second) * 1000.0).ceil() as u64)
        }
    }
}

/// Everything the actors of one node share.
pub struct Services {
    /// This node's name, unique in the cluster.
    pub node_name: Arc<str>,
    /// History, conversations, accounts.
    pub store: Arc<dyn MessageStore>,
    /// Who is online.
    pub presence: Arc<dyn Presence>,
    /// Message ids of this node.
    pub ids: IdGenerator,
    /// Which local users listen to which conversations.
    pub interest: Interest,
    /// Which local sessions watch which users' presence.
    pub watchers: Arc<Watchers>,
    /// Local sessions by user.
    pub directory: Directory,
    /// Conversation actors running here.
    pub conversations: Conversations,
    /// Client limits.
    pub limits: Limits,
    /// Actor knobs.
    pub tuning: Tuning,
    /// Counters and histograms.
    pub metrics: Metrics,
    /// Send rate per user.
    pub rate: RateLimiter,
    /// This node's view of the cluster (inert on a single node).
    pub cluster: Cluster,
    /// The replicated store behind `store`, when the node is in a cluster
    /// without a shared database: peers' writes are applied through it.
    pub replica: Option<Arc<ReplicatedStore>>,
}

impl Services {
    /// Queues `events` on the connections of `users` here (see
    /// [`Directory::deliver`]) and counts the frames queued.
    pub fn deliver_local(&self, users: &[UserId], events: &[Delivery]) {
        let n = self.directory.deliver(users, events);
        self.metrics.messages_delivered.inc_by(n);
    }

    /// Assembles a node's services.
    pub fn new(
        cluster: Cluster,
        store: Arc<dyn MessageStore>,
        replica: Option<Arc<ReplicatedStore>>,
        presence: Arc<dyn Presence>,
        limits: Limits,
        tuning: Tuning,
    ) -> Arc<Self> {
        let node_id = cluster.node_id();
        Arc::new(Services {
            node_name: cluster.name().clone(),
            cluster,
            replica,
            store,
            presence,
            ids: IdGenerator::new(node_id),
            interest: Interest::new(),
            watchers: Arc::new(Watchers::new()),
            directory: Directory::default(),
            conversations: Conversations::default(),
            rate: RateLimiter::new(limits.sends_per_second, limits.send_burst),
            limits,
            tuning,
            metrics: Metrics::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stands in for a conversation actor: takes any message.
    struct Sink;

    impl ractor::Actor for Sink {
        type Msg = ConversationMsg;
        type State = ();
        type Arguments = ();

        async fn pre_start(
            &self,
            _: ActorRef<ConversationMsg>,
            _: (),
        ) -> Result<(), ractor::ActorProcessingErr> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn an_actor_is_removed_as_idle_only_when_it_handled_every_cast() {
        let table = Conversations::default();
        let c = ConversationId::new("g:1").unwrap();
        assert!(
            table.cast(&c, ConversationMsg::IdleCheck).is_err(),
            "none runs"
        );
        let (a, _) = ractor::Actor::spawn(None, Sink, ()).await.unwrap();
        table.insert(c.clone(), a.clone());
        for _ in 0..2 {
            assert!(table.cast(&c, ConversationMsg::IdleCheck).is_ok());
        }
        assert!(
            table.remove_if_idle(&c, a.get_id(), 1).is_none(),
            "a cast it has not handled yet keeps it"
        );
        assert!(table.remove_if_idle(&c, a.get_id(), 2).is_some());
        assert!(
            table.cast(&c, ConversationMsg::IdleCheck).is_err(),
            "removed"
        );

        // A cast that fails (the actor stopped) hands the message back and
        // is not counted.
        let (b, handle) = ractor::Actor::spawn(None, Sink, ()).await.unwrap();
        table.insert(c.clone(), b.clone());
        b.stop(None);
        handle.await.unwrap();
        assert!(table.cast(&c, ConversationMsg::IdleCheck).is_err());
        assert!(table.remove_if_idle(&c, b.get_id(), 0).is_some());
    }

    #[test]
    fn bucket_allows_burst_then_refills() {
        let r = RateLimiter::new(10, 3);
        let u = UserId::new("u").unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(r.take_at(&u, t0).is_ok());
        }
        let wait = r.take_at(&u, t0).unwrap_err();
        assert_eq!(wait, 100);
        assert!(r.take_at(&u, t0 + Duration::from_millis(100)).is_ok());
        assert!(r.take_at(&u, t0 + Duration::from_millis(100)).is_err());
    }
}
