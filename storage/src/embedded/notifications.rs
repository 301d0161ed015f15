//! Notification settings and push subscriptions on the embedded store:
//! one MessagePack value per user, per (user, conversation) and per (user,
//! subscription).

use async_trait::async_trait;
use chat_protocol::notify::{ConversationNotify, NotificationSettings, PushSubscription};
use chat_protocol::{ConversationId, UserId};

use super::keys::{decode, encode, key_of, last_part};
use super::keyspaces::{Inner, Table};
use super::registers::{RegisterTable, Writes};
use super::EmbeddedStore;
use crate::notifications::oldest_first;
use crate::{corrupt, unavailable, NotificationStore, StoreError};

impl Inner {
    fn get_value<T: serde::de::DeserializeOwned>(
        &self,
        table: Table,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        self.table(table)
            .get(key)
            .map_err(unavailable)?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    /// The values under `user`'s prefix, with the key part that follows.
    fn user_values<T: serde::de::DeserializeOwned>(
        &self,
        table: Table,
        user: &UserId,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let prefix = key_of(&[user.as_str()]);
        let mut out = Vec::new();
        for guard in self.table(table).prefix(&prefix) {
            let (key, value) = guard.into_inner().map_err(unavailable)?;
            out.push((last_part(&key, prefix.len())?.to_owned(), decode(&value)?));
        }
        Ok(out)
    }
}

impl Writes {
    /// [`NotificationStore::put_notification_settings`].
    pub(crate) fn notification_settings(
        user: &UserId,
        settings: &NotificationSettings,
    ) -> Result<Writes, StoreError> {
        let key = key_of(&[user.as_str()]);
        Ok(Writes::one(
            RegisterTable::NotifySettings,
            key,
            Some(encode(settings)?),
        ))
    }

    /// [`NotificationStore::put_conversation_notify`].
    pub(crate) fn conversation_notify(
        user: &UserId,
        conversation: &ConversationId,
        notify: &ConversationNotify,
    ) -> Result<Writes, StoreError> {
        let key = key_of(&[user.as_str(), conversation.as_str()]);
        Ok(Writes::one(
            RegisterTable::NotifyConversations,
            key,
            Some(encode(notify)?),
        ))
    }

    /// [`NotificationStore::put_push_subscription`].
    pub(crate) fn push_subscription(
        user: &UserId,
        subscription: &PushSubscription,
    ) -> Result<Writes, StoreError> {
        let key = key_of(&[user.as_str(), subscription.id.as_str()]);
        Ok(Writes::one(
            RegisterTable::PushSubscriptions,
            key,
            Some(encode(subscription)?),
        ))
    }

    /// [`NotificationStore::delete_push_subscription`].
    pub(crate) fn delete_push_subscription(user: &UserId, id: &str) -> Writes {
        Writes::one(
            RegisterTable::PushSubscriptions,
            key_of(&[user.as_str(), id]),
            None,
        )
    }
}

impl EmbeddedStore {
    /// Commits `writes`.
    pub(crate) async fn write(&self, writes: Writes) -> Result<(), StoreError> {
        self.update(move |txn| {
            txn.apply_writes(&writes);
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl NotificationStore for EmbeddedStore {
    async fn notification_settings(
        &self,
        user: &UserId,
    ) -> Result<Option<NotificationSettings>, StoreError> {
        let key = key_of(&[user.as_str()]);
        self.inline(|s| s.get_value(Table::NotifySettings, &key))
    }

    async fn put_notification_settings(
        &self,
        user: &UserId,
        settings: &NotificationSettings,
    ) -> Result<(), StoreError> {
        self.write(Writes::notification_settings(user, settings)?)
            .await
    }

    async fn conversation_notify(
        &self,
        user: &UserId,
        conversation: &ConversationId,
    ) -> Result<Option<ConversationNotify>, StoreError> {
        let key = key_of(&[user.as_str(), conversation.as_str()]);
        self.inline(|s| s.get_value(Table::NotifyConversations, &key))
    }

    async fn conversation_notifies(
        &self,
        user: &UserId,
    ) -> Result<Vec<(ConversationId, ConversationNotify)>, StoreError> {
        let user = user.clone();
        let found = self
            .blocking(move |s| s.user_values(Table::NotifyConversations, &user))
            .await?;
        found
            .into_iter()
            .map(|(id, n)| Ok((ConversationId::new(&id).map_err(corrupt)?, n)))
            .collect()
    }

    async fn put_conversation_notify(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        notify: &ConversationNotify,
    ) -> Result<(), StoreError> {
        self.write(Writes::conversation_notify(user, conversation, notify)?)
            .await
    }

    async fn put_push_subscription(
        &self,
        user: &UserId,
        subscription: &PushSubscription,
    ) -> Result<(), StoreError> {
        self.write(Writes::push_subscription(user, subscription)?)
            .await
    }

    async fn push_subscriptions(&self, user: &UserId) -> Result<Vec<PushSubscription>, StoreError> {
        let user = user.clone();
        let found = self
            .blocking(move |s| s.user_values::<PushSubscription>(Table::PushSubscriptions, &user))
            .await?;
        Ok(oldest_first(found.into_iter().map(|(_, s)| s).collect()))
    }

    async fn delete_push_subscription(&self, user: &UserId, id: &str) -> Result<bool, StoreError> {
        let key = key_of(&[user.as_str(), id]);
        self.update(move |txn| {
            let held = txn.get(Table::PushSubscriptions, &key)?.is_some();
            txn.set(Table::PushSubscriptions, key, None);
            Ok(held)
        })
        .await
    }
}
