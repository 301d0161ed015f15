//! What people chose about being notified: a user's settings (e-mail, push,
//! quiet hours), a member's level and mute per conversation, and the
//! browsers' Web Push subscriptions. Each is a small record written by its
//! owner's own requests, so every backend keeps the last write.

use async_trait::async_trait;
use chat_protocol::notify::{ConversationNotify, NotificationSettings, PushSubscription};
use chat_protocol::{ConversationId, UserId};

use crate::StoreError;

/// `subs` oldest first: how every backend lists a user's subscriptions.
pub(crate) fn oldest_first(mut subs: Vec<PushSubscription>) -> Vec<PushSubscription> {
    subs.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    subs
}

/// Notification settings and push subscriptions.
#[async_trait]
pub trait NotificationStore: Send + Sync {
    /// `user`'s settings; `None` when never set (the defaults apply).
    async fn notification_settings(
        &self,
        user: &UserId,
    ) -> Result<Option<NotificationSettings>, StoreError>;

    /// Replaces `user`'s settings.
    async fn put_notification_settings(
        &self,
        user: &UserId,
        settings: &NotificationSettings,
    ) -> Result<(), StoreError>;

    /// `user`'s setting for `conversation`; `None` when never set (the
    /// conversation kind's default applies).
    async fn conversation_notify(
        &self,
        user: &UserId,
        conversation: &ConversationId,
    ) -> Result<Option<ConversationNotify>, StoreError>;

    /// Every conversation setting `user` made, in no particular order: what
    /// the `conversations` list shows, read once per list.
    async fn conversation_notifies(
        &self,
        user: &UserId,
    ) -> Result<Vec<(ConversationId, ConversationNotify)>, StoreError>;

    /// Replaces `user`'s setting for `conversation`.
    async fn put_conversation_notify(
        &self,
        user: &UserId,
        conversation: &ConversationId,
        notify: &ConversationNotify,
    ) -> Result<(), StoreError>;

    /// Adds (or, under the same id, replaces) one of `user`'s subscriptions.
    async fn put_push_subscription(
        &self,
        user: &UserId,
        subscription: &PushSubscription,
    ) -> Result<(), StoreError>;

    /// `user`'s subscriptions, oldest first.
    async fn push_subscriptions(&self, user: &UserId) -> Result<Vec<PushSubscription>, StoreError>;

    /// Removes one of `user`'s subscriptions; `false` when it was not
    /// there.
    async fn delete_push_subscription(&self, user: &UserId, id: &str) -> Result<bool, StoreError>;
}
