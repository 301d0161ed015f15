//! Contacts, blocks and privacy on the replicated store: a register per
//! user, read from this node's copy, written here and on every node.

use async_trait::async_trait;
use chat_protocol::people::Relations;
use chat_protocol::UserId;

use super::store::ReplicatedStore;
use crate::embedded::Writes;
use crate::{RelationStore, StoreError};

#[async_trait]
impl RelationStore for ReplicatedStore {
    async fn relations(&self, user: &UserId) -> Result<Option<Relations>, StoreError> {
        self.local.relations(user).await
    }

    async fn put_relations(&self, user: &UserId, relations: &Relations) -> Result<(), StoreError> {
        self.registers(Writes::relations(user, relations)?).await
    }
}
