//! The writer thread: the one writer of the database. It takes every job
//! queued, runs the updates against the data as the batch will leave it, and
//! commits them in one batch with one fsync.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fjall::PersistMode;
use tokio::sync::{mpsc, oneshot};

use super::keyspaces::{Inner, Table};
use super::txn::Txn;
use crate::{unavailable, StoreError};

/// Jobs waiting for the writer. Bounded so that a disk slower than the
/// senders pushes back on them (their `send` waits) instead of growing memory.
pub(super) const QUEUE: usize = 4096;

/// Most jobs in one batch, so one huge backlog does not delay every waiter
/// until all of it is written.
const MAX_GROUP: usize = 2048;

/// How often [`Durability::Buffered`](super::Durability::Buffered) fsyncs: fjall 3 has no timer of its own
/// (fjall 2's `fsync_ms` is gone), and without one the journal would reach
/// the disk only when the OS or a memtable flush decides.
const BUFFERED_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// An update: runs on the writer thread, reads through the [`Txn`] and puts
/// its writes there; they join the batch only if it returns `Ok`.
pub(super) type Update = Box<dyn FnOnce(&mut Txn<'_>) -> Result<(), StoreError> + Send>;

/// What the writer thread is handed.
pub(super) enum Job {
    Update {
        update: Update,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}

pub(super) fn writer_loop(inner: &Inner, mut queue: mpsc::Receiver<Job>, batches: &AtomicU64) {
    while let Some(first) = queue.blocking_recv() {
        let mut group = Group::default();
        group.add(first, inner);
        while group.jobs < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.add(job, inner),
                Err(_) => break,
            }
        }
        if group.closing.is_empty() {
            group.commit(inner, batches);
            continue;
        }
        // Refuse new writes but keep those already accepted: after `close`,
        // `recv` returns every queued job (and those of senders holding a
        // permit) before `None`.
        queue.close();
        while let Some(job) = queue.blocking_recv() {
            group.add(job, inner);
        }
        let closing = std::mem::take(&mut group.closing);
        group.commit(inner, batches);
        persist_all(inner);
        for reply in closing {
            let _ = reply.send(());
        }
        return;
    }
    // Every sender is gone (the store was dropped) and the queue is drained.
    persist_all(inner);
}

pub(super) fn syncer_loop(inner: &Inner, stop: &std::sync::mpsc::Receiver<()>) {
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
        stop.recv_timeout(BUFFERED_SYNC_INTERVAL)
    {
        // Cleared before the fsync: a write that lands during it sets the
        // flag again and is synced next time.
        if inner.dirty.swap(false, Ordering::AcqRel) {
            persist_all(inner);
        }
    }
}

fn persist_all(inner: &Inner) {
    if let Err(e) = inner.db.persist(PersistMode::SyncAll) {
        tracing::error!("store: fsync failed: {e}");
    }
}

/// Jobs the writer commits together.
#[derive(Default)]
struct Group {
    /// Keyed so that when several jobs write one key the last queued wins:
    /// fjall gives every item of a batch the same sequence number, so two
    /// items with one key in one batch would leave the winner undefined.
    writes: BTreeMap<(Table, Vec<u8>), Option<Vec<u8>>>,
    replies: Vec<oneshot::Sender<Result<(), StoreError>>>,
    closing: Vec<oneshot::Sender<()>>,
    jobs: usize,
}

impl Group {
    fn add(&mut self, job: Job, inner: &Inner) {
        self.jobs += 1;
        match job {
            Job::Update { update, reply } => {
                let mut txn = Txn::new(inner, &self.writes);
                // A panic in an update (a bug, or a dependency choking on a
                // peer's bytes) must cost that write, not the writer thread
                // and with it every later write. Its half-made writes are in
                // `txn.local` only and are dropped with it.
                let result =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| update(&mut txn)))
                        .unwrap_or_else(|_| {
                            Err(StoreError::Corrupt("a store update panicked".into()))
                        });
                match result {
                    Ok(()) => {
                        let local = txn.into_writes();
                        self.writes.extend(local);
                        self.replies.push(reply);
                    }
                    Err(e) => {
                        // Nothing of it is written, so it need not wait for the batch.
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Job::Close { reply } => self.closing.push(reply),
        }
    }

    fn commit(self, inner: &Inner, batches: &AtomicU64) {
        if self.replies.is_empty() {
            return;
        }
        let mut batch = inner.db.batch().durability(Some(inner.persist));
        let mut marks = Vec::new();
        for ((table, key), value) in self.writes {
            if table == Table::NotifyMarks {
                marks.push((key, value));
                continue;
            }
            let keyspace = inner.table(table);
            match value {
                Some(value) => batch.insert(keyspace, key, value),
                None => batch.remove(keyspace, key),
            }
        }
        let result = inner
            .held_marks
            .stage(&mut batch, &inner.notify_marks, marks)
            .and_then(|staged| {
                batch.commit().map_err(unavailable)?;
                inner.held_marks.apply(staged);
                Ok(())
            });
        if result.is_ok() {
            inner.dirty.store(true, Ordering::Release);
            batches.fetch_add(1, Ordering::Relaxed);
        }
        for reply in self.replies {
            // The waiter may have given up (its future dropped); the write stands.
            let _ = reply.send(result.clone());
        }
    }
}
