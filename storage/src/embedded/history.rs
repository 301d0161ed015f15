//! History on the embedded store: messages by conversation, bucket and id,
//! and their `client_msg_id`, revision and mentions indexes.

use std::ops::Bound;

use async_trait::async_trait;
use chat_protocol::{ClientMsgId, ConversationId, Message, MessageId, UserId};
use fjall::Readable;
use serde::Deserialize;

use super::keys::{decode, decode_u64, encode, key_of};
use super::keyspaces::{Inner, Table};
use super::txn::Txn;
use super::EmbeddedStore;
use crate::history::{earlier_send, lost_mentions, replaced_rev, PageFill};
use crate::{bucket_of, unavailable, Changes, HistoryStore, Page, PageQuery, StoreError};

/// Revisions a read of changes may span and still run on the caller's
/// thread ([`EmbeddedStore::inline`]): a handful of messages, read from the
/// memtable as a rule. A longer span (a rebuild, a backlog) may read many
/// blocks from disk and goes to the blocking pool.
const INLINE_CHANGES: u64 = 32;

/// What `count_unread` needs of a message: borrowing the sender out of the
/// stored bytes spares decoding (and allocating) every body it walks over.
#[derive(Deserialize)]
struct SenderOnly<'a> {
    #[serde(borrow)]
    sender: &'a str,
}

impl Inner {
    fn page(&self, conversation: &ConversationId, query: PageQuery) -> Result<Page, StoreError> {
        let limit = query.limit.max(1);
        if let (Some(after), Some(before)) = (query.after, query.before) {
            if after >= before {
                // The range is empty; fjall documents nothing for inverted
                // bounds, so it never sees them.
                return Ok(Page::default());
            }
        }
        let prefix = key_of(&[conversation.as_str()]);
        let low = match query.after {
            Some(after) => Bound::Excluded(message_key(&prefix, after)),
            None => Bound::Included(prefix.clone()),
        };
        let high = match query.before {
            Some(before) => Bound::Excluded(message_key(&prefix, before)),
            None => Bound::Included(message_key_max(&prefix)),
        };
        let range = self.messages.range::<Vec<u8>, _>((low, high));
        let oldest_first = query.after.is_some() && query.before.is_none();
        let mut fill = PageFill::new(limit, query.max_bytes);
        let mut take = |guard: fjall::Guard| -> Result<bool, StoreError> {
            if fill.is_full() {
                // One more in range is all `more` needs: no need to decode it.
                return Ok(false);
            }
            let value = guard.value().map_err(unavailable)?;
            let message = decode::<Message>(&value)?;
            Ok(fill.push(value.len(), message))
        };
        if oldest_first {
            for guard in range {
                if !take(guard)? {
                    break;
                }
            }
        } else {
            for guard in range.rev() {
                if !take(guard)? {
                    break;
                }
            }
        }
        let (mut messages, more) = fill.finish();
        if !oldest_first {
            messages.reverse();
        }
        Ok(Page { messages, more })
    }

    fn last_message(&self, conversation: &ConversationId) -> Result<Option<Message>, StoreError> {
        let prefix = key_of(&[conversation.as_str()]);
        match self.messages.prefix(&prefix).next_back() {
            Some(guard) => Ok(Some(decode(&guard.value().map_err(unavailable)?)?)),
            None => Ok(None),
        }
    }

    fn message(
        &self,
        conversation: &ConversationId,
        id: MessageId,
    ) -> Result<Option<Message>, StoreError> {
        let key = message_key(&key_of(&[conversation.as_str()]), id);
        match self.messages.get(&key).map_err(unavailable)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn changes(
        &self,
        conversation: &ConversationId,
        after_rev: u64,
        rev: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Changes, StoreError> {
        // One snapshot: the index and the messages it names agree.
        let snapshot = self.db.snapshot();
        let prefix = key_of(&[conversation.as_str()]);
        if after_rev >= rev {
            return Ok(Changes::default());
        }
        let range = snapshot.range::<Vec<u8>, _>(
            &self.message_revs,
            (
                Bound::Excluded(rev_key(&prefix, after_rev)),
                Bound::Included(rev_key(&prefix, rev)),
            ),
        );
        let mut fill = PageFill::new(limit, max_bytes);
        for guard in range {
            let (key, value) = guard.into_inner().map_err(unavailable)?;
            if fill.is_full() {
                break;
            }
            let at = rev_of_key(&key, prefix.len())?;
            let id = MessageId(decode_u64(&value)?);
            let Some(bytes) = snapshot
                .get(&self.messages, message_key(&prefix, id))
                .map_err(unavailable)?
            else {
                continue;
            };
            let message: Message = decode(&bytes)?;
            if message.rev == at && !fill.push(bytes.len(), message) {
                break;
            }
        }
        let (messages, more) = fill.finish();
        Ok(Changes { messages, more })
    }

    fn last_rev(&self, conversation: &ConversationId) -> Result<u64, StoreError> {
        let prefix = key_of(&[conversation.as_str()]);
        match self.message_revs.prefix(&prefix).next_back() {
            Some(guard) => rev_of_key(&guard.key().map_err(unavailable)?, prefix.len()),
            None => Ok(0),
        }
    }

    fn count_unread_mentions(
        &self,
        conversation: &ConversationId,
        reader: &UserId,
        after: MessageId,
        cap: u64,
    ) -> Result<u64, StoreError> {
        let prefix = key_of(&[conversation.as_str(), reader.as_str()]);
        let mut low = prefix.clone();
        low.extend_from_slice(&after.0.to_be_bytes());
        let mut high = prefix;
        high.extend_from_slice(&[0xff; 8]);
        let range = self
            .mentions
            .range::<Vec<u8>, _>((Bound::Excluded(low), Bound::Included(high)));
        let mut count = 0;
        for guard in range {
            guard.key().map_err(unavailable)?;
            count += 1;
            if count >= cap {
                break;
            }
        }
        Ok(count)
    }

    fn find_by_client_msg_id(
        &self,
        conversation: &ConversationId,
        sender: &UserId,
        client_msg_id: &ClientMsgId,
    ) -> Result<Option<Message>, StoreError> {
        let index = key_of(&[
            conversation.as_str(),
            sender.as_str(),
            client_msg_id.as_str(),
        ]);
        let Some(id) = self.client_msg_ids.get(&index).map_err(unavailable)? else {
            return Ok(None);
        };
        self.message(conversation, MessageId(decode_u64(&id)?))
    }

    fn count_unread(
        &self,
        conversation: &ConversationId,
        reader: &UserId,
        after: MessageId,
        cap: u64,
    ) -> Result<u64, StoreError> {
        if cap == 0 {
            return Ok(0);
        }
        let prefix = key_of(&[conversation.as_str()]);
        let range = self.messages.range::<Vec<u8>, _>((
            Bound::Excluded(message_key(&prefix, after)),
            Bound::Included(message_key_max(&prefix)),
        ));
        let mut count = 0;
        for guard in range {
            let bytes = guard.value().map_err(unavailable)?;
            let message: SenderOnly<'_> =
                rmp_serde::from_slice(&bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if message.sender != reader.as_str() {
                count += 1;
                if count >= cap {
                    break;
                }
            }
        }
        Ok(count)
    }
}

impl Txn<'_> {
    /// The message already held under `m`'s `client_msg_id` index entry
    /// `index`, if any.
    fn held(&self, m: &Message, index: &[u8]) -> Result<Option<Message>, StoreError> {
        let Some(id) = self.get(Table::ClientMsgIds, index)? else {
            return Ok(None);
        };
        let id = MessageId(decode_u64(&id)?);
        let conversation = key_of(&[m.conversation.as_str()]);
        match self.get(Table::Messages, &message_key(&conversation, id))? {
            Some(bytes) => Ok(Some(decode::<Message>(&bytes)?)),
            None => Err(StoreError::Corrupt(format!(
                "client_msg_id index names missing message {}",
                id.0
            ))),
        }
    }

    /// For each of `messages`, `None` or the message already held under its
    /// `client_msg_id` key; and those with none, to append.
    pub(crate) fn new_messages(
        &self,
        messages: &[Message],
    ) -> Result<(Vec<Option<Message>>, Vec<Message>), StoreError> {
        let mut held = Vec::with_capacity(messages.len());
        let mut fresh = Vec::with_capacity(messages.len());
        for m in messages {
            let found = self.held(m, &client_msg_index(m))?;
            if found.is_none() {
                fresh.push(m.clone());
            }
            held.push(earlier_send(m, found));
        }
        Ok((held, fresh))
    }

    /// What [`Self::new_messages`] and then [`Self::append_messages`] of the
    /// new ones do, with one index lookup per message instead of two: the
    /// entry found missing is the one written. The keys must be distinct
    /// (see [`HistoryStore::append_new`]).
    fn append_new_messages(
        &mut self,
        messages: &[Message],
    ) -> Result<Vec<Option<Message>>, StoreError> {
        let mut held = Vec::with_capacity(messages.len());
        for m in messages {
            let index = client_msg_index(m);
            let found = self.held(m, &index)?;
            if found.is_none() {
                // A fresh id: nothing is stored under it to merge with.
                self.write_message(None, m)?;
                self.put_index(index, m.id);
            }
            held.push(earlier_send(m, found));
        }
        Ok(held)
    }

    /// Stores messages by id (storing one twice changes nothing), each with
    /// its `client_msg_id` index entry. When two messages claim one
    /// (sender, client_msg_id), the entry keeps the lower id whichever came
    /// first, so every replica ends up pointing at the same message.
    pub(crate) fn append_messages(&mut self, messages: &[Message]) -> Result<(), StoreError> {
        for message in messages {
            self.put_message(message)?;
            let index = client_msg_index(message);
            let lower_held = match self.get(Table::ClientMsgIds, &index)? {
                Some(held) => decode_u64(&held)? <= message.id.0,
                None => false,
            };
            if !lower_held {
                self.put_index(index, message.id);
            }
        }
        Ok(())
    }

    /// Stores `m` under its conversation and id unless the state stored
    /// there is as new (a higher `rev`; at one `rev`, the larger encoding, so
    /// that replicas given the same states in any order keep the same one).
    fn put_message(&mut self, m: &Message) -> Result<(), StoreError> {
        let held = self.stored(m)?;
        self.merge_message(held, m)
    }

    /// [`HistoryStore::update_message`]: as [`Self::put_message`], for a
    /// message stored already.
    pub(crate) fn update_message(&mut self, m: &Message) -> Result<(), StoreError> {
        match self.stored(m)? {
            Some(held) => self.merge_message(Some(held), m),
            None => Ok(()),
        }
    }

    /// What is stored under `m`'s id, as this batch will leave it.
    fn stored(&self, m: &Message) -> Result<Option<Message>, StoreError> {
        let key = message_key(&key_of(&[m.conversation.as_str()]), m.id);
        self.get(Table::Messages, &key)?
            .map(|bytes| decode::<Message>(&bytes))
            .transpose()
    }

    fn merge_message(&mut self, held: Option<Message>, m: &Message) -> Result<(), StoreError> {
        if let Some(h) = &held {
            let newer = m.rev > h.rev || (m.rev == h.rev && m != h && encode(m)? > encode(h)?);
            if !newer {
                return Ok(());
            }
        }
        self.write_message(held.as_ref(), m)
    }

    /// Writes `m` over `held` (what is stored under its id, if anything),
    /// moving its revision and mentions index entries along.
    fn write_message(&mut self, held: Option<&Message>, m: &Message) -> Result<(), StoreError> {
        let conversation = key_of(&[m.conversation.as_str()]);
        self.set(
            Table::Messages,
            message_key(&conversation, m.id),
            Some(encode(m)?),
        );
        if let Some(rev) = held.and_then(|h| replaced_rev(h, m)) {
            self.set(Table::MessageRevs, rev_key(&conversation, rev), None);
        }
        self.mark_for_notify(&m.conversation, m.rev);
        if m.rev > 0 {
            self.set(
                Table::MessageRevs,
                rev_key(&conversation, m.rev),
                Some(m.id.0.to_be_bytes().to_vec()),
            );
        }
        for gone in held.into_iter().flat_map(|h| lost_mentions(h, m)) {
            self.set(Table::Mentions, mention_key(m, gone), None);
        }
        for user in &m.mentions {
            self.set(Table::Mentions, mention_key(m, user), Some(Vec::new()));
        }
        Ok(())
    }

    /// Points the `client_msg_id` index entry `index` at message `id`.
    fn put_index(&mut self, index: Vec<u8>, id: MessageId) {
        self.set(
            Table::ClientMsgIds,
            index,
            Some(id.0.to_be_bytes().to_vec()),
        );
    }
}

#[async_trait]
impl HistoryStore for EmbeddedStore {
    async fn append(&self, messages: &[Message]) -> Result<(), StoreError> {
        if messages.is_empty() {
            return Ok(());
        }
        let messages = messages.to_vec();
        self.update(move |txn| txn.append_messages(&messages)).await
    }

    async fn append_new(&self, messages: &[Message]) -> Result<Vec<Option<Message>>, StoreError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let messages = messages.to_vec();
        let held = self
            .update(move |txn| txn.append_new_messages(&messages))
            .await?;
        #[cfg(feature = "faults")]
        if self.faults.take_landed_unanswered() {
            return Err(StoreError::Unavailable(
                "written, but answered as failed (a fault the test asked for)".into(),
            ));
        }
        Ok(held)
    }

    async fn update_message(&self, message: &Message) -> Result<(), StoreError> {
        // The writer reads what is stored itself: it alone writes here.
        let message = message.clone();
        self.update(move |txn| txn.update_message(&message)).await
    }

    async fn message(
        &self,
        conversation: &ConversationId,
        id: MessageId,
    ) -> Result<Option<Message>, StoreError> {
        self.inline(|s| s.message(conversation, id))
    }

    async fn changes(
        &self,
        conversation: &ConversationId,
        after_rev: u64,
        up_to_rev: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Changes, StoreError> {
        // The search indexer's steady state: the few changes since its
        // last pass, just written and still in memory, for every written
        // conversation each pass; on the blocking pool, the hand-off cost
        // more than the read.
        if up_to_rev.saturating_sub(after_rev) <= INLINE_CHANGES {
            return self
                .inline(|s| s.changes(conversation, after_rev, up_to_rev, limit, max_bytes));
        }
        let conversation = conversation.clone();
        self.blocking(move |s| s.changes(&conversation, after_rev, up_to_rev, limit, max_bytes))
            .await
    }

    async fn last_rev(&self, conversation: &ConversationId) -> Result<u64, StoreError> {
        // One seek to the end of the conversation's revision index.
        self.inline(|s| s.last_rev(conversation))
    }

    async fn count_unread_mentions(
        &self,
        conversation: &ConversationId,
        reader: &UserId,
        after: MessageId,
        cap: u64,
    ) -> Result<u64, StoreError> {
        if cap == 0 {
            return Ok(0);
        }
        let (conversation, reader) = (conversation.clone(), reader.clone());
        self.blocking(move |s| s.count_unread_mentions(&conversation, &reader, after, cap))
            .await
    }

    async fn page(
        &self,
        conversation: &ConversationId,
        query: PageQuery,
    ) -> Result<Page, StoreError> {
        let conversation = conversation.clone();
        self.blocking(move |s| s.page(&conversation, query)).await
    }

    async fn last_message(
        &self,
        conversation: &ConversationId,
    ) -> Result<Option<Message>, StoreError> {
        let conversation = conversation.clone();
        self.blocking(move |s| s.last_message(&conversation)).await
    }

    async fn find_by_client_msg_id(
        &self,
        conversation: &ConversationId,
        sender: &UserId,
        client_msg_id: &ClientMsgId,
    ) -> Result<Option<Message>, StoreError> {
        let (conversation, sender, client_msg_id) =
            (conversation.clone(), sender.clone(), client_msg_id.clone());
        self.blocking(move |s| s.find_by_client_msg_id(&conversation, &sender, &client_msg_id))
            .await
    }

    async fn count_unread(
        &self,
        conversation: &ConversationId,
        reader: &UserId,
        after: MessageId,
        cap: u64,
    ) -> Result<u64, StoreError> {
        let (conversation, reader) = (conversation.clone(), reader.clone());
        self.blocking(move |s| s.count_unread(&conversation, &reader, after, cap))
            .await
    }
}

/// The key of a message's `client_msg_id` index entry.
pub(super) fn client_msg_index(m: &Message) -> Vec<u8> {
    key_of(&[
        m.conversation.as_str(),
        m.sender.as_str(),
        m.client_msg_id.as_str(),
    ])
}

/// A revision index key; `prefix` is the conversation's key part.
pub(super) fn rev_key(prefix: &[u8], rev: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 8);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&rev.to_be_bytes());
    key
}

/// The revision of a revision index key.
pub(super) fn rev_of_key(key: &[u8], prefix_len: usize) -> Result<u64, StoreError> {
    decode_u64(key.get(prefix_len..).unwrap_or_default())
}

/// The key of `user`'s mention in message `m`.
pub(super) fn mention_key(m: &Message, user: &UserId) -> Vec<u8> {
    let mut key = key_of(&[m.conversation.as_str(), user.as_str()]);
    key.extend_from_slice(&m.id.0.to_be_bytes());
    key
}

/// `prefix` is the conversation's key part.
pub(super) fn message_key(prefix: &[u8], id: MessageId) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 12);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&bucket_of(id).to_be_bytes());
    key.extend_from_slice(&id.0.to_be_bytes());
    key
}

/// At or above every message key of the conversation `prefix`.
pub(super) fn message_key_max(prefix: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 12);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&[0xff; 12]);
    key
}
