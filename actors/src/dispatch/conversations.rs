//! `conversations`: the caller's list, newest activity first. Read from the
//! store directly: everything it shows is durable, so it needs no actor.

use chat_protocol::{limits, ClientFrame, ConversationSummary, MessageId, OkReply, UserId};
use chat_storage::MessageStore;

use super::{Caller, Dispatch};
use crate::error::ChatError;
use crate::msg::Reply;

/// Upper bound on the unread count reported per conversation; counting
/// further would make a long-absent user's list slow to load.
const UNREAD_CAP: u64 = 9_999;

pub(super) fn list(d: &Dispatch, caller: &Caller, frame: ClientFrame, reply: Reply) {
    let ClientFrame::Conversations { limit, before, .. } = frame else {
        return drop(reply.send(Err(ChatError::Internal("not a list".into()))));
    };
    let store = d.store.clone();
    let user = caller.user.clone();
    tokio::spawn(async move {
        let limit = limit.unwrap_or(limits::DEFAULT_HISTORY_LIMIT) as usize;
        let r = list_conversations(store.as_ref(), &user, limit, before).await;
        let _ = reply.send(r.map(|conversations| OkReply {
            conversations: Some(conversations),
            ..OkReply::default()
        }));
    });
}

/// The user's conversations, newest activity first, each with its last
/// message, unread count, unread mentions and revision.
async fn list_conversations(
    store: &dyn MessageStore,
    user: &UserId,
    limit: usize,
    before: Option<MessageId>,
) -> Result<Vec<ConversationSummary>, ChatError> {
    let mut entries = Vec::new();
    for id in store.user_conversations(user).await? {
        let Some(conversation) = store.conversation(&id).await? else {
            continue;
        };
        let last_message = store.last_message(&id).await?;
        let activity = last_message
            .as_ref()
            .map(|m| m.id)
            .unwrap_or_else(|| MessageId::floor_at(conversation.created_at));
        if before.is_some_and(|b| activity >= b) {
            continue;
        }
        entries.push((activity, conversation, last_message));
    }
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    entries.truncate(limit);
    let mut out = Vec::with_capacity(entries.len());
    for (_, conversation, last_message) in entries {
        let marker = store
            .read_marker(&conversation.id, user)
            .await?
            .unwrap_or_default();
        let (unread, mentions) = match &last_message {
            Some(m) if m.id > marker => (
                store
                    .count_unread(&conversation.id, user, marker, UNREAD_CAP)
                    .await?,
                store
                    .count_unread_mentions(&conversation.id, user, marker, UNREAD_CAP)
                    .await?,
            ),
            _ => (0, 0),
        };
        out.push(ConversationSummary {
            conversation: chat_protocol::Conversation {
                rev: store.last_rev(&conversation.id).await?,
                ..conversation.for_clients()
            },
            last_message: last_message.map(|m| m.for_clients().into_owned()),
            unread,
            mentions,
        });
    }
    Ok(out)
}
