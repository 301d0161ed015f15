//! Which outbox shards this node works. One node alone works them all.
//! Nodes of a cluster split them by the cluster's placement (the node a
//! shard's key places on works it); on a store that several nodes share,
//! each shard is also held by a lease, so that two nodes with different
//! views never work one shard at once for long, and a shard whose node died
//! is taken over once its lease runs out (seconds, well within the minute
//! the contract allows).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chat_protocol::ConversationId;
use chat_storage::{Lease, LeaseGrant, MessageStore, OUTBOX_SHARDS};

/// The shards a node works.
#[async_trait]
pub trait ShardOwners: Send + Sync + 'static {
    /// The shards to work now (renewing what needs renewing).
    async fn owned(&self) -> Vec<u32>;
    /// Lets go of every shard (a draining node).
    async fn release_all(&self) {}
}

/// Every shard: a node alone.
pub struct AllShards;

#[async_trait]
impl ShardOwners for AllShards {
    async fn owned(&self) -> Vec<u32> {
        (0..OUTBOX_SHARDS).collect()
    }
}

/// The name a shard's placement and lease go by. Conversation ids the
/// server makes start with `g:` or `d:`, so this never names one.
pub fn shard_key(shard: u32) -> ConversationId {
    ConversationId::new(&format!("outbox:{shard:02}")).expect("a valid id")
}

/// Whether a key places on this node.
pub type PlacedHere = Arc<dyn Fn(&ConversationId) -> bool + Send + Sync>;

/// Shards by placement, each held by a lease when the store asks for them.
pub struct PlacedShards {
    store: Arc<dyn MessageStore>,
    node: String,
    placed_here: PlacedHere,
    held: Mutex<HashMap<u32, (Lease, Instant)>>,
}

impl PlacedShards {
    /// For node `node`, placing with `placed_here`.
    pub fn new(store: Arc<dyn MessageStore>, node: &str, placed_here: PlacedHere) -> Self {
        PlacedShards {
            store,
            node: node.to_owned(),
            placed_here,
            held: Mutex::new(HashMap::new()),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<u32, (Lease, Instant)>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Holds `shard`'s lease, taking or renewing it; whether it is held.
    async fn hold(&self, shard: u32, ttl: Duration) -> bool {
        let held = self.held().get(&shard).cloned();
        let started = Instant::now();
        match held {
            Some((_, at)) if at.elapsed() < ttl / 3 => true,
            Some((lease, _)) => match self.store.renew_lease(&lease).await {
                Ok(true) => {
                    self.held().insert(shard, (lease, started));
                    true
                }
                Ok(false) => {
                    self.held().remove(&shard);
                    false
                }
                // Unknown: keep working only while the lease surely holds.
                Err(_) => self
                    .held()
                    .get(&shard)
                    .is_some_and(|(_, at)| at.elapsed() < ttl * 2 / 3),
            },
            None => match self
                .store
                .acquire_lease(&shard_key(shard), &self.node)
                .await
            {
                Ok(LeaseGrant::Granted(lease)) => {
                    self.held().insert(shard, (lease, started));
                    true
                }
                _ => false,
            },
        }
    }
}

#[async_trait]
impl ShardOwners for PlacedShards {
    async fn owned(&self) -> Vec<u32> {
        let ttl = self.store.lease_ttl();
        let mut owned = Vec::new();
        for shard in 0..OUTBOX_SHARDS {
            let here = (self.placed_here)(&shard_key(shard));
            let works = match ttl {
                None => here,
                Some(ttl) if here => self.hold(shard, ttl).await,
                Some(_) => {
                    // Placed elsewhere now: hand it over at once.
                    let lease = self.held().remove(&shard);
                    if let Some((lease, _)) = lease {
                        let _ = self.store.release_lease(&lease).await;
                    }
                    false
                }
            };
            if works {
                owned.push(shard);
            }
        }
        owned
    }

    async fn release_all(&self) {
        let held: Vec<Lease> = self.held().drain().map(|(_, (l, _))| l).collect();
        for lease in held {
            let _ = self.store.release_lease(&lease).await;
        }
    }
}
