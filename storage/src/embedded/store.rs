//! The store's handle: opening the database, handing writes to the writer
//! thread and reads to the blocking pool, closing.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use fjall::PersistMode;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::keyspaces::{Inner, ReplicaKeyspace, ReplicaTable};
use super::txn::Txn;
use super::writer::{syncer_loop, writer_loop, Job, Update, QUEUE};
use crate::{lock, StoreError};

/// How far a write has gone when the store acknowledges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Fsynced: an acknowledged write survives a crash of the machine.
    #[default]
    Sync,
    /// Handed to the operating system, and fsynced in the background about
    /// once a second: an acknowledged write survives a crash of the process;
    /// a crash of the machine loses at most the last second or so.
    Buffered,
}

impl Durability {
    fn persist_mode(self) -> PersistMode {
        match self {
            Durability::Sync => PersistMode::SyncAll,
            Durability::Buffered => PersistMode::Buffer,
        }
    }
}

/// The [`MessageStore`](crate::MessageStore) on fjall in one directory of local disk.
///
/// Only one process may open a directory; a second `open` fails until the
/// first store is dropped. Dropping blocks until the queued writes are
/// written and fsynced.
pub struct EmbeddedStore {
    inner: Arc<Inner>,
    /// `None` only while dropping.
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
    /// The background fsync of [`Durability::Buffered`]; dropping `stop`
    /// ends it.
    syncer: Option<(std::sync::mpsc::Sender<()>, JoinHandle<()>)>,
    batches: Arc<AtomicU64>,
    /// Reads running at once on the blocking pool: a burst of reads (a
    /// page, a login's user lookup) waits here rather than starting a
    /// thread, and an allocator arena, per read.
    reads: Arc<tokio::sync::Semaphore>,
    #[cfg(feature = "faults")]
    pub(super) faults: super::faults::Faults,
}

/// Reads on the blocking pool at once.
const MAX_READS: usize = 16;

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("durability", &self.inner.persist)
            .field("batches_written", &self.batches_written())
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store in directory `path`.
    ///
    /// Blocks while fjall recovers its journal: call it before the runtime
    /// serves traffic, or from `spawn_blocking`.
    pub fn open(path: &Path, durability: Durability) -> Result<Self, StoreError> {
        let inner = Arc::new(Inner::open(path, durability.persist_mode())?);
        let batches = Arc::new(AtomicU64::new(0));
        let (jobs, queue) = mpsc::channel(QUEUE);
        let writer = {
            let inner = inner.clone();
            let batches = batches.clone();
            std::thread::Builder::new()
                .name("store-writer".into())
                .spawn(move || writer_loop(&inner, queue, &batches))
                .map_err(|e| StoreError::Unavailable(format!("cannot start the writer: {e}")))?
        };
        let syncer = match durability {
            Durability::Sync => None,
            Durability::Buffered => {
                let (stop, stopped) = std::sync::mpsc::channel();
                let inner = inner.clone();
                let thread = std::thread::Builder::new()
                    .name("store-fsync".into())
                    .spawn(move || syncer_loop(&inner, &stopped))
                    .map_err(|e| {
                        StoreError::Unavailable(format!("cannot start the fsync thread: {e}"))
                    })?;
                Some((stop, thread))
            }
        };
        Ok(EmbeddedStore {
            inner,
            jobs: Some(jobs),
            writer: Some(writer),
            syncer,
            batches,
            reads: Arc::new(tokio::sync::Semaphore::new(MAX_READS)),
            #[cfg(feature = "faults")]
            faults: super::faults::Faults::default(),
        })
    }

    /// The next `n` appends of new messages are written and then answered
    /// `unavailable`: what a shared database does when its write timeout
    /// ends before the write's replicas answer, and what a node's own lease
    /// running out during a write looks like to its conversation.
    #[cfg(feature = "faults")]
    pub fn fail_appends_after_writing(&self, n: u32) {
        self.faults.fail_appends_after_writing(n);
    }

    /// How many write batches the writer thread has committed. Concurrent
    /// writes share batches, so under load this grows slower than the number
    /// of writes; that is what it is for (tests and metrics).
    pub fn batches_written(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Stops taking writes (account writes too), writes everything already
    /// queued, fsyncs the journal, and returns. Later writes fail with
    /// [`StoreError::Unavailable`]; reads keep working. For a shutdown while
    /// other owners may still hold the store, and, with
    /// [`Durability::Buffered`], to make the last writes durable. Dropping
    /// the store does the same (blocking).
    pub async fn close(&self) {
        let Some(jobs) = &self.jobs else { return };
        // Every write (account writes included) goes through the writer, so
        // once it has taken this job and drained its queue nothing else can
        // be written, and its final fsync covers everything.
        let (reply, done) = oneshot::channel();
        if jobs.send(Job::Close { reply }).await.is_ok() {
            // An error means the writer is gone already, which is what we wait for.
            let _ = done.await;
        }
    }

    /// Runs `f` on the writer thread against the current state (see
    /// [`Txn`]) and commits its writes with the next batch; returns what `f`
    /// returned once that batch is durable (at the store's durability). If
    /// `f` fails, none of its writes are made and its error is returned.
    ///
    /// `f` runs on the one writer thread, between other jobs: it must be
    /// quick (point reads, a few writes), never block on anything else, and
    /// never wait for another write of this store.
    pub(crate) async fn update<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Txn<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        // `f`'s result waits here until the batch is committed: it is only
        // worth anything (a seq, a rotation's outcome) if the writes are.
        let slot = Arc::new(Mutex::new(None));
        let filled = slot.clone();
        let update: Update = Box::new(move |txn| {
            let result = f(txn)?;
            *lock(&filled) = Some(result);
            Ok(())
        });
        let (reply, done) = oneshot::channel();
        self.submit(Job::Update { update, reply }).await?;
        // A dropped reply means the writer died without answering.
        done.await.map_err(|_| closed())??;
        let result = lock(&slot).take();
        result.ok_or_else(|| StoreError::Unavailable("the update lost its result".into()))
    }

    async fn submit(&self, job: Job) -> Result<(), StoreError> {
        let jobs = self.jobs.as_ref().ok_or_else(closed)?;
        jobs.send(job).await.map_err(|_| closed())
    }

    /// A keyspace of the replicated store, for its scans (which it runs on
    /// the blocking pool, like every read). Writes go through
    /// [`Self::update`].
    pub(crate) fn replica_keyspace(&self, table: ReplicaTable) -> ReplicaKeyspace {
        self.inner.replica(table)
    }

    /// Runs a few point reads on the caller's thread. Such reads are served
    /// from memory nearly always (the memtables, the block cache, at worst
    /// the OS page cache), and the hand-off to the blocking pool and back
    /// (two context switches, a pool thread woken or started) costs more
    /// than they do: in a storm of reconnects, where every upgrade checks a
    /// token, the spawn alone was 4 % of the node's CPU. Never for a page
    /// or a scan whose length has no small bound, which may read many
    /// blocks (a seek to a prefix's last key, or a bounded run of a few
    /// keys, is fine).
    pub(super) fn inline<T>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.reads.is_closed() {
            return Err(StoreError::Unavailable("the store is closed".into()));
        }
        f(&self.inner)
    }

    pub(super) async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let _running = self
            .reads
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Unavailable(format!("storage task failed: {e}")))?
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Closing the queue lets the writer drain it, fsync and exit; joining
        // it means that once the store is gone everything acknowledged or
        // queued is on disk and the directory's lock can be taken again.
        self.jobs = None;
        if let Some(writer) = self.writer.take() {
            if writer.join().is_err() {
                tracing::error!("the store writer thread panicked");
            }
        }
        if let Some((stop, thread)) = self.syncer.take() {
            drop(stop);
            if thread.join().is_err() {
                tracing::error!("the store fsync thread panicked");
            }
        }
    }
}

pub(super) fn closed() -> StoreError {
    StoreError::Unavailable("the store is closed".into())
}
