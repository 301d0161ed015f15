//! The embedded store against the conformance suite, plus what only it has:
//! durability across a reopen, group commit, closing.

use std::sync::Arc;

use chat_protocol::{
    ClientMsgId, Conversation, ConversationId, ConversationKind, Member, Message, MessageId,
    MessageKind, Role, UserId,
};
use chat_storage::embedded::{Durability, EmbeddedStore};
use chat_storage::{
    conformance, AccountStore, ConversationChange, ConversationStore, HistoryStore, PageQuery,
    RefreshRecord, Rotation, StoreError, UserRecord,
};

fn conversation(s: &str) -> ConversationId {
    ConversationId::new(s).expect("valid id")
}

fn user(s: &str) -> UserId {
    UserId::new(s).expect("valid id")
}

fn message(conv: &ConversationId, sender: &UserId, n: u64) -> Message {
    let id = MessageId(MessageId::floor_at(1_750_000_000_000).0 + n);
    Message {
        attachments: Vec::new(),
        rev: 0,
        edited_at: None,
        deleted: false,
        reactions: Vec::new(),
        mentions: Vec::new(),
        id,
        conversation: conv.clone(),
        sender: sender.clone(),
        body: format!("hello {n}"),
        kind: MessageKind::default(),
        ts: id.timestamp_ms(),
        client_msg_id: ClientMsgId::new(&format!("c{n}")).expect("valid id"),
        reply_to: None,
    }
}

fn all(limit: usize) -> PageQuery {
    PageQuery::new(None, None, limit)
}

/// A store in a temporary directory that lives as long as it.
struct Opened {
    store: EmbeddedStore,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Opened {
    type Target = EmbeddedStore;
    fn deref(&self) -> &EmbeddedStore {
        &self.store
    }
}

fn open_sync() -> Opened {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path(), Durability::Sync).expect("open");
    Opened { store, _dir: dir }
}

chat_storage::conformance_tests!(embedded, Some(open_sync()));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_buffered_twice_on_one_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path(), Durability::Buffered).expect("open");
    conformance::run_all(&store).await;
    // The suite must not trip over the data of its earlier run.
    conformance::run_all(&store).await;
    drop(store);
    let store = EmbeddedStore::open(dir.path(), Durability::Buffered).expect("reopen");
    conformance::run_all(&store).await;
}

/// Writes one of everything and checks it is all there.
async fn write_everything(store: &EmbeddedStore) -> Vec<Message> {
    let (c, alice, bob) = (conversation("durable"), user("alice"), user("bob"));
    let messages: Vec<Message> = (0..50)
        .map(|n| message(&c, if n % 2 == 0 { &alice } else { &bob }, n))
        .collect();
    for chunk in messages.chunks(7) {
        store.append(chunk).await.expect("append");
    }
    store
        .apply_conversation(&ConversationChange {
            conversation: Conversation {
                rev: 0,
                id: c.clone(),
                kind: ConversationKind::Group,
                title: Some("kept".into()),
                members: Vec::new(),
                member_count: None,
                created_at: 42,
            },
            upsert: vec![
                Member {
                    user: alice.clone(),
                    role: Role::Owner,
                },
                Member {
                    user: bob.clone(),
                    role: Role::Member,
                },
            ],
            remove: Vec::new(),
        })
        .await
        .expect("apply");
    store
        .set_read_marker(&c, &bob, messages[10].id)
        .await
        .expect("marker");
    store
        .create_user(&UserRecord {
            id: alice.clone(),
            password_hash: Some("phc".into()),
            display_name: None,
            created_at: 7,
        })
        .await
        .expect("user");
    store
        .put_refresh(&RefreshRecord {
            token_hash: "t1".into(),
            user: alice.clone(),
            family: "f".into(),
            expires_at: u64::MAX,
        })
        .await
        .expect("refresh");
    messages
}

/// `open`: whether the store still takes writes (a closed one does not).
async fn check_everything(store: &EmbeddedStore, messages: &[Message], open: bool) {
    let (c, alice, bob) = (conversation("durable"), user("alice"), user("bob"));
    let page = store.page(&c, all(100)).await.expect("page");
    assert_eq!(page.messages, messages);
    assert!(!page.more);
    assert_eq!(
        store
            .find_by_client_msg_id(&c, &bob, &messages[9].client_msg_id)
            .await
            .expect("find"),
        Some(messages[9].clone())
    );
    let record = store.conversation(&c).await.expect("read").expect("exists");
    assert_eq!(record.title.as_deref(), Some("kept"));
    assert_eq!(record.members.len(), 2);
    assert_eq!(
        store.user_conversations(&bob).await.expect("index"),
        vec![c.clone()]
    );
    assert_eq!(
        store.read_marker(&c, &bob).await.expect("marker"),
        Some(messages[10].id)
    );
    assert_eq!(
        store
            .user(&alice)
            .await
            .expect("user")
            .map(|u| u.created_at),
        Some(7)
    );
    let next = RefreshRecord {
        token_hash: "t2".into(),
        user: alice.clone(),
        family: "f".into(),
        expires_at: u64::MAX,
    };
    let rotation = store.rotate_refresh("t1", &next, 0).await;
    if open {
        assert_eq!(rotation.expect("rotate"), Rotation::Rotated { user: alice });
    } else {
        assert!(matches!(rotation, Err(StoreError::Unavailable(_))));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_survives_reopen() {
    for durability in [Durability::Sync, Durability::Buffered] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(dir.path(), durability).expect("open");
        let messages = write_everything(&store).await;
        drop(store);
        let store = EmbeddedStore::open(dir.path(), durability).expect("reopen");
        check_everything(&store, &messages, true).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_opens_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _store = EmbeddedStore::open(dir.path(), Durability::Sync).expect("open");
    assert!(matches!(
        EmbeddedStore::open(dir.path(), Durability::Sync),
        Err(StoreError::Unavailable(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_flushes_then_refuses_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path(), Durability::Buffered).expect("open");
    let messages = write_everything(&store).await;
    store.close().await;
    store.close().await; // Idempotent.
    let late = message(&conversation("durable"), &user("alice"), 1000);
    assert!(matches!(
        store.append(&[late]).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store
            .set_read_marker(&conversation("durable"), &user("alice"), MessageId(1))
            .await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store
            .create_user(&UserRecord {
                id: user("late"),
                password_hash: None,
                display_name: None,
                created_at: 1,
            })
            .await,
        Err(StoreError::Unavailable(_))
    ));
    // Reads keep working on a closed store.
    check_everything(&store, &messages, false).await;
    drop(store);
    let store = EmbeddedStore::open(dir.path(), Durability::Buffered).expect("reopen");
    let page = store
        .page(&conversation("durable"), all(100))
        .await
        .expect("page");
    assert_eq!(page.messages, messages, "the late append was not stored");
    assert_eq!(store.user(&user("late")).await.expect("user"), None);
    check_everything(&store, &messages, true).await;
}

/// 200 appends of one message each, all at once, with fsync per batch: the
/// writer must fold them into far fewer batches than appends. On one thread,
/// every task queues its append before the writer's first fsync returns, so
/// this is not a matter of luck.
#[tokio::test(flavor = "current_thread")]
async fn concurrent_appends_share_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(EmbeddedStore::open(dir.path(), Durability::Sync).expect("open"));
    let senders: Vec<UserId> = (0..10).map(|i| user(&format!("u{i}"))).collect();
    let before = store.batches_written();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..200u64 {
        let store = store.clone();
        // Twenty conversations, so batches mix conversations.
        let m = message(
            &conversation(&format!("c{}", n % 20)),
            &senders[(n % 10) as usize],
            n,
        );
        tasks.spawn(async move { store.append(&[m]).await });
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("task").expect("append");
    }
    let batches = store.batches_written() - before;
    assert!(
        (1..=20).contains(&batches),
        "200 concurrent appends took {batches} batches"
    );
    let mut stored = 0;
    for c in 0..20 {
        let page = store
            .page(&conversation(&format!("c{c}")), all(100))
            .await
            .expect("page");
        assert_eq!(page.messages.len(), 10);
        stored += page.messages.len();
    }
    assert_eq!(stored, 200);
}

#[test]
fn durability_config() {
    assert_eq!(Durability::default(), Durability::Sync);
    let encoded = rmp_serde::to_vec("buffered").expect("encode");
    let decoded: Durability = rmp_serde::from_slice(&encoded).expect("decode");
    assert_eq!(decoded, Durability::Buffered);
}
