//! Full-text search of the history (docs/protocol.md, "search").
//!
//! A [`SearchIndex`] holds one document per live message (its words, its
//! sender, its time, whether it carries a file or a link) and, per
//! conversation, how far the index has read that conversation's changes
//! (its revision cursor), stored with the documents so that both move
//! together. The node feeds it from the history through the notification
//! outbox (a durable queue: a crash repeats work, never loses it) and asks
//! it with the caller's conversations, so that membership is checked when
//! searching, not when indexing.
//!
//! Two backends pass one contract ([`conformance`]): [`embedded`] (tantivy,
//! an index beside the data: one machine) and OpenSearch (clusters). Words
//! match in any case, accents folded, with plain English stemming; quoted
//! phrases match in order. Results come newest first.
//!
//! Sits beside the storage crate: it knows the protocol's ids and nothing
//! of stores, actors or the node.
#![deny(missing_docs, unreachable_pub, unsafe_code)]
#![warn(clippy::mod_module_files)]

use async_trait::async_trait;
use chat_protocol::{ConversationId, MessageId, UserId};

pub mod config;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod embedded;
pub mod opensearch;
pub mod query;

pub use config::{OpenSearchConfig, SearchBackend, SearchConfig};
pub use query::{has_link, Terms};

/// What can go wrong with the index.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SearchError {
    /// The index cannot be read or written.
    #[error("search index unavailable: {0}")]
    Unavailable(String),
    /// A query the index cannot run (its words are checked before).
    #[error("bad query: {0}")]
    BadQuery(String),
}

/// One message as indexed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doc {
    /// Its conversation.
    pub conversation: ConversationId,
    /// Its id (ids sort by time, cluster-wide).
    pub id: MessageId,
    /// Who sent it.
    pub sender: UserId,
    /// When, Unix ms.
    pub ts: u64,
    /// The text.
    pub body: String,
    /// It carries files.
    pub has_attachment: bool,
    /// Its text holds a link.
    pub has_link: bool,
}

/// What a message must have (`has=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Has {
    /// Files.
    Attachment,
    /// A link.
    Link,
}

/// A search.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    /// Words and phrases, all to match (none: the filters alone select).
    pub terms: Terms,
    /// The conversations to look in: the caller's, at most one when the
    /// request names one. Empty: nothing matches.
    pub conversations: Vec<ConversationId>,
    /// Only this sender's.
    pub from: Option<UserId>,
    /// Only after this time (Unix ms, exclusive).
    pub after: Option<u64>,
    /// Only before this time (Unix ms, exclusive).
    pub before: Option<u64>,
    /// Only messages with this.
    pub has: Option<Has>,
    /// Only ids below this one (the next page).
    pub below: Option<MessageId>,
    /// Results at most.
    pub limit: usize,
}

/// A message found.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// Its conversation.
    pub conversation: ConversationId,
    /// Its id.
    pub id: MessageId,
    /// Fragments of its text with the matched words in `<mark>`, the rest
    /// HTML-escaped.
    pub highlights: Vec<String>,
}

/// A page of results, newest first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Hits {
    /// The messages.
    pub hits: Vec<Hit>,
    /// More lie below the last one.
    pub more: bool,
}

/// A search index.
#[async_trait]
pub trait SearchIndex: Send + Sync + 'static {
    /// Applies one conversation's changes: `upserts` replace any earlier
    /// document of their id, `deletes` go, and the conversation's cursor
    /// becomes `cursor`; all of it or none.
    async fn apply(
        &self,
        conversation: &ConversationId,
        upserts: Vec<Doc>,
        deletes: Vec<MessageId>,
        cursor: u64,
    ) -> Result<(), SearchError>;

    /// How far `conversation` was indexed (0: not at all).
    async fn cursor(&self, conversation: &ConversationId) -> Result<u64, SearchError>;

    /// Runs a search.
    async fn search(&self, query: &SearchQuery) -> Result<Hits, SearchError>;

    /// Forgets everything (a rebuild starts here).
    async fn clear(&self) -> Result<(), SearchError>;
}
