//! The notification outbox on ScyllaDB. A mark is a row per (shard,
//! conversation) that every message write inserts alongside its rows; its
//! token is the row's write time, and clearing deletes with that timestamp,
//! so a mark written again since survives (the conversation's single writer
//! moves between nodes only after a lease runs out, far longer than the
//! clocks' skew). Jobs are rows of their shard's partition, ordered by due
//! time.

use async_trait::async_trait;
use chat_protocol::{ConversationId, Message, MessageId, UserId};
use futures_util::future::try_join_all;

use super::notifications::{blob, unblob};
use super::store::ScyllaStore;
use crate::outbox::{newest_dead, outbox_shard, DeadJob, DigestItem, Job, Mark, NotifyCursor};
use crate::{corrupt, OutboxStore, StoreError};

impl ScyllaStore {
    /// Marks the conversations of `messages` (each at its highest `rev`):
    /// how every message write on ScyllaDB reaches the outbox. Run with the
    /// write; a write is acknowledged only if this succeeded too.
    pub(super) async fn mark_for_notify(&self, messages: &[&Message]) -> Result<(), StoreError> {
        let mut top: Vec<(&ConversationId, u64)> = Vec::new();
        for m in messages {
            match top.iter_mut().find(|(c, _)| *c == &m.conversation) {
                Some((_, rev)) => *rev = (*rev).max(m.rev),
                None => top.push((&m.conversation, m.rev)),
            }
        }
        try_join_all(top.into_iter().map(|(c, rev)| {
            let shard = outbox_shard(c.as_str()) as i32;
            self.run(&self.q.notify.put_mark, (shard, c.as_str(), rev as i64))
        }))
        .await?;
        Ok(())
    }
}

impl ScyllaStore {
    /// Runs `statement` (an insert or a delete) on each of `user`'s digest
    /// rows `items`.
    async fn digest_rows(
        &self,
        statement: &scylla::statement::prepared::PreparedStatement,
        user: &UserId,
        items: &[DigestItem],
    ) -> Result<(), StoreError> {
        try_join_all(items.iter().map(|i| {
            self.run(
                statement,
                (user.as_str(), i.conversation.as_str(), i.message.0 as i64),
            )
        }))
        .await?;
        Ok(())
    }
}

#[async_trait]
impl OutboxStore for ScyllaStore {
    async fn marks(&self, shard: u32, limit: usize) -> Result<Vec<Mark>, StoreError> {
        // CQL refuses `LIMIT 0`; up to none is none.
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let rows = self
            .rows(&self.q.notify.select_marks, (shard as i32, limit))
            .await?;
        let mut out = Vec::new();
        for row in rows.rows::<(String, Option<i64>)>().map_err(corrupt)? {
            let (id, written) = row.map_err(corrupt)?;
            out.push(Mark {
                conversation: ConversationId::new(&id).map_err(corrupt)?,
                token: written.unwrap_or(0) as u64,
            });
        }
        Ok(out)
    }

    async fn clear_mark(&self, shard: u32, mark: &Mark) -> Result<(), StoreError> {
        self.run(
            &self.q.notify.clear_mark,
            (mark.token as i64, shard as i32, mark.conversation.as_str()),
        )
        .await?;
        Ok(())
    }

    async fn notify_cursor(
        &self,
        conversation: &ConversationId,
    ) -> Result<NotifyCursor, StoreError> {
        let rows = self
            .rows(&self.q.notify.select_cursor, (conversation.as_str(),))
            .await?;
        Ok(
            match rows
                .maybe_first_row::<(Option<i64>, Option<i64>)>()
                .map_err(corrupt)?
            {
                Some((rev, last)) => NotifyCursor {
                    rev: rev.unwrap_or(0) as u64,
                    last_id: MessageId(last.unwrap_or(0) as u64),
                },
                None => NotifyCursor::default(),
            },
        )
    }

    async fn set_notify_cursor(
        &self,
        conversation: &ConversationId,
        cursor: NotifyCursor,
    ) -> Result<(), StoreError> {
        // A plain read then write: one worker (the shard's lease holder)
        // moves a conversation's cursor.
        let held = OutboxStore::notify_cursor(self, conversation).await?;
        let next = NotifyCursor {
            rev: held.rev.max(cursor.rev),
            last_id: held.last_id.max(cursor.last_id),
        };
        if next != held {
            self.run(
                &self.q.notify.put_cursor,
                (
                    conversation.as_str(),
                    next.rev as i64,
                    next.last_id.0 as i64,
                ),
            )
            .await?;
        }
        Ok(())
    }

    async fn put_jobs(&self, jobs: &[Job]) -> Result<(), StoreError> {
        try_join_all(jobs.iter().map(|j| async move {
            let row = (j.shard as i32, j.due_ms as i64, j.id as i64, blob(j)?);
            self.run(&self.q.notify.put_job, row).await
        }))
        .await?;
        Ok(())
    }

    async fn due_jobs(
        &self,
        shard: u32,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        // CQL refuses `LIMIT 0`; up to none is none.
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let rows = self
            .rows(&self.q.notify.select_due_jobs, (shard as i32, now, limit))
            .await?;
        rows.rows::<(Vec<u8>,)>()
            .map_err(corrupt)?
            .map(|r| unblob(&r.map_err(corrupt)?.0))
            .collect()
    }

    async fn count_jobs(&self, shard: u32) -> Result<u64, StoreError> {
        let rows = self
            .rows(&self.q.notify.count_jobs, (shard as i32,))
            .await?;
        let (n,) = rows.first_row::<(i64,)>().map_err(corrupt)?;
        Ok(n.max(0) as u64)
    }

    async fn delete_job(&self, job: &Job) -> Result<(), StoreError> {
        self.run(
            &self.q.notify.delete_job,
            (job.shard as i32, job.due_ms as i64, job.id as i64),
        )
        .await?;
        Ok(())
    }

    async fn delete_jobs(&self, jobs: &[Job]) -> Result<(), StoreError> {
        // Concurrent single-row deletes: a batch would cross partitions
        // (a shard is one) only to be split again by the coordinator.
        let deletes = jobs.iter().map(|job| {
            self.run(
                &self.q.notify.delete_job,
                (job.shard as i32, job.due_ms as i64, job.id as i64),
            )
        });
        for done in futures_util::future::join_all(deletes).await {
            done?;
        }
        Ok(())
    }

    async fn put_dead_job(&self, dead: &DeadJob) -> Result<(), StoreError> {
        self.run(&self.q.notify.put_dead, (dead.job.id as i64, blob(dead)?))
            .await?;
        Ok(())
    }

    async fn dead_jobs(&self, limit: usize) -> Result<Vec<DeadJob>, StoreError> {
        let all: Vec<DeadJob> = self.all_blobs(&self.q.notify.select_dead, ()).await?;
        Ok(newest_dead(all, limit))
    }

    async fn take_dead_job(&self, id: u64) -> Result<Option<DeadJob>, StoreError> {
        let Some(dead) = self
            .one_blob::<DeadJob>(&self.q.notify.select_one_dead, (id as i64,))
            .await?
        else {
            return Ok(None);
        };
        // Of two takers, the one whose delete applied has it.
        let result = self.run(&self.q.notify.take_dead, (id as i64,)).await?;
        Ok(super::cql::applied(result)?.then_some(dead))
    }

    async fn add_digest_items(
        &self,
        user: &UserId,
        items: &[DigestItem],
    ) -> Result<(), StoreError> {
        self.digest_rows(&self.q.notify.put_digest_item, user, items)
            .await
    }

    async fn digest_items(&self, user: &UserId) -> Result<Vec<DigestItem>, StoreError> {
        let mut out = Vec::new();
        self.for_each_row(
            &self.q.notify.select_digest_items,
            (user.as_str(),),
            |rows| {
                for row in rows.rows::<(String, i64)>().map_err(corrupt)? {
                    let (c, m) = row.map_err(corrupt)?;
                    out.push(DigestItem {
                        conversation: ConversationId::new(&c).map_err(corrupt)?,
                        message: MessageId(m as u64),
                    });
                }
                Ok(true)
            },
        )
        .await?;
        out.sort_by_key(|i| i.message);
        Ok(out)
    }

    async fn remove_digest_items(
        &self,
        user: &UserId,
        items: &[DigestItem],
    ) -> Result<(), StoreError> {
        self.digest_rows(&self.q.notify.delete_digest_item, user, items)
            .await
    }
}
