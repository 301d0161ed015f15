//! Durable storage of history, conversations, read markers and accounts.
//!
//! [`MessageStore`] is what the actors and the node need from storage. Two
//! backends implement it: [`embedded::EmbeddedStore`] (fjall, an LSM tree on
//! local disk: the default for one machine) and [`scylladb::ScyllaStore`]
//! (a ScyllaDB or Cassandra cluster: nodes keep nothing on their own disk).
//! Both lay data out the same way: messages keyed by
//! `(conversation, bucket, id)` where `bucket` is a fixed window of the id's
//! timestamp, so no partition grows without bound; both pass the one
//! conformance suite (the `conformance` module, behind the feature of that
//! name, so that it is not part of the release library).
//!
//! This crate sits below the actors: it knows the protocol's types and
//! nothing of actors, sessions or the cluster. The replicated store reaches
//! other nodes only through the [`replicated::ReplicaLink`] trait, which the
//! actors implement.
//!
//! The conversation actor is the single writer of its conversation's messages,
//! members and read markers; the store does not arbitrate between writers,
//! except for what the auth code needs atomically (usernames, refresh-token
//! rotation).
#![deny(missing_docs, unreachable_pub, unsafe_code)]
#![warn(clippy::mod_module_files)]

use async_trait::async_trait;
use chat_protocol::{
    ClientMsgId, Conversation, ConversationId, Member, Message, MessageId, UserId,
};
use serde::{Deserialize, Serialize};

pub use operators::{AuditEntry, UserFlag, UserFlags};

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod embedded;
mod operators;
pub mod replicated;
pub mod scylladb;

/// Width of a history bucket: 7 days of message-id time. A page reads one or
/// two buckets; a conversation's busiest week bounds a partition.
pub const BUCKET_MS: u64 = 7 * 24 * 3600 * 1000;

/// The bucket a message id falls in (the embedded store's; the ScyllaDB
/// backend's width is configured).
pub fn bucket_of(id: MessageId) -> u32 {
    (id.timestamp_ms() / BUCKET_MS) as u32
}

/// What can go wrong in a store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or refused the write; nothing was stored.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Stored bytes could not be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A unique key (a username) is already taken.
    #[error("already exists")]
    Conflict,
}

/// Which page of history to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageQuery {
    /// Only ids strictly below.
    pub before: Option<MessageId>,
    /// Only ids strictly above.
    pub after: Option<MessageId>,
    /// Most messages to return (at least 1).
    pub limit: usize,
    /// Stop once the page's messages weigh this many bytes ([`page_weight`]:
    /// as stored or as encoded for a client, whichever is larger; the first
    /// message is always returned), so that a page of large messages is cut
    /// short (`more` tells) rather than held whole in memory or written as
    /// a reply larger than the bytes reserved for it.
    pub max_bytes: usize,
}

/// What a message weighs against a page's `max_bytes`: its stored size or
/// its size as a client receives it, whichever is larger, so that a page
/// bounds both what a read holds and the reply built from it.
pub fn page_weight(stored: usize, message: &Message) -> usize {
    stored.max(message.encoded_len_bound())
}

impl PageQuery {
    /// Up to `limit` messages in the range, however large.
    pub fn new(before: Option<MessageId>, after: Option<MessageId>, limit: usize) -> Self {
        PageQuery {
            before,
            after,
            limit,
            max_bytes: usize::MAX,
        }
    }
}

/// A page of history.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    /// Ascending by id. With `after` (and no `before`) these are the oldest
    /// messages above `after`; otherwise the newest messages in range.
    pub messages: Vec<Message>,
    /// Whether more messages lie in the range beyond this page.
    pub more: bool,
}

/// Messages whose state changed after a revision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    /// Ascending by `rev`, each in its current state.
    pub messages: Vec<Message>,
    /// Whether more changes lie between this page and the bound asked for.
    pub more: bool,
}

/// Width of a block of the revision index: revisions `b << REV_BLOCK_BITS`
/// and up share a partition, so no partition grows without bound.
pub const REV_BLOCK_BITS: u32 = 16;

/// The block of the revision index that `rev` falls in.
pub fn rev_block(rev: u64) -> u64 {
    rev >> REV_BLOCK_BITS
}

/// A change to a conversation's record: its metadata and some members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationChange {
    /// The conversation as it is after the change; its `members` field is
    /// ignored, `upsert` and `remove` say what changes.
    pub conversation: Conversation,
    /// Members added or whose role changed.
    pub upsert: Vec<Member>,
    /// Members removed.
    pub remove: Vec<UserId>,
}

/// A user account. Users that authenticate with an outside identity provider
/// get a record without a password the first time they connect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// The id (the JWT `sub`), which is also the login name.
    pub id: UserId,
    /// argon2 PHC string; `None` for users from an outside identity provider.
    pub password_hash: Option<String>,
    /// Shown instead of the id when set.
    pub display_name: Option<String>,
    /// Unix milliseconds.
    pub created_at: u64,
}

/// A refresh token, stored by the SHA-256 of its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRecord {
    /// Hex SHA-256 of the token.
    pub token_hash: String,
    /// Whose it is.
    pub user: UserId,
    /// All tokens rotated from one login share a family; reuse of a rotated
    /// token revokes the whole family.
    pub family: String,
    /// Unix milliseconds.
    pub expires_at: u64,
}

/// A login: the family of refresh tokens rotated from one sign-in, which
/// access tokens name in `sid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginState {
    /// Its tokens rotate; access tokens naming it are good.
    Active,
    /// Logged out, or a rotated token was presented again: for good.
    Revoked,
}

/// The result of presenting a refresh token for rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The old token is now used up and the new one stored.
    Rotated {
        /// The token's user.
        user: UserId,
    },
    /// Unknown, expired, or its family is revoked.
    Invalid,
    /// It had been rotated already: the family is revoked now.
    Reused,
}

/// Proof that a node holds the right to write one conversation: while a
/// store that several nodes share ([`MessageStore::lease_ttl`] is `Some`)
/// holds this lease for it, no other node's lease for that conversation is
/// granted. Valid until `acquired + ttl` by the holder's own clock, measured
/// from before the request that granted or renewed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The conversation.
    pub conversation: ConversationId,
    /// The holder (a node name).
    pub owner: String,
    /// Raised by every new holder: a write of an older epoch is stale.
    pub epoch: u64,
}

/// The answer to a lease request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseGrant {
    /// The caller holds it now.
    Granted(Lease),
    /// Another node holds it (or held it, and the store still waits for
    /// that node's last writes to land before giving it away).
    Held {
        /// Who.
        owner: String,
        /// Unix ms after which it may be taken over.
        until_ms: u64,
    },
}

/// Storage the actors and the node need.
#[async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// Appends messages (of one or several conversations) atomically and,
    /// with the default durability, durably: when this returns `Ok`, the
    /// messages survive a crash of the process and of the machine. Each
    /// message's `client_msg_id`, revision (when `rev` > 0) and mentions
    /// index entries are written with it.
    async fn append(&self, messages: &[Message]) -> Result<(), StoreError>;

    /// Appends the messages whose `(conversation, sender, client_msg_id)`
    /// has no message yet, as [`MessageStore::append`] does; for each of
    /// `messages`, `None` when it was stored, or the message stored earlier
    /// under its key. How a conversation turns retried sends into one message
    /// without a lookup of its own per send. The keys within one call must be
    /// distinct. A message found stored under its key with its own id (a
    /// write retried after it went through) is `None`: it is this send's,
    /// and must be delivered like any new one.
    async fn append_new(&self, messages: &[Message]) -> Result<Vec<Option<Message>>, StoreError> {
        let mut held = Vec::with_capacity(messages.len());
        let mut fresh = Vec::new();
        for m in messages {
            let found = self
                .find_by_client_msg_id(&m.conversation, &m.sender, &m.client_msg_id)
                .await?;
            if found.is_none() {
                fresh.push(m.clone());
            }
            held.push(found.filter(|own| own.id != m.id));
        }
        self.append(&fresh).await?;
        Ok(held)
    }

    /// Stores the new state of a stored message (an edit, a delete, a
    /// reaction change) at its new, higher `rev`, durably, and moves its
    /// revision and mentions index entries along. A state whose `rev` is not
    /// above the stored one changes nothing, so a replayed or late update
    /// never undoes a newer one; nor does one of a message not stored. A
    /// deleted message's body is overwritten, not kept beside the new state.
    async fn update_message(&self, message: &Message) -> Result<(), StoreError>;

    /// One message in its current state.
    async fn message(
        &self,
        conversation: &ConversationId,
        id: MessageId,
    ) -> Result<Option<Message>, StoreError>;

    /// Up to `limit` messages whose `rev` is in `(after_rev, up_to_rev]`,
    /// ascending by `rev`, each in its current state (a message changed twice
    /// appears once, at its last change). Reads the revision index, not the
    /// history.
    ///
    /// `up_to_rev` is a revision whose writes, and those of every revision
    /// below it, have finished: the conversation's writer knows it, the
    /// store (on ScyllaDB, without snapshots) does not. Below it every index
    /// entry names a message written at that revision, or one that moved on
    /// to a higher revision (an entry left behind, skipped: the message is
    /// found at its new place, which a reader going on from `up_to_rev` then
    /// reaches), or a write that failed and was never acknowledged (skipped).
    ///
    /// A page also stops once its messages weigh `max_bytes`
    /// ([`page_weight`]; the first message always comes), with `more`.
    async fn changes(
        &self,
        conversation: &ConversationId,
        after_rev: u64,
        up_to_rev: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Changes, StoreError>;

    /// The highest `rev` stored in a conversation (0 when none).
    async fn last_rev(&self, conversation: &ConversationId) -> Result<u64, StoreError>;

    /// Messages with an id above `after` that mention `reader` now (an edit
    /// may take a mention away), counted up to `cap`.
    async fn count_unread_mentions(
        &self,
        conversation: &ConversationId,
        reader: &UserId,
        after: MessageId,
        cap: u64,
    ) -> Result<u64, StoreError>;

    /// A page of a conversation's history.
    async fn page(
        &self,
        conversation: &ConversationId,
        query: PageQuery,
    ) -> Result<Page, StoreError>;

    /// The newest message of a conversation.
    async fn last_message(
        &self,
        conversation: &ConversationId,
    ) -> Result<Option<Message>, StoreError>;

    /// The message a sender stored under `client_msg_id` in a conversation.
    async fn find_by_client_msg_id(
        &self,
        conversation: &ConversationId,
        sender: &UserId,
        client_msg_id: &ClientMsgId,
    ) -> Result<Option<Message>, StoreError>;

    /// Messages with an id above `after` sent by anyone but `reader`,
    /// counted up to `cap`.
    async fn count_unread(
        &self,
        conversation: &ConversationId,
        reader: &UserId,
        after: MessageId,
        cap: u64,
    ) -> Result<u64, StoreError>;

    /// A conversation with all its members, if it exists.
    async fn conversation(&self, id: &ConversationId) -> Result<Option<Conversation>, StoreError>;

    /// Writes a conversation's metadata and member changes, and the per-user
    /// conversation index, atomically and durably.
    async fn apply_conversation(&self, change: &ConversationChange) -> Result<(), StoreError>;

    /// Ids of the conversations a user is a member of.
    async fn user_conversations(&self, user: &UserId) -> Result<Vec<ConversationId>, StoreError>;

    /// Moves a read marker forward; a marker never moves back (an older
    /// value is ignored), so replicas converge whatever order writes arrive in.
    async fn set_read_marker(
        &self,
        conversation: &ConversationId,
        user: &UserId,
        up_to: MessageId,
    ) -> Result<(), StoreError>;

    /// All read markers of a conversation.
    async fn read_markers(
        &self,
        conversation: &ConversationId,
    ) -> Result<Vec<(UserId, MessageId)>, StoreError>;

    /// One user's read marker in a conversation.
    async fn read_marker(
        &self,
        conversation: &ConversationId,
        user: &UserId,
    ) -> Result<Option<MessageId>, StoreError>;

    /// Creates a user; [`StoreError::Conflict`] if the id is taken.
    async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError>;

    /// A user by id.
    async fn user(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError>;

    /// Sets or clears `flag` on `user` as of `at_ms` (Unix ms): of two
    /// settings of one flag, the later `at_ms` wins wherever they land
    /// first (on a tie, the one stored last here).
    async fn set_user_flag(
        &self,
        user: &UserId,
        flag: UserFlag,
        on: bool,
        at_ms: u64,
    ) -> Result<(), StoreError>;

    /// A user's flags (all clear when never set).
    async fn user_flags(&self, user: &UserId) -> Result<UserFlags, StoreError>;

    /// Records an admin action.
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;

    /// The newest `limit` admin actions, newest first.
    async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;

    /// Stores a new refresh token.
    async fn put_refresh(&self, record: &RefreshRecord) -> Result<(), StoreError>;

    /// Atomically uses up the token `old_hash` and stores `new` in its family
    /// (`new.family` and `new.user` are taken from the old token). `now` decides
    /// expiry.
    async fn rotate_refresh(
        &self,
        old_hash: &str,
        new: &RefreshRecord,
        now: u64,
    ) -> Result<Rotation, StoreError>;

    /// Revokes the family of the token `token_hash`; returns its user, if the
    /// token was known.
    async fn revoke_refresh_family(&self, token_hash: &str) -> Result<Option<UserId>, StoreError>;

    /// The state of a login (refresh family), if it was ever stored.
    async fn login_state(&self, family: &str) -> Result<Option<LoginState>, StoreError>;

    /// Keeps `candidate` as the secret `name` unless one is kept already,
    /// and returns the one kept, so that every node sharing this store signs
    /// with one secret. `None` from a store on local disk, which keeps no
    /// secrets: the node keeps them in its data directory beside it.
    async fn keep_secret(&self, name: &str, candidate: &str) -> Result<Option<String>, StoreError> {
        let _ = (name, candidate);
        Ok(None)
    }

    /// How long a conversation lease lasts, when this store is shared by
    /// nodes that must take turns writing a conversation; `None` when no
    /// lease is needed (a store of one node, or one whose writes reach every
    /// node through the cluster's own replication).
    fn lease_ttl(&self) -> Option<std::time::Duration> {
        None
    }

    /// Takes `conversation`'s write lease for `owner`: granted when no one
    /// holds it, when `owner` holds it already (a restarted node), or when
    /// the holder's lease ran out long enough ago that its last writes have
    /// landed. The store applies this lease's epoch to nothing by itself:
    /// the holder stops writing when it cannot renew in time.
    async fn acquire_lease(
        &self,
        conversation: &ConversationId,
        owner: &str,
    ) -> Result<LeaseGrant, StoreError> {
        Ok(LeaseGrant::Granted(Lease {
            conversation: conversation.clone(),
            owner: owner.to_owned(),
            epoch: 0,
        }))
    }

    /// Extends a held lease by its ttl; `false` when it is no longer held.
    async fn renew_lease(&self, lease: &Lease) -> Result<bool, StoreError> {
        let _ = lease;
        Ok(true)
    }

    /// Gives a held lease up, so the next owner need not wait for it to run
    /// out.
    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        let _ = lease;
        Ok(())
    }

    /// [`MessageStore::append_new`] by the holder of `lease` on all of the
    /// messages' conversation: with no other writer possible, the store may
    /// check `client_msg_id`s with plain reads instead of transactions.
    async fn append_new_leased(
        &self,
        lease: &Lease,
        messages: &[Message],
    ) -> Result<Vec<Option<Message>>, StoreError> {
        let _ = lease;
        self.append_new(messages).await
    }
}
