//! Media records on ScyllaDB (see `statements/media.rs`). A reference is
//! kept as its text ([`MediaRef::to_key`]), which is also its clustering
//! key: the same reference written twice is one row.

use async_trait::async_trait;
use chat_protocol::UserId;

use super::notifications::blob;
use super::store::ScyllaStore;
use crate::media::{MediaRecord, MediaRef, UNATTACHED_LOOKBACK_MS};
use crate::{corrupt, MediaStore, StoreError};

/// The partition of uploads made at `ms`: its day since the epoch.
fn day_of(ms: u64) -> i64 {
    to_i64(ms / 86_400_000)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

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
        let created_at = to_i64(record.created_at);
        self.run(
            &q.put_unattached,
            (day_of(record.created_at), created_at, record.id.as_str()),
        )
        .await?;
        Ok(())
    }

    async fn update_media(&self, record: &MediaRecord) -> Result<(), StoreError> {
        self.run(&self.q.media.put, (record.id.as_str(), blob(record)?))
            .await?;
        Ok(())
    }

    async fn unattached_media(
        &self,
        from_ms: u64,
        before_ms: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let from_ms = from_ms.max(before_ms.saturating_sub(UNATTACHED_LOOKBACK_MS));
        let mut found = Vec::new();
        if from_ms >= before_ms {
            return Ok(found);
        }
        // A day's partition at a time, oldest first, until `limit`.
        for day in day_of(from_ms)..=day_of(before_ms - 1) {
            let room = limit.saturating_sub(found.len());
            if room == 0 {
                break;
            }
            let rows = self
                .rows(
                    &self.q.media.select_unattached,
                    (
                        day,
                        to_i64(from_ms),
                        to_i64(before_ms),
                        i32::try_from(room).unwrap_or(i32::MAX),
                    ),
                )
                .await?;
            for row in rows.rows::<(i64, &str)>().map_err(corrupt)? {
                let (created_at, id) = row.map_err(corrupt)?;
                found.push((u64::try_from(created_at).unwrap_or(0), id.to_owned()));
            }
        }
        Ok(found)
    }

    async fn forget_unattached(&self, created_at: u64, id: &str) -> Result<(), StoreError> {
        self.run(
            &self.q.media.delete_unattached,
            (day_of(created_at), to_i64(created_at), id),
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
        self.forget_unattached(record.created_at, &record.id).await
    }
}
