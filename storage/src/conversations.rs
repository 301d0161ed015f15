//! Conversations: their records and members, each user's list of
//! conversations, and read markers.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chat_protocol::{Conversation, ConversationId, Member, MessageId, Role, UserId};

use crate::StoreError;

/// A change to a conversation's record: its metadata and some members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationChange {
    /// The conversation as it is after the change; its `members` field is
    /// ignored, `upsert` and `remove` say what changes.
    pub conversation: Conversation,
    /// Members added or whose role changed.
    pub upsert: Vec<Member>,
    /// Members removed.
    pub remove: Vec<UserId>,
}

/// What a change makes of each membership it touches: upserts in order (a
/// later one of the same user wins), then removals, which win over upserts.
/// Every store applies a change so, as if the two lists came one after the
/// other.
pub(crate) fn memberships<'a>(
    upsert: &'a [Member],
    remove: &'a [UserId],
) -> BTreeMap<&'a UserId, Option<Role>> {
    let mut changes = BTreeMap::new();
    for member in upsert {
        changes.insert(&member.user, Some(member.role));
    }
    for user in remove {
        changes.insert(user, None);
    }
    changes
}

/// Conversation records, memberships and read markers.
#[async_trait]
pub trait ConversationStore: Send + Sync {
    /// A conversation with all its members, if it exists.
    async fn conversation(&self, id: &ConversationId) -> Result<Option<Conversation>, StoreError>;

    /// Writes a conversation's metadata and member changes, and the per-user
    /// conversation index, atomically and durably.
    async fn apply_conversation(&self, change: &ConversationChange) -> Result<(), StoreError>;

    /// Ids of the conversations a user is a member of.
    async fn user_conversations(&self, user: &UserId) -> Result<Vec<ConversationId>, StoreError>;

    /// Every conversation's id, a page of at most `limit` at a time, each
    /// page after the last id of the one before (`None`: the first), in an
    /// order of the store's own: what a rebuild of an index walks.
    async fn conversation_ids(
        &self,
        after: Option<&ConversationId>,
        limit: usize,
    ) -> Result<Vec<ConversationId>, StoreError>;

    /// Moves a read marker forward; a marker never moves back (an older
    /// value is ignored), so replicas converge whatever order writes arrive in.
    async fn set_read_marker(
        &self,
        conversation: &ConversationId,
        user: &UserId,
        up_to: MessageId,
    ) -> Result<(), StoreError>;

    /// All read markers of a conversation.
    async fn read_markers(
        &self,
        conversation: &ConversationId,
    ) -> Result<Vec<(UserId, MessageId)>, StoreError>;

    /// One user's read marker in a conversation.
    async fn read_marker(
        &self,
        conversation: &ConversationId,
        user: &UserId,
    ) -> Result<Option<MessageId>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removals_win_over_upserts() {
        let (a, b) = (UserId::new("a").unwrap(), UserId::new("b").unwrap());
        let upsert = [
            Member {
                user: a.clone(),
                role: Role::Member,
            },
            Member {
                user: b.clone(),
                role: Role::Member,
            },
            Member {
                user: a.clone(),
                role: Role::Admin,
            },
        ];
        let changes = memberships(&upsert, std::slice::from_ref(&b));
        assert_eq!(changes.get(&a), Some(&Some(Role::Admin)));
        assert_eq!(changes.get(&b), Some(&None));
    }
}
