//! The notification outbox: durable work for whoever notifies people, so
//! that a node dying mid-way loses none of it.
//!
//! Two stages. Every write of a message (a send, an edit, a delete, a
//! reaction) also sets its conversation's *mark* in the same atomic write,
//! under the conversation's shard ([`outbox_shard`]): "changes past the
//! notification cursor". A worker of that shard reads the marked
//! conversations' changes after their [`NotifyCursor`], decides who is to be
//! notified, writes [`Job`]s, moves the cursor and clears the mark unless a
//! newer write set it again. Jobs (a push, a digest mail, a webhook
//! delivery) sit under a shard and a due time until a worker of that shard
//! runs them, then go, or come back later, or end as dead letters.
//!
//! The store does not know what a job does: its payload is the worker's.
//! Which node works a shard is the worker's business too (a lease on
//! shared stores); the store only keeps the work.

use async_trait::async_trait;
use chat_protocol::{ConversationId, MessageId, UserId};
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// How many shards the outbox has. Fixed: a conversation's (and a user's)
/// shard must not move while marks and jobs wait under it.
pub const OUTBOX_SHARDS: u32 = 64;

/// The shard of a conversation's marks, or of a user's jobs: FNV-1a of the
/// id, the same on every node and in every release.
pub fn outbox_shard(id: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % OUTBOX_SHARDS
}

/// A conversation with changes past its cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// Which.
    pub conversation: ConversationId,
    /// Tells this setting of the mark from a later one: clearing with it
    /// leaves a mark set again since.
    pub token: u64,
}

/// How far a conversation's notifications went: changes up to `rev` are
/// done; messages up to `last_id` were seen as new (a later change of one
/// of them is an update).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyCursor {
    /// Highest revision done.
    pub rev: u64,
    /// Highest message id seen.
    pub last_id: MessageId,
}

/// A unit of notification work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Its shard ([`outbox_shard`] of `key`).
    pub shard: u32,
    /// Not before this (Unix ms).
    pub due_ms: u64,
    /// Unique (random).
    pub id: u64,
    /// Whose work it is (a user id, a webhook's name): the shard comes from
    /// it, and per-key limits count by it.
    pub key: String,
    /// Times it was tried and failed.
    pub attempts: u32,
    /// What to do, as the worker encoded it.
    pub payload: Vec<u8>,
}

impl Job {
    /// A job for `key`, due at `due_ms`, with a fresh id.
    pub fn new(key: &str, due_ms: u64, id: u64, payload: Vec<u8>) -> Job {
        Job {
            shard: outbox_shard(key),
            due_ms,
            id,
            key: key.to_owned(),
            attempts: 0,
            payload,
        }
    }
}

/// What a worker did with a mark: the conversation's new cursor, and
/// whether to clear the mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkDone {
    /// The mark's shard.
    pub shard: u32,
    /// The mark as read.
    pub mark: Mark,
    /// Where the conversation's cursor moves.
    pub cursor: NotifyCursor,
    /// Clear the mark (unless set again since).
    pub clear: bool,
}

/// A job given up on, kept for an operator to look at and replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadJob {
    /// The job as it last ran.
    pub job: Job,
    /// When it was given up (Unix ms).
    pub failed_at: u64,
    /// The last failure, in words.
    pub error: String,
}

/// The newest `limit` of `dead`, newest first: how every backend lists
/// dead letters.
pub(crate) fn newest_dead(mut dead: Vec<DeadJob>, limit: usize) -> Vec<DeadJob> {
    dead.sort_by_key(|d| std::cmp::Reverse((d.failed_at, d.job.id)));
    dead.truncate(limit);
    dead
}

/// A message waiting to go into a user's next digest mail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestItem {
    /// Its conversation.
    pub conversation: ConversationId,
    /// The message.
    pub message: MessageId,
}

/// The outbox's marks, cursors, jobs, dead letters and digests.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Up to `limit` marked conversations of `shard`.
    async fn marks(&self, shard: u32, limit: usize) -> Result<Vec<Mark>, StoreError>;

    /// Clears `mark` unless the conversation was marked again since.
    async fn clear_mark(&self, shard: u32, mark: &Mark) -> Result<(), StoreError>;

    /// `conversation`'s cursor (zero when none).
    async fn notify_cursor(
        &self,
        conversation: &ConversationId,
    ) -> Result<NotifyCursor, StoreError>;

    /// Moves `conversation`'s cursor to `cursor` (never back).
    async fn set_notify_cursor(
        &self,
        conversation: &ConversationId,
        cursor: NotifyCursor,
    ) -> Result<(), StoreError>;

    /// [`OutboxStore::set_notify_cursor`] then, where `clear`,
    /// [`OutboxStore::clear_mark`], for each of `done`: a worker's pass in
    /// one call, which a backend may write as one batch.
    async fn finish_marks(&self, done: &[MarkDone]) -> Result<(), StoreError> {
        for d in done {
            self.set_notify_cursor(&d.mark.conversation, d.cursor)
                .await?;
            if d.clear {
                self.clear_mark(d.shard, &d.mark).await?;
            }
        }
        Ok(())
    }

    /// Stores jobs (one with the id of a stored one replaces it).
    async fn put_jobs(&self, jobs: &[Job]) -> Result<(), StoreError>;

    /// Up to `limit` jobs of `shard` due at or before `now_ms`, soonest
    /// first.
    async fn due_jobs(&self, shard: u32, now_ms: u64, limit: usize)
        -> Result<Vec<Job>, StoreError>;

    /// How many jobs wait under `shard`, due or not.
    async fn count_jobs(&self, shard: u32) -> Result<u64, StoreError>;

    /// Removes a job (done, or replaced by its next attempt).
    async fn delete_job(&self, job: &Job) -> Result<(), StoreError>;

    /// Removes `jobs`: what a worker finished in a pass, which a backend may
    /// write as one batch (a write per job would cost a durable commit per
    /// push).
    async fn delete_jobs(&self, jobs: &[Job]) -> Result<(), StoreError> {
        for job in jobs {
            self.delete_job(job).await?;
        }
        Ok(())
    }

    /// Keeps a job given up on.
    async fn put_dead_job(&self, dead: &DeadJob) -> Result<(), StoreError>;

    /// The dead letters, newest first, at most `limit`.
    async fn dead_jobs(&self, limit: usize) -> Result<Vec<DeadJob>, StoreError>;

    /// Removes and returns a dead letter (to replay it).
    async fn take_dead_job(&self, id: u64) -> Result<Option<DeadJob>, StoreError>;

    /// Adds messages to `user`'s next digest. (Whoever adds also schedules
    /// a mail job: two adders racing must not both skip it, so the store
    /// does not tell whether the digest was empty.)
    async fn add_digest_items(&self, user: &UserId, items: &[DigestItem])
        -> Result<(), StoreError>;

    /// What waits for `user`'s next digest, oldest first.
    async fn digest_items(&self, user: &UserId) -> Result<Vec<DigestItem>, StoreError>;

    /// Removes `items` from `user`'s digest (mailed, or read first).
    async fn remove_digest_items(
        &self,
        user: &UserId,
        items: &[DigestItem],
    ) -> Result<(), StoreError>;
}
