//! The transaction an update runs in on the writer thread, and the face
//! the replicated store writes its own keyspaces through.

use std::collections::BTreeMap;

use super::keyspaces::{Inner, ReplicaTable, Table};
use crate::{unavailable, StoreError};

/// The writes of a batch, or of one update in it: keyed so that when several
/// write one key the last wins.
pub(super) type Writes = BTreeMap<(Table, Vec<u8>), Option<Vec<u8>>>;

/// The view an update has on the writer thread: the committed data with the
/// writes of the batch being built, and then its own writes, laid over it.
/// Its writes join the batch only if the update returns `Ok`.
pub(crate) struct Txn<'a> {
    inner: &'a Inner,
    /// The writes of the jobs already in this batch.
    group: &'a Writes,
    /// This update's writes.
    local: Writes,
}

impl<'a> Txn<'a> {
    /// An update's view: `group` holds the writes of the jobs already in
    /// the batch.
    pub(super) fn new(inner: &'a Inner, group: &'a Writes) -> Self {
        Txn {
            inner,
            group,
            local: BTreeMap::new(),
        }
    }

    /// This update's writes, to join the batch.
    pub(super) fn into_writes(self) -> Writes {
        self.local
    }
}

impl Txn<'_> {
    /// A key as this batch will leave it.
    pub(super) fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let pending = (table, key.to_vec());
        if let Some(value) = self.local.get(&pending) {
            return Ok(value.clone());
        }
        if let Some(value) = self.group.get(&pending) {
            return Ok(value.clone());
        }
        if table == Table::NotifyMarks {
            // The keyspace holds which conversations are marked, not the
            // latest token (see `marks.rs`).
            return Ok(self.inner.held_marks.get(key));
        }
        Ok(self
            .inner
            .table(table)
            .get(key)
            .map_err(unavailable)?
            .map(|v| v.to_vec()))
    }

    /// Writes (`Some`) or deletes (`None`) a key.
    pub(super) fn set(&mut self, table: Table, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.local.insert((table, key), value);
    }

    /// A key of a replication keyspace.
    pub(crate) fn replica_get(
        &self,
        table: ReplicaTable,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(Table::Replica(table), key)
    }

    /// Writes a key of a replication keyspace.
    pub(crate) fn replica_put(&mut self, table: ReplicaTable, key: Vec<u8>, value: Vec<u8>) {
        self.set(Table::Replica(table), key, Some(value));
    }
}
