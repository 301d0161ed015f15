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
///
/// Times are the passes' scheduled ticks, not when a pass got this far (its
/// shards' work before it takes a different time each pass, and would push
/// every other turn one tick later). Passes that fall behind their schedule
/// (more than a quarter of `poll` late) index every time: deferring then
/// would carry a write past the 5 s the protocol allows, and their commits
/// are large anyway. So a write waits at most `every` plus a pass or two.
pub(crate) struct Cadence {
    every: Duration,
    poll: Duration,
    last: Mutex<Ticks>,
}

#[derive(Default)]
struct Ticks {
    /// The tick of the last pass that indexed.
    indexed: Option<Instant>,
    /// The tick of the last pass.
    pass: Option<Instant>,
}

impl Cadence {
    pub(crate) fn new(every: Duration, poll: Duration) -> Cadence {
        Cadence {
            every,
            poll,
            last: Mutex::new(Ticks::default()),
        }
    }

    /// Whether the pass of tick `at`, with `marked` conversations, indexes
    /// them now; if it does, the next waits `every` from `at`.
    pub(crate) fn due(&self, marked: usize, at: Instant) -> bool {
        let mut t = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let behind = t
            .pass
            .is_some_and(|p| at.saturating_duration_since(p) > self.poll + self.poll / 4);
        t.pass = Some(at);
        if marked == 0 {
            return false;
        }
        // Past a shard's listing, kept marks could hide others behind them.
        let due = marked >= INDEX_AT_ONCE.min(crate::expand::MARKS_PER_SHARD)
            || behind
            || t.indexed
                .is_none_or(|i| at.saturating_duration_since(i) >= self.every);
        if due {
            t.indexed = Some(at);
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
        let c = Cadence::new(Duration::from_secs(2), Duration::from_secs(1));
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        assert!(!c.due(0, at(0)), "nothing marked, nothing to index");
        assert!(
            c.due(3, at(1000)),
            "the first marks after a quiet spell go at once"
        );
        assert!(!c.due(3, at(2000)), "one tick later they wait");
        assert!(c.due(3, at(3000)), "two ticks after the last take");
        assert!(c.due(INDEX_AT_ONCE, at(4000)), "a flood does not wait");
        assert!(!c.due(3, at(5000)), "the flood's take restarted the period");
        assert!(c.due(3, at(6000)), "two ticks after the flood's take");
    }

    #[test]
    fn passes_behind_their_schedule_index_every_time() {
        let c = Cadence::new(Duration::from_secs(2), Duration::from_secs(1));
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        assert!(c.due(3, at(0)));
        assert!(!c.due(3, at(1200)), "a fifth late is on schedule: it waits");
        assert!(c.due(3, at(2400)), "two ticks and more since the take");
        assert!(
            c.due(3, at(4000)),
            "1.6 s after the last tick: behind, so at once"
        );
        assert!(!c.due(3, at(5000)), "back on schedule, it waits again");
    }
}
