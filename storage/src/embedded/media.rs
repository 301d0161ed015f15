//! Media records on the embedded store, as registers: the record by id, the
//! owner's uploads (`owner, id` → size: the quota is a prefix scan) and the
//! references (`id, reference` → the reference).

use async_trait::async_trait;
use chat_protocol::UserId;

use super::keys::{decode, decode_u64, encode, key_of};
use super::registers::{RegisterTable, Writes};
use super::EmbeddedStore;
use crate::media::{MediaRecord, MediaRef};
use crate::{corrupt, unavailable, MediaStore, StoreError};

/// The key of a listed upload: its creation time (big-endian, so keys
/// sort by it), then its id.
fn unattached_key(created_at: u64, id: &str) -> Vec<u8> {
    let mut key = created_at.to_be_bytes().to_vec();
    key.extend_from_slice(id.as_bytes());
    key
}

/// The `(created_at, id)` an [`unattached_key`] holds.
fn unattached_of(key: &[u8]) -> Result<(u64, String), StoreError> {
    let (time, id) = key
        .split_first_chunk::<8>()
        .ok_or_else(|| corrupt("short unattached-upload key"))?;
    let id = std::str::from_utf8(id).map_err(|_| corrupt("unattached-upload key not UTF-8"))?;
    Ok((u64::from_be_bytes(*time), id.to_owned()))
}

/// The key of a reference: the media id, then the reference's own parts.
fn ref_key(id: &str, reference: &MediaRef) -> Vec<u8> {
    match reference {
        MediaRef::Message {
            conversation,
            sender,
            client_msg_id,
        } => key_of(&[
            id,
            "m",
            conversation.as_str(),
            sender.as_str(),
            client_msg_id.as_str(),
        ]),
        MediaRef::Avatar { user } => key_of(&[id, "a", user.as_str()]),
    }
}

impl Writes {
    /// [`MediaStore::put_media`].
    pub(crate) fn media(record: &MediaRecord) -> Result<Writes, StoreError> {
        let mut w = Writes::default();
        w.put(RegisterTable::Media, key_of(&[&record.id]), encode(record)?);
        w.put(
            RegisterTable::MediaOwners,
            key_of(&[record.owner.as_str(), &record.id]),
            record.size.to_be_bytes().to_vec(),
        );
        w.put(
            RegisterTable::MediaUnattached,
            unattached_key(record.created_at, &record.id),
            Vec::new(),
        );
        Ok(w)
    }

    /// [`MediaStore::update_media`].
    pub(crate) fn media_record(record: &MediaRecord) -> Result<Writes, StoreError> {
        Ok(Writes::one(
            RegisterTable::Media,
            key_of(&[&record.id]),
            Some(encode(record)?),
        ))
    }

    /// [`MediaStore::forget_unattached`].
    pub(crate) fn media_attached(created_at: u64, id: &str) -> Writes {
        Writes::one(
            RegisterTable::MediaUnattached,
            unattached_key(created_at, id),
            None,
        )
    }

    /// [`MediaStore::add_media_ref`] (`Some`) and
    /// [`MediaStore::remove_media_ref`] (`None`).
    pub(crate) fn media_ref(
        id: &str,
        reference: &MediaRef,
        on: bool,
    ) -> Result<Writes, StoreError> {
        let key = ref_key(id, reference);
        Ok(Writes::one(
            RegisterTable::MediaRefs,
            key,
            on.then(|| encode(reference)).transpose()?,
        ))
    }

    /// [`MediaStore::delete_media`], given the references still recorded.
    pub(crate) fn media_deleted(record: &MediaRecord, refs: &[MediaRef]) -> Writes {
        let mut w = Writes::default();
        w.delete(RegisterTable::Media, key_of(&[&record.id]));
        w.delete(
            RegisterTable::MediaOwners,
            key_of(&[record.owner.as_str(), &record.id]),
        );
        for r in refs {
            w.delete(RegisterTable::MediaRefs, ref_key(&record.id, r));
        }
        w.delete(
            RegisterTable::MediaUnattached,
            unattached_key(record.created_at, &record.id),
        );
        w
    }
}

#[async_trait]
impl MediaStore for EmbeddedStore {
    async fn put_media(&self, record: &MediaRecord) -> Result<(), StoreError> {
        self.write(Writes::media(record)?).await
    }

    async fn update_media(&self, record: &MediaRecord) -> Result<(), StoreError> {
        self.write(Writes::media_record(record)?).await
    }

    async fn unattached_media(
        &self,
        from_ms: u64,
        before_ms: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        if from_ms >= before_ms {
            return Ok(Vec::new());
        }
        let (first, last) = (from_ms.to_be_bytes(), before_ms.to_be_bytes());
        self.blocking(move |s| {
            let mut found = Vec::new();
            for guard in s.media_unattached.range(first..last).take(limit) {
                let key = guard.key().map_err(unavailable)?;
                found.push(unattached_of(&key)?);
            }
            Ok(found)
        })
        .await
    }

    async fn forget_unattached(&self, created_at: u64, id: &str) -> Result<(), StoreError> {
        self.write(Writes::media_attached(created_at, id)).await
    }

    async fn media(&self, id: &str) -> Result<Option<MediaRecord>, StoreError> {
        let key = key_of(&[id]);
        self.blocking(move |s| {
            s.media
                .get(&key)
                .map_err(unavailable)?
                .map(|b| decode(&b))
                .transpose()
        })
        .await
    }

    async fn media_usage(&self, owner: &UserId) -> Result<u64, StoreError> {
        let prefix = key_of(&[owner.as_str()]);
        self.blocking(move |s| {
            let mut total = 0u64;
            for guard in s.media_owners.prefix(&prefix) {
                let value = guard.value().map_err(unavailable)?;
                total = total.saturating_add(decode_u64(&value)?);
            }
            Ok(total)
        })
        .await
    }

    async fn add_media_ref(&self, id: &str, reference: &MediaRef) -> Result<(), StoreError> {
        self.write(Writes::media_ref(id, reference, true)?).await
    }

    async fn remove_media_ref(&self, id: &str, reference: &MediaRef) -> Result<(), StoreError> {
        self.write(Writes::media_ref(id, reference, false)?).await
    }

    async fn media_refs(&self, id: &str, limit: usize) -> Result<Vec<MediaRef>, StoreError> {
        let prefix = key_of(&[id]);
        self.blocking(move |s| {
            let mut found = Vec::new();
            for guard in s.media_refs.prefix(&prefix).take(limit) {
                found.push(decode(&guard.value().map_err(unavailable)?)?);
            }
            Ok(found)
        })
        .await
    }

    async fn delete_media(&self, record: &MediaRecord) -> Result<(), StoreError> {
        let refs = self.media_refs(&record.id, usize::MAX).await?;
        self.write(Writes::media_deleted(record, &refs)).await
    }
}
