//! Search indexing through the outbox: every mark of a conversation (a
//! message written, edited, deleted or reacted to) also queues an index
//! job for it, which the worker runs like any other job: retried when the
//! index is down, repeated rather than lost when a node dies mid-way. The
//! index keeps its own cursor per conversation, so a job repeated, or two
//! for one conversation, apply each change once.

use async_trait::async_trait;
use chat_protocol::ConversationId;
use chat_storage::{outbox_shard, Job};

use crate::jobs::{job_id, Work};

/// Brings a search index up to date with a conversation's changes.
#[async_trait]
pub trait Indexer: Send + Sync + 'static {
    /// Indexes `conversation`'s changes past the index's cursor, a batch at
    /// a time: whether more wait behind this batch.
    async fn index(&self, conversation: &ConversationId) -> Result<bool, String>;
}

/// The job that indexes `conversation`, due at once.
pub(crate) fn index_job(conversation: &ConversationId, now_ms: u64) -> Job {
    Job {
        shard: outbox_shard(conversation.as_str()),
        due_ms: now_ms,
        id: job_id(),
        key: conversation.to_string(),
        attempts: 0,
        payload: Work::Index {
            conversation: conversation.clone(),
        }
        .encode(),
    }
}
