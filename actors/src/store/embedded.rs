//! The embedded backend: fjall, an LSM tree on local disk.
//!
//! The keyspaces mirror the ScyllaDB tables so both backends answer the same
//! queries with the same kind of scan:
//!
//! | keyspace             | key                                   | value                 |
//! |----------------------|---------------------------------------|-----------------------|
//! | `messages`           | conversation, bucket (u32 BE), id (u64 BE) | the message (MessagePack map) |
//! | `client_msg_ids`     | conversation, sender, client_msg_id   | id (u64 BE)           |
//! | `conversations`      | conversation                          | id, kind, title, created_at |
//! | `members`            | conversation, user                    | role                  |
//! | `user_conversations` | user, conversation                    | empty                 |
//! | `read_markers`       | conversation, user                    | id (u64 BE)           |
//! | `users`              | user                                  | the user record       |
//! | `refresh_tokens`     | token hash                            | user, family, expiry, used |
//! | `refresh_families`   | family                                | revoked flag          |
//!
//! Every string in a key is preceded by its length (u16 BE): without it the
//! range of conversation `ab` would also hold the keys of conversation `abc`.
//!
//! fjall's calls block (and a durable write waits for an fsync), so none of
//! them runs on the async runtime. Writes of history, conversations and read
//! markers go to one writer thread that commits everything queued in one
//! batch with one fsync: a thousand conversations appending at once cost a
//! few fsyncs, not a thousand. Reads and the rare account writes run on the
//! blocking pool.

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
    bucket_of, ConversationChange, MessageStore, Page, PageQuery, RefreshRecord, Rotation,
    StoreError, UserRecord,
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

/// The [`MessageStore`] on fjall in one directory of local disk.
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
}

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
    conversations: Keyspace,
    members: Keyspace,
    user_conversations: Keyspace,
    read_markers: Keyspace,
    users: Keyspace,
    refresh_tokens: Keyspace,
    refresh_families: Keyspace,
    persist: PersistMode,
    /// Something was written since the last background fsync.
    dirty: AtomicBool,
    /// Set by `close`, under `auth`: account writes stop with the others.
    closed: AtomicBool,
    /// The account operations read, decide and write; two of them on the same
    /// key must not interleave (two sign-ups of one name, two rotations of one
    /// token). They are rare, so one lock for all of them costs nothing.
    auth: Mutex<()>,
}

/// The keyspaces the writer thread writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Table {
    Messages,
    ClientMsgIds,
    Conversations,
    Members,
    UserConversations,
    ReadMarkers,
}

/// One key to write (`Some`) or delete (`None`).
struct Op {
    table: Table,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
}

enum Job {
    Write {
        ops: Vec<Op>,
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
            conversations: keyspace("conversations")?,
            members: keyspace("members")?,
            user_conversations: keyspace("user_conversations")?,
            read_markers: keyspace("read_markers")?,
            users: keyspace("users")?,
            refresh_tokens: keyspace("refresh_tokens")?,
            refresh_families: keyspace("refresh_families")?,
            persist: durability.persist_mode(),
            dirty: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            auth: Mutex::new(()),
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
        // Under the lock, so no account write is half done once the flag is
        // up: the writer's final fsync below then covers every write.
        let inner = self.inner.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let _guard = inner.lock_auth();
            inner.closed.store(true, Ordering::Release);
        })
        .await;
        let (reply, done) = oneshot::channel();
        if jobs.send(Job::Close { reply }).await.is_ok() {
            // An error means the writer is gone already, which is what we wait for.
            let _ = done.await;
        }
    }

    async fn write(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let jobs = self.jobs.as_ref().ok_or_else(closed)?;
        let (reply, done) = oneshot::channel();
        jobs.send(Job::Write { ops, reply })
            .await
            .map_err(|_| closed())?;
        // A dropped reply means the writer died (a panic) without answering.
        done.await.map_err(|_| closed())?
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
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
        group.add(first);
        while group.jobs < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.add(job),
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
            group.add(job);
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
    fn add(&mut self, job: Job) {
        self.jobs += 1;
        match job {
            Job::Write { ops, reply } => {
                for op in ops {
                    self.writes.insert((op.table, op.key), op.value);
                }
                self.replies.push(reply);
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
            Table::Conversations => &self.conversations,
            Table::Members => &self.members,
            Table::UserConversations => &self.user_conversations,
            Table::ReadMarkers => &self.read_markers,
        }
    }

    /// Writes account keys at the store's durability. Callers hold `auth`.
    fn commit_auth<'a>(
        &self,
        writes: impl IntoIterator<Item = (&'a Keyspace, Vec<u8>, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        let mut batch = self.db.batch().durability(Some(self.persist));
        for (keyspace, key, value) in writes {
            batch.insert(keyspace, key, value);
        }
        batch.commit().map_err(unavailable)?;
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    fn lock_auth(&self) -> std::sync::MutexGuard<'_, ()> {
        // The lock guards no data, so a panic while holding it left nothing
        // half-updated in memory; fjall batches are atomic on disk.
        self.auth.lock().unwrap_or_else(|e| e.into_inner())
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
        let mut take = |guard: fjall::Guard| -> Result<bool, StoreError> {
            if messages.len() == limit {
                // One more in range is all `more` needs: no need to decode it.
                more = true;
                return Ok(false);
            }
            messages.push(decode::<Message>(&guard.value().map_err(unavailable)?)?);
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
        let id = MessageId(decode_u64(&id)?);
        let key = message_key(&key_of(&[conversation.as_str()]), id);
        match self.messages.get(&key).map_err(unavailable)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
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
            created_at: meta.created_at,
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

    fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let key = key_of(&[user.id.as_str()]);
        let value = encode(user)?;
        let _guard = self.lock_auth();
        if self.users.contains_key(&key).map_err(unavailable)? {
            return Err(StoreError::Conflict);
        }
        self.commit_auth([(&self.users, key, value)])
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

    fn put_refresh(&self, record: &RefreshRecord) -> Result<(), StoreError> {
        let value = encode(&StoredRefresh {
            user: record.user.clone(),
            family: record.family.clone(),
            expires_at: record.expires_at,
            used: false,
        })?;
        let _guard = self.lock_auth();
        self.commit_auth([(&self.refresh_tokens, key_of(&[&record.token_hash]), value)])
    }

    fn refresh(&self, token_hash: &str) -> Result<Option<StoredRefresh>, StoreError> {
        match self
            .refresh_tokens
            .get(key_of(&[token_hash]))
            .map_err(unavailable)?
        {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn family_revoked(&self, family: &str) -> Result<bool, StoreError> {
        self.refresh_families
            .contains_key(key_of(&[family]))
            .map_err(unavailable)
    }

    fn revoke_family(&self, family: &str) -> Result<(), StoreError> {
        self.commit_auth([(&self.refresh_families, key_of(&[family]), vec![1])])
    }

    fn rotate_refresh(
        &self,
        old_hash: &str,
        new: &RefreshRecord,
        now: u64,
    ) -> Result<Rotation, StoreError> {
        let _guard = self.lock_auth();
        let Some(mut old) = self.refresh(old_hash)? else {
            return Ok(Rotation::Invalid);
        };
        if self.family_revoked(&old.family)? || now >= old.expires_at {
            return Ok(Rotation::Invalid);
        }
        if old.used {
            // Two parties hold tokens of this family; we cannot tell which is
            // the thief, so neither keeps a session.
            self.revoke_family(&old.family)?;
            return Ok(Rotation::Reused);
        }
        old.used = true;
        let next = StoredRefresh {
            user: old.user.clone(),
            family: old.family.clone(),
            expires_at: new.expires_at,
            used: false,
        };
        self.commit_auth([
            (&self.refresh_tokens, key_of(&[old_hash]), encode(&old)?),
            (
                &self.refresh_tokens,
                key_of(&[&new.token_hash]),
                encode(&next)?,
            ),
        ])?;
        Ok(Rotation::Rotated { user: old.user })
    }

    fn revoke_refresh_family(&self, token_hash: &str) -> Result<Option<UserId>, StoreError> {
        let _guard = self.lock_auth();
        let Some(token) = self.refresh(token_hash)? else {
            return Ok(None);
        };
        self.revoke_family(&token.family)?;
        Ok(Some(token.user))
    }
}

#[async_trait]
impl MessageStore for EmbeddedStore {
    async fn append(&self, messages: &[Message]) -> Result<(), StoreError> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut ops = Vec::with_capacity(messages.len() * 2);
        for message in messages {
            let id = message.id;
            let conversation = key_of(&[message.conversation.as_str()]);
            ops.push(Op {
                table: Table::Messages,
                key: message_key(&conversation, id),
                value: Some(encode(message)?),
            });
            ops.push(Op {
                table: Table::ClientMsgIds,
                key: key_of(&[
                    message.conversation.as_str(),
                    message.sender.as_str(),
                    message.client_msg_id.as_str(),
                ]),
                value: Some(id.0.to_be_bytes().to_vec()),
            });
        }
        self.write(ops).await
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

    async fn conversation(&self, id: &ConversationId) -> Result<Option<Conversation>, StoreError> {
        let id = id.clone();
        self.blocking(move |s| s.conversation(&id)).await
    }

    async fn apply_conversation(&self, change: &ConversationChange) -> Result<(), StoreError> {
        let c = &change.conversation;
        let id = c.id.as_str();
        let meta = ConversationMeta {
            id: c.id.clone(),
            kind: c.kind,
            title: c.title.clone(),
            created_at: c.created_at,
        };
        let mut ops = Vec::with_capacity(1 + 2 * (change.upsert.len() + change.remove.len()));
        ops.push(Op {
            table: Table::Conversations,
            key: key_of(&[id]),
            value: Some(encode(&meta)?),
        });
        // Removals after upserts: a user in both lists ends up removed, the
        // same outcome as applying the two lists one after the other.
        for member in &change.upsert {
            let user = member.user.as_str();
            ops.push(Op {
                table: Table::Members,
                key: key_of(&[id, user]),
                value: Some(encode(&member.role)?),
            });
            ops.push(Op {
                table: Table::UserConversations,
                key: key_of(&[user, id]),
                value: Some(Vec::new()),
            });
        }
        for user in &change.remove {
            let user = user.as_str();
            ops.push(Op {
                table: Table::Members,
                key: key_of(&[id, user]),
                value: None,
            });
            ops.push(Op {
                table: Table::UserConversations,
                key: key_of(&[user, id]),
                value: None,
            });
        }
        self.write(ops).await
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
        self.write(vec![Op {
            table: Table::ReadMarkers,
            key: key_of(&[conversation.as_str(), user.as_str()]),
            value: Some(up_to.0.to_be_bytes().to_vec()),
        }])
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

    async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let user = user.clone();
        self.blocking(move |s| s.create_user(&user)).await
    }

    async fn user(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError> {
        let id = id.clone();
        self.blocking(move |s| s.user(&id)).await
    }

    async fn put_refresh(&self, record: &RefreshRecord) -> Result<(), StoreError> {
        let record = record.clone();
        self.blocking(move |s| s.put_refresh(&record)).await
    }

    async fn rotate_refresh(
        &self,
        old_hash: &str,
        new: &RefreshRecord,
        now: u64,
    ) -> Result<Rotation, StoreError> {
        let (old_hash, new) = (old_hash.to_owned(), new.clone());
        self.blocking(move |s| s.rotate_refresh(&old_hash, &new, now))
            .await
    }

    async fn revoke_refresh_family(&self, token_hash: &str) -> Result<Option<UserId>, StoreError> {
        let token_hash = token_hash.to_owned();
        self.blocking(move |s| s.revoke_refresh_family(&token_hash))
            .await
    }
}

/// Appends `part` with its length in front.
fn push_part(key: &mut Vec<u8>, part: &str) {
    // Ids are at most 64 bytes and fjall keys at most 64 KiB, so u16 holds
    // every length a key can have.
    key.extend_from_slice(&(part.len() as u16).to_be_bytes());
    key.extend_from_slice(part.as_bytes());
}

fn key_of(parts: &[&str]) -> Vec<u8> {
    let mut key = Vec::with_capacity(parts.iter().map(|p| p.len() + 2).sum::<usize>() + 12);
    for part in parts {
        push_part(&mut key, part);
    }
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

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, StoreError> {
    // Every stored type encodes; a failure is a bug, reported as corrupt data
    // rather than as an outage that would invite retries.
    rmp_serde::to_vec_named(value).map_err(|e| StoreError::Corrupt(format!("cannot encode: {e}")))
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
