//! Leases on ScyllaDB: node leases (`node_leases`), the conversations'
//! claims and expiring leases (`conversation_leases`), every write a
//! lightweight transaction; and the append of a lease holder, which needs
//! none.
//!
//! A claim row says `expires_at = CLAIMED` and names the incarnation of its
//! owner's node lease; an expiring lease (an outbox shard's, or one an
//! earlier release wrote) has no incarnation and a real expiry. Earlier
//! releases read a claim as a lease that never runs out, so a node of the
//! previous release never takes a conversation a node of this one holds.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use chat_protocol::{now_ms, ConversationId, Message, MessageId};
use futures_util::future::try_join_all;
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;

use super::cql::applied;
use super::history::{index_key, own_claims_are_fresh};
use super::store::ScyllaStore;
use crate::{corrupt, lock, Lease, LeaseGrant, LeaseStore, NodeLease, NodeLeaseGrant, StoreError};

/// The expiry of a claim: it lasts as long as its node lease.
const CLAIMED: i64 = i64::MAX;

/// A row of `conversation_leases`.
struct LeaseRow {
    owner: String,
    epoch: i64,
    expires_at: i64,
    incarnation: Option<i64>,
}

impl LeaseRow {
    fn is_claim(&self) -> bool {
        self.incarnation.is_some() && self.expires_at == CLAIMED
    }
}

/// What a lease row means to the node asking for it.
enum Verdict {
    /// It may be taken (with a transaction on its epoch).
    Free,
    /// Held by a live holder, or its last writes may still land.
    Held { owner: String, until_ms: u64 },
    /// Changed while being decided: read again.
    Again,
}

impl ScyllaStore {
    fn forget_lease(&self, conversation: &ConversationId) {
        lock(&self.leased).remove(conversation);
        lock(&self.bucket_lists).remove(conversation);
    }

    /// A new node incarnation, or one lost: no claim of this handle holds.
    fn forget_all_leases(&self) {
        lock(&self.leased).clear();
        lock(&self.bucket_lists).clear();
    }

    /// Runs a lightweight transaction; whether it applied.
    async fn lwt(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<bool, StoreError> {
        self.lease_transactions.fetch_add(1, Ordering::Relaxed);
        applied(self.run(statement, values).await?)
    }

    async fn lease_row(&self, id: &str) -> Result<Option<LeaseRow>, StoreError> {
        let rows = self.rows(&self.q.leases.select_lease, (id,)).await?;
        type Row = (Option<String>, Option<i64>, Option<i64>, Option<i64>);
        Ok(rows.maybe_first_row::<Row>().map_err(corrupt)?.map(
            |(owner, epoch, expires_at, incarnation)| LeaseRow {
                owner: owner.unwrap_or_default(),
                epoch: epoch.unwrap_or(0),
                expires_at: expires_at.unwrap_or(0),
                incarnation,
            },
        ))
    }

    /// A node lease's (incarnation, expires_at); expiry 0 when released.
    async fn node_row(&self, node: &str) -> Result<Option<(i64, i64)>, StoreError> {
        let rows = self.rows(&self.q.leases.select_node, (node,)).await?;
        Ok(rows
            .maybe_first_row::<(Option<i64>, Option<i64>)>()
            .map_err(corrupt)?
            .map(|(i, e)| (i.unwrap_or(0), e.unwrap_or(0))))
    }

    async fn verdict(
        &self,
        row: &LeaseRow,
        me: &str,
        holder: Option<&NodeLease>,
    ) -> Result<Verdict, StoreError> {
        let now = now_ms();
        if row.expires_at == 0 {
            return Ok(Verdict::Free);
        }
        if !row.is_claim() {
            // An expiring lease: ours (a restarted node of the same name),
            // or run out long enough ago that its holder's writes landed.
            let until = (row.expires_at.max(0) as u64).saturating_add(self.lease_grace_ms);
            return Ok(if row.owner == me || now > until {
                Verdict::Free
            } else {
                Verdict::Held {
                    owner: row.owner.clone(),
                    until_ms: until,
                }
            });
        }
        let incarnation = row.incarnation.unwrap_or(0);
        if holder.is_some_and(|h| h.node == row.owner) {
            // This process's own (an actor that stopped, or one before it
            // lost the lease): taken again with a new epoch, so that a late
            // release of the old one frees nothing.
            return Ok(Verdict::Free);
        }
        let Some((live, expires_at)) = self.node_row(&row.owner).await? else {
            return Ok(Verdict::Free);
        };
        if live != incarnation || expires_at == 0 {
            // Its node lease was released or taken anew: the claim is void.
            return Ok(Verdict::Free);
        }
        let until = (expires_at.max(0) as u64).saturating_add(self.node_grace_ms);
        if now <= until {
            return Ok(Verdict::Held {
                owner: row.owner.clone(),
                until_ms: until,
            });
        }
        // Run out, and its last writes have landed: fenced, unless its
        // renewal wins the race (then it holds everything still).
        let fenced = self
            .lwt(
                &self.q.leases.take_node,
                (
                    incarnation + 1,
                    0i64,
                    row.owner.as_str(),
                    incarnation,
                    expires_at,
                ),
            )
            .await?;
        Ok(if fenced {
            Verdict::Free
        } else {
            Verdict::Again
        })
    }

    /// An expiring lease (`holder` is `None`) or a claim.
    async fn acquire(
        &self,
        key: &ConversationId,
        owner: &str,
        holder: Option<&NodeLease>,
    ) -> Result<LeaseGrant, StoreError> {
        let id = key.as_str();
        let granted = |epoch: i64| {
            // Another holder may have written buckets since this handle last
            // held it: the list is read again.
            lock(&self.bucket_lists).remove(key);
            lock(&self.leased).insert(key.clone());
            LeaseGrant::Granted(Lease {
                conversation: key.clone(),
                owner: owner.to_owned(),
                epoch: epoch as u64,
                incarnation: holder.map(|h| h.incarnation),
            })
        };
        let mut last_owner = String::new();
        // A few rounds: a transaction lost to another taker is read again.
        for _ in 0..3 {
            let current = self.lease_row(id).await?;
            let verdict = match &current {
                None => Verdict::Free,
                Some(row) => self.verdict(row, owner, holder).await?,
            };
            match verdict {
                Verdict::Held { owner, until_ms } => {
                    return Ok(LeaseGrant::Held { owner, until_ms })
                }
                Verdict::Again => {}
                Verdict::Free => {
                    let (expires, incarnation) = match holder {
                        Some(h) => (CLAIMED, Some(h.incarnation as i64)),
                        None => ((now_ms() + self.lease_ms) as i64, None),
                    };
                    let (epoch, taken) = match &current {
                        None => {
                            let values = (id, owner, 1i64, expires, incarnation);
                            (1, self.lwt(&self.q.leases.insert_lease, values).await?)
                        }
                        Some(row) => {
                            let values =
                                (owner, row.epoch + 1, expires, incarnation, id, row.epoch);
                            (
                                row.epoch + 1,
                                self.lwt(&self.q.leases.take_lease, values).await?,
                            )
                        }
                    };
                    if taken {
                        return Ok(granted(epoch));
                    }
                }
            }
            if let Some(row) = current {
                last_owner = row.owner;
            }
        }
        Ok(LeaseGrant::Held {
            owner: last_owner,
            until_ms: now_ms(),
        })
    }
}

#[async_trait]
impl LeaseStore for ScyllaStore {
    fn lease_ttl(&self) -> Option<Duration> {
        Some(Duration::from_millis(self.lease_ms))
    }

    async fn acquire_node_lease(
        &self,
        node: &str,
        previous: Option<&NodeLease>,
    ) -> Result<NodeLeaseGrant, StoreError> {
        self.forget_all_leases();
        for _ in 0..3 {
            let now = now_ms();
            let expires = (now + self.lease_ms) as i64;
            let granted = |incarnation: i64| {
                Ok(NodeLeaseGrant::Granted(NodeLease {
                    node: node.to_owned(),
                    incarnation: incarnation as u64,
                }))
            };
            match self.node_row(node).await? {
                None => {
                    if self
                        .lwt(&self.q.leases.insert_node, (node, 1i64, expires))
                        .await?
                    {
                        return granted(1);
                    }
                }
                Some((incarnation, expires_at)) => {
                    // This process's own lost lease, released, or run out
                    // with the grace for its last writes passed.
                    let ours = previous.is_some_and(|p| p.incarnation as i64 == incarnation);
                    let until = (expires_at.max(0) as u64).saturating_add(self.node_grace_ms);
                    if expires_at != 0 && !ours && now <= until {
                        return Ok(NodeLeaseGrant::Held { until_ms: until });
                    }
                    let values = (incarnation + 1, expires, node, incarnation, expires_at);
                    if self.lwt(&self.q.leases.take_node, values).await? {
                        return granted(incarnation + 1);
                    }
                }
            }
        }
        Ok(NodeLeaseGrant::Held {
            until_ms: now_ms() + self.lease_ms / 3,
        })
    }

    async fn renew_node_lease(&self, lease: &NodeLease) -> Result<bool, StoreError> {
        let expires = (now_ms() + self.lease_ms) as i64;
        let incarnation = lease.incarnation as i64;
        let values = (incarnation, expires, lease.node.as_str(), incarnation);
        let held = self.lwt(&self.q.leases.renew_node, values).await?;
        if !held {
            self.forget_all_leases();
        }
        Ok(held)
    }

    async fn release_node_lease(&self, lease: &NodeLease) -> Result<(), StoreError> {
        self.forget_all_leases();
        // Run out now rather than released: a claim left under it (an
        // actor that could not release its own) is taken after the grace,
        // once a write this node abandoned has landed or been dropped.
        let incarnation = lease.incarnation as i64;
        let values = (
            incarnation,
            now_ms() as i64,
            lease.node.as_str(),
            incarnation,
        );
        self.lwt(&self.q.leases.release_node, values).await?;
        Ok(())
    }

    async fn claim(
        &self,
        conversation: &ConversationId,
        holder: &NodeLease,
    ) -> Result<LeaseGrant, StoreError> {
        self.acquire(conversation, &holder.node, Some(holder)).await
    }

    async fn acquire_lease(
        &self,
        key: &ConversationId,
        owner: &str,
    ) -> Result<LeaseGrant, StoreError> {
        self.acquire(key, owner, None).await
    }

    async fn renew_lease(&self, lease: &Lease) -> Result<bool, StoreError> {
        let expires = (now_ms() + self.lease_ms) as i64;
        let values = (
            expires,
            lease.conversation.as_str(),
            lease.owner.as_str(),
            lease.epoch as i64,
        );
        let held = self.lwt(&self.q.leases.renew_lease, values).await?;
        if !held {
            self.forget_lease(&lease.conversation);
        }
        Ok(held)
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        self.forget_lease(&lease.conversation);
        let values = (
            lease.conversation.as_str(),
            lease.owner.as_str(),
            lease.epoch as i64,
        );
        self.lwt(&self.q.leases.release_lease, values).await?;
        Ok(())
    }

    fn claim_grace(&self) -> Duration {
        Duration::from_millis(self.node_grace_ms)
    }

    fn lease_transactions(&self) -> u64 {
        self.lease_transactions.load(Ordering::Relaxed)
    }

    async fn append_new_leased(
        &self,
        lease: &Lease,
        messages: &[Message],
    ) -> Result<Vec<Option<Message>>, StoreError> {
        // The lease holder is the conversation's only writer: a plain read
        // of each key decides, with no transaction per message.
        debug_assert!(messages
            .iter()
            .all(|m| m.conversation == lease.conversation));
        let claimed = try_join_all(messages.iter().map(|m| async move {
            let rows = self
                .rows(&self.q.history.select_client_msg_id, index_key(m))
                .await?;
            Ok::<_, StoreError>(
                rows.maybe_first_row::<(i64,)>()
                    .map_err(corrupt)?
                    .map(|(id,)| MessageId(id as u64)),
            )
        }))
        .await?;
        let claimed = own_claims_are_fresh(messages, claimed);
        let fresh: Vec<&Message> = messages
            .iter()
            .zip(&claimed)
            .filter(|(_, c)| c.is_none())
            .map(|(m, _)| m)
            .collect();
        self.index_and_write(&fresh).await?;
        self.held_messages(messages, claimed).await
    }
}
