//! Media records on the replicated store: registers, read from this node's
//! copy, written here and on every node.

use async_trait::async_trait;
use chat_protocol::UserId;

use super::store::ReplicatedStore;
use crate::embedded::Writes;
use crate::media::{MediaRecord, MediaRef};
use crate::{MediaStore, StoreError};

#[async_trait]
impl MediaStore for ReplicatedStore {
    async fn put_media(&self, record: &MediaRecord) -> Result<(), StoreError> {
        self.registers(Writes::media(record)?).await
    }

    async fn update_media(&self, record: &MediaRecord) -> Result<(), StoreError> {
        self.registers(Writes::media_record(record)?).await
    }

    async fn unattached_media(
        &self,
        from_ms: u64,
        before_ms: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        self.local.unattached_media(from_ms, before_ms, limit).await
    }

    async fn forget_unattached(&self, created_at: u64, id: &str) -> Result<(), StoreError> {
        self.registers(Writes::media_attached(created_at, id)).await
    }

    async fn media(&self, id: &str) -> Result<Option<MediaRecord>, StoreError> {
        self.local.media(id).await
    }

    async fn media_usage(&self, owner: &UserId) -> Result<u64, StoreError> {
        self.local.media_usage(owner).await
    }

    async fn add_media_ref(&self, id: &str, reference: &MediaRef) -> Result<(), StoreError> {
        self.registers(Writes::media_ref(id, reference, true)?)
            .await
    }

    async fn remove_media_ref(&self, id: &str, reference: &MediaRef) -> Result<(), StoreError> {
        self.registers(Writes::media_ref(id, reference, false)?)
            .await
    }

    async fn media_refs(&self, id: &str, limit: usize) -> Result<Vec<MediaRef>, StoreError> {
        self.local.media_refs(id, limit).await
    }

    async fn delete_media(&self, record: &MediaRecord) -> Result<(), StoreError> {
        let refs = self.local.media_refs(&record.id, usize::MAX).await?;
        self.registers(Writes::media_deleted(record, &refs)).await
    }
}
