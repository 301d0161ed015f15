//! Contacts, blocks and privacy on ScyllaDB: one row per user, written
//! whole (only its owner's requests write it).

use async_trait::async_trait;
use chat_protocol::people::Relations;
use chat_protocol::UserId;

use super::notifications::blob;
use super::store::ScyllaStore;
use crate::{RelationStore, StoreError};

#[async_trait]
impl RelationStore for ScyllaStore {
    async fn relations(&self, user: &UserId) -> Result<Option<Relations>, StoreError> {
        self.one_blob(&self.q.relations.select, (user.as_str(),))
            .await
    }

    async fn put_relations(&self, user: &UserId, relations: &Relations) -> Result<(), StoreError> {
        self.run(&self.q.relations.put, (user.as_str(), blob(relations)?))
            .await?;
        Ok(())
    }
}
