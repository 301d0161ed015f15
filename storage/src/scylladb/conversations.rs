//! Conversations on ScyllaDB: metadata in static columns and one row per
//! member, each user's conversation list, read markers.

use async_trait::async_trait;
use chat_protocol::{
    Conversation, ConversationId, ConversationKind, Member, MessageId, Role, UserId,
};
use futures_util::future::try_join_all;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchType};

use super::store::ScyllaStore;
use crate::{corrupt, unavailable, ConversationChange, ConversationStore, StoreError};

/// Members written per batch of a conversation change.
const MEMBER_BATCH: usize = 200;

#[async_trait]
impl ConversationStore for ScyllaStore {
    async fn conversation(&self, id: &ConversationId) -> Result<Option<Conversation>, StoreError> {
        let mut meta: Option<(ConversationKind, Option<String>, u64)> = None;
        let mut members = Vec::new();
        self.for_each_row(
            &self.q.conversations.select_conversation,
            (id.as_str(),),
            |rows| {
                type ConversationRow<'r> = (
                    Option<&'r str>,
                    Option<&'r str>,
                    Option<i64>,
                    Option<&'r str>,
                    Option<&'r str>,
                );
                for row in rows.rows::<ConversationRow<'_>>().map_err(corrupt)? {
                    let (kind, title, created_at, user, role) = row.map_err(corrupt)?;
                    if meta.is_none() {
                        if let Some(kind) = kind {
                            meta = Some((
                                kind_of(kind)?,
                                title.map(str::to_owned),
                                created_at.unwrap_or(0) as u64,
                            ));
                        }
                    }
                    if let (Some(user), Some(role)) = (user, role) {
                        members.push(Member {
                            user: UserId::new(user).map_err(corrupt)?,
                            role: role_of(role)?,
                        });
                    }
                }
                Ok(true)
            },
        )
        .await?;
        Ok(meta.map(|(kind, title, created_at)| Conversation {
            id: id.clone(),
            kind,
            title,
            members,
            member_count: None,
            created_at,
            rev: 0,
        }))
    }

    async fn apply_conversation(&self, change: &ConversationChange) -> Result<(), StoreError> {
        let c = &change.conversation;
        let id = c.id.as_str();
        // The user index first for new members and last for removed ones:
        // after a failure it lists too much, never too little, and the
        // conversation's own partition (members and metadata in one batch
        // where they fit) is the truth.
        try_join_all(change.upsert.iter().map(|m| {
            self.run(
                &self.q.conversations.insert_user_conversation,
                (m.user.as_str(), id),
            )
        }))
        .await?;
        let mut rows = vec![ChangeRow::Meta((
            c.kind.as_str(),
            c.title.as_deref(),
            c.created_at as i64,
            id,
        ))];
        rows.extend(
            change
                .upsert
                .iter()
                .map(|m| ChangeRow::Upsert((m.role.as_str(), id, m.user.as_str()))),
        );
        rows.extend(
            change
                .remove
                .iter()
                .map(|u| ChangeRow::Remove((id, u.as_str()))),
        );
        // One batch (one partition: atomic and isolated) unless the change
        // is too large for one.
        for chunk in rows.chunks(MEMBER_BATCH) {
            let mut batch = Batch::new(BatchType::Unlogged);
            batch.set_is_idempotent(true);
            for row in chunk {
                batch.append_statement(match row {
                    ChangeRow::Meta(_) => self.q.conversations.update_conversation.clone(),
                    ChangeRow::Upsert(_) => self.q.conversations.upsert_member.clone(),
                    ChangeRow::Remove(_) => self.q.conversations.delete_member.clone(),
                });
            }
            self.session
                .batch(&batch, chunk)
                .await
                .map_err(unavailable)?;
        }
        try_join_all(change.remove.iter().map(|user| {
            self.run(
                &self.q.conversations.delete_user_conversation,
                (user.as_str(), id),
            )
        }))
        .await?;
        Ok(())
    }

    async fn conversation_ids(
        &self,
        after: Option<&ConversationId>,
        limit: usize,
    ) -> Result<Vec<ConversationId>, StoreError> {
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let q = &self.q.conversations;
        let rows = match after {
            Some(a) => self.rows(&q.select_ids_after, (a.as_str(), limit)).await?,
            None => self.rows(&q.select_ids, (limit,)).await?,
        };
        let mut ids = Vec::new();
        for row in rows.rows::<(&str,)>().map_err(corrupt)? {
            ids.push(ConversationId::new(row.map_err(corrupt)?.0).map_err(corrupt)?);
        }
        Ok(ids)
    }

    async fn user_conversations(&self, user: &UserId) -> Result<Vec<ConversationId>, StoreError> {
        let mut ids = Vec::new();
        self.for_each_row(
            &self.q.conversations.select_user_conversations,
            (user.as_str(),),
            |rows| {
                for row in rows.rows::<(&str,)>().map_err(corrupt)? {
                    ids.push(ConversationId::new(row.map_err(corrupt)?.0).map_err(corrupt)?);
                }
                Ok(true)
            },
        )
        .await?;
        Ok(ids)
    }

    async fn set_read_marker(
        &self,
        conversation: &ConversationId,
        user: &UserId,
        up_to: MessageId,
    ) -> Result<(), StoreError> {
        // The id is the write timestamp: of two markers the higher one wins
        // in every replica, whatever order they arrive in, with no read.
        let id = up_to.0 as i64;
        self.run(
            &self.q.conversations.raise_read_marker,
            (id, id, conversation.as_str(), user.as_str()),
        )
        .await?;
        Ok(())
    }

    async fn read_markers(
        &self,
        conversation: &ConversationId,
    ) -> Result<Vec<(UserId, MessageId)>, StoreError> {
        let mut markers = Vec::new();
        self.for_each_row(
            &self.q.conversations.select_read_markers,
            (conversation.as_str(),),
            |rows| {
                for row in rows.rows::<(&str, Option<i64>)>().map_err(corrupt)? {
                    let (user, up_to) = row.map_err(corrupt)?;
                    if let Some(up_to) = up_to {
                        markers
                            .push((UserId::new(user).map_err(corrupt)?, MessageId(up_to as u64)));
                    }
                }
                Ok(true)
            },
        )
        .await?;
        Ok(markers)
    }

    async fn read_marker(
        &self,
        conversation: &ConversationId,
        user: &UserId,
    ) -> Result<Option<MessageId>, StoreError> {
        let rows = self
            .rows(
                &self.q.conversations.select_read_marker,
                (conversation.as_str(), user.as_str()),
            )
            .await?;
        Ok(rows
            .maybe_first_row::<(Option<i64>,)>()
            .map_err(corrupt)?
            .and_then(|(up_to,)| up_to)
            .map(|id| MessageId(id as u64)))
    }
}

/// A row of a conversation change's batch, whose statements differ.
enum ChangeRow<'a> {
    Meta((&'a str, Option<&'a str>, i64, &'a str)),
    Upsert((&'a str, &'a str, &'a str)),
    Remove((&'a str, &'a str)),
}

impl SerializeRow for ChangeRow<'_> {
    fn serialize(
        &self,
        ctx: &scylla::serialize::row::RowSerializationContext<'_>,
        writer: &mut scylla::serialize::writers::RowWriter,
    ) -> Result<(), scylla::serialize::SerializationError> {
        match self {
            ChangeRow::Meta(row) => SerializeRow::serialize(row, ctx, writer),
            ChangeRow::Upsert(row) => SerializeRow::serialize(row, ctx, writer),
            ChangeRow::Remove(row) => SerializeRow::serialize(row, ctx, writer),
        }
    }

    fn is_empty(&self) -> bool {
        false
    }
}

fn kind_of(s: &str) -> Result<ConversationKind, StoreError> {
    ConversationKind::from_name(s)
        .ok_or_else(|| StoreError::Corrupt(format!("conversation kind {s:?}")))
}

fn role_of(s: &str) -> Result<Role, StoreError> {
    Role::from_name(s).ok_or_else(|| StoreError::Corrupt(format!("role {s:?}")))
}
