//! The statements of notifications (settings, levels, subscriptions), the
//! outbox (marks, cursors, jobs, dead letters, digests) and people (e-mail
//! addresses and mailed tokens).

use scylla::statement::prepared::PreparedStatement;

use super::prepare::{not_idempotent, Prepare};
use crate::StoreError;

/// Their statements.
pub(in crate::scylladb) struct Statements {
    pub(in crate::scylladb) put_settings: PreparedStatement,
    pub(in crate::scylladb) select_settings: PreparedStatement,
    pub(in crate::scylladb) put_level: PreparedStatement,
    pub(in crate::scylladb) select_level: PreparedStatement,
    pub(in crate::scylladb) select_levels: PreparedStatement,
    pub(in crate::scylladb) put_subscription: PreparedStatement,
    pub(in crate::scylladb) select_subscriptions: PreparedStatement,
    pub(in crate::scylladb) delete_subscription: PreparedStatement,
    pub(in crate::scylladb) put_mark: PreparedStatement,
    pub(in crate::scylladb) select_marks: PreparedStatement,
    pub(in crate::scylladb) clear_mark: PreparedStatement,
    pub(in crate::scylladb) put_cursor: PreparedStatement,
    pub(in crate::scylladb) select_cursor: PreparedStatement,
    pub(in crate::scylladb) put_job: PreparedStatement,
    pub(in crate::scylladb) select_due_jobs: PreparedStatement,
    pub(in crate::scylladb) count_jobs: PreparedStatement,
    pub(in crate::scylladb) delete_job: PreparedStatement,
    pub(in crate::scylladb) put_dead: PreparedStatement,
    pub(in crate::scylladb) select_dead: PreparedStatement,
    pub(in crate::scylladb) select_one_dead: PreparedStatement,
    pub(in crate::scylladb) take_dead: PreparedStatement,
    pub(in crate::scylladb) put_digest_item: PreparedStatement,
    pub(in crate::scylladb) select_digest_items: PreparedStatement,
    pub(in crate::scylladb) delete_digest_item: PreparedStatement,
    pub(in crate::scylladb) put_email: PreparedStatement,
    pub(in crate::scylladb) select_email: PreparedStatement,
    pub(in crate::scylladb) put_token: PreparedStatement,
    pub(in crate::scylladb) select_token: PreparedStatement,
    pub(in crate::scylladb) take_token: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(p: &Prepare<'_>) -> Result<Self, StoreError> {
        Ok(Statements {
            put_settings: p
                .cql("INSERT INTO {ks}.notify_settings (user_id, settings) VALUES (?, ?)")
                .await?,
            select_settings: p
                .cql("SELECT settings FROM {ks}.notify_settings WHERE user_id = ?")
                .await?,
            put_level: p
                .cql(
                    "INSERT INTO {ks}.notify_levels (user_id, conversation_id, notify) \
                     VALUES (?, ?, ?)",
                )
                .await?,
            select_level: p
                .cql(
                    "SELECT notify FROM {ks}.notify_levels WHERE user_id = ? \
                     AND conversation_id = ?",
                )
                .await?,
            select_levels: p
                .cql("SELECT conversation_id, notify FROM {ks}.notify_levels WHERE user_id = ?")
                .await?,
            put_subscription: p
                .cql("INSERT INTO {ks}.push_subscriptions (user_id, id, sub) VALUES (?, ?, ?)")
                .await?,
            select_subscriptions: p
                .cql("SELECT sub FROM {ks}.push_subscriptions WHERE user_id = ?")
                .await?,
            delete_subscription: not_idempotent(
                p.cql("DELETE FROM {ks}.push_subscriptions WHERE user_id = ? AND id = ? IF EXISTS")
                    .await?,
            ),
            put_mark: p
                .cql(
                    "INSERT INTO {ks}.notify_marks (shard, conversation_id, rev) \
                     VALUES (?, ?, ?)",
                )
                .await?,
            select_marks: p
                .cql(
                    "SELECT conversation_id, WRITETIME(rev) FROM {ks}.notify_marks \
                     WHERE shard = ? LIMIT ?",
                )
                .await?,
            // Deletes the cells written at or before the mark that was read:
            // a mark written since (a later timestamp) stays.
            clear_mark: p
                .cql(
                    "DELETE FROM {ks}.notify_marks USING TIMESTAMP ? \
                     WHERE shard = ? AND conversation_id = ?",
                )
                .await?,
            put_cursor: p
                .cql(
                    "INSERT INTO {ks}.notify_cursors (conversation_id, rev, last_id) \
                     VALUES (?, ?, ?)",
                )
                .await?,
            select_cursor: p
                .cql("SELECT rev, last_id FROM {ks}.notify_cursors WHERE conversation_id = ?")
                .await?,
            put_job: p
                .cql("INSERT INTO {ks}.notify_jobs (shard, due, id, job) VALUES (?, ?, ?, ?)")
                .await?,
            select_due_jobs: p
                .cql("SELECT job FROM {ks}.notify_jobs WHERE shard = ? AND due <= ? LIMIT ?")
                .await?,
            count_jobs: p
                .cql("SELECT COUNT(*) FROM {ks}.notify_jobs WHERE shard = ?")
                .await?,
            delete_job: p
                .cql("DELETE FROM {ks}.notify_jobs WHERE shard = ? AND due = ? AND id = ?")
                .await?,
            put_dead: p
                .cql("INSERT INTO {ks}.notify_dead (part, id, dead) VALUES (0, ?, ?)")
                .await?,
            select_dead: p
                .cql("SELECT dead FROM {ks}.notify_dead WHERE part = 0")
                .await?,
            select_one_dead: p
                .cql("SELECT dead FROM {ks}.notify_dead WHERE part = 0 AND id = ?")
                .await?,
            take_dead: not_idempotent(
                p.cql("DELETE FROM {ks}.notify_dead WHERE part = 0 AND id = ? IF EXISTS")
                    .await?,
            ),
            put_digest_item: p
                .cql(
                    "INSERT INTO {ks}.notify_digest (user_id, conversation_id, message) \
                     VALUES (?, ?, ?)",
                )
                .await?,
            select_digest_items: p
                .cql("SELECT conversation_id, message FROM {ks}.notify_digest WHERE user_id = ?")
                .await?,
            delete_digest_item: p
                .cql(
                    "DELETE FROM {ks}.notify_digest WHERE user_id = ? AND conversation_id = ? \
                     AND message = ?",
                )
                .await?,
            put_email: p
                .cql("INSERT INTO {ks}.user_emails (user_id, email) VALUES (?, ?)")
                .await?,
            select_email: p
                .cql("SELECT email FROM {ks}.user_emails WHERE user_id = ?")
                .await?,
            put_token: p
                .cql("INSERT INTO {ks}.email_tokens (token_hash, record) VALUES (?, ?)")
                .await?,
            select_token: p
                .cql("SELECT record FROM {ks}.email_tokens WHERE token_hash = ?")
                .await?,
            take_token: not_idempotent(
                p.cql("DELETE FROM {ks}.email_tokens WHERE token_hash = ? IF EXISTS")
                    .await?,
            ),
        })
    }
}
