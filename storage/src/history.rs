//! History: messages, their states and the indexes that find them (by
//! `client_msg_id`, by revision, by mention), read by page, by revision and
//! by count.
//!
//! History is keyed by `(conversation, bucket, id)`, `bucket` a fixed window
//! of the id's time, so no partition grows without bound; the revision index
//! is cut into blocks of [`REV_BLOCK_BITS`] for the same reason.

use async_trait::async_trait;
use chat_protocol::{ClientMsgId, ConversationId, Message, MessageId, UserId};

use crate::StoreError;

/// Width of a history bucket: 7 days of message-id time. A page reads one or
/// two buckets; a conversation's busiest week bounds a partition.
pub const BUCKET_MS: u64 = 7 * 24 * 3600 * 1000;

/// The bucket a message id falls in (the embedded store's; the ScyllaDB
/// backend's width is configured).
pub fn bucket_of(id: MessageId) -> u32 {
    (id.timestamp_ms() / BUCKET_MS) as u32
}

/// Which page of history to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageQuery {
    /// Only ids strictly below.
    pub before: Option<MessageId>,
    /// Only ids strictly above.
    pub after: Option<MessageId>,
    /// Most messages to return (at least 1).
    pub limit: usize,
    /// Stop once the page's messages weigh this many bytes ([`page_weight`]:
    /// as stored or as encoded for a client, whichever is larger; the first
    /// message is always returned), so that a page of large messages is cut
    /// short (`more` tells) rather than held whole in memory or written as
    /// a reply larger than the bytes reserved for it.
    pub max_bytes: usize,
}

/// What a message weighs against a page's `max_bytes`: its stored size or
/// its size as a client receives it, whichever is larger, so that a page
/// bounds both what a read holds and the reply built from it.
pub fn page_weight(stored: usize, message: &Message) -> usize {
    stored.max(message.encoded_len_bound())
}

impl PageQuery {
    /// Up to `limit` messages in the range, however large.
    pub fn new(before: Option<MessageId>, after: Option<MessageId>, limit: usize) -> Self {
        PageQuery {
            before,
            after,
            limit,
            max_bytes: usize::MAX,
        }
    }
}

/// A page (of history or of changes) as a backend fills it, one message at
/// a time in the order it reads them: every backend cuts pages by the same
/// rule, so that they all answer a query alike.
pub(crate) struct PageFill {
    messages: Vec<Message>,
    limit: usize,
    max_bytes: usize,
    weight: usize,
    more: bool,
}

impl PageFill {
    /// At most `limit` (at least 1) messages, and past the first no more
    /// than `max_bytes` by [`page_weight`].
    pub(crate) fn new(limit: usize, max_bytes: usize) -> Self {
        let limit = limit.max(1);
        PageFill {
            messages: Vec::with_capacity(limit.min(256)),
            limit,
            max_bytes,
            weight: 0,
            more: false,
        }
    }

    /// Whether the page holds `limit` messages; then it has `more`, since
    /// the caller has one more in range (and need not decode it).
    pub(crate) fn is_full(&mut self) -> bool {
        if self.messages.len() >= self.limit {
            self.more = true;
        }
        self.more
    }

    /// Adds `message`, which weighs `stored` bytes as stored; `false`, and
    /// `more`, when the page is full or the message would take it past
    /// `max_bytes` (the first message always fits).
    pub(crate) fn push(&mut self, stored: usize, message: Message) -> bool {
        if self.is_full() {
            return false;
        }
        self.weight = self.weight.saturating_add(page_weight(stored, &message));
        if self.weight > self.max_bytes && !self.messages.is_empty() {
            self.more = true;
            return false;
        }
        self.messages.push(message);
        true
    }

    /// How many messages it holds.
    pub(crate) fn len(&self) -> usize {
        self.messages.len()
    }

    /// The messages in the order they were added, and whether more lie
    /// beyond.
    pub(crate) fn finish(self) -> (Vec<Message>, bool) {
        (self.messages, self.more)
    }
}

/// What finding `found` under `m`'s `client_msg_id` means for `m`: the
/// earlier send that `m` retries, or `None` when nothing was there, or only
/// `m` itself (its write was retried after it went through: it is this
/// send's, and must be delivered like any new one).
pub(crate) fn earlier_send(m: &Message, found: Option<Message>) -> Option<Message> {
    found.filter(|own| own.id != m.id)
}

/// The revision index entry that a message's new state `m` leaves behind:
/// its previous state's, unless that one had none (`rev` 0) or it is the
/// same entry.
pub(crate) fn replaced_rev(previous: &Message, m: &Message) -> Option<u64> {
    (previous.rev > 0 && previous.rev != m.rev).then_some(previous.rev)
}

/// The users a message's previous state mentions and its new state `m` no
/// longer does: their mentions index entries go.
pub(crate) fn lost_mentions<'a>(
    previous: &'a Message,
    m: &'a Message,
) -> impl Iterator<Item = &'a UserId> {
    previous.mentions.iter().filter(|u| !m.mentions.contains(u))
}

/// A page of history.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    /// Ascending by id. With `after` (and no `before`) these are the oldest
    /// messages above `after`; otherwise the newest messages in range.
    pub messages: Vec<Message>,
    /// Whether more messages lie in the range beyond this page.
    pub more: bool,
}

/// Messages whose state changed after a revision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    /// Ascending by `rev`, each in its current state.
    pub messages: Vec<Message>,
    /// Whether more changes lie between this page and the bound asked for.
    pub more: bool,
}

/// Width of a block of the revision index: revisions `b << REV_BLOCK_BITS`
/// and up share a partition, so no partition grows without bound.
pub const REV_BLOCK_BITS: u32 = 16;

/// The block of the revision index that `rev` falls in.
pub fn rev_block(rev: u64) -> u64 {
    rev >> REV_BLOCK_BITS
}

/// A conversation's messages.
#[async_trait]
pub trait HistoryStore: Send + Sync {
    /// Appends messages (of one or several conversations) atomically and,
    /// with the default durability, durably: when this returns `Ok`, the
    /// messages survive a crash of the process and of the machine. Each
    /// message's `client_msg_id`, revision (when `rev` > 0) and mentions
    /// index entries are written with it.
    async fn append(&self, messages: &[Message]) -> Result<(), StoreError>;

    /// Appends the messages whose `(conversation, sender, client_msg_id)`
    /// has no message yet, as [`HistoryStore::append`] does; for each of
    /// `messages`, `None` when it was stored, or the message stored earlier
    /// under its key. How a conversation turns retried sends into one message
    /// without a lookup of its own per send. The keys within one call must be
    /// distinct. A message found stored under its key with its own id (a
    /// write retried after it went through) is `None`: it is this send's,
    /// and must be delivered like any new one.
    async fn append_new(&self, messages: &[Message]) -> Result<Vec<Option<Message>>, StoreError> {
        let mut held = Vec::with_capacity(messages.len());
        let mut fresh = Vec::new();
        for m in messages {
            let found = self
                .find_by_client_msg_id(&m.conversation, &m.sender, &m.client_msg_id)
                .await?;
            if found.is_none() {
                fresh.push(m.clone());
            }
            held.push(earlier_send(m, found));
        }
        self.append(&fresh).await?;
        Ok(held)
    }

    /// Stores the new state of a stored message (an edit, a delete, a
    /// reaction change) at its new, higher `rev`, durably, and moves its
    /// revision and mentions index entries along. A state whose `rev` is not
    /// above the stored one changes nothing, so a replayed or late update
    /// never undoes a newer one; nor does one of a message not stored. A
    /// deleted message's body is overwritten, not kept beside the new state.
    async fn update_message(&self, message: &Message) -> Result<(), StoreError>;

    /// One message in its current state.
    async fn message(
        &self,
        conversation: &ConversationId,
        id: MessageId,
    ) -> Result<Option<Message>, StoreError>;

    /// Up to `limit` messages whose `rev` is in `(after_rev, up_to_rev]`,
    /// ascending by `rev`, each in its current state (a message changed twice
    /// appears once, at its last change). Reads the revision index, not the
    /// history.
    ///
    /// `up_to_rev` is a revision whose writes, and those of every revision
    /// below it, have finished: the conversation's writer knows it, the
    /// store (on ScyllaDB, without snapshots) does not. Below it every index
    /// entry names a message written at that revision, or one that moved on
    /// to a higher revision (an entry left behind, skipped: the message is
    /// found at its new place, which a reader going on from `up_to_rev` then
    /// reaches), or a write that failed and was never acknowledged (skipped).
    ///
    /// A page also stops once its messages weigh `max_bytes`
    /// ([`page_weight`]; the first message always comes), with `more`.
    async fn changes(
        &self,
        conversation: &ConversationId,
        after_rev: u64,
        up_to_rev: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Changes, StoreError>;

    /// The highest `rev` stored in a conversation (0 when none).
    async fn last_rev(&self, conversation: &ConversationId) -> Result<u64, StoreError>;

    /// Requests this handle has sent to its database server, retries
    /// included (what an operator sizes the database by); `None` for a
    /// store with no server (the embedded ones).
    fn database_requests(&self) -> Option<u64> {
        None
    }

    /// Messages with an id above `after` that mention `reader` now (an edit
    /// may take a mention away), counted up to `cap`.
    async fn count_unread_mentions(
        &self,
        conversation: &ConversationId,
        reader: &UserId,
        after: MessageId,
        cap: u64,
    ) -> Result<u64, StoreError>;

    /// A page of a conversation's history.
    async fn page(
        &self,
        conversation: &ConversationId,
        query: PageQuery,
    ) -> Result<Page, StoreError>;

    /// The newest message of a conversation.
    async fn last_message(
        &self,
        conversation: &ConversationId,
    ) -> Result<Option<Message>, StoreError>;

    /// The message a sender stored under `client_msg_id` in a conversation.
    async fn find_by_client_msg_id(
        &self,
        conversation: &ConversationId,
        sender: &UserId,
        client_msg_id: &ClientMsgId,
    ) -> Result<Option<Message>, StoreError>;

    /// Messages with an id above `after` sent by anyone but `reader`,
    /// counted up to `cap`.
    async fn count_unread(
        &self,
        conversation: &ConversationId,
        reader: &UserId,
        after: MessageId,
        cap: u64,
    ) -> Result<u64, StoreError>;
}
