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
    /// Stores a new record, and counts its size against its owner.
    async fn put_media(&self, record: &MediaRecord) -> Result<(), StoreError>;

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

    /// Deletes the record, its references and its count against its owner
    /// (the caller deletes the bytes).
    async fn delete_media(&self, record: &MediaRecord) -> Result<(), StoreError>;
}
