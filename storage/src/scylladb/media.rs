//! Media records on ScyllaDB (see `statements/media.rs`). A reference is
//! kept as its text ([`MediaRef::to_key`]), which is also its clustering
//! key: the same reference written twice is one row.

use async_trait::async_trait;
use chat_protocol::UserId;

use super::notifications::blob;
use super::store::ScyllaStore;
use crate::media::{MediaRecord, MediaRef};
use crate::{corrupt, MediaStore, StoreError};

#[async_trait]
impl MediaStore for ScyllaStore {
    async fn put_media(&self, record: &MediaRecord) -> Result<(), StoreError> {
        let q = &self.q.media;
        // The record first: an owner's row never names a missing record.
        self.run(&q.put, (record.id.as_str(), blob(record)?))
            .await?;
        self.run(
            &q.put_owned,
            (
                record.owner.as_str(),
                record.id.as_str(),
                i64::try_from(record.size).unwrap_or(i64::MAX),
            ),
        )
        .await?;
        Ok(())
    }

    async fn media(&self, id: &str) -> Result<Option<MediaRecord>, StoreError> {
        self.one_blob(&self.q.media.select, (id,)).await
    }

    async fn media_usage(&self, owner: &UserId) -> Result<u64, StoreError> {
        let mut total = 0u64;
        self.for_each_row(&self.q.media.select_owned, (owner.as_str(),), |rows| {
            for row in rows.rows::<(i64,)>().map_err(corrupt)? {
                let (size,) = row.map_err(corrupt)?;
                total = total.saturating_add(u64::try_from(size).unwrap_or(0));
            }
            Ok(true)
        })
        .await?;
        Ok(total)
    }

    async fn add_media_ref(&self, id: &str, reference: &MediaRef) -> Result<(), StoreError> {
        self.run(&self.q.media.put_ref, (id, reference.to_key()))
            .await?;
        Ok(())
    }

    async fn remove_media_ref(&self, id: &str, reference: &MediaRef) -> Result<(), StoreError> {
        self.run(&self.q.media.delete_ref, (id, reference.to_key()))
            .await?;
        Ok(())
    }

    async fn media_refs(&self, id: &str, limit: usize) -> Result<Vec<MediaRef>, StoreError> {
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let rows = self.rows(&self.q.media.select_refs, (id, limit)).await?;
        let mut found = Vec::new();
        for row in rows.rows::<(&str,)>().map_err(corrupt)? {
            let (text,) = row.map_err(corrupt)?;
            found.push(
                MediaRef::from_key(text).ok_or_else(|| corrupt("malformed media reference"))?,
            );
        }
        Ok(found)
    }

    async fn delete_media(&self, record: &MediaRecord) -> Result<(), StoreError> {
        let q = &self.q.media;
        // The owner's row first: the quota frees only what is really gone
        // from it, and a record left by a failure here is found again.
        self.run(&q.delete_refs, (record.id.as_str(),)).await?;
        self.run(&q.delete_owned, (record.owner.as_str(), record.id.as_str()))
            .await?;
        self.run(&q.delete, (record.id.as_str(),)).await?;
        Ok(())
    }
}
