//! The embedded backend: fjall, an LSM tree on local disk.
//!
//! The keyspaces mirror the ScyllaDB tables so both backends answer the same
//! queries with the same kind of scan:
//!
//! | keyspace             | key                                   | value                 |
//! |----------------------|---------------------------------------|-----------------------|
//! | `messages`           | conversation, bucket (u32 BE), id (u64 BE) | the message (MessagePack map) |
//! | `client_msg_ids`     | conversation, sender, client_msg_id   | id (u64 BE)           |
//! | `message_revs`       | conversation, rev (u64 BE)            | id (u64 BE)           |
//! | `mentions`           | conversation, user, id (u64 BE)       | empty                 |
//! | `conversations`      | conversation                          | id, kind, title, created_at |
//! | `members`            | conversation, user                    | role                  |
//! | `user_conversations` | user, conversation                    | empty                 |
//! | `read_markers`       | conversation, user                    | id (u64 BE)           |
//! | `users`              | user                                  | the user record       |
//! | `refresh_tokens`     | token hash                            | user, family, expiry, used |
//! | `refresh_families`   | family                                | active 0 / revoked 1  |
//! | `user_flags`         | user, flag                            | on, set at (ms), by   |
//! | `audit`              | at (u64 BE), id (u64 BE)              | the audit entry       |
//!
//! Three more keyspaces belong to [`super::replicated`], which keeps its op
//! log in this database so that a write and its log entry commit in one
//! batch: `op_log`, `op_marks` and `replica_versions` (their layout is
//! described there). A store that is never replicated leaves them empty.
//!
//! Every string in a key is preceded by its length (u16 BE): without it the
//! range of conversation `ab` would also hold the keys of conversation `abc`.
//!
//! fjall's calls block (and a durable write waits for an fsync), so none of
//! them runs on the async runtime. Every write goes to one writer thread that
//! commits everything queued in one batch with one fsync: a thousand
//! conversations appending at once cost a few fsyncs, not a thousand. Reads
//! run on the blocking pool.
//!
//! Some writes depend on what is stored: a read marker never moves back, a
//! `client_msg_id` keeps pointing at the lowest message id that claimed it, a
//! user id is taken once, a refresh token is used up once. Those run as an
//! update ([`Txn`]) on the writer thread, which sees the committed data with
//! the writes of the batch being built laid over it. The writer is the only
//! writer of this database, so what an update reads there is exactly what its
//! writes will land on: no lock, and no read-then-write race between two
//! callers (two sign-ups of one name, two rotations of one token).

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use chat_protocol::{
    ClientMsgId, Conversation, ConversationId, ConversationKind, Member, Message, MessageId, Role,
    UserId,
};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::{
    bucket_of, AccountStore, AuditEntry, Changes, ConversationChange, ConversationStore,
    HistoryStore, LeaseStore, LoginState, ModerationStore, Page, PageQuery, RefreshRecord,
    Rotation, StoreError, UserFlag, UserFlags, UserRecord,
};

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

/// Jobs waiting for the writer. Bounded so that a disk slower than the
/// senders pushes back on them (their `send` waits) instead of growing memory.
const QUEUE: usize = 4096;

/// Most jobs in one batch, so one huge backlog does not delay every waiter
/// until all of it is written.
const MAX_GROUP: usize = 2048;

/// How often [`Durability::Buffered`] fsyncs: fjall 3 has no timer of its own
/// (fjall 2's `fsync_ms` is gone), and without one the journal would reach
/// the disk only when the OS or a memtable flush decides.
const BUFFERED_SYNC_INTERVAL: Duration = Duration::from_secs(1);

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

struct Inner {
    db: Database,
    messages: Keyspace,
    client_msg_ids: Keyspace,
    message_revs: Keyspace,
    mentions: Keyspace,
    conversations: Keyspace,
    members: Keyspace,
    user_conversations: Keyspace,
    read_markers: Keyspace,
    users: Keyspace,
    refresh_tokens: Keyspace,
    refresh_families: Keyspace,
    user_flags: Keyspace,
    audit: Keyspace,
    op_log: Keyspace,
    op_marks: Keyspace,
    replica_versions: Keyspace,
    persist: PersistMode,
    /// Something was written since the last background fsync.
    dirty: AtomicBool,
}

/// The keyspaces the writer thread writes (all of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Table {
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
    Replica(ReplicaTable),
}

/// The keyspaces of [`super::replicated`]: it lays out their keys and values
/// itself, and reads and writes them through [`Txn::replica_get`] and
/// [`Txn::replica_put`] (or [`EmbeddedStore::replica_keyspace`] to scan).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ReplicaTable {
    /// `op_log`: every replicated op by origin and seq.
    OpLog,
    /// `op_marks`: per origin, how much of its log is held.
    OpMarks,
    /// `replica_versions`: the version of each conversation register.
    Versions,
}

/// An update: runs on the writer thread, reads through the [`Txn`] and puts
/// its writes there; they join the batch only if it returns `Ok`.
type Update = Box<dyn FnOnce(&mut Txn<'_>) -> Result<(), StoreError> + Send>;

enum Job {
    Update {
        update: Update,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}

#[derive(Serialize, Deserialize)]
struct ConversationMeta {
    id: ConversationId,
    kind: ConversationKind,
    #[serde(default)]
    title: Option<String>,
    created_at: u64,
}

#[derive(Serialize, Deserialize)]
struct StoredRefresh {
    user: UserId,
    family: String,
    expires_at: u64,
    used: bool,
}

/// A refresh token's record as a write carries it: a new token, or one now
/// used up. Merged into what is stored (see [`Txn::merge_refresh`]), so it
/// can be applied twice, late, or before the token's first record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RefreshToken {
    pub(crate) token_hash: String,
    pub(crate) user: UserId,
    pub(crate) family: String,
    pub(crate) expires_at: u64,
    pub(crate) used: bool,
}

impl RefreshToken {
    /// A newly issued token: not used yet.
    pub(crate) fn unused(record: &RefreshRecord) -> Self {
        RefreshToken {
            token_hash: record.token_hash.clone(),
            user: record.user.clone(),
            family: record.family.clone(),
            expires_at: record.expires_at,
            used: false,
        }
    }
}

/// What a refresh-token operation changed, as opposed to the call that
/// changed it: applying an effect again, or on a store that has it already,
/// changes nothing, whereas replaying a rotation on a store where the token is
/// used up already would revoke its family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum RefreshEffect {
    /// Merge these records in.
    Tokens(Vec<RefreshToken>),
    /// The family is revoked (for good).
    RevokeFamily(String),
}

/// What `count_unread` needs of a message: borrowing the sender out of the
/// stored bytes spares decoding (and allocating) every body it walks over.
#[derive(Deserialize)]
struct SenderOnly<'a> {
    #[serde(borrow)]
    sender: &'a str,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in directory `path`.
    ///
    /// Blocks while fjall recovers its journal: call it before the runtime
    /// serves traffic, or from `spawn_blocking`.
    pub fn open(path: &Path, durability: Durability) -> Result<Self, StoreError> {
        let db = Database::builder(path).open().map_err(unavailable)?;
        let keyspace = |name: &str| {
            db.keyspace(name, KeyspaceCreateOptions::default)
                .map_err(unavailable)
        };
        let inner = Arc::new(Inner {
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
            persist: durability.persist_mode(),
            dirty: AtomicBool::new(false),
            db,
        });
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
        })
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
            *filled.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
            Ok(())
        });
        let (reply, done) = oneshot::channel();
        self.submit(Job::Update { update, reply }).await?;
        // A dropped reply means the writer died without answering.
        done.await.map_err(|_| closed())??;
        let result = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        result.ok_or_else(|| StoreError::Unavailable("the update lost its result".into()))
    }

    async fn submit(&self, job: Job) -> Result<(), StoreError> {
        let jobs = self.jobs.as_ref().ok_or_else(closed)?;
        jobs.send(job).await.map_err(|_| closed())
    }

    /// A keyspace of [`super::replicated`], for its scans (which run on the
    /// blocking pool like every read). Writes go through [`Self::update`].
    pub(crate) fn replica_keyspace(&self, table: ReplicaTable) -> Keyspace {
        self.inner.table(Table::Replica(table)).clone()
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
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

fn writer_loop(inner: &Inner, mut queue: mpsc::Receiver<Job>, batches: &AtomicU64) {
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

fn syncer_loop(inner: &Inner, stop: &std::sync::mpsc::Receiver<()>) {
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
                let mut txn = Txn {
                    inner,
                    group: &self.writes,
                    local: BTreeMap::new(),
                };
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
                        let local = txn.local;
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
        for ((table, key), value) in self.writes {
            let keyspace = inner.table(table);
            match value {
                Some(value) => batch.insert(keyspace, key, value),
                None => batch.remove(keyspace, key),
            }
        }
        let result = batch.commit().map_err(unavailable);
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

impl Inner {
    fn table(&self, table: Table) -> &Keyspace {
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
            Table::Replica(ReplicaTable::OpLog) => &self.op_log,
            Table::Replica(ReplicaTable::OpMarks) => &self.op_marks,
            Table::Replica(ReplicaTable::Versions) => &self.replica_versions,
        }
    }

    fn page(&self, conversation: &ConversationId, query: PageQuery) -> Result<Page, StoreError> {
        let limit = query.limit.max(1);
        if let (Some(after), Some(before)) = (query.after, query.before) {
            if after >= before {
                // The range is empty; fjall documents nothing for inverted
                // bounds, so it never sees them.
                return Ok(Page::default());
            }
        }
        let prefix = key_of(&[conversation.as_str()]);
        let low = match query.after {
            Some(after) => Bound::Excluded(message_key(&prefix, after)),
            None => Bound::Included(prefix.clone()),
        };
        let high = match query.before {
            Some(before) => Bound::Excluded(message_key(&prefix, before)),
            None => Bound::Included(message_key_max(&prefix)),
        };
        let range = self.messages.range::<Vec<u8>, _>((low, high));
        let oldest_first = query.after.is_some() && query.before.is_none();
        let mut messages = Vec::with_capacity(limit.min(256));
        let mut more = false;
        let mut bytes = 0usize;
        let mut take = |guard: fjall::Guard| -> Result<bool, StoreError> {
            if messages.len() == limit {
                // One more in range is all `more` needs: no need to decode it.
                more = true;
                return Ok(false);
            }
            let value = guard.value().map_err(unavailable)?;
            let message = decode::<Message>(&value)?;
            bytes = bytes.saturating_add(crate::page_weight(value.len(), &message));
            if bytes > query.max_bytes && !messages.is_empty() {
                more = true;
                return Ok(false);
            }
            messages.push(message);
            Ok(true)
        };
        if oldest_first {
            for guard in range {
                if !take(guard)? {
                    break;
                }
            }
        } else {
            for guard in range.rev() {
                if !take(guard)? {
                    break;
                }
            }
            messages.reverse();
        }
        Ok(Page { messages, more })
    }

    fn last_message(&self, conversation: &ConversationId) -> Result<Option<Message>, StoreError> {
        let prefix = key_of(&[conversation.as_str()]);
        match self.messages.prefix(&prefix).next_back() {
            Some(guard) => Ok(Some(decode(&guard.value().map_err(unavailable)?)?)),
            None => Ok(None),
        }
    }

    fn message(
        &self,
        conversation: &ConversationId,
        id: MessageId,
    ) -> Result<Option<Message>, StoreError> {
        let key = message_key(&key_of(&[conversation.as_str()]), id);
        match self.messages.get(&key).map_err(unavailable)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn changes(
        &self,
        conversation: &ConversationId,
        after_rev: u64,
        rev: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Changes, StoreError> {
        // One snapshot: the index and the messages it names agree.
        let snapshot = self.db.snapshot();
        let prefix = key_of(&[conversation.as_str()]);
        let mut changes = Changes::default();
        if after_rev >= rev {
            return Ok(changes);
        }
        let range = snapshot.range::<Vec<u8>, _>(
            &self.message_revs,
            (
                Bound::Excluded(rev_key(&prefix, after_rev)),
                Bound::Included(rev_key(&prefix, rev)),
            ),
        );
        let mut weight = 0usize;
        for guard in range {
            let (key, value) = guard.into_inner().map_err(unavailable)?;
            if changes.messages.len() == limit.max(1) {
                changes.more = true;
                break;
            }
            let at = rev_of_key(&key, prefix.len())?;
            let id = MessageId(decode_u64(&value)?);
            let Some(bytes) = snapshot
                .get(&self.messages, message_key(&prefix, id))
                .map_err(unavailable)?
            else {
                continue;
            };
            let message: Message = decode(&bytes)?;
            if message.rev == at {
                weight = weight.saturating_add(crate::page_weight(bytes.len(), &message));
                if weight > max_bytes && !changes.messages.is_empty() {
                    changes.more = true;
                    break;
                }
                changes.messages.push(message);
            }
        }
        Ok(changes)
    }

    fn last_rev(&self, conversation: &ConversationId) -> Result<u64, StoreError> {
        let prefix = key_of(&[conversation.as_str()]);
        match self.message_revs.prefix(&prefix).next_back() {
            Some(guard) => rev_of_key(&guard.key().map_err(unavailable)?, prefix.len()),
            None => Ok(0),
        }
    }

    fn count_unread_mentions(
        &self,
        conversation: &ConversationId,
        reader: &UserId,
        after: MessageId,
        cap: u64,
    ) -> Result<u64, StoreError> {
        let prefix = key_of(&[conversation.as_str(), reader.as_str()]);
        let mut low = prefix.clone();
        low.extend_from_slice(&after.0.to_be_bytes());
        let mut high = prefix;
        high.extend_from_slice(&[0xff; 8]);
        let range = self
            .mentions
            .range::<Vec<u8>, _>((Bound::Excluded(low), Bound::Included(high)));
        let mut count = 0;
        for guard in range {
            guard.key().map_err(unavailable)?;
            count += 1;
            if count >= cap {
                break;
            }
        }
        Ok(count)
    }

    fn find_by_client_msg_id(
        &self,
        conversation: &ConversationId,
        sender: &UserId,
        client_msg_id: &ClientMsgId,
    ) -> Result<Option<Message>, StoreError> {
        let index = key_of(&[
            conversation.as_str(),
            sender.as_str(),
            client_msg_id.as_str(),
        ]);
        let Some(id) = self.client_msg_ids.get(&index).map_err(unavailable)? else {
            return Ok(None);
        };
        self.message(conversation, MessageId(decode_u64(&id)?))
    }

    fn count_unread(
        &self,
        conversation: &ConversationId,
        reader: &UserId,
        after: MessageId,
        cap: u64,
    ) -> Result<u64, StoreError> {
        if cap == 0 {
            return Ok(0);
        }
        let prefix = key_of(&[conversation.as_str()]);
        let range = self.messages.range::<Vec<u8>, _>((
            Bound::Excluded(message_key(&prefix, after)),
            Bound::Included(message_key_max(&prefix)),
        ));
        let mut count = 0;
        for guard in range {
            let bytes = guard.value().map_err(unavailable)?;
            let message: SenderOnly<'_> =
                rmp_serde::from_slice(&bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if message.sender != reader.as_str() {
                count += 1;
                if count >= cap {
                    break;
                }
            }
        }
        Ok(count)
    }

    fn conversation(&self, id: &ConversationId) -> Result<Option<Conversation>, StoreError> {
        // One snapshot, so the metadata and the members come from the same
        // `apply_conversation` even while another one is being written.
        let snapshot = self.db.snapshot();
        let prefix = key_of(&[id.as_str()]);
        let Some(meta) = snapshot
            .get(&self.conversations, &prefix)
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let meta: ConversationMeta = decode(&meta)?;
        let mut members = Vec::new();
        for guard in snapshot.prefix(&self.members, &prefix) {
            let (key, value) = guard.into_inner().map_err(unavailable)?;
            members.push(Member {
                user: user_id(last_part(&key, prefix.len())?)?,
                role: decode::<Role>(&value)?,
            });
        }
        Ok(Some(Conversation {
            id: meta.id,
            kind: meta.kind,
            title: meta.title,
            members,
            member_count: None,
            created_at: meta.created_at,
            rev: 0,
        }))
    }

    fn user_conversations(&self, user: &UserId) -> Result<Vec<ConversationId>, StoreError> {
        let prefix = key_of(&[user.as_str()]);
        let mut ids = Vec::new();
        for guard in self.user_conversations.prefix(&prefix) {
            let key = guard.key().map_err(unavailable)?;
            let id = last_part(&key, prefix.len())?;
            ids.push(ConversationId::new(id).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        }
        Ok(ids)
    }

    fn read_markers(
        &self,
        conversation: &ConversationId,
    ) -> Result<Vec<(UserId, MessageId)>, StoreError> {
        let prefix = key_of(&[conversation.as_str()]);
        let mut markers = Vec::new();
        for guard in self.read_markers.prefix(&prefix) {
            let (key, value) = guard.into_inner().map_err(unavailable)?;
            markers.push((
                user_id(last_part(&key, prefix.len())?)?,
                MessageId(decode_u64(&value)?),
            ));
        }
        Ok(markers)
    }

    fn read_marker(
        &self,
        conversation: &ConversationId,
        user: &UserId,
    ) -> Result<Option<MessageId>, StoreError> {
        let key = key_of(&[conversation.as_str(), user.as_str()]);
        match self.read_markers.get(&key).map_err(unavailable)? {
            Some(value) => Ok(Some(MessageId(decode_u64(&value)?))),
            None => Ok(None),
        }
    }

    fn user(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError> {
        match self
            .users
            .get(key_of(&[id.as_str()]))
            .map_err(unavailable)?
        {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn user_flags(&self, id: &UserId) -> Result<UserFlags, StoreError> {
        let mut flags = UserFlags::default();
        for flag in UserFlag::ALL {
            if let Some(bytes) = self
                .user_flags
                .get(flag_key(id, flag))
                .map_err(unavailable)?
            {
                flags.set(flag, decode::<FlagState>(&bytes)?.on);
            }
        }
        Ok(flags)
    }

    fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let mut entries = Vec::new();
        for guard in self.audit.iter().rev().take(limit) {
            entries.push(decode(&guard.value().map_err(unavailable)?)?);
        }
        Ok(entries)
    }
}

/// The view an update has on the writer thread: the committed data with the
/// writes of the batch being built, and then its own writes, laid over it.
/// Its writes join the batch only if the update returns `Ok`.
pub(crate) struct Txn<'a> {
    inner: &'a Inner,
    /// The writes of the jobs already in this batch.
    group: &'a BTreeMap<(Table, Vec<u8>), Option<Vec<u8>>>,
    /// This update's writes.
    local: BTreeMap<(Table, Vec<u8>), Option<Vec<u8>>>,
}

impl Txn<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let pending = (table, key.to_vec());
        if let Some(value) = self.local.get(&pending) {
            return Ok(value.clone());
        }
        if let Some(value) = self.group.get(&pending) {
            return Ok(value.clone());
        }
        Ok(self
            .inner
            .table(table)
            .get(key)
            .map_err(unavailable)?
            .map(|v| v.to_vec()))
    }

    fn set(&mut self, table: Table, key: Vec<u8>, value: Option<Vec<u8>>) {
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

    /// The message already held under `m`'s `client_msg_id` index entry
    /// `index`, if any.
    fn held(&self, m: &Message, index: &[u8]) -> Result<Option<Message>, StoreError> {
        let Some(id) = self.get(Table::ClientMsgIds, index)? else {
            return Ok(None);
        };
        let id = MessageId(decode_u64(&id)?);
        let conversation = key_of(&[m.conversation.as_str()]);
        match self.get(Table::Messages, &message_key(&conversation, id))? {
            Some(bytes) => Ok(Some(decode::<Message>(&bytes)?)),
            None => Err(StoreError::Corrupt(format!(
                "client_msg_id index names missing message {}",
                id.0
            ))),
        }
    }

    /// For each of `messages`, `None` or the message already held under its
    /// `client_msg_id` key; and those with none, to append.
    pub(crate) fn new_messages(
        &self,
        messages: &[Message],
    ) -> Result<(Vec<Option<Message>>, Vec<Message>), StoreError> {
        let mut held = Vec::with_capacity(messages.len());
        let mut fresh = Vec::with_capacity(messages.len());
        for m in messages {
            match self.held(m, &client_msg_index(m))? {
                // This very message, stored by a write that was retried.
                Some(own) if own.id == m.id => held.push(None),
                found => {
                    if found.is_none() {
                        fresh.push(m.clone());
                    }
                    held.push(found);
                }
            }
        }
        Ok((held, fresh))
    }

    /// What [`Self::new_messages`] and then [`Self::append_messages`] of the
    /// new ones do, with one index lookup per message instead of two: the
    /// entry found missing is the one written. The keys must be distinct
    /// (see [`HistoryStore::append_new`]).
    pub(crate) fn append_new_messages(
        &mut self,
        messages: &[Message],
    ) -> Result<Vec<Option<Message>>, StoreError> {
        let mut held = Vec::with_capacity(messages.len());
        for m in messages {
            let index = client_msg_index(m);
            let found = self.held(m, &index)?;
            if found.is_none() {
                // A fresh id: nothing is stored under it to merge with.
                self.write_message(None, m)?;
                self.put_index(index, m.id);
            }
            // This very message, stored by a write that was retried, is new
            // to the caller, not a retry of an earlier send.
            held.push(found.filter(|own| own.id != m.id));
        }
        Ok(held)
    }

    /// Stores messages by id (storing one twice changes nothing), each with
    /// its `client_msg_id` index entry. When two messages claim one
    /// (sender, client_msg_id), the entry keeps the lower id whichever came
    /// first, so every replica ends up pointing at the same message.
    pub(crate) fn append_messages(&mut self, messages: &[Message]) -> Result<(), StoreError> {
        for message in messages {
            self.put_message(message)?;
            let index = client_msg_index(message);
            let lower_held = match self.get(Table::ClientMsgIds, &index)? {
                Some(held) => decode_u64(&held)? <= message.id.0,
                None => false,
            };
            if !lower_held {
                self.put_index(index, message.id);
            }
        }
        Ok(())
    }

    /// Stores `m` under its conversation and id unless the state stored
    /// there is as new (a higher `rev`; at one `rev`, the larger encoding, so
    /// that replicas given the same states in any order keep the same one).
    pub(crate) fn put_message(&mut self, m: &Message) -> Result<(), StoreError> {
        let held = self.stored(m)?;
        self.merge_message(held, m)
    }

    /// [`HistoryStore::update_message`]: as [`Self::put_message`], for a
    /// message stored already.
    pub(crate) fn update_message(&mut self, m: &Message) -> Result<(), StoreError> {
        match self.stored(m)? {
            Some(held) => self.merge_message(Some(held), m),
            None => Ok(()),
        }
    }

    /// What is stored under `m`'s id, as this batch will leave it.
    fn stored(&self, m: &Message) -> Result<Option<Message>, StoreError> {
        let key = message_key(&key_of(&[m.conversation.as_str()]), m.id);
        self.get(Table::Messages, &key)?
            .map(|bytes| decode::<Message>(&bytes))
            .transpose()
    }

    fn merge_message(&mut self, held: Option<Message>, m: &Message) -> Result<(), StoreError> {
        if let Some(h) = &held {
            let newer = m.rev > h.rev || (m.rev == h.rev && m != h && encode(m)? > encode(h)?);
            if !newer {
                return Ok(());
            }
        }
        self.write_message(held.as_ref(), m)
    }

    /// Writes `m` over `held` (what is stored under its id, if anything),
    /// moving its revision and mentions index entries along.
    fn write_message(&mut self, held: Option<&Message>, m: &Message) -> Result<(), StoreError> {
        let conversation = key_of(&[m.conversation.as_str()]);
        self.set(
            Table::Messages,
            message_key(&conversation, m.id),
            Some(encode(m)?),
        );
        if let Some(h) = held.filter(|h| h.rev > 0 && h.rev != m.rev) {
            self.set(Table::MessageRevs, rev_key(&conversation, h.rev), None);
        }
        if m.rev > 0 {
            self.set(
                Table::MessageRevs,
                rev_key(&conversation, m.rev),
                Some(m.id.0.to_be_bytes().to_vec()),
            );
        }
        for gone in held
            .iter()
            .flat_map(|h| h.mentions.iter())
            .filter(|u| !m.mentions.contains(u))
        {
            self.set(Table::Mentions, mention_key(m, gone), None);
        }
        for user in &m.mentions {
            self.set(Table::Mentions, mention_key(m, user), Some(Vec::new()));
        }
        Ok(())
    }

    /// Points the `client_msg_id` index entry `index` at message `id`.
    fn put_index(&mut self, index: Vec<u8>, id: MessageId) {
        self.set(
            Table::ClientMsgIds,
            index,
            Some(id.0.to_be_bytes().to_vec()),
        );
    }

    /// A read marker as it will be once this batch is written.
    pub(crate) fn read_marker(
        &self,
        conversation: &ConversationId,
        user: &UserId,
    ) -> Result<Option<MessageId>, StoreError> {
        let key = key_of(&[conversation.as_str(), user.as_str()]);
        match self.get(Table::ReadMarkers, &key)? {
            Some(value) => Ok(Some(MessageId(decode_u64(&value)?))),
            None => Ok(None),
        }
    }

    /// Moves a read marker to `up_to` unless it is there or beyond already:
    /// a marker never moves back, so markers set in any order (on one node,
    /// or on several and then exchanged) end up at the highest.
    pub(crate) fn raise_read_marker(
        &mut self,
        conversation: &ConversationId,
        user: &UserId,
        up_to: MessageId,
    ) -> Result<(), StoreError> {
        if self.read_marker(conversation, user)? >= Some(up_to) {
            return Ok(());
        }
        self.set(
            Table::ReadMarkers,
            key_of(&[conversation.as_str(), user.as_str()]),
            Some(up_to.0.to_be_bytes().to_vec()),
        );
        Ok(())
    }

    /// Writes a conversation's metadata; its `members` field is ignored.
    pub(crate) fn put_conversation_meta(
        &mut self,
        conversation: &Conversation,
    ) -> Result<(), StoreError> {
        let meta = ConversationMeta {
            id: conversation.id.clone(),
            kind: conversation.kind,
            title: conversation.title.clone(),
            created_at: conversation.created_at,
        };
        self.set(
            Table::Conversations,
            key_of(&[conversation.id.as_str()]),
            Some(encode(&meta)?),
        );
        Ok(())
    }

    /// Makes `user` a member with `role`, or (`None`) no member, keeping the
    /// per-user conversation index in step.
    pub(crate) fn set_member(
        &mut self,
        conversation: &ConversationId,
        user: &UserId,
        role: Option<Role>,
    ) -> Result<(), StoreError> {
        let (id, user) = (conversation.as_str(), user.as_str());
        let (member, index) = match role {
            Some(role) => (Some(encode(&role)?), Some(Vec::new())),
            None => (None, None),
        };
        self.set(Table::Members, key_of(&[id, user]), member);
        self.set(Table::UserConversations, key_of(&[user, id]), index);
        Ok(())
    }

    /// A user as it will be once this batch is written.
    pub(crate) fn user(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError> {
        match self.get(Table::Users, &key_of(&[id.as_str()]))? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Creates a user; [`StoreError::Conflict`] if the id is taken.
    /// Sets a flag unless a later setting (by `at`, then `origin`) holds it.
    pub(crate) fn set_user_flag(
        &mut self,
        user: &UserId,
        flag: UserFlag,
        on: bool,
        at: u64,
        origin: &str,
    ) -> Result<(), StoreError> {
        let key = flag_key(user, flag);
        if let Some(bytes) = self.get(Table::UserFlags, &key)? {
            let held: FlagState = decode(&bytes)?;
            if (held.at, held.origin.as_str()) > (at, origin) {
                return Ok(());
            }
        }
        let state = FlagState {
            on,
            at,
            origin: origin.to_owned(),
        };
        self.set(Table::UserFlags, key, Some(encode(&state)?));
        Ok(())
    }

    /// Records an admin action (the same entry twice is one).
    pub(crate) fn put_audit(&mut self, entry: &AuditEntry) -> Result<(), StoreError> {
        let mut key = Vec::with_capacity(16);
        key.extend_from_slice(&entry.at.to_be_bytes());
        key.extend_from_slice(&entry.id.to_be_bytes());
        self.set(Table::Audit, key, Some(encode(entry)?));
        Ok(())
    }

    pub(crate) fn create_user(&mut self, user: &UserRecord) -> Result<(), StoreError> {
        if self.user(&user.id)?.is_some() {
            return Err(StoreError::Conflict);
        }
        self.set(
            Table::Users,
            key_of(&[user.id.as_str()]),
            Some(encode(user)?),
        );
        Ok(())
    }

    /// Stores a user record, or if the id is taken keeps whichever of the two
    /// records is smaller by (created_at, password_hash, display_name): a
    /// total order, so every replica keeps the same record whatever order two
    /// creations of one id (on two sides of a partition) reach it in.
    pub(crate) fn merge_user(&mut self, user: &UserRecord) -> Result<(), StoreError> {
        if let Some(held) = self.user(&user.id)? {
            let rank = |u: &UserRecord| {
                (
                    u.created_at,
                    u.password_hash.clone(),
                    u.display_name.clone(),
                )
            };
            if rank(&held) <= rank(user) {
                return Ok(());
            }
        }
        self.set(
            Table::Users,
            key_of(&[user.id.as_str()]),
            Some(encode(user)?),
        );
        Ok(())
    }

    fn refresh(&self, token_hash: &str) -> Result<Option<StoredRefresh>, StoreError> {
        match self.get(Table::RefreshTokens, &key_of(&[token_hash]))? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn family_revoked(&self, family: &str) -> Result<bool, StoreError> {
        Ok(self.login(family)? == Some(LoginState::Revoked))
    }

    /// A family's record: written active with its first token, revoked for
    /// good (a revocation applied before the token, as replication may
    /// order them, stays).
    fn login(&self, family: &str) -> Result<Option<LoginState>, StoreError> {
        Ok(self
            .get(Table::RefreshFamilies, &key_of(&[family]))?
            .map(|v| login_of(&v)))
    }

    /// Merges a token's record into the stored one: `used` only ever turns
    /// on (so a late copy of the token's first record cannot make a used-up
    /// token usable again), and the other fields, which one token's records
    /// all share, are taken from the smaller record so the merge gives the
    /// same result in any order even if they did not.
    fn merge_refresh(&mut self, token: &RefreshToken) -> Result<(), StoreError> {
        let mut merged = StoredRefresh {
            user: token.user.clone(),
            family: token.family.clone(),
            expires_at: token.expires_at,
            used: token.used,
        };
        if let Some(held) = self.refresh(&token.token_hash)? {
            merged.used |= held.used;
            if (&held.user, &held.family, held.expires_at)
                < (&merged.user, &merged.family, merged.expires_at)
            {
                (merged.user, merged.family, merged.expires_at) =
                    (held.user, held.family, held.expires_at);
            }
        }
        self.set(
            Table::RefreshTokens,
            key_of(&[&token.token_hash]),
            Some(encode(&merged)?),
        );
        Ok(())
    }

    /// Applies a refresh-token effect; applying it again changes nothing.
    pub(crate) fn apply_refresh_effect(
        &mut self,
        effect: &RefreshEffect,
    ) -> Result<(), StoreError> {
        match effect {
            RefreshEffect::Tokens(tokens) => {
                for token in tokens {
                    self.merge_refresh(token)?;
                    let family = key_of(&[&token.family]);
                    if self.get(Table::RefreshFamilies, &family)?.is_none() {
                        self.set(Table::RefreshFamilies, family, Some(vec![ACTIVE]));
                    }
                }
            }
            RefreshEffect::RevokeFamily(family) => {
                self.set(
                    Table::RefreshFamilies,
                    key_of(&[family]),
                    Some(vec![REVOKED]),
                );
            }
        }
        Ok(())
    }

    /// Decides a rotation without writing anything: its outcome and the
    /// effect that makes it so ([`Self::apply_refresh_effect`]).
    pub(crate) fn plan_rotation(
        &self,
        old_hash: &str,
        new: &RefreshRecord,
        now: u64,
    ) -> Result<(Rotation, Option<RefreshEffect>), StoreError> {
        let Some(old) = self.refresh(old_hash)? else {
            return Ok((Rotation::Invalid, None));
        };
        if self.family_revoked(&old.family)? || now >= old.expires_at {
            return Ok((Rotation::Invalid, None));
        }
        if old.used {
            // Two parties hold tokens of this family; we cannot tell which is
            // the thief, so neither keeps a session.
            return Ok((
                Rotation::Reused,
                Some(RefreshEffect::RevokeFamily(old.family)),
            ));
        }
        let used_up = RefreshToken {
            token_hash: old_hash.to_owned(),
            user: old.user.clone(),
            family: old.family.clone(),
            expires_at: old.expires_at,
            used: true,
        };
        let next = RefreshToken {
            token_hash: new.token_hash.clone(),
            user: old.user.clone(),
            family: old.family,
            expires_at: new.expires_at,
            used: false,
        };
        Ok((
            Rotation::Rotated { user: old.user },
            Some(RefreshEffect::Tokens(vec![used_up, next])),
        ))
    }

    /// Decides a revocation without writing anything: the token's user, and
    /// the effect unless the family is revoked already.
    pub(crate) fn plan_revocation(
        &self,
        token_hash: &str,
    ) -> Result<(Option<UserId>, Option<RefreshEffect>), StoreError> {
        let Some(token) = self.refresh(token_hash)? else {
            return Ok((None, None));
        };
        let effect = if self.family_revoked(&token.family)? {
            None
        } else {
            Some(RefreshEffect::RevokeFamily(token.family))
        };
        Ok((Some(token.user), effect))
    }
}

#[async_trait]
impl HistoryStore for EmbeddedStore {
    async fn append(&self, messages: &[Message]) -> Result<(), StoreError> {
        if messages.is_empty() {
            return Ok(());
        }
        let messages = messages.to_vec();
        self.update(move |txn| txn.append_messages(&messages)).await
    }

    async fn append_new(&self, messages: &[Message]) -> Result<Vec<Option<Message>>, StoreError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let messages = messages.to_vec();
        self.update(move |txn| txn.append_new_messages(&messages))
            .await
    }

    async fn update_message(&self, message: &Message) -> Result<(), StoreError> {
        // The writer reads what is stored itself: it alone writes here.
        let message = message.clone();
        self.update(move |txn| txn.update_message(&message)).await
    }

    async fn message(
        &self,
        conversation: &ConversationId,
        id: MessageId,
    ) -> Result<Option<Message>, StoreError> {
        let conversation = conversation.clone();
        self.blocking(move |s| s.message(&conversation, id)).await
    }

    async fn changes(
        &self,
        conversation: &ConversationId,
        after_rev: u64,
        up_to_rev: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Changes, StoreError> {
        let conversation = conversation.clone();
        self.blocking(move |s| s.changes(&conversation, after_rev, up_to_rev, limit, max_bytes))
            .await
    }

    async fn last_rev(&self, conversation: &ConversationId) -> Result<u64, StoreError> {
        let conversation = conversation.clone();
        self.blocking(move |s| s.last_rev(&conversation)).await
    }

    async fn count_unread_mentions(
        &self,
        conversation: &ConversationId,
        reader: &UserId,
        after: MessageId,
        cap: u64,
    ) -> Result<u64, StoreError> {
        if cap == 0 {
            return Ok(0);
        }
        let (conversation, reader) = (conversation.clone(), reader.clone());
        self.blocking(move |s| s.count_unread_mentions(&conversation, &reader, after, cap))
            .await
    }

    async fn page(
        &self,
        conversation: &ConversationId,
        query: PageQuery,
    ) -> Result<Page, StoreError> {
        let conversation = conversation.clone();
        self.blocking(move |s| s.page(&conversation, query)).await
    }

    async fn last_message(
        &self,
        conversation: &ConversationId,
    ) -> Result<Option<Message>, StoreError> {
        let conversation = conversation.clone();
        self.blocking(move |s| s.last_message(&conversation)).await
    }

    async fn find_by_client_msg_id(
        &self,
        conversation: &ConversationId,
        sender: &UserId,
        client_msg_id: &ClientMsgId,
    ) -> Result<Option<Message>, StoreError> {
        let (conversation, sender, client_msg_id) =
            (conversation.clone(), sender.clone(), client_msg_id.clone());
        self.blocking(move |s| s.find_by_client_msg_id(&conversation, &sender, &client_msg_id))
            .await
    }

    async fn count_unread(
        &self,
        conversation: &ConversationId,
        reader: &UserId,
        after: MessageId,
        cap: u64,
    ) -> Result<u64, StoreError> {
        let (conversation, reader) = (conversation.clone(), reader.clone());
        self.blocking(move |s| s.count_unread(&conversation, &reader, after, cap))
            .await
    }
}

#[async_trait]
impl ConversationStore for EmbeddedStore {
    async fn conversation(&self, id: &ConversationId) -> Result<Option<Conversation>, StoreError> {
        let id = id.clone();
        self.blocking(move |s| s.conversation(&id)).await
    }

    async fn apply_conversation(&self, change: &ConversationChange) -> Result<(), StoreError> {
        let change = change.clone();
        self.update(move |txn| {
            txn.put_conversation_meta(&change.conversation)?;
            let id = &change.conversation.id;
            // Removals after upserts: a user in both lists ends up removed,
            // the same outcome as applying the two lists one after the other.
            for member in &change.upsert {
                txn.set_member(id, &member.user, Some(member.role))?;
            }
            for user in &change.remove {
                txn.set_member(id, user, None)?;
            }
            Ok(())
        })
        .await
    }

    async fn user_conversations(&self, user: &UserId) -> Result<Vec<ConversationId>, StoreError> {
        let user = user.clone();
        self.blocking(move |s| s.user_conversations(&user)).await
    }

    async fn set_read_marker(
        &self,
        conversation: &ConversationId,
        user: &UserId,
        up_to: MessageId,
    ) -> Result<(), StoreError> {
        let (conversation, user) = (conversation.clone(), user.clone());
        self.update(move |txn| txn.raise_read_marker(&conversation, &user, up_to))
            .await
    }

    async fn read_markers(
        &self,
        conversation: &ConversationId,
    ) -> Result<Vec<(UserId, MessageId)>, StoreError> {
        let conversation = conversation.clone();
        self.blocking(move |s| s.read_markers(&conversation)).await
    }

    async fn read_marker(
        &self,
        conversation: &ConversationId,
        user: &UserId,
    ) -> Result<Option<MessageId>, StoreError> {
        let (conversation, user) = (conversation.clone(), user.clone());
        self.blocking(move |s| s.read_marker(&conversation, &user))
            .await
    }
}

#[async_trait]
impl AccountStore for EmbeddedStore {
    async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let user = user.clone();
        self.update(move |txn| txn.create_user(&user)).await
    }

    async fn user(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError> {
        let id = id.clone();
        self.blocking(move |s| s.user(&id)).await
    }

    async fn put_refresh(&self, record: &RefreshRecord) -> Result<(), StoreError> {
        let effect = RefreshEffect::Tokens(vec![RefreshToken::unused(record)]);
        self.update(move |txn| txn.apply_refresh_effect(&effect))
            .await
    }

    async fn rotate_refresh(
        &self,
        old_hash: &str,
        new: &RefreshRecord,
        now: u64,
    ) -> Result<Rotation, StoreError> {
        let (old_hash, new) = (old_hash.to_owned(), new.clone());
        self.update(move |txn| {
            let (rotation, effect) = txn.plan_rotation(&old_hash, &new, now)?;
            if let Some(effect) = effect {
                txn.apply_refresh_effect(&effect)?;
            }
            Ok(rotation)
        })
        .await
    }

    async fn revoke_refresh_family(&self, token_hash: &str) -> Result<Option<UserId>, StoreError> {
        let token_hash = token_hash.to_owned();
        self.update(move |txn| {
            let (user, effect) = txn.plan_revocation(&token_hash)?;
            if let Some(effect) = effect {
                txn.apply_refresh_effect(&effect)?;
            }
            Ok(user)
        })
        .await
    }

    async fn login_state(&self, family: &str) -> Result<Option<LoginState>, StoreError> {
        let key = key_of(&[family]);
        self.blocking(move |s| {
            Ok(s.refresh_families
                .get(&key)
                .map_err(unavailable)?
                .map(|v| login_of(&v)))
        })
        .await
    }
}

impl LeaseStore for EmbeddedStore {}

#[async_trait]
impl ModerationStore for EmbeddedStore {
    async fn set_user_flag(
        &self,
        user: &UserId,
        flag: UserFlag,
        on: bool,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        let user = user.clone();
        self.update(move |txn| txn.set_user_flag(&user, flag, on, at_ms, ""))
            .await
    }

    async fn user_flags(&self, user: &UserId) -> Result<UserFlags, StoreError> {
        let user = user.clone();
        self.blocking(move |s| s.user_flags(&user)).await
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let entry = entry.clone();
        self.update(move |txn| txn.put_audit(&entry)).await
    }

    async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.blocking(move |s| s.audit(limit)).await
    }
}

/// A family's record: active (its tokens rotate) or revoked (for good).
const ACTIVE: u8 = 0;
const REVOKED: u8 = 1;

fn login_of(value: &[u8]) -> LoginState {
    // Anything but an active record is revoked: a record written before
    // families were recorded active was a revocation.
    match value {
        [ACTIVE] => LoginState::Active,
        _ => LoginState::Revoked,
    }
}

/// Appends `part` with its length in front.
fn push_part(key: &mut Vec<u8>, part: &str) {
    // Ids are at most 64 bytes and fjall keys at most 64 KiB, so u16 holds
    // every length a key can have.
    key.extend_from_slice(&(part.len() as u16).to_be_bytes());
    key.extend_from_slice(part.as_bytes());
}

/// A key of length-prefixed strings (the layout of every key here, and of
/// the replication keyspaces).
pub(crate) fn key_of(parts: &[&str]) -> Vec<u8> {
    let mut key = Vec::with_capacity(parts.iter().map(|p| p.len() + 2).sum::<usize>() + 12);
    for part in parts {
        push_part(&mut key, part);
    }
    key
}

/// The key of a message's `client_msg_id` index entry.
fn client_msg_index(m: &Message) -> Vec<u8> {
    key_of(&[
        m.conversation.as_str(),
        m.sender.as_str(),
        m.client_msg_id.as_str(),
    ])
}

/// A revision index key; `prefix` is the conversation's key part.
fn rev_key(prefix: &[u8], rev: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 8);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&rev.to_be_bytes());
    key
}

/// The revision of a revision index key.
fn rev_of_key(key: &[u8], prefix_len: usize) -> Result<u64, StoreError> {
    decode_u64(key.get(prefix_len..).unwrap_or_default())
}

/// The key of `user`'s mention in message `m`.
fn mention_key(m: &Message, user: &UserId) -> Vec<u8> {
    let mut key = key_of(&[m.conversation.as_str(), user.as_str()]);
    key.extend_from_slice(&m.id.0.to_be_bytes());
    key
}

/// `prefix` is the conversation's key part.
fn message_key(prefix: &[u8], id: MessageId) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 12);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&bucket_of(id).to_be_bytes());
    key.extend_from_slice(&id.0.to_be_bytes());
    key
}

/// At or above every message key of the conversation `prefix`.
fn message_key_max(prefix: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 12);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&[0xff; 12]);
    key
}

/// The one length-prefixed string that follows the first `prefix_len` bytes
/// of `key`.
fn last_part(key: &[u8], prefix_len: usize) -> Result<&str, StoreError> {
    let corrupt = || StoreError::Corrupt("malformed key".into());
    let rest = key.get(prefix_len..).ok_or_else(corrupt)?;
    let (len, bytes) = rest.split_first_chunk::<2>().ok_or_else(corrupt)?;
    if bytes.len() != usize::from(u16::from_be_bytes(*len)) {
        return Err(corrupt());
    }
    std::str::from_utf8(bytes).map_err(|_| corrupt())
}

fn user_id(s: &str) -> Result<UserId, StoreError> {
    UserId::new(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode_u64(bytes: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("expected an 8-byte id".into()))?;
    Ok(u64::from_be_bytes(bytes))
}

/// A flag's setting and when (and on which node, for ties) it was made.
#[derive(Serialize, Deserialize)]
struct FlagState {
    on: bool,
    at: u64,
    origin: String,
}

fn flag_key(user: &UserId, flag: UserFlag) -> Vec<u8> {
    key_of(&[user.as_str(), flag.as_str()])
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, StoreError> {
    // Every stored type encodes; a failure is a bug, reported as corrupt data
    // rather than as an outage that would invite retries.
    // Most stored values are a message of a few hundred bytes: room for one
    // up front spares the buffer's growth steps (a realloc each).
    let mut buf = Vec::with_capacity(256);
    rmp_serde::encode::write_named(&mut buf, value)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode: {e}")))?;
    Ok(buf)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    rmp_serde::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn unavailable(e: fjall::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn closed() -> StoreError {
    StoreError::Unavailable("the store is closed".into())
}
