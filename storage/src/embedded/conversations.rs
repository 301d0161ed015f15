//! Conversations on the embedded store: their metadata, members, each
//! user's conversation list, read markers.

use async_trait::async_trait;
use chat_protocol::{
    Conversation, ConversationId, ConversationKind, Member, MessageId, Role, UserId,
};
use fjall::Readable;
use serde::{Deserialize, Serialize};

use super::keys::{decode, decode_u64, encode, key_of, last_part, split_part, user_id};
use super::keyspaces::{Inner, Table};
use super::txn::Txn;
use super::EmbeddedStore;
use crate::conversations::memberships;
use crate::{corrupt, unavailable, ConversationChange, ConversationStore, StoreError};

#[derive(Serialize, Deserialize)]
struct ConversationMeta {
    id: ConversationId,
    kind: ConversationKind,
    #[serde(default)]
    title: Option<String>,
    created_at: u64,
}

impl Inner {
    fn conversation(&self, id: &ConversationId) -> Result<Option<Conversation>, StoreError> {
        // One snapshot, so the metadata and the members come from the same
        // `apply_conversation` even while another one is being written.
        let snapshot = self.db.snapshot();
        let prefix = key_of(&[id.as_str()]);
        let Some(meta) = snapshot
            .get(&self.conversations, &prefix)
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let meta: ConversationMeta = decode(&meta)?;
        let mut members = Vec::new();
        for guard in snapshot.prefix(&self.members, &prefix) {
            let (key, value) = guard.into_inner().map_err(unavailable)?;
            members.push(Member {
                user: user_id(last_part(&key, prefix.len())?)?,
                role: decode::<Role>(&value)?,
            });
        }
        Ok(Some(Conversation {
            id: meta.id,
            kind: meta.kind,
            title: meta.title,
            members,
            member_count: None,
            created_at: meta.created_at,
            rev: 0,
        }))
    }

    fn user_conversations(&self, user: &UserId) -> Result<Vec<ConversationId>, StoreError> {
        let prefix = key_of(&[user.as_str()]);
        let mut ids = Vec::new();
        for guard in self.user_conversations.prefix(&prefix) {
            let key = guard.key().map_err(unavailable)?;
            let id = last_part(&key, prefix.len())?;
            ids.push(ConversationId::new(id).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        }
        Ok(ids)
    }

    fn read_markers(
        &self,
        conversation: &ConversationId,
    ) -> Result<Vec<(UserId, MessageId)>, StoreError> {
        let prefix = key_of(&[conversation.as_str()]);
        let mut markers = Vec::new();
        for guard in self.read_markers.prefix(&prefix) {
            let (key, value) = guard.into_inner().map_err(unavailable)?;
            markers.push((
                user_id(last_part(&key, prefix.len())?)?,
                MessageId(decode_u64(&value)?),
            ));
        }
        Ok(markers)
    }

    fn read_marker(
        &self,
        conversation: &ConversationId,
        user: &UserId,
    ) -> Result<Option<MessageId>, StoreError> {
        let key = key_of(&[conversation.as_str(), user.as_str()]);
        match self.read_markers.get(&key).map_err(unavailable)? {
            Some(value) => Ok(Some(MessageId(decode_u64(&value)?))),
            None => Ok(None),
        }
    }
}

impl Txn<'_> {
    /// A read marker as it will be once this batch is written.
    pub(crate) fn read_marker(
        &self,
        conversation: &ConversationId,
        user: &UserId,
    ) -> Result<Option<MessageId>, StoreError> {
        let key = key_of(&[conversation.as_str(), user.as_str()]);
        match self.get(Table::ReadMarkers, &key)? {
            Some(value) => Ok(Some(MessageId(decode_u64(&value)?))),
            None => Ok(None),
        }
    }

    /// Moves a read marker to `up_to` unless it is there or beyond already:
    /// a marker never moves back, so markers set in any order (on one node,
    /// or on several and then exchanged) end up at the highest.
    pub(crate) fn raise_read_marker(
        &mut self,
        conversation: &ConversationId,
        user: &UserId,
        up_to: MessageId,
    ) -> Result<(), StoreError> {
        if self.read_marker(conversation, user)? >= Some(up_to) {
            return Ok(());
        }
        self.set(
            Table::ReadMarkers,
            key_of(&[conversation.as_str(), user.as_str()]),
            Some(up_to.0.to_be_bytes().to_vec()),
        );
        Ok(())
    }

    /// Writes a conversation's metadata; its `members` field is ignored.
    pub(crate) fn put_conversation_meta(
        &mut self,
        conversation: &Conversation,
    ) -> Result<(), StoreError> {
        let meta = ConversationMeta {
            id: conversation.id.clone(),
            kind: conversation.kind,
            title: conversation.title.clone(),
            created_at: conversation.created_at,
        };
        self.set(
            Table::Conversations,
            key_of(&[conversation.id.as_str()]),
            Some(encode(&meta)?),
        );
        Ok(())
    }

    /// Makes `user` a member with `role`, or (`None`) no member, keeping the
    /// per-user conversation index in step.
    pub(crate) fn set_member(
        &mut self,
        conversation: &ConversationId,
        user: &UserId,
        role: Option<Role>,
    ) -> Result<(), StoreError> {
        let (id, user) = (conversation.as_str(), user.as_str());
        let (member, index) = match role {
            Some(role) => (Some(encode(&role)?), Some(Vec::new())),
            None => (None, None),
        };
        self.set(Table::Members, key_of(&[id, user]), member);
        self.set(Table::UserConversations, key_of(&[user, id]), index);
        Ok(())
    }
}

#[async_trait]
impl ConversationStore for EmbeddedStore {
    async fn conversation(&self, id: &ConversationId) -> Result<Option<Conversation>, StoreError> {
        let id = id.clone();
        self.blocking(move |s| s.conversation(&id)).await
    }

    async fn apply_conversation(&self, change: &ConversationChange) -> Result<(), StoreError> {
        let change = change.clone();
        self.update(move |txn| {
            txn.put_conversation_meta(&change.conversation)?;
            let id = &change.conversation.id;
            for (user, role) in memberships(&change.upsert, &change.remove) {
                txn.set_member(id, user, role)?;
            }
            Ok(())
        })
        .await
    }

    async fn conversation_ids(
        &self,
        after: Option<&ConversationId>,
        limit: usize,
    ) -> Result<Vec<ConversationId>, StoreError> {
        let after = after.map(|a| key_of(&[a.as_str()]));
        self.blocking(move |s| {
            let range = match &after {
                Some(a) => s.conversations.range::<&[u8], _>((
                    std::ops::Bound::Excluded(a.as_slice()),
                    std::ops::Bound::Unbounded,
                )),
                None => s.conversations.range::<&[u8], _>(..),
            };
            let mut ids = Vec::new();
            for guard in range.take(limit) {
                let key = guard.key().map_err(unavailable)?;
                let (id, _) = split_part(&key)?;
                ids.push(ConversationId::new(id).map_err(corrupt)?);
            }
            Ok(ids)
        })
        .await
    }

    async fn user_conversations(&self, user: &UserId) -> Result<Vec<ConversationId>, StoreError> {
        let user = user.clone();
        self.blocking(move |s| s.user_conversations(&user)).await
    }

    async fn set_read_marker(
        &self,
        conversation: &ConversationId,
        user: &UserId,
        up_to: MessageId,
    ) -> Result<(), StoreError> {
        let (conversation, user) = (conversation.clone(), user.clone());
        self.update(move |txn| txn.raise_read_marker(&conversation, &user, up_to))
            .await
    }

    async fn read_markers(
        &self,
        conversation: &ConversationId,
    ) -> Result<Vec<(UserId, MessageId)>, StoreError> {
        let conversation = conversation.clone();
        self.blocking(move |s| s.read_markers(&conversation)).await
    }

    async fn read_marker(
        &self,
        conversation: &ConversationId,
        user: &UserId,
    ) -> Result<Option<MessageId>, StoreError> {
        self.inline(|s| s.read_marker(conversation, user))
    }
}
