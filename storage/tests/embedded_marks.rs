//! Notification marks on the embedded store: a busy conversation's marks
//! live in memory between passes, and the keyspace holds which
//! conversations are marked, so a restart keeps every mark and a mark
//! cleared stays cleared.

use chat_protocol::{ClientMsgId, ConversationId, Message, MessageId, MessageKind, UserId};
use chat_storage::embedded::{Durability, EmbeddedStore};
use chat_storage::outbox::{outbox_shard, Mark};
use chat_storage::{HistoryStore, OutboxStore};

fn message(conversation: &ConversationId, n: u64) -> Message {
    let id = MessageId(MessageId::floor_at(1_750_000_000_000).0 + n);
    Message {
        attachments: Vec::new(),
        rev: n,
        edited_at: None,
        deleted: false,
        reactions: Vec::new(),
        mentions: Vec::new(),
        id,
        conversation: conversation.clone(),
        sender: UserId::new("alice").expect("valid id"),
        body: format!("hello {n}"),
        kind: MessageKind::default(),
        ts: id.timestamp_ms(),
        client_msg_id: ClientMsgId::new(&format!("c{n}")).expect("valid id"),
        reply_to: None,
    }
}

async fn mark_of(store: &EmbeddedStore, conversation: &ConversationId) -> Option<Mark> {
    store
        .marks(outbox_shard(conversation.as_str()), 1_000)
        .await
        .expect("marks")
        .into_iter()
        .find(|m| &m.conversation == conversation)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mark_kept_in_memory_between_writes_survives_a_restart_and_its_clear_does_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let busy = ConversationId::new("busy").expect("valid id");
    let quiet = ConversationId::new("quiet").expect("valid id");
    let shard = outbox_shard(busy.as_str());

    let store = EmbeddedStore::open(dir.path(), Durability::Sync).expect("open");
    // One write per batch: the mark is set by the first and moved by the rest.
    for n in 1..=20 {
        store
            .append_new(&[message(&busy, n)])
            .await
            .expect("append");
    }
    store
        .append_new(&[message(&quiet, 100)])
        .await
        .expect("append");
    let latest = mark_of(&store, &busy).await.expect("marked");
    assert_eq!(latest.token, 20, "the token is the latest write's");
    // A pass that read the mark before the last write must not clear it.
    let stale = Mark {
        conversation: busy.clone(),
        token: 19,
    };
    store.clear_mark(shard, &stale).await.expect("stale clear");
    assert_eq!(mark_of(&store, &busy).await, Some(latest.clone()));
    let quiet_mark = mark_of(&store, &quiet).await.expect("marked");
    store
        .clear_mark(outbox_shard(quiet.as_str()), &quiet_mark)
        .await
        .expect("clear");
    store.close().await;
    drop(store);

    // After a restart the busy conversation is still marked (its writes are
    // not yet notified) and the quiet one is not.
    let store = EmbeddedStore::open(dir.path(), Durability::Sync).expect("reopen");
    let held = mark_of(&store, &busy)
        .await
        .expect("a mark survives a restart");
    assert_eq!(
        mark_of(&store, &quiet).await,
        None,
        "a clear survives a restart"
    );
    store.clear_mark(shard, &held).await.expect("clear");
    assert_eq!(mark_of(&store, &busy).await, None);
    // Marked again by a write after the restart, and cleared again.
    store
        .append_new(&[message(&busy, 21)])
        .await
        .expect("append");
    let again = mark_of(&store, &busy).await.expect("marked again");
    assert_eq!(again.token, 21);
    store.clear_mark(shard, &again).await.expect("clear");
    store.close().await;
    drop(store);

    let store = EmbeddedStore::open(dir.path(), Durability::Sync).expect("reopen");
    assert_eq!(mark_of(&store, &busy).await, None, "cleared for good");
    assert_eq!(mark_of(&store, &quiet).await, None);
}
