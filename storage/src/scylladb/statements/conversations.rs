//! The conversations' statements: metadata and members, each user's list,
//! read markers.

use scylla::statement::prepared::PreparedStatement;

use super::prepare::Prepare;
use crate::StoreError;

/// The conversations' statements.
pub(in crate::scylladb) struct Statements {
    pub(in crate::scylladb) update_conversation: PreparedStatement,
    pub(in crate::scylladb) upsert_member: PreparedStatement,
    pub(in crate::scylladb) delete_member: PreparedStatement,
    pub(in crate::scylladb) select_conversation: PreparedStatement,
    pub(in crate::scylladb) select_ids: PreparedStatement,
    pub(in crate::scylladb) select_ids_after: PreparedStatement,
    pub(in crate::scylladb) insert_user_conversation: PreparedStatement,
    pub(in crate::scylladb) delete_user_conversation: PreparedStatement,
    pub(in crate::scylladb) select_user_conversations: PreparedStatement,
    pub(in crate::scylladb) raise_read_marker: PreparedStatement,
    pub(in crate::scylladb) select_read_markers: PreparedStatement,
    pub(in crate::scylladb) select_read_marker: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(p: &Prepare<'_>) -> Result<Self, StoreError> {
        Ok(Statements {
            update_conversation: p.cql("UPDATE {ks}.conversations SET kind = ?, title = ?, \
                 created_at = ? WHERE conversation_id = ?")
            .await?,
            upsert_member: p.cql(
                "UPDATE {ks}.conversations SET role = ? WHERE conversation_id = ? AND user_id = ?",
            )
            .await?,
            delete_member: p.cql(
                "DELETE FROM {ks}.conversations WHERE conversation_id = ? AND user_id = ?",
            )
            .await?,
            select_conversation: p.cql("SELECT kind, title, created_at, user_id, role \
                 FROM {ks}.conversations WHERE conversation_id = ?")
            .await?,
            // Partitions in token order, a page after another's last.
            select_ids: p
                .cql("SELECT DISTINCT conversation_id FROM {ks}.conversations LIMIT ?")
                .await?,
            select_ids_after: p
                .cql(
                    "SELECT DISTINCT conversation_id FROM {ks}.conversations \
                     WHERE token(conversation_id) > token(?) LIMIT ?",
                )
                .await?,
            insert_user_conversation: p.cql(
                "INSERT INTO {ks}.user_conversations (user_id, conversation_id) VALUES (?, ?)",
            )
            .await?,
            delete_user_conversation: p.cql(
                "DELETE FROM {ks}.user_conversations WHERE user_id = ? AND conversation_id = ?",
            )
            .await?,
            select_user_conversations: p.cql(
                "SELECT conversation_id FROM {ks}.user_conversations WHERE user_id = ?",
            )
            .await?,
            raise_read_marker: p.cql("UPDATE {ks}.read_markers USING TIMESTAMP ? SET up_to = ? \
                 WHERE conversation_id = ? AND user_id = ?")
            .await?,
            select_read_markers: p.cql(
                "SELECT user_id, up_to FROM {ks}.read_markers WHERE conversation_id = ?",
            )
            .await?,
            select_read_marker: p.cql(
                "SELECT up_to FROM {ks}.read_markers WHERE conversation_id = ? AND user_id = ?",
            )
            .await?,
        })
    }
}
