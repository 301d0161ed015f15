//! A user's contacts, blocks and privacy settings, kept as one record per
//! user (`chat_protocol::people::Relations`): read whole on the paths that
//! enforce them (starting a direct conversation, inviting, notifying,
//! presence), written whole by their owner's own requests.

use async_trait::async_trait;
use chat_protocol::people::Relations;
use chat_protocol::UserId;

use crate::StoreError;

/// Contacts, blocks and privacy.
#[async_trait]
pub trait RelationStore: Send + Sync {
    /// `user`'s record; `None` when they never set any (everyone admitted).
    async fn relations(&self, user: &UserId) -> Result<Option<Relations>, StoreError>;

    /// Replaces `user`'s record.
    async fn put_relations(&self, user: &UserId, relations: &Relations) -> Result<(), StoreError>;
}
