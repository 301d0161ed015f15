//! The contract of [`MessageStore`] as executable checks, shared by every
//! backend's tests: a backend is correct when [`run_all`] returns without
//! panicking.
//!
//! Every check makes up fresh conversation, user and token ids, so the suite
//! can run again and again against a database that keeps its data (a ScyllaDB
//! cluster of a test environment), and several checks may run at once.
//!
//! One file per domain holds that domain's checks (`history.rs`,
//! `conversations.rs`, `accounts.rs`, `moderation.rs`; `isolation.rs` for
//! what spans them); this file runs them all and names them for each
//! backend's tests ([`conformance_tests!`](crate::conformance_tests)). A new
//! check goes in its domain's file, in [`run_all`] and in that macro's list.

use std::sync::atomic::{AtomicU64, Ordering};

use chat_protocol::{ClientMsgId, ConversationId, Message, MessageId, MessageKind, UserId};

use crate::{MessageStore, PageQuery, BUCKET_MS};

mod accounts;
mod conversations;
mod history;
mod isolation;
mod moderation;

pub use accounts::{
    check_login_state, check_refresh_revocation, check_refresh_rotation, check_users,
};
pub use conversations::{check_conversations, check_read_markers};
pub use history::{
    check_a_retried_append_new_is_its_own, check_append_new, check_changes_across_rev_blocks,
    check_changes_byte_cap, check_count_unread, check_history_paging,
    check_last_message_and_client_msg_ids, check_message_updates, check_page_bounds,
    check_page_byte_cap,
};
pub use isolation::check_prefix_isolation;
pub use moderation::check_user_flags_and_audit;

/// Runs every check of this module.
pub async fn run_all(store: &dyn MessageStore) {
    check_history_paging(store).await;
    check_page_bounds(store).await;
    check_page_byte_cap(store).await;
    check_changes_byte_cap(store).await;
    check_a_retried_append_new_is_its_own(store).await;
    check_last_message_and_client_msg_ids(store).await;
    check_append_new(store).await;
    check_prefix_isolation(store).await;
    check_count_unread(store).await;
    check_conversations(store).await;
    check_read_markers(store).await;
    check_users(store).await;
    check_refresh_rotation(store).await;
    check_refresh_revocation(store).await;
    check_login_state(store).await;
    check_message_updates(store).await;
    check_changes_across_rev_blocks(store).await;
    check_user_flags_and_audit(store).await;
}

/// A string no other run of the suite (in this process or another, now or
/// before) has used: ids of earlier runs stay in a persistent database.
fn unique(tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{tag}-{nanos:x}-{:x}-{n}", std::process::id())
}

fn conversation_id(tag: &str) -> ConversationId {
    ConversationId::new(&unique(tag)).expect("valid conversation id")
}

fn user_id(tag: &str) -> UserId {
    UserId::new(&unique(tag)).expect("valid user id")
}

fn message(conversation: &ConversationId, sender: &UserId, id: MessageId, n: usize) -> Message {
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
    }
}

/// Unix ms of the start of some bucket: a fixed past time, so runs of the
/// suite put their messages in the same buckets (their conversations differ).
fn bucket_start() -> u64 {
    let t = chat_protocol::ids::EPOCH_MS + 30 * BUCKET_MS;
    t - t % BUCKET_MS
}

/// `n` messages of `conversation`, half near the end of one bucket and half
/// eight days later (the next-but-one bucket), alternating `senders`.
fn two_bucket_history(
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

fn ids(messages: &[Message]) -> Vec<MessageId> {
    messages.iter().map(|m| m.id).collect()
}

async fn page(
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

/// One test per check of this suite, in a module named after the backend,
/// so that each backend's run lists every check under its own name
/// (`scylla::check_history_paging`). `$open` is an expression, evaluated
/// in each test, giving something that dereferences to the store, or
/// `None` to skip (a backend whose server is not configured: the backend's
/// test file decides whether that is allowed).
#[macro_export]
macro_rules! conformance_tests {
    ($backend:ident, $open:expr) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;
            $crate::conformance_tests!(@each $open;
                check_history_paging, check_page_bounds, check_page_byte_cap, check_changes_byte_cap, check_a_retried_append_new_is_its_own,
                check_last_message_and_client_msg_ids, check_append_new,
                check_prefix_isolation, check_count_unread, check_conversations,
                check_read_markers, check_users, check_refresh_rotation,
                check_refresh_revocation, check_login_state, check_message_updates,
                check_changes_across_rev_blocks, check_user_flags_and_audit);
        }
    };
    (@each $open:expr; $($check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some(store) = $open else { return };
                $crate::conformance::$check(&*store).await;
            }
        )*
    };
}
