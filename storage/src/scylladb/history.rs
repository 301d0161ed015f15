//! History on ScyllaDB: messages by (conversation, bucket), their
//! `client_msg_id`, revision and mentions indexes, and the reads of pages,
//! changes and counts. The row format and the writes of rows are in
//! `history/rows.rs`, the walk over a conversation's buckets in
//! `history/buckets.rs`.

mod buckets;
mod rows;

use async_trait::async_trait;
use chat_protocol::{ClientMsgId, ConversationId, Message, MessageId, UserId};
use futures_util::future::try_join_all;
use scylla::value::{CqlValue, Row};

use super::cql::applied_of;
use super::store::ScyllaStore;
use crate::history::PageFill;
use crate::{corrupt, rev_block, Changes, HistoryStore, Page, PageQuery, StoreError};
use buckets::BucketWalk;
pub(super) use rows::index_key;
use rows::{attachments_blob, reactions_blob, MessageRow};

impl ScyllaStore {
    /// The highest revision in a conversation's index.
    pub(super) async fn read_last_rev(
        &self,
        conversation: &ConversationId,
    ) -> Result<u64, StoreError> {
        let rows = self
            .rows(
                &self.q.history.select_last_rev_block,
                (conversation.as_str(),),
            )
            .await?;
        let Some((block,)) = rows.maybe_first_row::<(i64,)>().map_err(corrupt)? else {
            return Ok(0);
        };
        let rows = self
            .rows(
                &self.q.history.select_last_rev,
                (conversation.as_str(), block),
            )
            .await?;
        Ok(rows
            .maybe_first_row::<(i64,)>()
            .map_err(corrupt)?
            .map_or(0, |(rev,)| rev as u64))
    }

    pub(super) async fn message(
        &self,
        conversation: &ConversationId,
        id: MessageId,
    ) -> Result<Option<Message>, StoreError> {
        let rows = self
            .rows(
                &self.q.history.select_message,
                (conversation.as_str(), self.bucket(id), id.0 as i64),
            )
            .await?;
        match rows.maybe_first_row::<MessageRow>().map_err(corrupt)? {
            Some(row) => Ok(Some(row.into_message(conversation)?)),
            None => Ok(None),
        }
    }

    /// For each of `messages`, `None` when its key was free (it is stored
    /// now), else the message stored under the id that claimed the key.
    pub(super) async fn held_messages(
        &self,
        messages: &[Message],
        claims: Vec<Option<MessageId>>,
    ) -> Result<Vec<Option<Message>>, StoreError> {
        let mut held = Vec::with_capacity(messages.len());
        let mut found = Vec::new();
        for (m, claim) in messages.iter().zip(claims) {
            let Some(id) = claim else {
                held.push(None);
                continue;
            };
            match self.message(&m.conversation, id).await? {
                Some(first) => {
                    found.push(held.len());
                    held.push(Some(first));
                }
                None => {
                    // The first claimer has not written its row (yet, or
                    // ever: it failed between the claim and the row). This
                    // send is the same message (same sender and key), so
                    // it writes the row under the claimed id; the first
                    // claimer, if alive, writes the same row.
                    let mut repaired = m.clone();
                    repaired.id = id;
                    repaired.ts = id.timestamp_ms();
                    self.write_messages(&[&repaired]).await?;
                    held.push(Some(repaired));
                }
            }
        }
        // The first writer may have died between its rows and its outbox
        // mark: a retry marks again (a mark is idempotent; the worker finds
        // nothing new past its cursor if it was there).
        let rows: Vec<&Message> = found.iter().filter_map(|&i| held[i].as_ref()).collect();
        if !rows.is_empty() {
            self.mark_for_notify(&rows).await?;
        }
        Ok(held)
    }

    /// Claims `m`'s `client_msg_id` for its id; the id claimed before, if
    /// someone was first.
    pub(super) async fn claim(&self, m: &Message) -> Result<Option<MessageId>, StoreError> {
        let (conversation, sender, key) = index_key(m);
        let result = self
            .run(
                &self.q.history.claim_client_msg_id,
                (conversation, sender, key, m.id.0 as i64),
            )
            .await?;
        let rows = result.into_rows_result().map_err(corrupt)?;
        let id_column = rows.column_specs().get_by_name("id").map(|(i, _)| i);
        let row = rows
            .maybe_first_row::<Row>()
            .map_err(corrupt)?
            .ok_or_else(|| StoreError::Corrupt("a lightweight transaction without a row".into()))?;
        if applied_of(&row)? {
            return Ok(None);
        }
        match id_column.and_then(|i| row.columns.get(i)) {
            Some(Some(CqlValue::BigInt(id))) => Ok(Some(MessageId(*id as u64))),
            _ => Err(StoreError::Corrupt(
                "a refused claim without the claimed id".into(),
            )),
        }
    }
}

#[async_trait]
impl HistoryStore for ScyllaStore {
    async fn append(&self, messages: &[Message]) -> Result<(), StoreError> {
        // Not the path of sends (`append_new`), so a read per message is
        // affordable: a message stored already keeps its newer state.
        let held = try_join_all(
            messages
                .iter()
                .map(|m| ScyllaStore::message(self, &m.conversation, m.id)),
        )
        .await?;
        let mut fresh = Vec::new();
        for (m, held) in messages.iter().zip(held) {
            match held {
                None => fresh.push(m),
                Some(h) if h.rev < m.rev => self.update_message(m).await?,
                Some(_) => {}
            }
        }
        self.index_and_write(&fresh).await
    }

    async fn append_new(&self, messages: &[Message]) -> Result<Vec<Option<Message>>, StoreError> {
        // The claim comes first: a message row never exists without the
        // claim that makes its retries find it.
        let claims = try_join_all(messages.iter().map(|m| self.claim(m))).await?;
        let claims = own_claims_are_fresh(messages, claims);
        let fresh: Vec<&Message> = messages
            .iter()
            .zip(&claims)
            .filter(|(_, c)| c.is_none())
            .map(|(m, _)| m)
            .collect();
        self.write_messages(&fresh).await?;
        self.held_messages(messages, claims).await
    }

    async fn update_message(&self, message: &Message) -> Result<(), StoreError> {
        // A plain read: the conversation's lease holder is its only writer.
        let Some(previous) = ScyllaStore::message(self, &message.conversation, message.id).await?
        else {
            return Ok(());
        };
        if previous.rev >= message.rev {
            return Ok(());
        }
        // The new index rows first, then the state, then the old rows away:
        // at every moment a reader of the index finds the message.
        self.add_index_rows(message).await?;
        let reactions = reactions_blob(message)?;
        let attachments = attachments_blob(message)?;
        let mentions: Vec<&str> = message.mentions.iter().map(UserId::as_str).collect();
        self.run(
            &self.q.history.update_message_state,
            (
                message.body.as_str(),
                message.rev as i64,
                message.edited_at.map(|t| t as i64),
                message.deleted,
                reactions,
                mentions,
                attachments,
                message.conversation.as_str(),
                self.bucket(message.id),
                message.id.0 as i64,
            ),
        )
        .await?;
        // Marked once the new state is in (see `write_messages`).
        self.mark_for_notify(&[message]).await?;
        self.remove_index_rows(&previous, message).await
    }

    async fn message(
        &self,
        conversation: &ConversationId,
        id: MessageId,
    ) -> Result<Option<Message>, StoreError> {
        ScyllaStore::message(self, conversation, id).await
    }

    async fn changes(
        &self,
        conversation: &ConversationId,
        after_rev: u64,
        rev: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Changes, StoreError> {
        let limit = limit.max(1);
        if after_rev >= rev {
            return Ok(Changes::default());
        }
        let blocks = self
            .rows(
                &self.q.history.select_rev_blocks,
                (
                    conversation.as_str(),
                    rev_block(after_rev + 1) as i64,
                    rev_block(rev) as i64,
                ),
            )
            .await?;
        let blocks: Vec<i64> = blocks
            .rows::<(i64,)>()
            .map_err(corrupt)?
            .map(|r| r.map(|(b,)| b).map_err(corrupt))
            .collect::<Result<_, _>>()?;
        let mut fill = PageFill::new(limit, max_bytes);
        let mut low = after_rev as i64;
        'blocks: for block in blocks {
            loop {
                // One entry past what the page needs tells `more`; entries
                // whose message moved on are skipped, so read on until full.
                let want = (limit + 1 - fill.len()) as i32;
                let rows = self
                    .rows(
                        &self.q.history.select_revs,
                        (conversation.as_str(), block, low, rev as i64, want),
                    )
                    .await?;
                let entries: Vec<(i64, i64)> = rows
                    .rows::<(i64, i64)>()
                    .map_err(corrupt)?
                    .collect::<Result<_, _>>()
                    .map_err(corrupt)?;
                let got = entries.len();
                let found = try_join_all(entries.iter().map(|&(_, id)| {
                    ScyllaStore::message(self, conversation, MessageId(id as u64))
                }))
                .await?;
                for ((at, _), message) in entries.into_iter().zip(found) {
                    low = at;
                    let Some(message) = message.filter(|m| m.rev == at as u64) else {
                        continue;
                    };
                    // Stored, it lists every reacting user.
                    let stored = message.body.len()
                        + (message.reactions.iter())
                            .flat_map(|r| &r.users)
                            .map(|u| u.as_str().len() + 2)
                            .sum::<usize>();
                    if !fill.push(stored, message) {
                        break 'blocks;
                    }
                }
                if got < want as usize {
                    break;
                }
            }
        }
        let (messages, more) = fill.finish();
        Ok(Changes { messages, more })
    }

    async fn last_rev(&self, conversation: &ConversationId) -> Result<u64, StoreError> {
        self.read_last_rev(conversation).await
    }

    fn database_requests(&self) -> Option<u64> {
        let m = self.session.get_metrics();
        Some(
            m.get_requests_unpaged_num()
                + m.get_requests_manually_paged_num()
                + m.get_requests_automatically_paged_num()
                + m.get_retries_num(),
        )
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
        let rows = self
            .rows(
                &self.q.history.select_mentions,
                (
                    conversation.as_str(),
                    reader.as_str(),
                    after.0.min(i64::MAX as u64) as i64,
                    cap.min(i32::MAX as u64) as i32,
                ),
            )
            .await?;
        Ok(rows.rows::<(i64,)>().map_err(corrupt)?.count() as u64)
    }

    async fn page(
        &self,
        conversation: &ConversationId,
        query: PageQuery,
    ) -> Result<Page, StoreError> {
        let limit = query.limit.max(1);
        if let (Some(after), Some(before)) = (query.after, query.before) {
            if after >= before {
                return Ok(Page::default());
            }
        }
        let newest_first = !(query.after.is_some() && query.before.is_none());
        // Ids are below 2^63 (ms since 2024 << 22); a bound beyond is clamped.
        let low_id = query.after.map_or(-1, |a| a.0.min(i64::MAX as u64) as i64);
        let high_id = query
            .before
            .map_or(i64::MAX, |b| b.0.min(i64::MAX as u64) as i64);
        let low = query.after.map_or(i32::MIN, |a| self.bucket(a));
        let high = query.before.map_or(i32::MAX, |b| self.bucket(b));
        let mut walk = match self.leased_buckets(conversation).await? {
            Some(list) => BucketWalk::listed(self, conversation, &list, low, high, newest_first),
            None => BucketWalk::new(self, conversation, low, high, newest_first),
        };
        let statement = if newest_first {
            &self.q.history.select_page_desc
        } else {
            &self.q.history.select_page_asc
        };
        let mut fill = PageFill::new(limit, query.max_bytes);
        'buckets: while let Some(bucket) = walk.next().await? {
            // One row past the page tells `more`.
            let want = (limit + 1 - fill.len()).min(i32::MAX as usize) as i32;
            let rows = self
                .rows(
                    statement,
                    (conversation.as_str(), bucket, low_id, high_id, want),
                )
                .await?;
            for row in rows.rows::<MessageRow>().map_err(corrupt)? {
                let row = row.map_err(corrupt)?;
                if fill.is_full() {
                    break 'buckets;
                }
                let stored = row.size();
                if !fill.push(stored, row.into_message(conversation)?) {
                    break 'buckets;
                }
            }
        }
        let (mut messages, more) = fill.finish();
        if newest_first {
            messages.reverse();
        }
        Ok(Page { messages, more })
    }

    async fn last_message(
        &self,
        conversation: &ConversationId,
    ) -> Result<Option<Message>, StoreError> {
        let page = self
            .page(conversation, PageQuery::new(None, None, 1))
            .await?;
        Ok(page.messages.into_iter().next())
    }

    async fn find_by_client_msg_id(
        &self,
        conversation: &ConversationId,
        sender: &UserId,
        client_msg_id: &ClientMsgId,
    ) -> Result<Option<Message>, StoreError> {
        let rows = self
            .rows(
                &self.q.history.select_client_msg_id,
                (
                    conversation.as_str(),
                    sender.as_str(),
                    client_msg_id.as_str(),
                ),
            )
            .await?;
        match rows.maybe_first_row::<(i64,)>().map_err(corrupt)? {
            Some((id,)) => self.message(conversation, MessageId(id as u64)).await,
            None => Ok(None),
        }
    }

    async fn count_unread(
        &self,
        conversation: &ConversationId,
        reader: &UserId,
        after: MessageId,
        cap: u64,
    ) -> Result<u64, StoreError> {
        if cap == 0 {
            return Ok(0);
        }
        let mut walk = BucketWalk::new(self, conversation, self.bucket(after), i32::MAX, false);
        let mut count = 0;
        while let Some(bucket) = walk.next().await? {
            self.for_each_row(
                &self.q.history.select_senders,
                (conversation.as_str(), bucket, after.0 as i64),
                |rows| {
                    for row in rows.rows::<(&str,)>().map_err(corrupt)? {
                        if row.map_err(corrupt)?.0 != reader.as_str() {
                            count += 1;
                            if count >= cap {
                                return Ok(false);
                            }
                        }
                    }
                    Ok(true)
                },
            )
            .await?;
            if count >= cap {
                break;
            }
        }
        Ok(count)
    }
}

/// A key claimed under the message's own id was claimed by this very send:
/// a transaction the driver retried after it had gone through answers "not
/// applied" with our id. The message is then new (its row written, again if
/// need be), not a retry of an earlier send: taken for one, it would be
/// acknowledged and never delivered live.
pub(super) fn own_claims_are_fresh(
    messages: &[Message],
    claims: Vec<Option<MessageId>>,
) -> Vec<Option<MessageId>> {
    messages
        .iter()
        .zip(claims)
        .map(|(m, c)| c.filter(|id| *id != m.id))
        .collect()
}
