//! Durable storage of history, conversations, read markers and accounts.
//!
//! [`MessageStore`] is what the actors and the node need from storage: one
//! trait per domain, each in its own module ([`history`], [`conversations`],
//! [`accounts`], [`leases`], [`moderation`]), which it joins. Two backends
//! implement them: [`embedded::EmbeddedStore`] (fjall, an LSM tree on
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

pub use access::{AccessFacts, AccessStore};
pub use accounts::{AccountStore, LoginState, RefreshRecord, Rotation, UserRecord};
pub use conversations::{ConversationChange, ConversationStore};
pub use credentials::{CredentialStore, Credentials, TotpState};
pub use history::{
    bucket_of, page_weight, rev_block, Changes, HistoryStore, Page, PageQuery, BUCKET_MS,
    REV_BLOCK_BITS,
};
pub use leases::{Lease, LeaseGrant, LeaseStore, NodeLease, NodeLeaseGrant, NodeLeaseHolder};
pub use logins::{LoginRecord, LoginStore};
pub use media::{MediaRecord, MediaRef, MediaStore, ThumbnailRecord};
pub use moderation::{AuditEntry, ModerationStore, UserFlag, UserFlags};
pub use notifications::NotificationStore;
pub use outbox::{
    outbox_shard, DeadJob, DigestItem, Job, Mark, MarkDone, NotifyCursor, OutboxStore,
    OUTBOX_SHARDS,
};
pub use people::{EmailAddress, EmailToken, PeopleStore, TokenPurpose};
pub use profiles::{NameEntry, ProfileRecord, ProfileStore};
pub use relations::RelationStore;
pub use reports::{Report, ReportAction, ReportStore, Resolution};

pub mod access;
pub mod accounts;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod conversations;
pub mod credentials;
pub mod embedded;
pub mod history;
pub mod leases;
pub mod logins;
pub mod media;
pub mod moderation;
pub mod notifications;
pub mod outbox;
pub mod people;
pub mod profiles;
pub mod relations;
pub mod replicated;
pub mod reports;
pub mod scylladb;

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

/// [`StoreError::Unavailable`] with what the backend said: every backend's
/// way to report that it could not read or write.
pub(crate) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Locks `m` even if a panic elsewhere poisoned it: what the stores guard
/// with a mutex (caches of rows written, op-log marks, a result slot) stays
/// usable, and the panic is reported where it happened.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// [`StoreError::Corrupt`] with what was wrong with the stored bytes.
pub(crate) fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// Storage the actors and the node need: every domain's store in one.
///
/// Nothing to implement: every type that implements all the domain traits
/// is one, so a backend implements those, and adding a domain means adding
/// its trait here and to each backend, not growing one trait of everything.
/// `Arc<dyn MessageStore>` calls any domain's methods.
pub trait MessageStore:
    HistoryStore
    + ConversationStore
    + AccountStore
    + AccessStore
    + LeaseStore
    + ModerationStore
    + NotificationStore
    + OutboxStore
    + PeopleStore
    + RelationStore
    + ProfileStore
    + CredentialStore
    + LoginStore
    + ReportStore
    + MediaStore
    + 'static
{
}

impl<T> MessageStore for T where
    T: HistoryStore
        + ConversationStore
        + AccountStore
        + AccessStore
        + LeaseStore
        + ModerationStore
        + NotificationStore
        + OutboxStore
        + PeopleStore
        + RelationStore
        + ProfileStore
        + CredentialStore
        + LoginStore
        + ReportStore
        + MediaStore
        + ?Sized
        + 'static
{
}
