//! The contract of [`HistoryStore`](crate::HistoryStore): paging, byte
//! caps, `client_msg_id`s and retried sends, unread counts, and the message
//! lifecycle (updates, the revision index, `changes`).

use chat_protocol::{ClientMsgId, ConversationId, Message, MessageId, UserId};

use super::fixtures::{
    bucket_start, conversation_id, ids, message, page, two_bucket_history, user_id,
};
use crate::{bucket_of, MessageStore, PageQuery};

/// Stores a few hundred messages across two buckets and walks them newest
/// first (`before`) and oldest first (`after`): each walk must yield exactly
/// the stored messages, in order, without a gap or a repeat.
pub async fn check_history_paging(store: &dyn MessageStore) {
    let conversation = conversation_id("page");
    let (alice, bob) = (user_id("alice"), user_id("bob"));
    let stored = two_bucket_history(&conversation, &[&alice, &bob], 300);
    assert!(
        bucket_of(stored[0].id) < bucket_of(stored[299].id),
        "the history must span buckets"
    );
    // Out of order and in several calls: order comes from the ids alone.
    for chunk in [
        &stored[200..],
        &stored[..50],
        &stored[100..200],
        &stored[50..100],
    ] {
        store.append(chunk).await.expect("append");
    }

    for limit in [1, 37, 150, 299, 300, 1000] {
        let walked = walk(store, &conversation, Walk::Back, limit).await;
        assert_eq!(walked, stored, "walking back with limit {limit}");
        let walked = walk(store, &conversation, Walk::Forward, limit).await;
        assert_eq!(walked, stored, "walking forward with limit {limit}");
    }
}

/// Which way [`walk`] pages.
#[derive(Clone, Copy)]
enum Walk {
    /// Newest first, with `before`.
    Back,
    /// Oldest first, with `after`.
    Forward,
}

/// Pages through a whole conversation `limit` at a time, checking each page
/// (within its limit, ascending, short only when last); returns every
/// message met, oldest first.
async fn walk(
    store: &dyn MessageStore,
    conversation: &ConversationId,
    way: Walk,
    limit: usize,
) -> Vec<Message> {
    let mut walked: Vec<Message> = Vec::new();
    let mut bound = match way {
        Walk::Back => None,
        Walk::Forward => Some(MessageId(0)),
    };
    loop {
        let (before, after) = match way {
            Walk::Back => (bound, None),
            Walk::Forward => (None, bound),
        };
        let p = page(store, conversation, before, after, limit).await;
        assert!(p.messages.len() <= limit, "page over its limit");
        assert!(
            p.messages.windows(2).all(|w| w[0].id < w[1].id),
            "page not ascending"
        );
        if p.more {
            assert_eq!(p.messages.len(), limit, "a short page must be the last");
        }
        let edge = match way {
            Walk::Back => p.messages.first(),
            Walk::Forward => p.messages.last(),
        };
        let Some(edge) = edge.map(|m| m.id) else {
            assert!(!p.more, "an empty page cannot have more");
            break;
        };
        bound = Some(edge);
        match way {
            Walk::Back => {
                let mut older = p.messages;
                older.append(&mut walked);
                walked = older;
            }
            Walk::Forward => walked.extend(p.messages),
        }
        if !p.more {
            break;
        }
    }
    walked
}

/// `before` and `after` together, bounds that are not stored ids, bounds at
/// the edges and between buckets, and `more` when a page exactly fits.
pub async fn check_page_bounds(store: &dyn MessageStore) {
    let conversation = conversation_id("bounds");
    let alice = user_id("alice");
    let stored = two_bucket_history(&conversation, &[&alice], 300);
    let all = ids(&stored);
    store.append(&stored).await.expect("append");

    let p = page(store, &conversation, None, None, 10).await;
    assert_eq!(ids(&p.messages), all[290..], "newest page");
    assert!(p.more);
    let p = page(store, &conversation, None, None, 300).await;
    assert_eq!(ids(&p.messages), all, "a page that holds everything");
    assert!(!p.more, "nothing beyond a page that holds everything");

    // Both bounds: the newest messages strictly between them.
    let (after, before) = (Some(all[100]), Some(all[200]));
    let p = page(store, &conversation, before, after, 30).await;
    assert_eq!(ids(&p.messages), all[170..200], "newest 30 of (100, 200)");
    assert!(p.more);
    let p = page(store, &conversation, before, after, 99).await;
    assert_eq!(ids(&p.messages), all[101..200], "exactly the 99 in range");
    assert!(!p.more, "the range holds exactly the page");
    let p = page(store, &conversation, before, after, 98).await;
    assert_eq!(ids(&p.messages), all[102..200]);
    assert!(p.more, "one message in range is left out");
    let p = page(store, &conversation, before, after, 500).await;
    assert_eq!(ids(&p.messages), all[101..200]);
    assert!(!p.more);
    let p = page(store, &conversation, Some(all[101]), Some(all[100]), 10).await;
    assert!(
        p.messages.is_empty() && !p.more,
        "nothing strictly between neighbours"
    );
    let p = page(store, &conversation, Some(all[100]), Some(all[200]), 10).await;
    assert!(
        p.messages.is_empty() && !p.more,
        "after above before is an empty range"
    );

    // Across the bucket boundary, with bounds that are not stored ids.
    let gap_after = MessageId(all[149].0 + 1);
    let p = page(store, &conversation, None, Some(gap_after), 5).await;
    assert_eq!(ids(&p.messages), all[150..155], "first of the later bucket");
    assert!(p.more);
    let p = page(store, &conversation, Some(all[152]), None, 5).await;
    assert_eq!(
        ids(&p.messages),
        all[147..152],
        "a page spanning both buckets"
    );
    assert!(p.more);
    let p = page(store, &conversation, Some(all[152]), Some(all[148]), 5).await;
    assert_eq!(ids(&p.messages), all[149..152]);
    assert!(!p.more);

    // Edges.
    let p = page(store, &conversation, None, Some(all[299]), 10).await;
    assert!(p.messages.is_empty() && !p.more, "nothing after the newest");
    let p = page(store, &conversation, Some(all[0]), None, 10).await;
    assert!(
        p.messages.is_empty() && !p.more,
        "nothing before the oldest"
    );
    let p = page(store, &conversation, None, Some(all[297]), 2).await;
    assert_eq!(ids(&p.messages), all[298..], "the last two exactly");
    assert!(!p.more);
    let p = page(store, &conversation, Some(all[2]), None, 2).await;
    assert_eq!(ids(&p.messages), all[..2], "the first two exactly");
    assert!(!p.more);
    let p = page(store, &conversation, Some(MessageId(u64::MAX)), None, 1).await;
    assert_eq!(ids(&p.messages), all[299..]);
    assert!(p.more);

    let empty = conversation_id("empty");
    let p = page(store, &empty, None, None, 10).await;
    assert!(
        p.messages.is_empty() && !p.more,
        "a conversation without history"
    );
    let p = page(store, &empty, None, Some(MessageId(0)), 10).await;
    assert!(p.messages.is_empty() && !p.more);
}

/// A page stops once its messages pass `max_bytes` (as stored), in both
/// directions, keeping the messages nearest the cursor and saying `more`;
/// the first message comes even when it alone is larger.
pub async fn check_page_byte_cap(store: &dyn MessageStore) {
    let conversation = conversation_id("bytecap");
    let alice = user_id("alice");
    let mut stored = two_bucket_history(&conversation, &[&alice], 40);
    for m in &mut stored {
        m.body = "x".repeat(1000);
    }
    let all = ids(&stored);
    store.append(&stored).await.expect("append");
    let capped = |before, after, max_bytes| PageQuery {
        max_bytes,
        ..PageQuery::new(before, after, 40)
    };
    // About five messages' worth.
    let newest = store
        .page(&conversation, capped(None, None, 5_500))
        .await
        .expect("page");
    let n = newest.messages.len();
    assert!((3..=6).contains(&n), "{n} messages of ~1 KB under 5.5 KB");
    assert_eq!(
        ids(&newest.messages),
        all[40 - n..],
        "the newest, ascending"
    );
    assert!(newest.more);
    let oldest = store
        .page(&conversation, capped(None, Some(all[0]), 5_500))
        .await
        .expect("page");
    assert_eq!(
        ids(&oldest.messages),
        all[1..=oldest.messages.len()],
        "right after the cursor"
    );
    assert!(oldest.more);
    let one = store
        .page(&conversation, capped(None, None, 1))
        .await
        .expect("page");
    assert_eq!(
        ids(&one.messages),
        all[39..],
        "one message even over the cap"
    );
    assert!(one.more);
}

/// The newest message, and the lookup of a message by its sender's
/// idempotency key.
pub async fn check_last_message_and_client_msg_ids(store: &dyn MessageStore) {
    let conversation = conversation_id("last");
    let other = conversation_id("last-other");
    let (alice, bob) = (user_id("alice"), user_id("bob"));
    assert_eq!(
        store.last_message(&conversation).await.expect("last"),
        None,
        "no history, no last message"
    );
    let stored = two_bucket_history(&conversation, &[&alice, &bob], 40);
    store.append(&stored[..30]).await.expect("append");
    assert_eq!(
        store.last_message(&conversation).await.expect("last"),
        Some(stored[29].clone())
    );
    store.append(&stored[30..]).await.expect("append");
    assert_eq!(
        store.last_message(&conversation).await.expect("last"),
        Some(stored[39].clone()),
        "the newest after a second append"
    );

    for m in [&stored[0], &stored[25], &stored[39]] {
        let found = store
            .find_by_client_msg_id(&conversation, &m.sender, &m.client_msg_id)
            .await
            .expect("find");
        assert_eq!(found.as_ref(), Some(m), "by client_msg_id");
    }
    // stored[0] is alice's: bob never used that key.
    let m = &stored[0];
    let absent = [
        (&conversation, &bob, m.client_msg_id.clone()),
        (&other, &alice, m.client_msg_id.clone()),
        (
            &conversation,
            &alice,
            ClientMsgId::new("never-used").expect("valid"),
        ),
    ];
    for (c, sender, key) in absent {
        let found = store
            .find_by_client_msg_id(c, sender, &key)
            .await
            .expect("find");
        assert_eq!(found, None, "{sender} has no {key} in {c}");
    }
}

/// `append_new` stores a message only if its sender has not used its
/// `client_msg_id` in the conversation, and otherwise returns the first.
pub async fn check_append_new(store: &dyn MessageStore) {
    let conversation = conversation_id("append-new");
    let (alice, bob) = (user_id("alice"), user_id("bob"));
    let all = two_bucket_history(&conversation, &[&alice], 6);
    let first = &all[..3];
    let held = store.append_new(first).await.expect("append_new");
    assert_eq!(held, vec![None, None, None], "all new");

    // A retry of first[1] under a new id, bob using alice's key, and a new one.
    let mut retry = all[3].clone();
    retry.client_msg_id = first[1].client_msg_id.clone();
    let mut bobs = all[4].clone();
    bobs.sender = bob.clone();
    bobs.client_msg_id = first[0].client_msg_id.clone();
    let held = store
        .append_new(&[retry.clone(), bobs.clone(), all[5].clone()])
        .await
        .expect("append_new");
    assert_eq!(held, vec![Some(first[1].clone()), None, None]);

    let history = page(store, &conversation, None, None, 50).await;
    let expected = vec![
        first[0].clone(),
        first[1].clone(),
        first[2].clone(),
        bobs.clone(),
        all[5].clone(),
    ];
    assert_eq!(history.messages, expected, "the retry was not stored");
    let found = store
        .find_by_client_msg_id(&conversation, &alice, &first[1].client_msg_id)
        .await
        .expect("find");
    assert_eq!(
        found.as_ref(),
        Some(&first[1]),
        "the index still names the first"
    );
    assert_eq!(store.append_new(&[]).await.expect("empty"), vec![]);
}

/// Unread counts leave out the reader's own messages and stop at the cap.
pub async fn check_count_unread(store: &dyn MessageStore) {
    let conversation = conversation_id("unread");
    let (alice, bob, carol) = (user_id("alice"), user_id("bob"), user_id("carol"));
    // Even positions are alice's, odd ones bob's; across two buckets.
    let stored = two_bucket_history(&conversation, &[&alice, &bob], 20);
    store.append(&stored).await.expect("append");
    let count = |reader: &UserId, after: MessageId, cap: u64| {
        let (reader, conversation) = (reader.clone(), conversation.clone());
        async move {
            store
                .count_unread(&conversation, &reader, after, cap)
                .await
                .expect("count")
        }
    };
    assert_eq!(count(&alice, MessageId(0), 100).await, 10, "bob's ten");
    assert_eq!(count(&bob, MessageId(0), 100).await, 10, "alice's ten");
    assert_eq!(count(&carol, MessageId(0), 100).await, 20, "everything");
    assert_eq!(
        count(&alice, stored[4].id, 100).await,
        8,
        "bob's after position 4, across buckets"
    );
    assert_eq!(
        count(&alice, stored[11].id, 100).await,
        4,
        "bob's after position 11"
    );
    assert_eq!(
        count(&alice, stored[19].id, 100).await,
        0,
        "nothing after the newest"
    );
    assert_eq!(
        count(&carol, MessageId(0), 20).await,
        20,
        "cap exactly reached"
    );
    assert_eq!(count(&carol, MessageId(0), 3).await, 3, "stops at the cap");
    assert_eq!(count(&alice, MessageId(0), 4).await, 4, "stops at the cap");
    assert_eq!(count(&carol, MessageId(0), 0).await, 0, "cap 0");
    let nobody = conversation_id("unread-empty");
    assert_eq!(
        store
            .count_unread(&nobody, &alice, MessageId(0), 10)
            .await
            .expect("count"),
        0
    );
}

/// `n` messages at revisions `first_rev`, `first_rev + 1`, ...
fn revised(
    conversation: &ConversationId,
    sender: &UserId,
    first_rev: u64,
    n: usize,
) -> Vec<Message> {
    let start = MessageId::floor_at(bucket_start() + 3_600_000);
    (0..n)
        .map(|i| Message {
            rev: first_rev + i as u64,
            ..message(conversation, sender, MessageId(start.0 + i as u64 * 5), i)
        })
        .collect()
}

/// The changes up to the conversation's last revision (what its writer
/// bounds them by once every write has finished).
async fn changes(
    store: &dyn MessageStore,
    conversation: &ConversationId,
    after_rev: u64,
    limit: usize,
) -> crate::Changes {
    let rev = store.last_rev(conversation).await.expect("last_rev");
    store
        .changes(conversation, after_rev, rev, limit, usize::MAX)
        .await
        .expect("changes")
}

/// Every change, read a page of `limit` at a time from `after_rev` on as a
/// client does: on from the last `rev` of a page while `more`.
async fn all_changes(
    store: &dyn MessageStore,
    conversation: &ConversationId,
    after_rev: u64,
    limit: usize,
) -> Vec<Message> {
    let rev = store.last_rev(conversation).await.expect("last_rev");
    let mut out: Vec<Message> = Vec::new();
    let mut after = after_rev;
    for _ in 0..10_000 {
        let page = changes(store, conversation, after, limit).await;
        assert!(page.messages.len() <= limit);
        assert!(page.messages.iter().all(|m| m.rev > after && m.rev <= rev));
        out.extend(page.messages.iter().cloned());
        if !page.more {
            return out;
        }
        after = page
            .messages
            .last()
            .expect("a page with more is not empty")
            .rev;
    }
    panic!("changes did not end");
}

/// A write of new messages retried after it went through (a timeout whose
/// request had landed) finds them stored under their own ids: they are new
/// to the writer, not retries of earlier sends, or a conversation would
/// acknowledge them and never deliver them. A different message under the
/// same key is still held.
pub async fn check_a_retried_append_new_is_its_own(store: &dyn MessageStore) {
    let c = conversation_id("retried-append");
    let a = user_id("author");
    let sent = revised(&c, &a, 1, 3);
    let first = store.append_new(&sent).await.expect("append_new");
    assert_eq!(first, vec![None, None, None]);
    let again = store.append_new(&sent).await.expect("append_new again");
    assert_eq!(again, vec![None, None, None], "its own write, not a retry");
    let mut other = sent[1].clone();
    other.id = MessageId(sent[2].id.0 + 100);
    let held = store.append_new(&[other]).await.expect("append_new");
    assert_eq!(held, vec![Some(sent[1].clone())], "another send of the key");
    let page = store
        .page(&c, PageQuery::new(None, None, 10))
        .await
        .expect("page");
    assert_eq!(page.messages, sent, "each stored once");
}

/// A page of changes stops once its messages weigh `max_bytes` as a client
/// receives them (a body of control characters weighs six times its
/// length in JSON), saying `more`; read on from its last `rev`, every
/// change comes once; the first change comes even when it alone is larger.
pub async fn check_changes_byte_cap(store: &dyn MessageStore) {
    let c = conversation_id("changes-bytecap");
    let a = user_id("author");
    let mut sent = revised(&c, &a, 1, 40);
    for m in &mut sent {
        m.body = "\u{1}".repeat(1000);
    }
    store.append(&sent).await.expect("append");
    let rev = store.last_rev(&c).await.expect("last_rev");
    // About five messages' worth once escaped (6 KB each).
    let page = store
        .changes(&c, 0, rev, 40, 33_000)
        .await
        .expect("changes");
    let n = page.messages.len();
    assert!(
        (3..=6).contains(&n),
        "{n} messages of ~6 KB encoded under 33 KB"
    );
    assert_eq!(
        page.messages,
        sent[..n].to_vec(),
        "the oldest changes first"
    );
    assert!(page.more);
    let mut read = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .changes(&c, after, rev, 40, 33_000)
            .await
            .expect("changes");
        read.extend(page.messages.iter().cloned());
        if !page.more {
            break;
        }
        after = page.messages.last().expect("a page with more").rev;
    }
    assert_eq!(read, sent, "read on page by page, every change once");
    let one = store.changes(&c, 0, rev, 40, 1).await.expect("changes");
    assert_eq!(
        (one.messages.len(), one.more),
        (1, true),
        "one even over the cap"
    );
}

/// Edits, reactions and deletes replace a message's state at a higher
/// `rev`: reads return the current state, `changes` returns each changed
/// message once at its last `rev`, a stale state changes nothing, and the
/// mentions index follows edits and deletes.
pub async fn check_message_updates(store: &dyn MessageStore) {
    let c = conversation_id("lifecycle");
    let (a, b) = (user_id("author"), user_id("mentioned"));
    let mut sent = revised(&c, &a, 1, 5);
    sent[1].mentions = vec![b.clone()];
    sent[3].mentions = vec![b.clone()];
    store.append(&sent).await.expect("append");
    assert_eq!(store.last_rev(&c).await.expect("last_rev"), 5);
    assert_eq!(
        store
            .last_rev(&conversation_id("empty"))
            .await
            .expect("last_rev"),
        0
    );
    assert_eq!(
        store.message(&c, sent[2].id).await.expect("message"),
        Some(sent[2].clone())
    );
    assert_eq!(
        store
            .message(&c, MessageId(sent[2].id.0 + 1))
            .await
            .expect("message"),
        None
    );
    let all = changes(store, &c, 0, 10).await;
    assert_eq!((all.messages, all.more), (sent.clone(), false));
    let bounded = store
        .changes(&c, 1, 3, 10, usize::MAX)
        .await
        .expect("changes");
    assert_eq!(
        (bounded.messages, bounded.more),
        (sent[1..3].to_vec(), false),
        "up to the bound"
    );
    assert_eq!(changes(store, &c, 3, 10).await.messages, sent[3..].to_vec());
    assert!(changes(store, &c, 5, 10).await.messages.is_empty());
    let mentions = |after: MessageId| store.count_unread_mentions(&c, &b, after, 100);
    assert_eq!(mentions(MessageId(0)).await.expect("count"), 2);
    assert_eq!(
        mentions(sent[1].id).await.expect("count"),
        1,
        "after the marker only"
    );
    assert_eq!(
        store
            .count_unread_mentions(&c, &a, MessageId(0), 100)
            .await
            .expect("count"),
        0
    );

    // An edit that takes the mention away.
    let mut edited = sent[1].clone();
    edited.body = "edited".into();
    edited.rev = 6;
    edited.edited_at = Some(edited.ts + 1);
    edited.mentions.clear();
    store.update_message(&edited).await.expect("edit");
    assert_eq!(
        store.message(&c, edited.id).await.expect("message"),
        Some(edited.clone())
    );
    assert_eq!(mentions(MessageId(0)).await.expect("count"), 1);
    // A reaction, then a delete that clears the other mention.
    let mut reacted = sent[2].clone();
    reacted.react(&b, "👍", true).expect("react");
    reacted.rev = 7;
    store.update_message(&reacted).await.expect("react");
    let mut deleted = sent[3].clone();
    deleted.delete(8);
    store.update_message(&deleted).await.expect("delete");
    assert_eq!(mentions(MessageId(0)).await.expect("count"), 0);
    assert_eq!(store.last_rev(&c).await.expect("last_rev"), 8);

    // Reads show the current state; the deleted body is gone.
    let now = vec![
        sent[0].clone(),
        edited.clone(),
        reacted.clone(),
        deleted.clone(),
        sent[4].clone(),
    ];
    assert_eq!(page(store, &c, None, None, 10).await.messages, now);
    let held = store
        .message(&c, deleted.id)
        .await
        .expect("message")
        .expect("kept");
    assert!(held.deleted && held.body.is_empty() && held.mentions.is_empty());
    let by_key = store
        .find_by_client_msg_id(&c, &a, &deleted.client_msg_id)
        .await
        .expect("find");
    assert_eq!(
        by_key,
        Some(deleted.clone()),
        "a retried send finds the current state"
    );

    // Each message once, at its last change, in rev order.
    let expected = vec![
        sent[0].clone(),
        sent[4].clone(),
        edited.clone(),
        reacted.clone(),
        deleted.clone(),
    ];
    assert_eq!(changes(store, &c, 0, 10).await.messages, expected);
    assert_eq!(
        changes(store, &c, 5, 10).await.messages,
        expected[2..].to_vec()
    );
    for limit in [1, 2, 3] {
        assert_eq!(
            all_changes(store, &c, 0, limit).await,
            expected,
            "pages of {limit}"
        );
    }

    // A stale or replayed state changes nothing.
    let mut stale = sent[2].clone();
    stale.body = "an older edit".into();
    stale.rev = 6;
    store.update_message(&stale).await.expect("stale update");
    store
        .update_message(&reacted)
        .await
        .expect("replayed update");
    assert_eq!(
        store.message(&c, reacted.id).await.expect("message"),
        Some(reacted.clone())
    );
    assert_eq!(changes(store, &c, 0, 10).await.messages, expected);
    // Nor does an update of a message never stored.
    let mut ghost = sent[0].clone();
    ghost.id = MessageId(sent[4].id.0 + 1);
    ghost.rev = 100;
    store.update_message(&ghost).await.expect("ghost update");
    assert_eq!(store.message(&c, ghost.id).await.expect("message"), None);
    assert_eq!(store.last_rev(&c).await.expect("last_rev"), 8);
    // Appending a message again leaves its newer state alone.
    store.append(&sent).await.expect("append again");
    assert_eq!(page(store, &c, None, None, 10).await.messages, now);
}

/// The revision index spans blocks: `changes` walks from any revision
/// across them, and skips blocks with no entry.
pub async fn check_changes_across_rev_blocks(store: &dyn MessageStore) {
    let c = conversation_id("revblocks");
    let a = user_id("author");
    let block = 1u64 << crate::REV_BLOCK_BITS;
    let revs = [block - 2, block - 1, block, block + 1, 5 * block + 3];
    let mut sent = revised(&c, &a, 0, revs.len());
    for (m, rev) in sent.iter_mut().zip(revs) {
        m.rev = rev;
    }
    store.append(&sent).await.expect("append");
    assert_eq!(store.last_rev(&c).await.expect("last_rev"), 5 * block + 3);
    assert_eq!(all_changes(store, &c, 0, 2).await, sent);
    assert_eq!(
        all_changes(store, &c, block - 1, 1).await,
        sent[2..].to_vec()
    );
    assert_eq!(
        all_changes(store, &c, block + 1, 10).await,
        sent[4..].to_vec()
    );
    // The first message moves to the newest block.
    let mut moved = sent[0].clone();
    moved.body = "moved".into();
    moved.rev = 6 * block;
    store.update_message(&moved).await.expect("edit");
    let mut expected = sent[1..].to_vec();
    expected.push(moved);
    assert_eq!(all_changes(store, &c, 0, 3).await, expected);
    assert_eq!(store.last_rev(&c).await.expect("last_rev"), 6 * block);
}
