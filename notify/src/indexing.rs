//! Search indexing through the outbox: every write of a message (a send,
//! an edit, a delete, a reaction) sets its conversation's mark, and the
//! conversations a pass worked are indexed at the end of that pass, all at
//! once, before their marks are cleared: they share the index's commits
//! (one or a few a pass, where a job per conversation run shard by shard
//! made one per shard round). One the index could not take, or with more
//! changes waiting than a pass indexes, gets an index job, which the
//! worker runs like any other: retried while the index is down. A node dying
//! mid-way leaves the marks set, so the work is repeated, never lost. The
//! index keeps its own cursor per conversation, so a repeat, or two for
//! one conversation, apply each change once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chat_protocol::ConversationId;
use chat_storage::{outbox_shard, Job};
use futures_util::stream::{self, StreamExt};

use crate::jobs::{job_id, Work};
use crate::Ctx;

/// Conversations indexed at once at the end of a pass: they wait for the
/// same commits, and a pass makes one commit per this many conversations
/// (the next starts as one finishes, after its commit). A commit costs the
/// embedded index some 20-35 ms of CPU whatever it holds (a fresh segment
/// writer's tables, the segment's files, the reader's reload, the merges
/// of one more segment; `cargo run --release -p chat-search --example
/// index_cost`): at 64, a node with 100 conversations written each second
/// made two commits a pass. What waits for a commit holds no messages (the
/// index has taken them), so the memory this bounds is that of the reads
/// running at once, at most `CHANGE_BYTES_PER_RUN` each.
const INDEX_AT_ONCE: usize = 256;
/// Batches of one conversation's changes indexed in a pass; a longer
/// backlog goes on in an index job, so that one busy conversation does not
/// hold the pass (and the others' notifications) back.
const BATCHES_PER_PASS: usize = 4;

/// When a pass indexes what it marked: once `every` has passed since the
/// last pass that did, or at once when `INDEX_AT_ONCE` conversations or more
/// wait (so the marks kept meanwhile stay fewer than a shard's listing, and
/// none waits behind others that stay set). The first pass with marks after
/// a quiet spell indexes at once: a lone message is searchable after one
/// pass, as before; it is a steady stream whose commits this spaces out.
pub(crate) struct Cadence {
    every: Duration,
    last: Mutex<Option<Instant>>,
}

impl Cadence {
    pub(crate) fn every(every: Duration) -> Cadence {
        Cadence {
            every,
            last: Mutex::new(None),
        }
    }

    /// Whether a pass with `marked` conversations indexes them now; if it
    /// does, the next waits `every` from now.
    pub(crate) fn due(&self, marked: usize) -> bool {
        self.due_at(marked, Instant::now())
    }

    fn due_at(&self, marked: usize, now: Instant) -> bool {
        if marked == 0 {
            return false;
        }
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let due = marked >= INDEX_AT_ONCE
            || last.is_none_or(|at| now.saturating_duration_since(at) >= self.every);
        if due {
            *last = Some(now);
        }
        due
    }
}

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

/// Indexes `conversations` (those whose marks a pass worked) before their
/// marks are cleared; those with more to do, or that failed, get an index
/// job. Returns the conversations whose marks must stay set: their job could
/// not be stored either, so the next pass starts over with them.
pub(crate) async fn index_marked(
    ctx: &Ctx,
    indexer: &Arc<dyn Indexer>,
    conversations: Vec<ConversationId>,
) -> HashSet<ConversationId> {
    let results: Vec<(ConversationId, Result<bool, String>)> = stream::iter(conversations)
        .map(|c| async move {
            let mut batches = 1;
            loop {
                match indexer.index(&c).await {
                    Ok(true) if batches < BATCHES_PER_PASS => batches += 1,
                    other => return (c, other),
                }
            }
        })
        .buffer_unordered(INDEX_AT_ONCE)
        .collect()
        .await;
    let mut left = Vec::new();
    for (c, result) in results {
        match result {
            Ok(false) => {}
            Ok(true) => left.push(c),
            Err(why) => {
                ctx.metrics.counted(&ctx.metrics.failed, "search", 1);
                tracing::debug!(conversation = %c, %why, "not indexed; an index job retries it");
                left.push(c);
            }
        }
    }
    if left.is_empty() {
        return HashSet::new();
    }
    let now = chat_protocol::now_ms();
    let jobs: Vec<Job> = left.iter().map(|c| index_job(c, now)).collect();
    match ctx.store.put_jobs(&jobs).await {
        Ok(()) => HashSet::new(),
        Err(e) => {
            tracing::warn!(error = %e, "index jobs not stored; their marks stay for the next pass");
            left.into_iter().collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_stream_is_indexed_once_per_period_a_flood_at_once() {
        let c = Cadence::every(Duration::from_secs(2));
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        assert!(!c.due_at(0, at(0)), "nothing marked, nothing to index");
        assert!(
            c.due_at(3, at(0)),
            "the first marks after a quiet spell go at once"
        );
        assert!(!c.due_at(3, at(1000)), "one second later they wait");
        assert!(c.due_at(INDEX_AT_ONCE, at(1500)), "a flood does not wait");
        assert!(
            !c.due_at(3, at(2500)),
            "the flood's take restarted the period"
        );
        assert!(c.due_at(3, at(3500)), "two seconds after the last take");
    }
}
