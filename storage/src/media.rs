//! What the node knows of each uploaded file (the bytes themselves live in
//! an object store, named by the media id): its owner, name, sniffed type,
//! size, hash and image dimensions; the owner's uploads, for the quota; and
//! what refers to it (a message that carries it, an avatar), which decides
//! who may read it and when its bytes are deleted.
//!
//! A reference names the message by its sender and `client_msg_id`, both
//! known before the conversation actor stores the message, so that the
//! reference is written first: a message never carries a file its members
//! cannot read. A send that then fails leaves a reference to nothing,
//! which grants only what the failed message would have (its members).

use async_trait::async_trait;
use chat_protocol::{ClientMsgId, ConversationId, UserId};
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// An image's thumbnail, as stored beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThumbnailRecord {
    /// Pixels.
    pub width: u32,
    /// Pixels.
    pub height: u32,
    /// `image/jpeg` or `image/png`.
    pub content_type: String,
    /// Bytes.
    pub size: u64,
}

/// One uploaded file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRecord {
    /// 32 hex digits; also the object's name.
    pub id: String,
    /// Who uploaded it.
    pub owner: UserId,
    /// Its name, cleaned of any path.
    pub name: String,
    /// Sniffed from the bytes.
    pub content_type: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
    /// Images: pixels (after EXIF orientation).
    #[serde(default)]
    pub width: Option<u32>,
    /// Images: pixels (after EXIF orientation).
    #[serde(default)]
    pub height: Option<u32>,
    /// Images: the thumbnail, when one was made.
    #[serde(default)]
    pub thumbnail: Option<ThumbnailRecord>,
    /// Unix milliseconds.
    pub created_at: u64,
    /// Set just before the bytes are deleted, so that a message attaching
    /// the file at that moment sees it and refuses (see [`refer`]).
    #[serde(default)]
    pub released: bool,
}

/// What refers to a file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MediaRef {
    /// A message carries it: the conversation's members may read it.
    Message {
        /// The message's conversation.
        conversation: ConversationId,
        /// Its sender.
        sender: UserId,
        /// Its idempotency key.
        client_msg_id: ClientMsgId,
    },
    /// It is `user`'s avatar: anyone signed in may read it.
    Avatar {
        /// Whose.
        user: UserId,
    },
}

impl MediaRef {
    /// The reference as one line of text: its parts joined by spaces,
    /// which no id holds.
    pub fn to_key(&self) -> String {
        match self {
            MediaRef::Message {
                conversation,
                sender,
                client_msg_id,
            } => format!("m {conversation} {sender} {client_msg_id}"),
            MediaRef::Avatar { user } => format!("a {user}"),
        }
    }

    /// The reference [`MediaRef::to_key`] wrote.
    pub fn from_key(key: &str) -> Option<MediaRef> {
        let parts: Vec<&str> = key.split(' ').collect();
        match parts.as_slice() {
            ["m", conversation, sender, client_msg_id] => Some(MediaRef::Message {
                conversation: ConversationId::new(conversation).ok()?,
                sender: UserId::new(sender).ok()?,
                client_msg_id: ClientMsgId::new(client_msg_id).ok()?,
            }),
            ["a", user] => Some(MediaRef::Avatar {
                user: UserId::new(user).ok()?,
            }),
            _ => None,
        }
    }
}

/// Uploaded files' records.
#[async_trait]
pub trait MediaStore: Send + Sync {
    /// Stores a new record, counts its size against its owner and lists it
    /// among the uploads not yet attached, by `created_at`.
    async fn put_media(&self, record: &MediaRecord) -> Result<(), StoreError>;

    /// Rewrites `record` alone (its `released` mark): its count and listing
    /// stay as they are.
    async fn update_media(&self, record: &MediaRecord) -> Result<(), StoreError>;

    /// Uploads listed by [`MediaStore::put_media`] and not yet forgotten,
    /// created in `[from_ms, before_ms)`, oldest first, at most `limit`, as
    /// `(created_at, id)`. A backend that shards the list by day reads at
    /// most [`UNATTACHED_LOOKBACK_MS`] before `before_ms`.
    async fn unattached_media(
        &self,
        from_ms: u64,
        before_ms: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError>;

    /// Takes `id` (created at `created_at`) off that list: it was found
    /// attached (no change when it is not listed).
    async fn forget_unattached(&self, created_at: u64, id: &str) -> Result<(), StoreError>;

    /// A record by id.
    async fn media(&self, id: &str) -> Result<Option<MediaRecord>, StoreError>;

    /// The bytes of every file `owner` has uploaded and not deleted.
    async fn media_usage(&self, owner: &UserId) -> Result<u64, StoreError>;

    /// Records that `reference` refers to `id` (again: no change).
    async fn add_media_ref(&self, id: &str, reference: &MediaRef) -> Result<(), StoreError>;

    /// Forgets `reference` to `id` (none: no change).
    async fn remove_media_ref(&self, id: &str, reference: &MediaRef) -> Result<(), StoreError>;

    /// What refers to `id`, at most `limit` of them.
    async fn media_refs(&self, id: &str, limit: usize) -> Result<Vec<MediaRef>, StoreError>;

    /// Deletes the record, its references, its count against its owner
    /// and its listing (the caller deletes the bytes).
    async fn delete_media(&self, record: &MediaRecord) -> Result<(), StoreError>;
}

/// How far back the sweeper of unattached uploads looks; see
/// [`MediaStore::unattached_media`].
pub const UNATTACHED_LOOKBACK_MS: u64 = 60 * 86_400_000;

/// Attaches `id` to `reference`: records the reference, then reads the
/// record again. A file being deleted (`released`, or already gone) loses
/// its new reference and comes back `None`.
///
/// This pairs with [`MediaStore::update_media`]'s mark in the node's
/// release: each side writes its own fact, then reads the other's, so at
/// least one sees the other. A release that sees the new reference keeps
/// the file; an attach that sees the mark refuses it; never a message
/// carrying bytes that are gone.
pub async fn refer(
    store: &(impl MediaStore + ?Sized),
    id: &str,
    reference: &MediaRef,
) -> Result<Option<MediaRecord>, StoreError> {
    store.add_media_ref(id, reference).await?;
    match store.media(id).await? {
        Some(record) if !record.released => Ok(Some(record)),
        _ => {
            store.remove_media_ref(id, reference).await?;
            Ok(None)
        }
    }
}
