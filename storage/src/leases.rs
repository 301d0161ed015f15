//! Conversation write leases: how nodes that share one store take turns
//! writing a conversation, so that each has one writer at a time.

use async_trait::async_trait;
use chat_protocol::{ConversationId, Message};

use crate::{HistoryStore, StoreError};

/// Proof that a node holds the right to write one conversation: while a
/// store that several nodes share ([`LeaseStore::lease_ttl`] is `Some`)
/// holds this lease for it, no other node's lease for that conversation is
/// granted. Valid until `acquired + ttl` by the holder's own clock, measured
/// from before the request that granted or renewed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The conversation.
    pub conversation: ConversationId,
    /// The holder (a node name).
    pub owner: String,
    /// Raised by every new holder: a write of an older epoch is stale.
    pub epoch: u64,
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
        /// Unix ms after which it may be taken over.
        until_ms: u64,
    },
}

/// Write leases on conversations. Every method has a default for a store
/// that needs none (one node, or one whose writes reach every node through
/// the cluster's own replication): the lease is always granted and never
/// lost. It extends [`HistoryStore`] because the leased append is what a
/// lease is for.
#[async_trait]
pub trait LeaseStore: HistoryStore {
    /// How long a conversation lease lasts, when this store is shared by
    /// nodes that must take turns writing a conversation; `None` when no
    /// lease is needed (a store of one node, or one whose writes reach every
    /// node through the cluster's own replication).
    fn lease_ttl(&self) -> Option<std::time::Duration> {
        None
    }

    /// Takes `conversation`'s write lease for `owner`: granted when no one
    /// holds it, when `owner` holds it already (a restarted node), or when
    /// the holder's lease ran out long enough ago that its last writes have
    /// landed. The store applies this lease's epoch to nothing by itself:
    /// the holder stops writing when it cannot renew in time.
    async fn acquire_lease(
        &self,
        conversation: &ConversationId,
        owner: &str,
    ) -> Result<LeaseGrant, StoreError> {
        Ok(LeaseGrant::Granted(Lease {
            conversation: conversation.clone(),
            owner: owner.to_owned(),
            epoch: 0,
        }))
    }

    /// Extends a held lease by its ttl; `false` when it is no longer held.
    async fn renew_lease(&self, lease: &Lease) -> Result<bool, StoreError> {
        let _ = lease;
        Ok(true)
    }

    /// Gives a held lease up, so the next owner need not wait for it to run
    /// out.
    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let _ = lease;
        Ok(())
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
