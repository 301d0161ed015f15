//! Writes of the small, independently kept records (notification settings,
//! push subscriptions, outbox jobs, digests, e-mail addresses and tokens,
//! contacts, blocks and privacy, profiles and the name index, credentials and listed logins, reports, media records and uploads not yet attached) as
//! plain key writes: what the embedded store commits for them, and what the
//! replicated store ships to other nodes and merges there, last writer
//! wins per key. Built here, where the layout of keys and values is known,
//! so the replicated store handles them without knowing it.

use serde::{Deserialize, Serialize};

use super::keyspaces::Table;
use super::txn::Txn;

/// The keyspaces written as registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum RegisterTable {
    NotifySettings,
    NotifyConversations,
    PushSubscriptions,
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
}

impl RegisterTable {
    pub(super) fn table(self) -> Table {
        match self {
            RegisterTable::NotifySettings => Table::NotifySettings,
            RegisterTable::NotifyConversations => Table::NotifyConversations,
            RegisterTable::PushSubscriptions => Table::PushSubscriptions,
            RegisterTable::Jobs => Table::Jobs,
            RegisterTable::DeadJobs => Table::DeadJobs,
            RegisterTable::DigestItems => Table::DigestItems,
            RegisterTable::Emails => Table::Emails,
            RegisterTable::EmailTokens => Table::EmailTokens,
            RegisterTable::Relations => Table::Relations,
            RegisterTable::Profiles => Table::Profiles,
            RegisterTable::UserNames => Table::UserNames,
            RegisterTable::Credentials => Table::Credentials,
            RegisterTable::Logins => Table::Logins,
            RegisterTable::EmailOwners => Table::EmailOwners,
            RegisterTable::Reports => Table::Reports,
            RegisterTable::OpenReports => Table::OpenReports,
            RegisterTable::Media => Table::Media,
            RegisterTable::MediaOwners => Table::MediaOwners,
            RegisterTable::MediaRefs => Table::MediaRefs,
            RegisterTable::MediaUnattached => Table::MediaUnattached,
        }
    }

    /// A byte naming the keyspace in a register's version key.
    pub(crate) fn tag(self) -> u8 {
        self as u8
    }
}

/// Key writes: a value, or `None` to delete.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Writes(pub(crate) Vec<(RegisterTable, Vec<u8>, Option<Vec<u8>>)>);

impl Writes {
    pub(super) fn put(&mut self, table: RegisterTable, key: Vec<u8>, value: Vec<u8>) {
        self.0.push((table, key, Some(value)));
    }

    pub(super) fn delete(&mut self, table: RegisterTable, key: Vec<u8>) {
        self.0.push((table, key, None));
    }

    pub(super) fn one(table: RegisterTable, key: Vec<u8>, value: Option<Vec<u8>>) -> Writes {
        Writes(vec![(table, key, value)])
    }
}

impl Txn<'_> {
    /// Applies every write.
    pub(crate) fn apply_writes(&mut self, writes: &Writes) {
        for (table, key, value) in &writes.0 {
            self.set(table.table(), key.clone(), value.clone());
        }
    }
}
