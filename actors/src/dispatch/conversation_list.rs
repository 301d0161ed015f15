//! `conversations`: the caller's list, newest activity first. Read from the
//! store directly: everything it shows is durable, so it needs no actor.

use chat_protocol::message::json_string_len;
use chat_protocol::{
    limits, ClientFrame, ConversationSummary, Message, MessageId, OkReply, UserId,
};
use chat_storage::MessageStore;

use super::{Caller, Dispatch};
use crate::error::ChatError;
use crate::media::{shown, MediaLinks};
use crate::msg::Reply;

/// Upper bound on the unread count reported per conversation; counting
/// further would make a long-absent user's list slow to load.
const UNREAD_CAP: u64 = 9_999;

pub(super) fn list(d: &Dispatch, caller: &Caller, frame: ClientFrame, reply: Reply) {
    let ClientFrame::Conversations { limit, before, .. } = frame else {
        return drop(reply.send(Err(ChatError::Internal("not a list".into()))));
    };
    let store = d.store.clone();
    let media = d.media.clone();
    let user = caller.user.clone();
    tokio::spawn(async move {
        let limit = limit.unwrap_or(limits::DEFAULT_HISTORY_LIMIT) as usize;
        let r = list_conversations(store.as_ref(), &*media, &user, limit, before).await;
        let _ = reply.send(r.map(|(conversations, more)| OkReply {
            conversations: Some(conversations),
            more: Some(more),
            ..OkReply::default()
        }));
    });
}

/// The user's conversations, newest activity first, each with its last
/// message, unread count, unread mentions and revision; and whether more
/// lie beyond. The list stops at [`limits::MAX_PAGE_BYTES`] as a client
/// receives it (a conversation's inline members and last message can weigh
/// a hundred kilobytes), the first always.
async fn list_conversations(
    store: &dyn MessageStore,
    media: &dyn MediaLinks,
    user: &UserId,
    limit: usize,
    before: Option<MessageId>,
) -> Result<(Vec<ConversationSummary>, bool), ChatError> {
    let limit = limit.max(1);
    // Only the newest `limit` are kept while scanning (cut back each time
    // twice that gather), so a user in thousands of conversations does not
    // hold every last message at once.
    let mut entries = Vec::new();
    let mut more = false;
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
        if entries.len() >= 2 * limit {
            entries.sort_by_key(|e| std::cmp::Reverse(e.0));
            entries.truncate(limit);
            more = true;
        }
    }
    entries.sort_by_key(|e| std::cmp::Reverse(e.0));
    more |= entries.len() > limit;
    entries.truncate(limit);
    // The member's own settings, read once for the whole list.
    let notifies: std::collections::HashMap<_, _> = store
        .conversation_notifies(user)
        .await?
        .into_iter()
        .collect();
    let mut out = Vec::with_capacity(entries.len());
    let mut weight = 0usize;
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
        let summary = ConversationSummary {
            conversation: chat_protocol::Conversation {
                rev: store.last_rev(&conversation.id).await?,
                ..conversation.for_clients()
            },
            last_message: last_message.map(|m| shown(media, &m)),
            unread,
            mentions,
            notify: Some(
                notifies
                    .get(&conversation.id)
                    .copied()
                    .unwrap_or_else(|| conversation.kind.default_notify()),
            ),
        };
        weight = weight.saturating_add(summary_weight(&summary));
        if weight > limits::MAX_PAGE_BYTES && !out.is_empty() {
            return Ok((out, true));
        }
        out.push(summary);
    }
    Ok((out, more))
}

/// An upper bound of a summary's size as a client receives it.
fn summary_weight(s: &ConversationSummary) -> usize {
    // Field names, numbers, kind, and each member's role and punctuation.
    const FIXED: usize = 256;
    const PER_MEMBER: usize = 40;
    let c = &s.conversation;
    FIXED
        + c.id.as_str().len()
        + c.title.as_deref().map_or(0, json_string_len)
        + (c.members.iter())
            .map(|m| m.user.as_str().len() + PER_MEMBER)
            .sum::<usize>()
        + s.last_message
            .as_ref()
            .map_or(0, Message::encoded_len_bound)
}
