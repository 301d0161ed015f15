//! Notification settings, the outbox and e-mail addresses on the replicated
//! store: writes go out as register ops ([`super::registers`]), cursors as
//! max-merged ops; reads, marks and their clearing are the local store's
//! (every node marks its own copy when it applies a message write, and
//! clears what its own worker covered).

use async_trait::async_trait;
use chat_protocol::notify::{ConversationNotify, NotificationSettings, PushSubscription};
use chat_protocol::{ConversationId, UserId};

use super::apply::StoreOp;
use super::registers::next_ms;
use super::store::ReplicatedStore;
use crate::embedded::Writes;
use crate::outbox::{DeadJob, DigestItem, Job, Mark, NotifyCursor};
use crate::people::{EmailAddress, EmailToken};
use crate::{NotificationStore, OutboxStore, PeopleStore, StoreError};

impl ReplicatedStore {
    /// Writes `writes` here and on every node, versioned as one op.
    pub(super) async fn registers(&self, writes: Writes) -> Result<(), StoreError> {
        if writes.0.is_empty() {
            return Ok(());
        }
        self.write(move |txn| {
            let ms = next_ms(txn, &writes)?;
            Ok(((), Some(StoreOp::Registers { ms, writes })))
        })
        .await
    }
}

#[async_trait]
impl NotificationStore for ReplicatedStore {
    async fn notification_settings(
        &self,
        user: &UserId,
    ) -> Result<Option<NotificationSettings>, StoreError> {
        self.local.notification_settings(user).await
    }

    async fn put_notification_settings(
        &self,
        user: &UserId,
        settings: &NotificationSettings,
    ) -> Result<(), StoreError> {
        self.registers(Writes::notification_settings(user, settings)?)
            .await
    }

    async fn conversation_notify(
        &self,
        user: &UserId,
        conversation: &ConversationId,
    ) -> Result<Option<ConversationNotify>, StoreError> {
        self.local.conversation_notify(user, conversation).await
    }

    async fn conversation_notifies(
        &self,
        user: &UserId,
    ) -> Result<Vec<(ConversationId, ConversationNotify)>, StoreError> {
        self.local.conversation_notifies(user).await
    }

    async fn put_conversation_notify(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        notify: &ConversationNotify,
    ) -> Result<(), StoreError> {
        self.registers(Writes::conversation_notify(user, conversation, notify)?)
            .await
    }

    async fn put_push_subscription(
        &self,
        user: &UserId,
        subscription: &PushSubscription,
    ) -> Result<(), StoreError> {
        self.registers(Writes::push_subscription(user, subscription)?)
            .await
    }

    async fn push_subscriptions(&self, user: &UserId) -> Result<Vec<PushSubscription>, StoreError> {
        self.local.push_subscriptions(user).await
    }

    async fn delete_push_subscription(&self, user: &UserId, id: &str) -> Result<bool, StoreError> {
        let held = self
            .local
            .push_subscriptions(user)
            .await?
            .iter()
            .any(|s| s.id == id);
        if held {
            self.registers(Writes::delete_push_subscription(user, id))
                .await?;
        }
        Ok(held)
    }
}

#[async_trait]
impl OutboxStore for ReplicatedStore {
    async fn marks(&self, shard: u32, limit: usize) -> Result<Vec<Mark>, StoreError> {
        self.local.marks(shard, limit).await
    }

    async fn clear_mark(&self, shard: u32, mark: &Mark) -> Result<(), StoreError> {
        self.local.clear_mark(shard, mark).await
    }

    async fn notify_cursor(
        &self,
        conversation: &ConversationId,
    ) -> Result<NotifyCursor, StoreError> {
        self.local.notify_cursor(conversation).await
    }

    async fn set_notify_cursor(
        &self,
        conversation: &ConversationId,
        cursor: NotifyCursor,
    ) -> Result<(), StoreError> {
        let op = StoreOp::NotifyCursor {
            conversation: conversation.clone(),
            cursor,
        };
        self.write(move |_| Ok(((), Some(op)))).await
    }

    async fn put_jobs(&self, jobs: &[Job]) -> Result<(), StoreError> {
        self.registers(Writes::jobs(jobs)?).await
    }

    async fn due_jobs(
        &self,
        shard: u32,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        self.local.due_jobs(shard, now_ms, limit).await
    }

    async fn count_jobs(&self, shard: u32) -> Result<u64, StoreError> {
        self.local.count_jobs(shard).await
    }

    async fn delete_job(&self, job: &Job) -> Result<(), StoreError> {
        self.registers(Writes::delete_job(job)).await
    }

    async fn delete_jobs(&self, jobs: &[Job]) -> Result<(), StoreError> {
        self.registers(Writes::delete_jobs(jobs)).await
    }

    async fn put_dead_job(&self, dead: &DeadJob) -> Result<(), StoreError> {
        self.registers(Writes::dead_job(dead)?).await
    }

    async fn dead_jobs(&self, limit: usize) -> Result<Vec<DeadJob>, StoreError> {
        self.local.dead_jobs(limit).await
    }

    async fn take_dead_job(&self, id: u64) -> Result<Option<DeadJob>, StoreError> {
        let held = self
            .local
            .dead_jobs(usize::MAX)
            .await?
            .into_iter()
            .find(|d| d.job.id == id);
        if held.is_some() {
            self.registers(Writes::delete_dead_job(id)).await?;
        }
        Ok(held)
    }

    async fn add_digest_items(
        &self,
        user: &UserId,
        items: &[DigestItem],
    ) -> Result<(), StoreError> {
        self.registers(Writes::digest_items(user, items, true))
            .await
    }

    async fn digest_items(&self, user: &UserId) -> Result<Vec<DigestItem>, StoreError> {
        self.local.digest_items(user).await
    }

    async fn remove_digest_items(
        &self,
        user: &UserId,
        items: &[DigestItem],
    ) -> Result<(), StoreError> {
        self.registers(Writes::digest_items(user, items, false))
            .await
    }
}

#[async_trait]
impl PeopleStore for ReplicatedStore {
    async fn email(&self, user: &UserId) -> Result<Option<EmailAddress>, StoreError> {
        self.local.email(user).await
    }

    async fn put_email(&self, user: &UserId, email: &EmailAddress) -> Result<(), StoreError> {
        self.registers(Writes::email(user, email)?).await
    }

    async fn put_email_token(&self, token: &EmailToken) -> Result<(), StoreError> {
        self.registers(Writes::email_token(token)?).await
    }

    async fn take_email_token(&self, hash: &str) -> Result<Option<EmailToken>, StoreError> {
        // Taken here at once (the local store's writer decides between two
        // takers on this node); the delete then reaches the others. Two
        // nodes cut off from each other could each take it once.
        let taken = self.local.take_email_token(hash).await?;
        if taken.is_some() {
            self.registers(Writes::delete_email_token(hash)).await?;
        }
        Ok(taken)
    }
}
