//! Conversation write leases on ScyllaDB (`conversation_leases`, taken
//! and renewed with lightweight transactions), and the append of a lease
//! holder, which needs none.

use std::time::Duration;

use async_trait::async_trait;
use chat_protocol::{now_ms, ConversationId, Message, MessageId};
use futures_util::future::try_join_all;

use super::cql::applied;
use super::history::{index_key, own_claims_are_fresh};
use super::store::ScyllaStore;
use crate::{corrupt, lock, Lease, LeaseGrant, LeaseStore, StoreError};

impl ScyllaStore {
    fn forget_lease(&self, conversation: &ConversationId) {
        lock(&self.leased).remove(conversation);
        lock(&self.bucket_lists).remove(conversation);
    }
}

#[async_trait]
impl LeaseStore for ScyllaStore {
    fn lease_ttl(&self) -> Option<Duration> {
        Some(Duration::from_millis(self.lease_ms))
    }

    async fn acquire_lease(
        &self,
        conversation: &ConversationId,
        owner: &str,
    ) -> Result<LeaseGrant, StoreError> {
        let id = conversation.as_str();
        let granted = |epoch: i64| {
            // Another holder may have written buckets since this handle last
            // held it: the list is read again.
            lock(&self.bucket_lists).remove(conversation);
            lock(&self.leased).insert(conversation.clone());
            LeaseGrant::Granted(Lease {
                conversation: conversation.clone(),
                owner: owner.to_owned(),
                epoch: epoch as u64,
            })
        };
        // Two rounds: a transaction lost to another taker is read again.
        for _ in 0..2 {
            let now = now_ms();
            let expires = (now + self.lease_ms) as i64;
            let rows = self.rows(&self.q.leases.select_lease, (id,)).await?;
            type LeaseRow = (Option<String>, Option<i64>, Option<i64>);
            let current = rows.maybe_first_row::<LeaseRow>().map_err(corrupt)?;
            let Some((held_by, epoch, expires_at)) = current else {
                let result = self
                    .run(&self.q.leases.insert_lease, (id, owner, 1i64, expires))
                    .await?;
                if applied(result)? {
                    return Ok(granted(1));
                }
                continue;
            };
            let (held_by, epoch) = (held_by.unwrap_or_default(), epoch.unwrap_or(0));
            let expires_at = expires_at.unwrap_or(0).max(0) as u64;
            // Released (0), ours (a restarted node of the same name), or run
            // out long enough ago that the holder's last writes have landed.
            let until = expires_at + self.lease_grace_ms;
            let free = expires_at == 0 || held_by == owner || now > until;
            if !free {
                return Ok(LeaseGrant::Held {
                    owner: held_by,
                    until_ms: until,
                });
            }
            let result = self
                .run(
                    &self.q.leases.take_lease,
                    (owner, epoch + 1, expires, id, epoch),
                )
                .await?;
            if applied(result)? {
                return Ok(granted(epoch + 1));
            }
        }
        let rows = self.rows(&self.q.leases.select_lease, (id,)).await?;
        let current = rows
            .maybe_first_row::<(Option<String>, Option<i64>, Option<i64>)>()
            .map_err(corrupt)?;
        let (held_by, _, expires_at) = current.unwrap_or_default();
        Ok(LeaseGrant::Held {
            owner: held_by.unwrap_or_default(),
            until_ms: expires_at.unwrap_or(0).max(0) as u64 + self.lease_grace_ms,
        })
    }

    async fn renew_lease(&self, lease: &Lease) -> Result<bool, StoreError> {
        let expires = (now_ms() + self.lease_ms) as i64;
        let result = self
            .run(
                &self.q.leases.renew_lease,
                (
                    expires,
                    lease.conversation.as_str(),
                    lease.owner.as_str(),
                    lease.epoch as i64,
                ),
            )
            .await?;
        let held = applied(result)?;
        if !held {
            self.forget_lease(&lease.conversation);
        }
        Ok(held)
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        self.forget_lease(&lease.conversation);
        self.run(
            &self.q.leases.release_lease,
            (
                lease.conversation.as_str(),
                lease.owner.as_str(),
                lease.epoch as i64,
            ),
        )
        .await?;
        Ok(())
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
