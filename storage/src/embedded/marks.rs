//! The notification marks held in memory, with the `notify_marks` keyspace
//! written only when a conversation becomes marked or is cleared.
//!
//! Every write of a message marks its conversation, and a busy conversation
//! takes many messages between two notification passes (one a second). On
//! disk each of those marks was a new version of one key: a memtable insert
//! per message, and every pass's scan of the marks stepped over all the
//! versions since the last flush, so a pass cost more the longer the node
//! had been busy. Here the keyspace holds the set of marked conversations
//! (written in the batch that marks one, removed in the batch that clears
//! it), so a crash loses no mark; the token a clear compares with lives in
//! memory, where it moves with every write.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use fjall::{Keyspace, OwnedWriteBatch};

use super::keys::decode_u64;
use crate::{unavailable, StoreError};

/// Marked conversations by mark key (shard, conversation), with the token of
/// the last write that marked each. The keys are those of the keyspace: a
/// key is on disk exactly while it is here.
#[derive(Default)]
pub(super) struct HeldMarks {
    marks: Mutex<BTreeMap<Vec<u8>, u64>>,
}

impl HeldMarks {
    /// The marks the keyspace holds, read once at open.
    pub(super) fn load(keyspace: &Keyspace) -> Result<HeldMarks, StoreError> {
        let mut marks = BTreeMap::new();
        for guard in keyspace.iter() {
            let (key, value) = guard.into_inner().map_err(unavailable)?;
            marks.insert(key.to_vec(), decode_u64(&value)?);
        }
        Ok(HeldMarks {
            marks: Mutex::new(marks),
        })
    }

    fn held(&self) -> MutexGuard<'_, BTreeMap<Vec<u8>, u64>> {
        // The map is changed only after a batch is on disk, by single
        // inserts and removes: a panic elsewhere cannot leave it half-made.
        self.marks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The token held under `key`, as committed.
    pub(super) fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.held().get(key).map(|t| t.to_be_bytes().to_vec())
    }

    /// Up to `limit` marks whose keys start with `prefix`, in key order.
    pub(super) fn scan(&self, prefix: &[u8], limit: usize) -> Vec<(Vec<u8>, u64)> {
        self.held()
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, t)| (k.clone(), *t))
            .collect()
    }

    /// Puts a batch's mark writes into `batch`: only a conversation newly
    /// marked, or a mark cleared, touches the keyspace. Returns what to
    /// apply here once the batch is on disk.
    pub(super) fn stage(
        &self,
        batch: &mut OwnedWriteBatch,
        keyspace: &Keyspace,
        writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Result<Staged, StoreError> {
        let held = self.held();
        let mut staged = Staged(Vec::with_capacity(writes.len()));
        for (key, value) in writes {
            match value {
                Some(token) => {
                    if !held.contains_key(&key) {
                        batch.insert(keyspace, key.clone(), token.clone());
                    }
                    staged.0.push((key, Some(decode_u64(&token)?)));
                }
                None => {
                    if held.contains_key(&key) {
                        batch.remove(keyspace, key.clone());
                        staged.0.push((key, None));
                    }
                }
            }
        }
        Ok(staged)
    }

    /// Makes a committed batch's mark writes visible.
    pub(super) fn apply(&self, staged: Staged) {
        let mut held = self.held();
        for (key, token) in staged.0 {
            match token {
                Some(token) => {
                    held.insert(key, token);
                }
                None => {
                    held.remove(&key);
                }
            }
        }
    }
}

/// A batch's mark writes, applied in memory once the batch is committed.
pub(super) struct Staged(Vec<(Vec<u8>, Option<u64>)>);

#[cfg(test)]
mod tests {
    use fjall::{Database, KeyspaceCreateOptions};

    use super::*;

    fn token(t: u64) -> Option<Vec<u8>> {
        Some(t.to_be_bytes().to_vec())
    }

    /// The point of holding marks here: a conversation already marked costs
    /// the keyspace nothing per write, and a clear of an unmarked one nothing.
    #[test]
    fn only_marking_and_clearing_touch_the_keyspace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::builder(dir.path()).open().expect("open");
        let keyspace = db
            .keyspace("notify_marks", KeyspaceCreateOptions::default)
            .expect("keyspace");
        let marks = HeldMarks::load(&keyspace).expect("load");
        let commit = |writes: Vec<(Vec<u8>, Option<Vec<u8>>)>| {
            let mut batch = db.batch();
            let staged = marks.stage(&mut batch, &keyspace, writes).expect("stage");
            let written = batch.len();
            batch.commit().expect("commit");
            marks.apply(staged);
            written
        };
        let a = b"\0\0\0\x01a".to_vec();
        let b = b"\0\0\0\x01b".to_vec();
        assert_eq!(commit(vec![(a.clone(), token(1))]), 1, "newly marked");
        assert_eq!(commit(vec![(a.clone(), token(2))]), 0, "already marked");
        assert_eq!(marks.get(&a), token(2), "the token moved all the same");
        assert_eq!(commit(vec![(b.clone(), None)]), 0, "clearing no mark");
        assert_eq!(commit(vec![(a.clone(), None), (b.clone(), token(3))]), 2);
        assert_eq!(marks.get(&a), None);
        assert_eq!(marks.scan(b"\0\0\0\x01", 10), vec![(b.clone(), 3)]);
        assert!(marks.scan(b"\0\0\0\x02", 10).is_empty());
        // What the keyspace holds is what a restart loads.
        let reloaded = HeldMarks::load(&keyspace).expect("load");
        assert_eq!(reloaded.scan(b"", 10), vec![(b, 3)]);
    }
}
