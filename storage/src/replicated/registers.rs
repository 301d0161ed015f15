//! The small records every node keeps a copy of (notification settings,
//! push subscriptions, outbox jobs and digests, dead letters, e-mail
//! addresses and tokens) as last-writer-wins registers, one per key: an op
//! carries the key writes the embedded store would make and one version,
//! and a replica applies each write whose key holds an older version.
//! Deletes are writes of nothing, kept as versions, so that a delete
//! arriving before its put still wins.

use chat_protocol::now_ms;

use super::version::Version;
use crate::embedded::{ReplicaTable, Txn, Writes};
use crate::StoreError;

/// A register's key in the version keyspace: a leading 0xFF, which no
/// conversation register's key has (those start with the u16 length of an
/// id of at most 64 bytes), the keyspace's tag, then its key.
fn version_key(table: u8, key: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(2 + key.len());
    v.push(0xFF);
    v.push(table);
    v.extend_from_slice(key);
    v
}

fn held(txn: &Txn<'_>, key: &[u8]) -> Result<Option<Version>, StoreError> {
    txn.replica_get(ReplicaTable::Versions, key)?
        .map(|b| Version::decode(&b))
        .transpose()
}

/// The version a local write of `writes` gets: now, or just above the
/// highest version this node holds for one of its keys, so that it wins
/// over everything this node has seen (a delete over the put it read).
pub(super) fn next_ms(txn: &Txn<'_>, writes: &Writes) -> Result<u64, StoreError> {
    let mut ms = now_ms();
    for (table, key, _) in &writes.0 {
        if let Some(v) = held(txn, &version_key(table.tag(), key))? {
            ms = ms.max(v.ms.saturating_add(1));
        }
    }
    Ok(ms)
}

/// Applies the writes whose registers hold an older version than
/// (`ms`, `origin`).
pub(super) fn apply(
    txn: &mut Txn<'_>,
    origin: &str,
    ms: u64,
    writes: &Writes,
) -> Result<(), StoreError> {
    let version = Version {
        ms,
        origin: origin.to_owned(),
    };
    for (table, key, value) in &writes.0 {
        let vkey = version_key(table.tag(), key);
        if held(txn, &vkey)?.is_none_or(|h| h < version) {
            txn.apply_writes(&Writes(vec![(*table, key.clone(), value.clone())]));
            txn.replica_put(ReplicaTable::Versions, vkey, version.encode());
        }
    }
    Ok(())
}
