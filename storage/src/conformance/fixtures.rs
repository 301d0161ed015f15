//! What every check builds its data with: ids no run has used, messages,
//! a history across buckets, a page read.

use std::sync::atomic::{AtomicU64, Ordering};

use chat_protocol::{
    Attachment, ClientMsgId, ConversationId, Message, MessageId, MessageKind, UserId,
};

use crate::{MessageStore, PageQuery, BUCKET_MS};

/// A string no other run of the suite (in this process or another, now or
/// before) has used: ids of earlier runs stay in a persistent database.
pub(super) fn unique(tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{tag}-{nanos:x}-{:x}-{n}", std::process::id())
}

pub(super) fn conversation_id(tag: &str) -> ConversationId {
    ConversationId::new(&unique(tag)).expect("valid conversation id")
}

pub(super) fn user_id(tag: &str) -> UserId {
    UserId::new(&unique(tag)).expect("valid user id")
}

pub(super) fn message(
    conversation: &ConversationId,
    sender: &UserId,
    id: MessageId,
    n: usize,
) -> Message {
    Message {
        id,
        conversation: conversation.clone(),
        sender: sender.clone(),
        body: format!("message {n} of {conversation}"),
        kind: MessageKind::default(),
        ts: id.timestamp_ms(),
        client_msg_id: ClientMsgId::new(&format!("cm-{n}")).expect("valid client msg id"),
        reply_to: (n % 7 == 3).then(|| MessageId(id.0 - 1)),
        rev: 0,
        edited_at: None,
        deleted: false,
        reactions: Vec::new(),
        mentions: Vec::new(),
        // Some carry files, so that every history check also checks that
        // attachments come back as stored.
        attachments: if n % 5 == 2 {
            vec![Attachment {
                id: format!("{:032x}", n),
                name: format!("photo {n}.png"),
                content_type: "image/png".into(),
                size: 1000 + n as u64,
                width: Some(640),
                height: Some(480),
                url: None,
                thumbnail_url: None,
            }]
        } else {
            Vec::new()
        },
    }
}

/// Unix ms of the start of some bucket: a fixed past time, so runs of the
/// suite put their messages in the same buckets (their conversations differ).
pub(super) fn bucket_start() -> u64 {
    let t = chat_protocol::ids::EPOCH_MS + 30 * BUCKET_MS;
    t - t % BUCKET_MS
}

/// `n` messages of `conversation`, half near the end of one bucket and half
/// eight days later (the next-but-one bucket), alternating `senders`.
pub(super) fn two_bucket_history(
    conversation: &ConversationId,
    senders: &[&UserId],
    n: usize,
) -> Vec<Message> {
    let first = MessageId::floor_at(bucket_start() + BUCKET_MS - 60_000);
    let second = MessageId::floor_at(bucket_start() + BUCKET_MS - 60_000 + 8 * 24 * 3600 * 1000);
    let half = n / 2;
    (0..n)
        .map(|i| {
            let id = if i < half {
                MessageId(first.0 + i as u64 * 3)
            } else {
                MessageId(second.0 + (i - half) as u64 * 3)
            };
            message(conversation, senders[i % senders.len()], id, i)
        })
        .collect()
}

pub(super) fn ids(messages: &[Message]) -> Vec<MessageId> {
    messages.iter().map(|m| m.id).collect()
}

pub(super) async fn page(
    store: &dyn MessageStore,
    conversation: &ConversationId,
    before: Option<MessageId>,
    after: Option<MessageId>,
    limit: usize,
) -> crate::Page {
    store
        .page(conversation, PageQuery::new(before, after, limit))
        .await
        .expect("page")
}
