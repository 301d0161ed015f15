//! Notification settings, levels and push subscriptions on ScyllaDB: one
//! MessagePack blob per row, keyed by user (and conversation or
//! subscription), the last write winning.

use async_trait::async_trait;
use chat_protocol::notify::{ConversationNotify, NotificationSettings, PushSubscription};
use chat_protocol::{ConversationId, UserId};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::cql::applied;
use super::store::ScyllaStore;
use crate::notifications::oldest_first;
use crate::{corrupt, NotificationStore, StoreError};

/// A value as its blob column holds it.
pub(super) fn blob<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    rmp_serde::to_vec_named(value).map_err(corrupt)
}

/// A blob column's value.
pub(super) fn unblob<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    rmp_serde::from_slice(bytes).map_err(corrupt)
}

impl ScyllaStore {
    /// The one blob a keyed read finds, decoded.
    pub(super) async fn one_blob<T: DeserializeOwned>(
        &self,
        statement: &scylla::statement::prepared::PreparedStatement,
        key: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Option<T>, StoreError> {
        let rows = self.rows(statement, key).await?;
        match rows.maybe_first_row::<(Vec<u8>,)>().map_err(corrupt)? {
            Some((bytes,)) => unblob(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Every blob a query finds, decoded, page by page.
    pub(super) async fn all_blobs<T: DeserializeOwned>(
        &self,
        statement: &scylla::statement::prepared::PreparedStatement,
        key: impl scylla::serialize::row::SerializeRow + Clone,
    ) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        self.for_each_row(statement, key, |rows| {
            for row in rows.rows::<(Vec<u8>,)>().map_err(corrupt)? {
                out.push(unblob(&row.map_err(corrupt)?.0)?);
            }
            Ok(true)
        })
        .await?;
        Ok(out)
    }
}

#[async_trait]
impl NotificationStore for ScyllaStore {
    async fn notification_settings(
        &self,
        user: &UserId,
    ) -> Result<Option<NotificationSettings>, StoreError> {
        self.one_blob(&self.q.notify.select_settings, (user.as_str(),))
            .await
    }

    async fn put_notification_settings(
        &self,
        user: &UserId,
        settings: &NotificationSettings,
    ) -> Result<(), StoreError> {
        self.run(
            &self.q.notify.put_settings,
            (user.as_str(), blob(settings)?),
        )
        .await?;
        Ok(())
    }

    async fn conversation_notify(
        &self,
        user: &UserId,
        conversation: &ConversationId,
    ) -> Result<Option<ConversationNotify>, StoreError> {
        self.one_blob(
            &self.q.notify.select_level,
            (user.as_str(), conversation.as_str()),
        )
        .await
    }

    async fn conversation_notifies(
        &self,
        user: &UserId,
    ) -> Result<Vec<(ConversationId, ConversationNotify)>, StoreError> {
        let mut out = Vec::new();
        self.for_each_row(&self.q.notify.select_levels, (user.as_str(),), |rows| {
            for row in rows.rows::<(String, Vec<u8>)>().map_err(corrupt)? {
                let (id, bytes) = row.map_err(corrupt)?;
                out.push((ConversationId::new(&id).map_err(corrupt)?, unblob(&bytes)?));
            }
            Ok(true)
        })
        .await?;
        Ok(out)
    }

    async fn put_conversation_notify(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        notify: &ConversationNotify,
    ) -> Result<(), StoreError> {
        self.run(
            &self.q.notify.put_level,
            (user.as_str(), conversation.as_str(), blob(notify)?),
        )
        .await?;
        Ok(())
    }

    async fn put_push_subscription(
        &self,
        user: &UserId,
        subscription: &PushSubscription,
    ) -> Result<(), StoreError> {
        self.run(
            &self.q.notify.put_subscription,
            (user.as_str(), subscription.id.as_str(), blob(subscription)?),
        )
        .await?;
        Ok(())
    }

    async fn push_subscriptions(&self, user: &UserId) -> Result<Vec<PushSubscription>, StoreError> {
        let subs = self
            .all_blobs(&self.q.notify.select_subscriptions, (user.as_str(),))
            .await?;
        Ok(oldest_first(subs))
    }

    async fn delete_push_subscription(&self, user: &UserId, id: &str) -> Result<bool, StoreError> {
        let result = self
            .run(&self.q.notify.delete_subscription, (user.as_str(), id))
            .await?;
        applied(result)
    }
}
