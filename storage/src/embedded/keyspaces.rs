//! The database and its keyspaces: which keyspaces there are, opened once,
//! and the names the writer and the transactions use for them.

use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::marks::HeldMarks;
use crate::{unavailable, StoreError};

/// The database and its keyspaces, shared by the store's handle, the
/// writer thread and the reads on the blocking pool. Each domain's file reads
/// its keyspaces here directly; writes go through [`super::txn::Txn`].
pub(super) struct Inner {
    pub(super) db: Database,
    pub(super) messages: Keyspace,
    pub(super) client_msg_ids: Keyspace,
    pub(super) message_revs: Keyspace,
    pub(super) mentions: Keyspace,
    pub(super) conversations: Keyspace,
    pub(super) members: Keyspace,
    pub(super) user_conversations: Keyspace,
    pub(super) read_markers: Keyspace,
    pub(super) users: Keyspace,
    pub(super) refresh_tokens: Keyspace,
    pub(super) refresh_families: Keyspace,
    pub(super) user_flags: Keyspace,
    pub(super) audit: Keyspace,
    pub(super) op_log: Keyspace,
    pub(super) op_marks: Keyspace,
    pub(super) replica_versions: Keyspace,
    pub(super) notify_settings: Keyspace,
    pub(super) notify_conversations: Keyspace,
    pub(super) push_subscriptions: Keyspace,
    pub(super) notify_marks: Keyspace,
    /// What `notify_marks` holds, with each mark's latest token.
    pub(super) held_marks: HeldMarks,
    pub(super) notify_cursors: Keyspace,
    pub(super) jobs: Keyspace,
    pub(super) dead_jobs: Keyspace,
    pub(super) digest_items: Keyspace,
    pub(super) emails: Keyspace,
    pub(super) email_tokens: Keyspace,
    pub(super) relations: Keyspace,
    pub(super) profiles: Keyspace,
    pub(super) user_names: Keyspace,
    pub(super) credentials: Keyspace,
    pub(super) email_owners: Keyspace,
    pub(super) reports: Keyspace,
    pub(super) open_reports: Keyspace,
    pub(super) logins: Keyspace,
    pub(super) media: Keyspace,
    pub(super) media_owners: Keyspace,
    pub(super) media_refs: Keyspace,
    /// Uploads by creation time, until the sweeper finds them attached.
    pub(super) media_unattached: Keyspace,
    pub(super) persist: PersistMode,
    /// Something was written since the last background fsync.
    pub(super) dirty: AtomicBool,
}

/// The keyspaces the writer thread writes (all of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Table {
    Messages,
    ClientMsgIds,
    MessageRevs,
    Mentions,
    Conversations,
    Members,
    UserConversations,
    ReadMarkers,
    Users,
    RefreshTokens,
    RefreshFamilies,
    UserFlags,
    Audit,
    NotifySettings,
    NotifyConversations,
    PushSubscriptions,
    NotifyMarks,
    NotifyCursors,
    Jobs,
    DeadJobs,
    DigestItems,
    Emails,
    EmailTokens,
    Relations,
    Profiles,
    UserNames,
    Credentials,
    Logins,
    EmailOwners,
    Reports,
    OpenReports,
    Media,
    MediaOwners,
    MediaRefs,
    MediaUnattached,
    Replica(ReplicaTable),
}

/// The keyspaces of the replicated store: it lays out their keys and values
/// itself, and reads and writes them through [`Txn::replica_get`] and
/// [`Txn::replica_put`] (or [`EmbeddedStore::replica_keyspace`] to scan).
///
/// [`Txn::replica_get`]: super::Txn::replica_get
/// [`Txn::replica_put`]: super::Txn::replica_put
/// [`EmbeddedStore::replica_keyspace`]: super::EmbeddedStore::replica_keyspace
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ReplicaTable {
    /// `op_log`: every replicated op by origin and seq.
    OpLog,
    /// `op_marks`: per origin, how much of its log is held.
    OpMarks,
    /// `replica_versions`: the version of each conversation register.
    Versions,
}

impl Inner {
    /// Opens (or creates) the database in `path` and every keyspace in it.
    pub(super) fn open(path: &Path, persist: PersistMode) -> Result<Inner, StoreError> {
        let db = Database::builder(path).open().map_err(unavailable)?;
        let keyspace = |name: &str| {
            db.keyspace(name, KeyspaceCreateOptions::default)
                .map_err(unavailable)
        };
        // The order they have always been created in, so that a new
        // database comes out as before: new keyspaces go at the end.
        let mut inner = Inner {
            messages: keyspace("messages")?,
            client_msg_ids: keyspace("client_msg_ids")?,
            message_revs: keyspace("message_revs")?,
            mentions: keyspace("mentions")?,
            conversations: keyspace("conversations")?,
            members: keyspace("members")?,
            user_conversations: keyspace("user_conversations")?,
            read_markers: keyspace("read_markers")?,
            users: keyspace("users")?,
            refresh_tokens: keyspace("refresh_tokens")?,
            refresh_families: keyspace("refresh_families")?,
            user_flags: keyspace("user_flags")?,
            audit: keyspace("audit")?,
            op_log: keyspace("op_log")?,
            op_marks: keyspace("op_marks")?,
            replica_versions: keyspace("replica_versions")?,
            notify_settings: keyspace("notify_settings")?,
            notify_conversations: keyspace("notify_conversations")?,
            push_subscriptions: keyspace("push_subscriptions")?,
            notify_marks: keyspace("notify_marks")?,
            held_marks: HeldMarks::default(),
            notify_cursors: keyspace("notify_cursors")?,
            jobs: keyspace("jobs")?,
            dead_jobs: keyspace("dead_jobs")?,
            digest_items: keyspace("digest_items")?,
            emails: keyspace("emails")?,
            email_tokens: keyspace("email_tokens")?,
            relations: keyspace("relations")?,
            profiles: keyspace("profiles")?,
            user_names: keyspace("user_names")?,
            credentials: keyspace("credentials")?,
            email_owners: keyspace("email_owners")?,
            reports: keyspace("reports")?,
            open_reports: keyspace("open_reports")?,
            logins: keyspace("logins")?,
            media: keyspace("media")?,
            media_owners: keyspace("media_owners")?,
            media_refs: keyspace("media_refs")?,
            media_unattached: keyspace("media_unattached")?,
            persist,
            dirty: AtomicBool::new(false),
            db,
        };
        inner.held_marks = HeldMarks::load(&inner.notify_marks)?;
        Ok(inner)
    }

    pub(super) fn table(&self, table: Table) -> &Keyspace {
        match table {
            Table::Messages => &self.messages,
            Table::ClientMsgIds => &self.client_msg_ids,
            Table::MessageRevs => &self.message_revs,
            Table::Mentions => &self.mentions,
            Table::Conversations => &self.conversations,
            Table::Members => &self.members,
            Table::UserConversations => &self.user_conversations,
            Table::ReadMarkers => &self.read_markers,
            Table::Users => &self.users,
            Table::RefreshTokens => &self.refresh_tokens,
            Table::RefreshFamilies => &self.refresh_families,
            Table::UserFlags => &self.user_flags,
            Table::Audit => &self.audit,
            Table::NotifySettings => &self.notify_settings,
            Table::NotifyConversations => &self.notify_conversations,
            Table::PushSubscriptions => &self.push_subscriptions,
            Table::NotifyMarks => &self.notify_marks,
            Table::NotifyCursors => &self.notify_cursors,
            Table::Jobs => &self.jobs,
            Table::DeadJobs => &self.dead_jobs,
            Table::DigestItems => &self.digest_items,
            Table::Emails => &self.emails,
            Table::EmailTokens => &self.email_tokens,
            Table::Relations => &self.relations,
            Table::Profiles => &self.profiles,
            Table::UserNames => &self.user_names,
            Table::Credentials => &self.credentials,
            Table::Logins => &self.logins,
            Table::EmailOwners => &self.email_owners,
            Table::Reports => &self.reports,
            Table::OpenReports => &self.open_reports,
            Table::Media => &self.media,
            Table::MediaOwners => &self.media_owners,
            Table::MediaRefs => &self.media_refs,
            Table::MediaUnattached => &self.media_unattached,
            Table::Replica(ReplicaTable::OpLog) => &self.op_log,
            Table::Replica(ReplicaTable::OpMarks) => &self.op_marks,
            Table::Replica(ReplicaTable::Versions) => &self.replica_versions,
        }
    }

    /// A keyspace of the replicated store, to scan.
    pub(super) fn replica(&self, table: ReplicaTable) -> ReplicaKeyspace {
        ReplicaKeyspace(self.table(Table::Replica(table)).clone())
    }
}

/// A keyspace of the replicated store, for its scans: keys and values as
/// bytes, in key order. Owned, so a scan can move to the blocking pool.
#[derive(Clone)]
pub(crate) struct ReplicaKeyspace(Keyspace);

impl ReplicaKeyspace {
    /// Every entry.
    pub(crate) fn all(&self) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> {
        self.0.iter().map(entry)
    }

    /// The entries from `first` to `last`, both included.
    pub(crate) fn range(
        &self,
        first: Vec<u8>,
        last: Vec<u8>,
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>> {
        self.0
            .range::<Vec<u8>, _>((Bound::Included(first), Bound::Included(last)))
            .map(entry)
    }
}

fn entry(guard: fjall::Guard) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
    let (key, value) = guard.into_inner().map_err(unavailable)?;
    Ok((key.to_vec(), value.to_vec()))
}
