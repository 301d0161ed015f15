//! Which outbox shards this node works. One node alone works them all.
//! Nodes of a cluster split them by the cluster's placement (the node a
//! shard's key places on works it); on a store that several nodes share,
//! each shard is also claimed under the node's lease, so that two nodes
//! with different views never work one shard at once for long, and a shard
//! whose node died is taken over once that node's lease runs out (seconds,
//! well within the minute the contract allows). A claim costs one
//! transaction when taken and none while held.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use chat_protocol::ConversationId;
use chat_storage::{Lease, LeaseGrant, MessageStore, NodeLeaseHolder, OUTBOX_SHARDS};

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

/// Shards by placement, each claimed under the node's lease when the store
/// asks for leases.
pub struct PlacedShards {
    store: Arc<dyn MessageStore>,
    leases: Arc<dyn NodeLeaseHolder>,
    placed_here: PlacedHere,
    held: Mutex<HashMap<u32, Lease>>,
}

impl PlacedShards {
    /// Claiming under the node lease `leases` keeps, placing with
    /// `placed_here`.
    pub fn new(
        store: Arc<dyn MessageStore>,
        leases: Arc<dyn NodeLeaseHolder>,
        placed_here: PlacedHere,
    ) -> Self {
        PlacedShards {
            store,
            leases,
            placed_here,
            held: Mutex::new(HashMap::new()),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Lease>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Releases a shard's claim, or has the node's lease keeper release
    /// it later (a claim left held would keep the shard from every node).
    async fn release(&self, lease: Lease) {
        if self.store.release_lease(&lease).await.is_err() {
            self.leases.release_later(lease);
        }
    }

    /// Holds `shard`'s claim, taking it when it is not held under the
    /// node's lease as it is now; whether it is held.
    async fn hold(&self, shard: u32) -> bool {
        let Some(node) = self.leases.current() else {
            return false;
        };
        let held = self.held().get(&shard).cloned();
        if let Some(lease) = held {
            if lease.incarnation == Some(node.incarnation) {
                return true;
            }
            // Claimed under a node lease that is gone: claimed anew (a
            // lapse of this one's: released later, unless claimed again).
            self.held().remove(&shard);
            self.leases.release_later(lease);
        }
        match self.store.claim(&shard_key(shard), &node).await {
            Ok(LeaseGrant::Granted(lease)) => {
                self.held().insert(shard, lease);
                true
            }
            _ => false,
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
                Some(_) if here => self.hold(shard).await,
                Some(_) => {
                    // Placed elsewhere now: hand it over at once.
                    let lease = self.held().remove(&shard);
                    if let Some(lease) = lease {
                        self.release(lease).await;
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
        let held: Vec<Lease> = self.held().drain().map(|(_, l)| l).collect();
        for lease in held {
            self.release(lease).await;
        }
    }
}
