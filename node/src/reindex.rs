//! `chat-node reindex`: rebuilds the search index from the history, with
//! the node stopped (the embedded store and the embedded index are one
//! process's). It walks every conversation and indexes its changes past
//! the index's cursor, so a run stopped half-way and started again goes on
//! where it stopped; `--fresh` empties the index first.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_notify::indexing::Indexer;
use chat_protocol::ConversationId;
use chat_storage::MessageStore;

use crate::app::{open_search, open_store, NodeError};
use crate::config::Config;

/// Conversations read from the store at once.
const PAGE: usize = 500;
/// How often the progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// What a rebuild did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Reindexed {
    /// Conversations walked.
    pub conversations: u64,
    /// Batches of changes applied.
    pub batches: u64,
}

/// Rebuilds the index `config` names from its store, drawing its progress
/// on standard error.
pub async fn reindex(config: &Config, fresh: bool) -> Result<Reindexed, NodeError> {
    let store = open_store(config).await?;
    let shared: Arc<dyn MessageStore> = store.shared();
    let result = async {
        let Some(search) = open_search(config, shared.clone()).await? else {
            return Err(NodeError::Search("search is off ([search] backend)".into()));
        };
        if fresh {
            search
                .index
                .clear()
                .await
                .map_err(|e| NodeError::Search(e.to_string()))?;
        }
        let started = Instant::now();
        let mut drawn = Instant::now();
        let mut done = Reindexed::default();
        let mut after: Option<ConversationId> = None;
        loop {
            let page = shared.conversation_ids(after.as_ref(), PAGE).await?;
            let Some(last) = page.last().cloned() else {
                break;
            };
            for id in &page {
                while search.index(id).await.map_err(NodeError::Search)? {
                    done.batches += 1;
                }
                done.batches += 1;
                done.conversations += 1;
                if drawn.elapsed() >= PROGRESS_EVERY {
                    progress(&done, started, false);
                    drawn = Instant::now();
                }
            }
            after = Some(last);
        }
        progress(&done, started, true);
        Ok(done)
    }
    .await;
    store.close().await;
    result
}

fn progress(done: &Reindexed, started: Instant, last: bool) {
    let secs = started.elapsed().as_secs_f64().max(0.001);
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "\rreindex: {} conversations, {} batches, {:.0} conversations/s{}",
        done.conversations,
        done.batches,
        done.conversations as f64 / secs,
        if last { "\n" } else { "" }
    );
    let _ = err.flush();
}
