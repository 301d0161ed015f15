//! Write leases: how nodes that share one store take turns writing a
//! conversation (or working an outbox shard), so that each has one writer
//! at a time.
//!
//! Two kinds, in one table:
//! - A *node lease* per node process, renewed by the node every third of its term
//!   (one lightweight transaction per node and period, however many
//!   conversations it holds), and a *claim* per conversation, taken once
//!   when the conversation comes to the node and valid as long as the node
//!   lease of the incarnation that took it lives. A claim is never renewed:
//!   the database's lease traffic grows with the nodes, not with the
//!   conversations.
//! - An *expiring lease* per key, renewed by its holder: few keys (the
//!   outbox shards), and the leases of earlier releases.
//!
//! A node lease that ran out is *fenced* by the first node that takes one of
//! its claims (its incarnation is raised with a transaction that its own
//! renewal races against): a holder whose renewal arrives after that loses
//! every claim at once, and a renewal that wins keeps them all; so no claim
//! is ever taken while its holder still believes in it.

use async_trait::async_trait;
use chat_protocol::{ConversationId, Message};

use crate::{HistoryStore, StoreError};

/// Proof that a node holds the right to write one key (a conversation, an
/// outbox shard): while a store that several nodes share
/// ([`LeaseStore::lease_ttl`] is `Some`) holds this lease for it, no other
/// node's lease for that key is granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The conversation (or shard key).
    pub conversation: ConversationId,
    /// The holder (a node name).
    pub owner: String,
    /// Raised by every new holder: a write of an older epoch is stale.
    pub epoch: u64,
    /// For a claim, the incarnation of the owner's node lease it lives by
    /// (valid exactly while that node lease is); `None` for an expiring
    /// lease, valid until `acquired + ttl` by the holder's own clock,
    /// measured from before the request that granted or renewed it.
    pub incarnation: Option<u64>,
}

/// The answer to a lease request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseGrant {
    /// The caller holds it now.
    Granted(Lease),
    /// Another node holds it (or held it, and the store still waits for
    /// that node's last writes to land before giving it away).
    Held {
        /// Who.
        owner: String,
        /// Unix ms after which it may be taken over (when its holder does
        /// not renew it meanwhile).
        until_ms: u64,
    },
}

/// A node's lease: while it lives, every claim taken under its incarnation
/// is the holder's. Valid until `acquired + ttl` by the holder's own clock,
/// measured from before the request that granted or renewed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLease {
    /// Who holds it: a node's name and its process (each process of a node
    /// takes a lease of its own, so a restarted node never renews its
    /// predecessor's; claims name it as their owner).
    pub node: String,
    /// Raised each time the node takes its lease anew (a restart, a lease
    /// lost): the claims of older incarnations are void.
    pub incarnation: u64,
}

/// The answer to a node-lease request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeLeaseGrant {
    /// The caller holds it now.
    Granted(NodeLease),
    /// An earlier process of this node's name may still be writing under
    /// it: not before this Unix ms.
    Held {
        /// Unix ms after which it may be taken.
        until_ms: u64,
    },
}

/// Where a node's lease is read: the task that keeps it, for whatever
/// claims keys under it (conversations, outbox shards).
pub trait NodeLeaseHolder: Send + Sync {
    /// The node lease, while it is valid now.
    fn current(&self) -> Option<NodeLease>;

    /// Releases `claim` after the grace for writes abandoned under it,
    /// trying again until it goes through (or the node lease it lives by
    /// is gone): a claim its holder dropped without releasing would keep the
    /// key from every other node for as long as this one lives.
    fn release_later(&self, claim: Lease);
}

/// Write leases. Every method has a default for a store that needs none
/// (one node, or one whose writes reach every node through the cluster's
/// own replication): the lease is always granted and never lost. It
/// extends [`HistoryStore`] because the leased append is what a lease is
/// for.
#[async_trait]
pub trait LeaseStore: HistoryStore {
    /// How long a lease lasts without renewal, when this store is shared by
    /// nodes that must take turns writing; `None` when no lease is needed.
    fn lease_ttl(&self) -> Option<std::time::Duration> {
        None
    }

    /// Takes `node`'s node lease under a new incarnation: at once when it
    /// was released, ran out (and the grace for its last writes passed), or
    /// is `previous` (this process's own, lost); otherwise `Held` until an
    /// earlier process of the name can no longer write.
    async fn acquire_node_lease(
        &self,
        node: &str,
        previous: Option<&NodeLease>,
    ) -> Result<NodeLeaseGrant, StoreError> {
        let _ = previous;
        Ok(NodeLeaseGrant::Granted(NodeLease {
            node: node.to_owned(),
            incarnation: 0,
        }))
    }

    /// Extends a node lease by the ttl; `false` when it is no longer held
    /// (another node fenced it after it ran out): every claim under it is
    /// then lost.
    async fn renew_node_lease(&self, lease: &NodeLease) -> Result<bool, StoreError> {
        let _ = lease;
        Ok(true)
    }

    /// Gives a node lease up (a node stopping): it runs out now, so its
    /// claims are free once the grace for its last writes has passed.
    async fn release_node_lease(&self, lease: &NodeLease) -> Result<(), StoreError> {
        let _ = lease;
        Ok(())
    }

    /// Claims `conversation` under `holder`'s node lease, always with a new
    /// epoch: granted when it is free, claimed by this same process before
    /// (an actor that stopped), claimed under a node lease that is gone (released, replaced, or run out with its grace
    /// passed: then fenced first), or an expiring lease that ran out. Not
    /// renewed: it lasts while `holder` does, until released.
    async fn claim(
        &self,
        conversation: &ConversationId,
        holder: &NodeLease,
    ) -> Result<LeaseGrant, StoreError> {
        Ok(LeaseGrant::Granted(Lease {
            conversation: conversation.clone(),
            owner: holder.node.clone(),
            epoch: 0,
            incarnation: Some(holder.incarnation),
        }))
    }

    /// Takes `key`'s expiring lease for `owner`: granted when no one holds
    /// it, when `owner` holds it already (a restarted node), or when the
    /// holder's lease ran out long enough ago that its last writes have
    /// landed. The holder renews it every third of the ttl.
    async fn acquire_lease(
        &self,
        key: &ConversationId,
        owner: &str,
    ) -> Result<LeaseGrant, StoreError> {
        Ok(LeaseGrant::Granted(Lease {
            conversation: key.clone(),
            owner: owner.to_owned(),
            epoch: 0,
            incarnation: None,
        }))
    }

    /// Extends a held expiring lease by its ttl; `false` when it is no
    /// longer held.
    async fn renew_lease(&self, lease: &Lease) -> Result<bool, StoreError> {
        let _ = lease;
        Ok(true)
    }

    /// Gives a lease or a claim up, so the next owner need not wait for it.
    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let _ = lease;
        Ok(())
    }

    /// How long after a claim's writes were abandoned they may still land
    /// (the database's write timeout and a clock margin): a claim given up
    /// by a holder that may have abandoned a write waits this long.
    fn claim_grace(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// How many lightweight transactions leases and claims have cost this
    /// handle (what an operator sizes the database's Paxos load by).
    fn lease_transactions(&self) -> u64 {
        0
    }

    /// [`HistoryStore::append_new`] by the holder of `lease` on all of the
    /// messages' conversation: with no other writer possible, the store may
    /// check `client_msg_id`s with plain reads instead of transactions.
    async fn append_new_leased(
        &self,
        lease: &Lease,
        messages: &[Message],
    ) -> Result<Vec<Option<Message>>, StoreError> {
        let _ = lease;
        self.append_new(messages).await
    }
}
