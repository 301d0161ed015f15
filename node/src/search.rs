//! The node's search service (docs/protocol.md, "search"): the index
//! (chat-search), kept up to date from the history by the outbox's index
//! jobs ([`Indexer`]), and asked by `GET /v1/search` (`results.rs`).
//!
//! Indexing reads a conversation's changes past the index's cursor (its
//! revision index: new messages, edits, deletes alike) and applies them
//! with the new cursor in one write: a repeated job finds nothing left to
//! do, and an edit or delete replaces or removes what was indexed.

use std::sync::Arc;

use async_trait::async_trait;
use chat_notify::indexing::Indexer;
use chat_protocol::{ConversationId, Message};
use chat_search::{has_link, Doc, SearchIndex};
use chat_storage::MessageStore;

/// Changes indexed per job run (a longer backlog runs again at once).
const CHANGES_PER_RUN: usize = 500;
/// Bytes of changes read per run: up to 256 conversations are indexed at
/// once (chat-notify's `INDEX_AT_ONCE`), so at most 128 MiB are read at
/// once; a run is a few tens of KiB as a rule.
const CHANGE_BYTES_PER_RUN: usize = 512 << 10;

/// The index and the history it is fed from.
pub struct SearchService {
    /// The index.
    pub index: Arc<dyn SearchIndex>,
    store: Arc<dyn MessageStore>,
}

impl SearchService {
    /// Search over `index`, fed from `store`.
    pub fn new(index: Arc<dyn SearchIndex>, store: Arc<dyn MessageStore>) -> SearchService {
        SearchService { index, store }
    }
}

/// What the index keeps of `m`.
pub(crate) fn doc_of(m: &Message) -> Doc {
    Doc {
        conversation: m.conversation.clone(),
        id: m.id,
        sender: m.sender.clone(),
        ts: m.ts,
        body: m.body.clone(),
        has_attachment: !m.attachments.is_empty(),
        has_link: has_link(&m.body),
    }
}

#[async_trait]
impl Indexer for SearchService {
    async fn index(&self, conversation: &ConversationId) -> Result<bool, String> {
        let cursor = self
            .index
            .cursor(conversation)
            .await
            .map_err(|e| e.to_string())?;
        let last = self
            .store
            .last_rev(conversation)
            .await
            .map_err(|e| e.to_string())?;
        if last <= cursor {
            return Ok(false);
        }
        let changes = self
            .store
            .changes(
                conversation,
                cursor,
                last,
                CHANGES_PER_RUN,
                CHANGE_BYTES_PER_RUN,
            )
            .await
            .map_err(|e| e.to_string())?;
        // Nothing read is not "nothing up to `last`": on a shared store the
        // revision index may count a write whose row has not landed; its
        // own mark brings another job.
        let Some(next) = changes.messages.iter().map(|m| m.rev).max() else {
            return Ok(false);
        };
        let (deleted, live): (Vec<&Message>, Vec<&Message>) =
            changes.messages.iter().partition(|m| m.deleted);
        let docs = live.into_iter().map(doc_of).collect();
        let deleted = deleted.into_iter().map(|m| m.id).collect();
        let more = changes.more;
        // Not held while the apply waits for its commit: the index has
        // the documents by then.
        drop(changes);
        self.index
            .apply(conversation, docs, deleted, next.max(cursor))
            .await
            .map_err(|e| e.to_string())?;
        Ok(more)
    }
}
