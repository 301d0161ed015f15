//! Profiles and the name index on the replicated store: registers, read
//! from this node's copy, written here and on every node.

use async_trait::async_trait;
use chat_protocol::UserId;

use super::store::ReplicatedStore;
use crate::embedded::Writes;
use crate::profiles::{NameEntry, ProfileRecord};
use crate::{ProfileStore, StoreError};

#[async_trait]
impl ProfileStore for ReplicatedStore {
    async fn profile(&self, user: &UserId) -> Result<Option<ProfileRecord>, StoreError> {
        self.local.profile(user).await
    }

    async fn put_profile(
        &self,
        user: &UserId,
        old: Option<&ProfileRecord>,
        new: &ProfileRecord,
    ) -> Result<(), StoreError> {
        self.registers(Writes::profile(user, old, new)?).await
    }

    async fn find_names(&self, prefix: &str, limit: usize) -> Result<Vec<NameEntry>, StoreError> {
        self.local.find_names(prefix, limit).await
    }
}
