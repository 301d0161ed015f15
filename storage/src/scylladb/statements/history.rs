//! The history's statements: messages, their bucket list, the
//! `client_msg_id` claims, the revision index and its blocks, mentions.

use scylla::statement::prepared::PreparedStatement;

use super::prepare::{not_idempotent, Prepare};
use crate::StoreError;

/// The history's statements.
pub(in crate::scylladb) struct Statements {
    pub(in crate::scylladb) insert_message: PreparedStatement,
    pub(in crate::scylladb) select_page_desc: PreparedStatement,
    pub(in crate::scylladb) select_page_asc: PreparedStatement,
    pub(in crate::scylladb) select_message: PreparedStatement,
    pub(in crate::scylladb) select_senders: PreparedStatement,
    pub(in crate::scylladb) insert_bucket: PreparedStatement,
    pub(in crate::scylladb) select_buckets_desc: PreparedStatement,
    pub(in crate::scylladb) select_buckets_asc: PreparedStatement,
    pub(in crate::scylladb) select_all_buckets: PreparedStatement,
    pub(in crate::scylladb) insert_client_msg_id: PreparedStatement,
    pub(in crate::scylladb) claim_client_msg_id: PreparedStatement,
    pub(in crate::scylladb) select_client_msg_id: PreparedStatement,
    pub(in crate::scylladb) update_message_state: PreparedStatement,
    pub(in crate::scylladb) insert_rev: PreparedStatement,
    pub(in crate::scylladb) delete_rev: PreparedStatement,
    pub(in crate::scylladb) insert_rev_block: PreparedStatement,
    pub(in crate::scylladb) select_rev_blocks: PreparedStatement,
    pub(in crate::scylladb) select_last_rev_block: PreparedStatement,
    pub(in crate::scylladb) select_revs: PreparedStatement,
    pub(in crate::scylladb) select_last_rev: PreparedStatement,
    pub(in crate::scylladb) insert_mention: PreparedStatement,
    pub(in crate::scylladb) delete_mention: PreparedStatement,
    pub(in crate::scylladb) select_mentions: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(p: &Prepare<'_>) -> Result<Self, StoreError> {
        let message_columns = "id, sender, body, kind, ts, client_msg_id, reply_to, rev, \
                               edited_at, deleted, reactions, mentions, attachments";
        Ok(Statements {
            insert_message: p.cql(
                "INSERT INTO {ks}.messages (conversation_id, bucket, id, sender, \
                 body, kind, ts, client_msg_id, reply_to, rev, edited_at, deleted, reactions, \
                 mentions, attachments) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .await?,
            select_page_desc: p.cql(&format!(
                "SELECT {message_columns} FROM {{ks}}.messages WHERE conversation_id = ? \
                 AND bucket = ? AND id > ? AND id < ? ORDER BY id DESC LIMIT ?"
            ))
            .await?,
            select_page_asc: p.cql(&format!(
                "SELECT {message_columns} FROM {{ks}}.messages WHERE conversation_id = ? \
                 AND bucket = ? AND id > ? AND id < ? ORDER BY id ASC LIMIT ?"
            ))
            .await?,
            select_message: p.cql(&format!(
                "SELECT {message_columns} FROM {{ks}}.messages WHERE conversation_id = ? \
                 AND bucket = ? AND id = ?"
            ))
            .await?,
            select_senders: p.cql(
                "SELECT sender FROM {ks}.messages WHERE conversation_id = ? \
                 AND bucket = ? AND id > ? ORDER BY id ASC",
            )
            .await?,
            insert_bucket: p.cql(
                "INSERT INTO {ks}.conversation_buckets (conversation_id, bucket) VALUES (?, ?)",
            )
            .await?,
            select_buckets_desc: p.cql("SELECT bucket FROM {ks}.conversation_buckets \
                 WHERE conversation_id = ? AND bucket >= ? AND bucket <= ? \
                 ORDER BY bucket DESC LIMIT ?")
            .await?,
            select_buckets_asc: p.cql("SELECT bucket FROM {ks}.conversation_buckets \
                 WHERE conversation_id = ? AND bucket >= ? AND bucket <= ? \
                 ORDER BY bucket ASC LIMIT ?")
            .await?,
            select_all_buckets: p.cql(
                "SELECT bucket FROM {ks}.conversation_buckets WHERE conversation_id = ?",
            )
            .await?,
            insert_client_msg_id: p.cql("INSERT INTO {ks}.client_msg_ids (conversation_id, sender, \
                 client_msg_id, id) VALUES (?, ?, ?, ?)")
            .await?,
            claim_client_msg_id: not_idempotent(
                p.cql(
                    "INSERT INTO {ks}.client_msg_ids (conversation_id, sender, client_msg_id, id) \
                   VALUES (?, ?, ?, ?) IF NOT EXISTS",
                )
                .await?,
            ),
            select_client_msg_id: p.cql("SELECT id FROM {ks}.client_msg_ids \
                 WHERE conversation_id = ? AND sender = ? AND client_msg_id = ?")
            .await?,
            update_message_state: p.cql(
                "UPDATE {ks}.messages SET body = ?, rev = ?, edited_at = ?, \
                 deleted = ?, reactions = ?, mentions = ?, attachments = ? \
                 WHERE conversation_id = ? AND bucket = ? AND id = ?",
            )
            .await?,
            insert_rev: p.cql(
                "INSERT INTO {ks}.message_revs (conversation_id, block, rev, id) \
                 VALUES (?, ?, ?, ?)",
            )
            .await?,
            delete_rev: p.cql(
                "DELETE FROM {ks}.message_revs WHERE conversation_id = ? AND block = ? AND rev = ?",
            )
            .await?,
            insert_rev_block: p.cql(
                "INSERT INTO {ks}.rev_blocks (conversation_id, block) VALUES (?, ?)",
            )
            .await?,
            select_rev_blocks: p.cql(
                "SELECT block FROM {ks}.rev_blocks WHERE conversation_id = ? \
                 AND block >= ? AND block <= ? ORDER BY block ASC",
            )
            .await?,
            select_last_rev_block: p.cql(
                "SELECT block FROM {ks}.rev_blocks WHERE conversation_id = ? LIMIT 1",
            )
            .await?,
            select_revs: p.cql(
                "SELECT rev, id FROM {ks}.message_revs WHERE conversation_id = ? \
                 AND block = ? AND rev > ? AND rev <= ? LIMIT ?",
            )
            .await?,
            select_last_rev: p.cql(
                "SELECT rev FROM {ks}.message_revs WHERE conversation_id = ? \
                 AND block = ? ORDER BY rev DESC LIMIT 1",
            )
            .await?,
            insert_mention: p.cql(
                "INSERT INTO {ks}.mentions (conversation_id, user_id, id) VALUES (?, ?, ?)",
            )
            .await?,
            delete_mention: p.cql(
                "DELETE FROM {ks}.mentions WHERE conversation_id = ? AND user_id = ? AND id = ?",
            )
            .await?,
            select_mentions: p.cql("SELECT id FROM {ks}.mentions WHERE conversation_id = ? \
                 AND user_id = ? AND id > ? LIMIT ?")
            .await?,
        })
    }
}
