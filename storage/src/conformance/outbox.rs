//! The contract of [`OutboxStore`](crate::OutboxStore): every write of a
//! message marks its conversation; a mark set again after it was read
//! survives clearing; cursors never move back; jobs come due in order and
//! go when deleted; dead letters are listed and taken once; digests hold
//! what was added until removed.
//!
//! The suite's database is shared with other runs: every read of a shard
//! is filtered to this check's own ids.

use chat_protocol::{MessageId, UserId};

use super::fixtures::{conversation_id, message, unique, user_id};
use crate::outbox::{outbox_shard, DeadJob, DigestItem, Job, Mark, NotifyCursor};
use crate::MessageStore;

async fn mark_of(store: &dyn MessageStore, conversation: &str) -> Option<Mark> {
    let shard = outbox_shard(conversation);
    store
        .marks(shard, 100_000)
        .await
        .expect("marks")
        .into_iter()
        .find(|m| m.conversation.as_str() == conversation)
}

/// Appends and updates mark; clearing with the token read clears, unless a
/// write came in between.
pub async fn check_notify_marks(store: &dyn MessageStore) {
    let conversation = conversation_id("marked");
    let sender = user_id("marker");
    let shard = outbox_shard(conversation.as_str());
    assert_eq!(mark_of(store, conversation.as_str()).await, None);

    let mut m = message(
        &conversation,
        &sender,
        MessageId::floor_at(2_000_000_000_000),
        1,
    );
    m.rev = 1;
    store.append_new(&[m.clone()]).await.expect("append");
    let first = mark_of(store, conversation.as_str())
        .await
        .expect("an append marks its conversation");
    store.clear_mark(shard, &first).await.expect("clear");
    assert_eq!(mark_of(store, conversation.as_str()).await, None);

    // An edit marks too.
    m.body = "edited".into();
    m.rev = 2;
    store.update_message(&m).await.expect("update");
    let second = mark_of(store, conversation.as_str())
        .await
        .expect("an update marks its conversation");
    // A write after the mark was read: clearing with the old token leaves
    // the new mark.
    let mut n = message(
        &conversation,
        &sender,
        MessageId::floor_at(2_000_000_000_001),
        2,
    );
    n.rev = 3;
    store.append_new(&[n]).await.expect("append");
    store.clear_mark(shard, &second).await.expect("stale clear");
    let third = mark_of(store, conversation.as_str())
        .await
        .expect("a mark set again survives a stale clear");
    store.clear_mark(shard, &third).await.expect("clear");
    assert_eq!(mark_of(store, conversation.as_str()).await, None);

    // Cursors: zero, then moved, never back.
    assert_eq!(
        store.notify_cursor(&conversation).await.expect("cursor"),
        NotifyCursor::default()
    );
    let ahead = NotifyCursor {
        rev: 3,
        last_id: MessageId(77),
    };
    store
        .set_notify_cursor(&conversation, ahead)
        .await
        .expect("move");
    store
        .set_notify_cursor(
            &conversation,
            NotifyCursor {
                rev: 2,
                last_id: MessageId(5),
            },
        )
        .await
        .expect("move back");
    assert_eq!(
        store.notify_cursor(&conversation).await.expect("cursor"),
        ahead
    );
}

/// Jobs: due in order of due time, the not-yet-due left out, counted,
/// gone when deleted; dead letters newest first and taken once.
pub async fn check_jobs(store: &dyn MessageStore) {
    let key = unique("job-owner");
    let job = |due: u64| Job::new(&key, due, rand_id(), vec![due as u8; 3]);
    let (late, early, future) = (job(2_000), job(1_000), job(u64::MAX / 2));
    let shard = late.shard;
    let before = store.count_jobs(shard).await.expect("count");
    store
        .put_jobs(&[late.clone(), early.clone(), future.clone()])
        .await
        .expect("put");
    assert_eq!(store.count_jobs(shard).await.expect("count"), before + 3);
    let mine = |jobs: Vec<Job>| -> Vec<Job> { jobs.into_iter().filter(|j| j.key == key).collect() };
    let due = mine(store.due_jobs(shard, 5_000, 100_000).await.expect("due"));
    assert_eq!(due, vec![early.clone(), late.clone()]);
    store.delete_job(&early).await.expect("delete");
    let due = mine(store.due_jobs(shard, 5_000, 100_000).await.expect("due"));
    assert_eq!(due, vec![late.clone()]);
    // A retry: the same id at a later due time, the old entry gone.
    let mut retry = late.clone();
    retry.due_ms = 3_000;
    retry.attempts = 1;
    store.put_jobs(&[retry.clone()]).await.expect("retry");
    store.delete_job(&late).await.expect("delete old");
    let due = mine(store.due_jobs(shard, 5_000, 100_000).await.expect("due"));
    assert_eq!(due, vec![retry.clone()]);
    // Several at once (a worker's pass), one of them in another shard.
    let other = (0..)
        .map(|i| Job::new(&format!("{key}-{i}"), 1_000, rand_id(), Vec::new()))
        .find(|j| j.shard != shard)
        .expect("a key in another shard");
    let other_before = store.count_jobs(other.shard).await.expect("count");
    store
        .put_jobs(std::slice::from_ref(&other))
        .await
        .expect("put");
    store
        .delete_jobs(&[retry, future, other.clone()])
        .await
        .expect("delete several");
    assert_eq!(store.count_jobs(shard).await.expect("count"), before);
    assert_eq!(
        store.count_jobs(other.shard).await.expect("count"),
        other_before
    );

    let dead = |job: Job, at: u64| DeadJob {
        job,
        failed_at: at,
        error: "HTTP 500".into(),
    };
    let now = chat_protocol::now_ms();
    let (older, newer) = (dead(early, now), dead(late, now + 1));
    store.put_dead_job(&older).await.expect("dead");
    store.put_dead_job(&newer).await.expect("dead");
    let listed: Vec<DeadJob> = store
        .dead_jobs(100_000)
        .await
        .expect("list")
        .into_iter()
        .filter(|d| d.job.key == key)
        .collect();
    assert_eq!(listed, vec![newer.clone(), older.clone()]);
    assert_eq!(
        store.take_dead_job(older.job.id).await.expect("take"),
        Some(older.clone())
    );
    assert_eq!(
        store.take_dead_job(older.job.id).await.expect("take again"),
        None
    );
    assert_eq!(
        store.take_dead_job(newer.job.id).await.expect("take"),
        Some(newer)
    );
}

/// Digests: items listed oldest first, per user, until removed.
pub async fn check_digest_items(store: &dyn MessageStore) {
    let user: UserId = user_id("digest");
    let (a, b) = (conversation_id("digest-a"), conversation_id("digest-b"));
    let item = |c: &chat_protocol::ConversationId, id: u64| DigestItem {
        conversation: c.clone(),
        message: MessageId(id),
    };
    assert!(store.digest_items(&user).await.expect("list").is_empty());
    store
        .add_digest_items(&user, &[item(&b, 30), item(&a, 10)])
        .await
        .expect("add");
    store
        .add_digest_items(&user, &[item(&a, 20), item(&a, 10)])
        .await
        .expect("add again");
    assert_eq!(
        store.digest_items(&user).await.expect("list"),
        vec![item(&a, 10), item(&a, 20), item(&b, 30)]
    );
    let other = user_id("digest-other");
    assert!(store.digest_items(&other).await.expect("list").is_empty());
    store
        .remove_digest_items(&user, &[item(&a, 10), item(&b, 30)])
        .await
        .expect("remove");
    assert_eq!(
        store.digest_items(&user).await.expect("list"),
        vec![item(&a, 20)]
    );
    store
        .remove_digest_items(&user, &[item(&a, 20)])
        .await
        .expect("remove");
    assert!(store.digest_items(&user).await.expect("list").is_empty());
}

fn rand_id() -> u64 {
    // Unique enough across runs: the nanosecond clock and a counter.
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (N.fetch_add(1, Ordering::Relaxed) << 48) ^ u64::from(std::process::id())
}
