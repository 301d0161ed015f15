//! What every actor of a node shares: storage, presence, the id generator,
//! the interest table, the session directory, limits and metrics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use chat_protocol::{IdGenerator, Limits, UserId};
use ractor::{ActorId, ActorRef};

use crate::cluster::Cluster;
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
