//! The notification outbox on the embedded store.
//!
//! | keyspace         | key                                  | value              |
//! |------------------|--------------------------------------|--------------------|
//! | `notify_marks`   | shard (u32 BE), conversation         | token (u64 BE)     |
//! | `notify_cursors` | conversation                         | `NotifyCursor`     |
//! | `jobs`           | shard (u32 BE), due (u64 BE), id (u64 BE) | `Job`         |
//! | `dead_jobs`      | id (u64 BE)                          | `DeadJob`          |
//! | `digest_items`   | user, conversation, message (u64 BE) | empty              |
//!
//! A mark's token is the revision of the write that set it: a later write
//! of the conversation has a higher one, so clearing with an older token
//! leaves it. The tokens live in memory (`marks.rs`): `notify_marks` holds
//! which conversations are marked, written when one becomes marked and when
//! its mark is cleared, not at every write.

use async_trait::async_trait;
use chat_protocol::{ConversationId, MessageId, UserId};

use super::keys::{decode, decode_u64, encode, key_of, split_part};
use super::keyspaces::{Inner, Table};
use super::registers::{RegisterTable, Writes};
use super::txn::Txn;
use super::EmbeddedStore;
use crate::outbox::{
    newest_dead, outbox_shard, DeadJob, DigestItem, Job, Mark, MarkDone, NotifyCursor,
};
use crate::{corrupt, unavailable, OutboxStore, StoreError};

fn mark_key(shard: u32, conversation: &str) -> Vec<u8> {
    let mut key = shard.to_be_bytes().to_vec();
    key.extend_from_slice(&key_of(&[conversation]));
    key
}

fn job_key(job: &Job) -> Vec<u8> {
    let mut key = Vec::with_capacity(20);
    key.extend_from_slice(&job.shard.to_be_bytes());
    key.extend_from_slice(&job.due_ms.to_be_bytes());
    key.extend_from_slice(&job.id.to_be_bytes());
    key
}

fn digest_key(user: &UserId, item: &DigestItem) -> Vec<u8> {
    let mut key = key_of(&[user.as_str(), item.conversation.as_str()]);
    key.extend_from_slice(&item.message.0.to_be_bytes());
    key
}

impl Txn<'_> {
    /// Marks `conversation` as changed by a write at `rev`: how every
    /// write of a message reaches the outbox, in the write's own batch.
    pub(crate) fn mark_for_notify(&mut self, conversation: &ConversationId, rev: u64) {
        let key = mark_key(outbox_shard(conversation.as_str()), conversation.as_str());
        self.set(Table::NotifyMarks, key, Some(rev.to_be_bytes().to_vec()));
    }
}

impl Txn<'_> {
    /// Clears `mark` unless a write set it again since it was read.
    pub(crate) fn clear_mark(&mut self, shard: u32, mark: &Mark) -> Result<(), StoreError> {
        let key = mark_key(shard, mark.conversation.as_str());
        let held = self.get(Table::NotifyMarks, &key)?;
        if held.is_some_and(|v| decode_u64(&v).ok() == Some(mark.token)) {
            self.set(Table::NotifyMarks, key, None);
        }
        Ok(())
    }

    /// Moves a conversation's notification cursor to `cursor`, each field
    /// by max: never back, whatever order moves arrive in.
    pub(crate) fn raise_notify_cursor(
        &mut self,
        conversation: &ConversationId,
        cursor: NotifyCursor,
    ) -> Result<(), StoreError> {
        let key = key_of(&[conversation.as_str()]);
        let held: NotifyCursor = match self.get(Table::NotifyCursors, &key)? {
            Some(bytes) => decode(&bytes)?,
            None => NotifyCursor::default(),
        };
        let next = NotifyCursor {
            rev: held.rev.max(cursor.rev),
            last_id: held.last_id.max(cursor.last_id),
        };
        if next != held {
            self.set(Table::NotifyCursors, key, Some(encode(&next)?));
        }
        Ok(())
    }
}

impl Inner {
    fn marks(&self, shard: u32, limit: usize) -> Result<Vec<Mark>, StoreError> {
        let mut out = Vec::new();
        for (key, token) in self.held_marks.scan(&shard.to_be_bytes(), limit) {
            let (id, _) = split_part(&key[4..])?;
            out.push(Mark {
                conversation: ConversationId::new(id).map_err(corrupt)?,
                token,
            });
        }
        Ok(out)
    }

    fn due_jobs(&self, shard: u32, now_ms: u64, limit: usize) -> Result<Vec<Job>, StoreError> {
        let mut first = shard.to_be_bytes().to_vec();
        first.extend_from_slice(&[0; 16]);
        let mut last = shard.to_be_bytes().to_vec();
        last.extend_from_slice(&now_ms.to_be_bytes());
        last.extend_from_slice(&[0xff; 8]);
        let mut out = Vec::new();
        for guard in self.jobs.range(first..=last).take(limit) {
            out.push(decode(&guard.value().map_err(unavailable)?)?);
        }
        Ok(out)
    }

    fn digest_items(&self, user: &UserId) -> Result<Vec<DigestItem>, StoreError> {
        let prefix = key_of(&[user.as_str()]);
        let mut out = Vec::new();
        for guard in self.digest_items.prefix(&prefix) {
            let key = guard.key().map_err(unavailable)?;
            let (conversation, rest) = split_part(&key[prefix.len()..])?;
            out.push(DigestItem {
                conversation: ConversationId::new(conversation).map_err(corrupt)?,
                message: MessageId(decode_u64(rest)?),
            });
        }
        out.sort_by_key(|i| i.message);
        Ok(out)
    }
}

impl Writes {
    /// [`OutboxStore::put_jobs`].
    pub(crate) fn jobs(jobs: &[Job]) -> Result<Writes, StoreError> {
        let mut w = Writes::default();
        for j in jobs {
            w.put(RegisterTable::Jobs, job_key(j), encode(j)?);
        }
        Ok(w)
    }

    /// [`OutboxStore::delete_job`].
    pub(crate) fn delete_job(job: &Job) -> Writes {
        Writes::one(RegisterTable::Jobs, job_key(job), None)
    }

    /// [`OutboxStore::delete_jobs`].
    pub(crate) fn delete_jobs(jobs: &[Job]) -> Writes {
        let mut w = Writes::default();
        for job in jobs {
            w.delete(RegisterTable::Jobs, job_key(job));
        }
        w
    }

    /// [`OutboxStore::put_dead_job`].
    pub(crate) fn dead_job(dead: &DeadJob) -> Result<Writes, StoreError> {
        let key = dead.job.id.to_be_bytes().to_vec();
        Ok(Writes::one(
            RegisterTable::DeadJobs,
            key,
            Some(encode(dead)?),
        ))
    }

    /// [`OutboxStore::take_dead_job`]'s removal.
    pub(crate) fn delete_dead_job(id: u64) -> Writes {
        Writes::one(RegisterTable::DeadJobs, id.to_be_bytes().to_vec(), None)
    }

    /// [`OutboxStore::add_digest_items`] (`add`) or
    /// [`OutboxStore::remove_digest_items`].
    pub(crate) fn digest_items(user: &UserId, items: &[DigestItem], add: bool) -> Writes {
        let mut w = Writes::default();
        for i in items {
            match add {
                true => w.put(RegisterTable::DigestItems, digest_key(user, i), Vec::new()),
                false => w.delete(RegisterTable::DigestItems, digest_key(user, i)),
            }
        }
        w
    }
}

#[async_trait]
impl OutboxStore for EmbeddedStore {
    async fn marks(&self, shard: u32, limit: usize) -> Result<Vec<Mark>, StoreError> {
        self.blocking(move |s| s.marks(shard, limit)).await
    }

    async fn clear_mark(&self, shard: u32, mark: &Mark) -> Result<(), StoreError> {
        let mark = mark.clone();
        self.update(move |txn| txn.clear_mark(shard, &mark)).await
    }

    async fn notify_cursor(
        &self,
        conversation: &ConversationId,
    ) -> Result<NotifyCursor, StoreError> {
        let key = key_of(&[conversation.as_str()]);
        self.blocking(move |s| {
            s.notify_cursors
                .get(&key)
                .map_err(unavailable)?
                .map(|b| decode(&b))
                .transpose()
                .map(Option::unwrap_or_default)
        })
        .await
    }

    async fn set_notify_cursor(
        &self,
        conversation: &ConversationId,
        cursor: NotifyCursor,
    ) -> Result<(), StoreError> {
        let conversation = conversation.clone();
        self.update(move |txn| txn.raise_notify_cursor(&conversation, cursor))
            .await
    }

    async fn finish_marks(&self, done: &[MarkDone]) -> Result<(), StoreError> {
        if done.is_empty() {
            return Ok(());
        }
        let done = done.to_vec();
        // One batch for the pass: one commit, however many conversations.
        self.update(move |txn| {
            for d in &done {
                txn.raise_notify_cursor(&d.mark.conversation, d.cursor)?;
                if d.clear {
                    txn.clear_mark(d.shard, &d.mark)?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn put_jobs(&self, jobs: &[Job]) -> Result<(), StoreError> {
        if jobs.is_empty() {
            return Ok(());
        }
        self.write(Writes::jobs(jobs)?).await
    }

    async fn due_jobs(
        &self,
        shard: u32,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        self.blocking(move |s| s.due_jobs(shard, now_ms, limit))
            .await
    }

    async fn count_jobs(&self, shard: u32) -> Result<u64, StoreError> {
        self.blocking(move |s| Ok(s.jobs.prefix(shard.to_be_bytes()).count() as u64))
            .await
    }

    async fn delete_job(&self, job: &Job) -> Result<(), StoreError> {
        self.write(Writes::delete_job(job)).await
    }

    async fn delete_jobs(&self, jobs: &[Job]) -> Result<(), StoreError> {
        self.write(Writes::delete_jobs(jobs)).await
    }

    async fn put_dead_job(&self, dead: &DeadJob) -> Result<(), StoreError> {
        self.write(Writes::dead_job(dead)?).await
    }

    async fn dead_jobs(&self, limit: usize) -> Result<Vec<DeadJob>, StoreError> {
        let all: Vec<DeadJob> = self
            .blocking(|s| {
                s.dead_jobs
                    .iter()
                    .map(|g| decode(&g.value().map_err(unavailable)?))
                    .collect()
            })
            .await?;
        Ok(newest_dead(all, limit))
    }

    async fn take_dead_job(&self, id: u64) -> Result<Option<DeadJob>, StoreError> {
        let key = id.to_be_bytes().to_vec();
        self.update(move |txn| {
            let held = txn.get(Table::DeadJobs, &key)?;
            txn.set(Table::DeadJobs, key, None);
            held.map(|b| decode(&b)).transpose()
        })
        .await
    }

    async fn add_digest_items(
        &self,
        user: &UserId,
        items: &[DigestItem],
    ) -> Result<(), StoreError> {
        self.write(Writes::digest_items(user, items, true)).await
    }

    async fn digest_items(&self, user: &UserId) -> Result<Vec<DigestItem>, StoreError> {
        let user = user.clone();
        self.blocking(move |s| s.digest_items(&user)).await
    }

    async fn remove_digest_items(
        &self,
        user: &UserId,
        items: &[DigestItem],
    ) -> Result<(), StoreError> {
        self.write(Writes::digest_items(user, items, false)).await
    }
}
