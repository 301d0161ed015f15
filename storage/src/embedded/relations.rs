//! Contacts, blocks and privacy on the embedded store: one register per user.

use async_trait::async_trait;
use chat_protocol::people::Relations;
use chat_protocol::UserId;

use super::keys::{decode, encode, key_of};
use super::registers::{RegisterTable, Writes};
use super::EmbeddedStore;
use crate::{unavailable, RelationStore, StoreError};

impl Writes {
    /// [`RelationStore::put_relations`].
    pub(crate) fn relations(user: &UserId, relations: &Relations) -> Result<Writes, StoreError> {
        Ok(Writes::one(
            RegisterTable::Relations,
            key_of(&[user.as_str()]),
            Some(encode(relations)?),
        ))
    }
}

#[async_trait]
impl RelationStore for EmbeddedStore {
    async fn relations(&self, user: &UserId) -> Result<Option<Relations>, StoreError> {
        let key = key_of(&[user.as_str()]);
        self.inline(|s| {
            s.relations
                .get(&key)
                .map_err(unavailable)?
                .map(|b| decode(&b))
                .transpose()
        })
    }

    async fn put_relations(&self, user: &UserId, relations: &Relations) -> Result<(), StoreError> {
        self.write(Writes::relations(user, relations)?).await
    }
}
