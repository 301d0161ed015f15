//! [`AccessStore`] on the replicated store: this node's copy answers, in
//! the one read of the embedded store under it.

use async_trait::async_trait;
use chat_protocol::UserId;

use super::store::ReplicatedStore;
use crate::{AccessFacts, AccessStore, StoreError};

#[async_trait]
impl AccessStore for ReplicatedStore {
    async fn access_facts(
        &self,
        user: &UserId,
        logins: &[&str],
    ) -> Result<AccessFacts, StoreError> {
        self.local.access_facts(user, logins).await
    }
}
