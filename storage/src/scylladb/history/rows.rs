//! The `messages` row: as read, as written, and the writes of a message's
//! rows (the row, its bucket's list row, its index rows) in an order that
//! leaves no dangling reference if one fails.

use std::collections::HashMap;

use chat_protocol::{ClientMsgId, ConversationId, Message, MessageId, MessageKind, UserId};
use futures_util::future::try_join_all;
use scylla::statement::batch::{Batch, BatchType};
use scylla::value::MaybeUnset;

use super::super::store::{remember, ScyllaStore};
use crate::history::{lost_mentions, replaced_rev};
use crate::{corrupt, lock, rev_block, unavailable, StoreError};

/// Rows per single-partition batch of messages, and the bytes that end one
/// sooner: servers warn at 5 KiB and refuse 50 KiB by default.
const BATCH_ROWS: usize = 64;
const BATCH_BYTES: usize = 32 * 1024;

impl ScyllaStore {
    /// Writes the `client_msg_id` index rows, then the message rows: a
    /// message row never exists without the entry that lets its retry find
    /// it.
    pub(in crate::scylladb) async fn index_and_write(
        &self,
        messages: &[&Message],
    ) -> Result<(), StoreError> {
        try_join_all(messages.iter().map(|m| {
            let (conversation, sender, key) = index_key(m);
            self.run(
                &self.q.history.insert_client_msg_id,
                (conversation, sender, key, m.id.0 as i64),
            )
        }))
        .await?;
        self.write_messages(messages).await
    }

    /// Writes message rows, their revision and mentions index rows first
    /// (a reader of the index skips an entry whose message is missing or
    /// moved on, but could not find a message without its entry), and
    /// their buckets' list rows before them.
    pub(super) async fn write_messages(&self, messages: &[&Message]) -> Result<(), StoreError> {
        try_join_all(messages.iter().map(|m| self.add_index_rows(m))).await?;
        let mut partitions: HashMap<(&ConversationId, i32), Vec<&Message>> = HashMap::new();
        for m in messages {
            partitions
                .entry((&m.conversation, self.bucket(m.id)))
                .or_default()
                .push(m);
        }
        try_join_all(
            partitions
                .into_iter()
                .map(|((conversation, bucket), rows)| {
                    self.write_partition(conversation, bucket, rows)
                }),
        )
        .await?;
        // The outbox's marks after the rows (a failure fails the write, so
        // an acknowledged one is never missing from the notifications): a
        // worker that sees a mark finds every message it marks.
        self.mark_for_notify(messages).await
    }

    pub(super) async fn write_partition(
        &self,
        conversation: &ConversationId,
        bucket: i32,
        rows: Vec<&Message>,
    ) -> Result<(), StoreError> {
        let key = (conversation.clone(), bucket);
        let known = lock(&self.known_buckets).contains(&key);
        if !known {
            self.run(
                &self.q.history.insert_bucket,
                (conversation.as_str(), bucket),
            )
            .await?;
            remember(&self.known_buckets, key);
            if let Some(list) = lock(&self.bucket_lists).get_mut(conversation) {
                if let Err(at) = list.binary_search(&bucket) {
                    list.insert(at, bucket);
                }
            }
        }
        let mut start = 0;
        while start < rows.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < rows.len() && end - start < BATCH_ROWS {
                bytes += stored_size(rows[end]);
                if end > start && bytes > BATCH_BYTES {
                    break;
                }
                end += 1;
            }
            let chunk = &rows[start..end];
            if let [m] = chunk {
                self.run(&self.q.history.insert_message, message_row(m, bucket)?)
                    .await?;
            } else {
                let mut batch = Batch::new(BatchType::Unlogged);
                for _ in chunk {
                    batch.append_statement(self.q.history.insert_message.clone());
                }
                batch.set_is_idempotent(true);
                let values = chunk
                    .iter()
                    .map(|m| message_row(m, bucket))
                    .collect::<Result<Vec<_>, _>>()?;
                self.session
                    .batch(&batch, values)
                    .await
                    .map_err(unavailable)?;
            }
            start = end;
        }
        Ok(())
    }

    /// Writes `m`'s revision and mentions index rows.
    pub(super) async fn add_index_rows(&self, m: &Message) -> Result<(), StoreError> {
        let conversation = m.conversation.as_str();
        if m.rev > 0 {
            let block = rev_block(m.rev) as i64;
            let key = (m.conversation.clone(), block);
            if !lock(&self.known_rev_blocks).contains(&key) {
                self.run(&self.q.history.insert_rev_block, (conversation, block))
                    .await?;
                remember(&self.known_rev_blocks, key);
            }
            self.run(
                &self.q.history.insert_rev,
                (conversation, block, m.rev as i64, m.id.0 as i64),
            )
            .await?;
        }
        try_join_all(m.mentions.iter().map(|u| {
            self.run(
                &self.q.history.insert_mention,
                (conversation, u.as_str(), m.id.0 as i64),
            )
        }))
        .await?;
        Ok(())
    }

    /// Takes away the index rows of `previous` that `m`, the state replacing
    /// it, no longer has; after `m`'s are written, so a reader never finds
    /// neither.
    pub(super) async fn remove_index_rows(
        &self,
        previous: &Message,
        m: &Message,
    ) -> Result<(), StoreError> {
        let conversation = m.conversation.as_str();
        if let Some(rev) = replaced_rev(previous, m) {
            self.run(
                &self.q.history.delete_rev,
                (conversation, rev_block(rev) as i64, rev as i64),
            )
            .await?;
        }
        try_join_all(lost_mentions(previous, m).map(|u| {
            self.run(
                &self.q.history.delete_mention,
                (conversation, u.as_str(), m.id.0 as i64),
            )
        }))
        .await?;
        Ok(())
    }
}

type MessageRowTuple = (
    i64,
    String,
    String,
    String,
    i64,
    String,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<bool>,
    Option<Vec<u8>>,
    Option<Vec<String>>,
    Option<Vec<u8>>,
);

/// A `messages` row as read.
pub(super) struct MessageRow(MessageRowTuple);

impl<'frame, 'metadata> scylla::deserialize::row::DeserializeRow<'frame, 'metadata> for MessageRow {
    fn type_check(
        specs: &[scylla::frame::response::result::ColumnSpec],
    ) -> Result<(), scylla::deserialize::TypeCheckError> {
        <MessageRowTuple as scylla::deserialize::row::DeserializeRow>::type_check(specs)
    }

    fn deserialize(
        row: scylla::deserialize::row::ColumnIterator<'frame, 'metadata>,
    ) -> Result<Self, scylla::deserialize::DeserializationError> {
        <MessageRowTuple as scylla::deserialize::row::DeserializeRow>::deserialize(row)
            .map(MessageRow)
    }
}

impl MessageRow {
    pub(super) fn size(&self) -> usize {
        let (_, sender, body, kind, _, client_msg_id, _, _, _, _, reactions, mentions, attachments) =
            &self.0;
        32 + sender.len()
            + body.len()
            + kind.len()
            + client_msg_id.len()
            + reactions.as_ref().map_or(0, Vec::len)
            + attachments.as_ref().map_or(0, Vec::len)
            + mentions
                .as_ref()
                .map_or(0, |m| m.iter().map(|u| u.len() + 2).sum())
    }

    pub(in crate::scylladb) fn into_message(
        self,
        conversation: &ConversationId,
    ) -> Result<Message, StoreError> {
        let (
            id,
            sender,
            body,
            kind,
            ts,
            client_msg_id,
            reply_to,
            rev,
            edited_at,
            deleted,
            reactions,
            mentions,
            attachments,
        ) = self.0;
        Ok(Message {
            rev: rev.unwrap_or(0) as u64,
            edited_at: edited_at.map(|t| t as u64),
            deleted: deleted.unwrap_or(false),
            reactions: match reactions {
                Some(bytes) if !bytes.is_empty() => {
                    rmp_serde::from_slice(&bytes).map_err(corrupt)?
                }
                _ => Vec::new(),
            },
            attachments: match attachments {
                Some(bytes) if !bytes.is_empty() => {
                    rmp_serde::from_slice(&bytes).map_err(corrupt)?
                }
                _ => Vec::new(),
            },
            mentions: mentions
                .unwrap_or_default()
                .iter()
                .map(|u| UserId::new(u).map_err(corrupt))
                .collect::<Result<_, _>>()?,
            id: MessageId(id as u64),
            conversation: conversation.clone(),
            sender: UserId::new(&sender).map_err(corrupt)?,
            body,
            kind: MessageKind::new(&kind)
                .ok_or_else(|| StoreError::Corrupt(format!("message kind {kind:?}")))?,
            ts: ts as u64,
            client_msg_id: ClientMsgId::new(&client_msg_id).map_err(corrupt)?,
            reply_to: reply_to.map(|r| MessageId(r as u64)),
        })
    }
}

/// A message's key in the `client_msg_id` index.
pub(in crate::scylladb) fn index_key(m: &Message) -> (&str, &str, &str) {
    (
        m.conversation.as_str(),
        m.sender.as_str(),
        m.client_msg_id.as_str(),
    )
}

/// What a message takes as stored (for the page byte cap and batch sizes).
fn stored_size(m: &Message) -> usize {
    32 + m.sender.as_str().len()
        + m.body.len()
        + m.kind.as_str().len()
        + m.client_msg_id.as_str().len()
        + m.reactions
            .iter()
            .map(|r| r.emoji.len() + r.users.iter().map(|u| u.as_str().len() + 2).sum::<usize>())
            .sum::<usize>()
        + m.mentions
            .iter()
            .map(|u| u.as_str().len() + 2)
            .sum::<usize>()
        + m.attachments
            .iter()
            .map(|a| 48 + a.id.len() + a.name.len() + a.content_type.len())
            .sum::<usize>()
}

/// A message's reactions as stored: MessagePack, or nothing when none.
pub(super) fn reactions_blob(m: &Message) -> Result<Option<Vec<u8>>, StoreError> {
    if m.reactions.is_empty() {
        return Ok(None);
    }
    rmp_serde::to_vec_named(&m.reactions)
        .map(Some)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode reactions: {e}")))
}

/// A message's attachments as stored: MessagePack, or nothing when none.
pub(super) fn attachments_blob(m: &Message) -> Result<Option<Vec<u8>>, StoreError> {
    if m.attachments.is_empty() {
        return Ok(None);
    }
    rmp_serde::to_vec_named(&m.attachments)
        .map(Some)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode attachments: {e}")))
}

/// A new message's row. Columns a new message leaves empty are unset, not
/// null: a null is a tombstone the database keeps and reads past.
type MessageInsert<'a> = (
    &'a str,
    i32,
    i64,
    &'a str,
    &'a str,
    &'a str,
    i64,
    &'a str,
    MaybeUnset<i64>,
    i64,
    MaybeUnset<i64>,
    MaybeUnset<bool>,
    MaybeUnset<Vec<u8>>,
    MaybeUnset<Vec<&'a str>>,
    MaybeUnset<Vec<u8>>,
);

fn message_row(m: &Message, bucket: i32) -> Result<MessageInsert<'_>, StoreError> {
    Ok((
        m.conversation.as_str(),
        bucket,
        m.id.0 as i64,
        m.sender.as_str(),
        m.body.as_str(),
        m.kind.as_str(),
        m.ts as i64,
        m.client_msg_id.as_str(),
        unset_unless(m.reply_to.map(|r| r.0 as i64)),
        m.rev as i64,
        unset_unless(m.edited_at.map(|t| t as i64)),
        unset_unless(m.deleted.then_some(true)),
        unset_unless(reactions_blob(m)?),
        unset_unless(
            (!m.mentions.is_empty()).then(|| m.mentions.iter().map(UserId::as_str).collect()),
        ),
        unset_unless(attachments_blob(m)?),
    ))
}

fn unset_unless<T>(value: Option<T>) -> MaybeUnset<T> {
    value.map_or(MaybeUnset::Unset, MaybeUnset::Set)
}
