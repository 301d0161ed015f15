//! The contract of [`MessageStore`] as executable checks, shared by every
//! backend's tests: a backend is correct when [`run_all`] returns without
//! panicking.
//!
//! Every check makes up fresh conversation, user and token ids, so the suite
//! can run again and again against a database that keeps its data (a ScyllaDB
//! cluster of a test environment), and several checks may run at once.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

use chat_protocol::{
    ClientMsgId, Conversation, ConversationId, ConversationKind, Member, Message, MessageId,
    MessageKind, Role, UserId,
};

use super::{
    bucket_of, AuditEntry, ConversationChange, LoginState, MessageStore, PageQuery, RefreshRecord,
    Rotation, StoreError, UserFlag, UserFlags, UserRecord, BUCKET_MS,
};

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
) -> super::Page {
    store
        .page(conversation, PageQuery::new(before, after, limit))
        .await
        .expect("page")
}

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

/// A conversation whose id is a prefix of another's (`x` and `x0`, users `u`
/// and `u0`) sees none of the other's data.
pub async fn check_prefix_isolation(store: &dyn MessageStore) {
    let short = conversation_id("iso");
    let long = ConversationId::new(&format!("{short}0")).expect("valid");
    let alice = user_id("alice");
    let alice0 = UserId::new(&format!("{alice}0")).expect("valid");
    let t = MessageId::floor_at(bucket_start() + 1000);

    // Both conversations in one append; the longer id's messages are newer,
    // so a leak would show in the newest page and in last_message.
    let short_messages: Vec<Message> = (0..5)
        .map(|i| message(&short, &alice, MessageId(t.0 + i as u64), i))
        .collect();
    let long_messages: Vec<Message> = (0..5)
        .map(|i| message(&long, &alice0, MessageId(t.0 + 100 + i as u64), i))
        .collect();
    let both: Vec<Message> = short_messages
        .iter()
        .chain(&long_messages)
        .cloned()
        .collect();
    store.append(&both).await.expect("append");

    let p = page(store, &short, None, None, 100).await;
    assert_eq!(p.messages, short_messages, "newest page of the shorter id");
    let p = page(store, &short, None, Some(MessageId(0)), 100).await;
    assert_eq!(p.messages, short_messages, "oldest page of the shorter id");
    let p = page(store, &long, None, None, 100).await;
    assert_eq!(p.messages, long_messages, "the longer id");
    assert_eq!(
        store.last_message(&short).await.expect("last"),
        short_messages.last().cloned()
    );
    assert_eq!(
        store
            .count_unread(&short, &alice, MessageId(0), 100)
            .await
            .expect("count"),
        0,
        "alice0's messages are not in the shorter conversation"
    );
    let bob = user_id("bob");
    assert_eq!(
        store
            .count_unread(&short, &bob, MessageId(0), 100)
            .await
            .expect("count"),
        5
    );

    // Members, the per-user index and read markers.
    for (c, user) in [(&short, &alice), (&long, &alice0)] {
        store
            .apply_conversation(&ConversationChange {
                conversation: Conversation {
                    rev: 0,
                    id: c.clone(),
                    kind: ConversationKind::Group,
                    title: None,
                    members: Vec::new(),
                    member_count: None,
                    created_at: 1,
                },
                upsert: vec![Member {
                    user: user.clone(),
                    role: Role::Owner,
                }],
                remove: Vec::new(),
            })
            .await
            .expect("apply");
        store
            .set_read_marker(c, user, MessageId(t.0 + 2))
            .await
            .expect("marker");
    }
    let members = store
        .conversation(&short)
        .await
        .expect("conversation")
        .expect("exists")
        .members;
    assert_eq!(
        members,
        vec![Member {
            user: alice.clone(),
            role: Role::Owner
        }]
    );
    assert_eq!(
        store.user_conversations(&alice).await.expect("index"),
        vec![short.clone()]
    );
    assert_eq!(
        store.read_markers(&short).await.expect("markers"),
        vec![(alice.clone(), MessageId(t.0 + 2))]
    );
    assert_eq!(
        store.read_marker(&short, &alice0).await.expect("marker"),
        None
    );
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

fn member_set(members: &[Member]) -> BTreeSet<(UserId, Role)> {
    members.iter().map(|m| (m.user.clone(), m.role)).collect()
}

fn id_set(ids: Vec<ConversationId>) -> BTreeSet<ConversationId> {
    ids.into_iter().collect()
}

/// Conversation records: metadata upsert, member upsert and removal, the
/// per-user index.
pub async fn check_conversations(store: &dyn MessageStore) {
    let (group, direct) = (conversation_id("group"), conversation_id("direct"));
    let (u1, u2, u3) = (user_id("owner"), user_id("member"), user_id("admin"));
    let ghost = user_id("ghost");
    assert_eq!(store.conversation(&group).await.expect("read"), None);
    assert!(store
        .user_conversations(&u1)
        .await
        .expect("index")
        .is_empty());

    let mut record = Conversation {
        rev: 0,
        id: group.clone(),
        kind: ConversationKind::Group,
        title: Some("first title".into()),
        // Ignored by apply_conversation: upsert and remove say what changes.
        members: vec![Member {
            user: ghost.clone(),
            role: Role::Owner,
        }],
        member_count: None,
        created_at: 1_700_000_000_123,
    };
    let member = |user: &UserId, role| Member {
        user: user.clone(),
        role,
    };
    store
        .apply_conversation(&ConversationChange {
            conversation: record.clone(),
            upsert: vec![
                member(&u1, Role::Owner),
                member(&u2, Role::Member),
                member(&u3, Role::Admin),
            ],
            remove: Vec::new(),
        })
        .await
        .expect("create");
    let read = store
        .conversation(&group)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(read.id, group);
    assert_eq!(read.kind, ConversationKind::Group);
    assert_eq!(read.title.as_deref(), Some("first title"));
    assert_eq!(read.created_at, 1_700_000_000_123);
    assert_eq!(
        member_set(&read.members),
        BTreeSet::from([
            (u1.clone(), Role::Owner),
            (u2.clone(), Role::Member),
            (u3.clone(), Role::Admin),
        ]),
        "members come from upsert, not from the record's members"
    );
    assert_eq!(read.members.len(), 3, "no member twice");
    for user in [&u1, &u2, &u3] {
        assert_eq!(
            store.user_conversations(user).await.expect("index"),
            vec![group.clone()]
        );
    }
    assert!(store
        .user_conversations(&ghost)
        .await
        .expect("index")
        .is_empty());

    // Change the title, promote u2, remove u3; u1 is untouched.
    record.title = Some("second title".into());
    store
        .apply_conversation(&ConversationChange {
            conversation: record.clone(),
            upsert: vec![member(&u2, Role::Admin)],
            remove: vec![u3.clone()],
        })
        .await
        .expect("change");
    let read = store
        .conversation(&group)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(read.title.as_deref(), Some("second title"));
    assert_eq!(
        member_set(&read.members),
        BTreeSet::from([(u1.clone(), Role::Owner), (u2.clone(), Role::Admin)])
    );
    assert_eq!(read.members.len(), 2);
    assert!(
        store
            .user_conversations(&u3)
            .await
            .expect("index")
            .is_empty(),
        "a removed member loses the conversation from its index"
    );

    // A second conversation of u1, without a title.
    store
        .apply_conversation(&ConversationChange {
            conversation: Conversation {
                rev: 0,
                id: direct.clone(),
                kind: ConversationKind::Direct,
                title: None,
                members: Vec::new(),
                member_count: None,
                created_at: 5,
            },
            upsert: vec![member(&u1, Role::Member), member(&u3, Role::Member)],
            remove: Vec::new(),
        })
        .await
        .expect("create direct");
    let read = store
        .conversation(&direct)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(read.kind, ConversationKind::Direct);
    assert_eq!(read.title, None);
    assert_eq!(
        id_set(store.user_conversations(&u1).await.expect("index")),
        BTreeSet::from([group.clone(), direct.clone()])
    );
    assert_eq!(
        store.user_conversations(&u3).await.expect("index"),
        vec![direct.clone()]
    );

    // Removing everyone keeps the record (the conversation still exists).
    store
        .apply_conversation(&ConversationChange {
            conversation: read,
            upsert: Vec::new(),
            remove: vec![u1.clone(), u3.clone()],
        })
        .await
        .expect("empty out");
    let read = store
        .conversation(&direct)
        .await
        .expect("read")
        .expect("exists");
    assert!(read.members.is_empty());
    assert_eq!(
        store.user_conversations(&u1).await.expect("index"),
        vec![group.clone()]
    );
}

/// Read markers: set, move forward (never back), per user and per conversation.
pub async fn check_read_markers(store: &dyn MessageStore) {
    let (conversation, other) = (conversation_id("markers"), conversation_id("markers"));
    let (u1, u2, u3) = (user_id("reader"), user_id("reader"), user_id("reader"));
    let at = |n: u64| MessageId(MessageId::floor_at(bucket_start()).0 + n);
    assert!(store
        .read_markers(&conversation)
        .await
        .expect("markers")
        .is_empty());
    assert_eq!(
        store.read_marker(&conversation, &u1).await.expect("marker"),
        None
    );

    store
        .set_read_marker(&conversation, &u1, at(5))
        .await
        .expect("set");
    store
        .set_read_marker(&conversation, &u2, at(7))
        .await
        .expect("set");
    store
        .set_read_marker(&other, &u1, at(1))
        .await
        .expect("set");
    assert_eq!(
        store.read_marker(&conversation, &u1).await.expect("marker"),
        Some(at(5))
    );
    store
        .set_read_marker(&conversation, &u1, at(9))
        .await
        .expect("move");
    assert_eq!(
        store.read_marker(&conversation, &u1).await.expect("marker"),
        Some(at(9)),
        "moved forward"
    );
    // A marker never moves back: replicas merge markers by max, and two
    // sessions of one user may report their positions in either order.
    store
        .set_read_marker(&conversation, &u1, at(9))
        .await
        .expect("same place");
    store
        .set_read_marker(&conversation, &u1, at(3))
        .await
        .expect("move back");
    assert_eq!(
        store.read_marker(&conversation, &u1).await.expect("marker"),
        Some(at(9)),
        "a marker never moves back"
    );
    let markers: BTreeSet<(UserId, MessageId)> = store
        .read_markers(&conversation)
        .await
        .expect("markers")
        .into_iter()
        .collect();
    assert_eq!(
        markers,
        BTreeSet::from([(u1.clone(), at(9)), (u2.clone(), at(7))])
    );
    assert_eq!(
        store
            .read_markers(&conversation)
            .await
            .expect("markers")
            .len(),
        2,
        "one marker per user"
    );
    assert_eq!(
        store.read_marker(&conversation, &u3).await.expect("marker"),
        None
    );
    assert_eq!(
        store.read_markers(&other).await.expect("markers"),
        vec![(u1.clone(), at(1))]
    );
}

/// Accounts: create, read, and the conflict on a taken id, also when many
/// creates of one id race.
pub async fn check_users(store: &dyn MessageStore) {
    let id = user_id("user");
    let record = UserRecord {
        id: id.clone(),
        password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
        display_name: Some("Ada".into()),
        created_at: 1_700_000_000_000,
    };
    assert_eq!(store.user(&id).await.expect("read"), None);
    store.create_user(&record).await.expect("create");
    assert_eq!(store.user(&id).await.expect("read"), Some(record.clone()));

    let mut taken = record.clone();
    taken.display_name = Some("Mallory".into());
    taken.password_hash = None;
    assert!(
        matches!(store.create_user(&taken).await, Err(StoreError::Conflict)),
        "a taken id"
    );
    assert_eq!(
        store.user(&id).await.expect("read"),
        Some(record),
        "a conflicting create changes nothing"
    );

    let external = UserRecord {
        id: user_id("sso"),
        password_hash: None,
        display_name: None,
        created_at: 2,
    };
    store.create_user(&external).await.expect("create");
    assert_eq!(
        store.user(&external.id).await.expect("read"),
        Some(external)
    );

    // Eight creates of one fresh id at once: exactly one wins.
    let raced = user_id("race");
    let records: Vec<UserRecord> = (0..8)
        .map(|i| UserRecord {
            id: raced.clone(),
            password_hash: None,
            display_name: Some(format!("racer {i}")),
            created_at: i,
        })
        .collect();
    let c = |i: usize| store.create_user(&records[i]);
    let results = tokio::join!(c(0), c(1), c(2), c(3), c(4), c(5), c(6), c(7));
    let results = [
        results.0, results.1, results.2, results.3, results.4, results.5, results.6, results.7,
    ];
    let winners: Vec<usize> = (0..8).filter(|&i| results[i].is_ok()).collect();
    assert_eq!(winners.len(), 1, "exactly one create wins: {results:?}");
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(()) | Err(StoreError::Conflict))),
        "the others conflict: {results:?}"
    );
    assert_eq!(
        store.user(&raced).await.expect("read"),
        Some(records[winners[0]].clone()),
        "the winner's record is stored"
    );
}

fn refresh(user: &UserId, family: &str, expires_at: u64) -> RefreshRecord {
    RefreshRecord {
        token_hash: unique("token"),
        user: user.clone(),
        family: family.to_owned(),
        expires_at,
    }
}

const NOW: u64 = 1_800_000_000_000;
const HOUR: u64 = 3600 * 1000;

/// Refresh-token rotation: a rotation uses the token up, reuse of a used
/// token revokes its family (so even the newest token stops working),
/// expired and unknown tokens are invalid.
pub async fn check_refresh_rotation(store: &dyn MessageStore) {
    let user = user_id("holder");
    let family = unique("family");
    let t1 = refresh(&user, &family, NOW + HOUR);
    store.put_refresh(&t1).await.expect("put");

    // The new token names another user and family on purpose: both must be
    // taken from the old token.
    let stranger = user_id("stranger");
    let t2 = refresh(&stranger, &unique("wrong-family"), NOW + 2 * HOUR);
    assert_eq!(
        store
            .rotate_refresh(&t1.token_hash, &t2, NOW)
            .await
            .expect("rotate"),
        Rotation::Rotated { user: user.clone() }
    );
    let t3 = refresh(&stranger, &unique("wrong-family"), NOW + 3 * HOUR);
    assert_eq!(
        store
            .rotate_refresh(&t2.token_hash, &t3, NOW + 1000)
            .await
            .expect("rotate"),
        Rotation::Rotated { user: user.clone() },
        "the rotated-to token works, for the old token's user"
    );

    // t1 again, while it has not expired: reuse. The family dies, t3 (the newest) with it.
    let t4 = refresh(&user, &family, NOW + 4 * HOUR);
    assert_eq!(
        store
            .rotate_refresh(&t1.token_hash, &t4, NOW + 2000)
            .await
            .expect("rotate"),
        Rotation::Reused
    );
    let t5 = refresh(&user, &family, NOW + 4 * HOUR);
    assert_eq!(
        store
            .rotate_refresh(&t3.token_hash, &t5, NOW + 2000)
            .await
            .expect("rotate"),
        Rotation::Invalid,
        "reuse revoked the family, the newest token included"
    );
    let t6 = refresh(&user, &family, NOW + 4 * HOUR);
    assert_ne!(
        store
            .rotate_refresh(&t1.token_hash, &t6, NOW + 2000)
            .await
            .expect("rotate"),
        Rotation::Rotated { user: user.clone() },
        "a reused token never rotates"
    );
    for never_stored in [&t4, &t5, &t6] {
        let t = refresh(&user, &family, NOW + 5 * HOUR);
        assert_eq!(
            store
                .rotate_refresh(&never_stored.token_hash, &t, NOW + 2000)
                .await
                .expect("rotate"),
            Rotation::Invalid,
            "a token of a failed rotation was not stored"
        );
    }

    // Expired.
    let old = refresh(&user, &unique("family"), NOW - 1000);
    store.put_refresh(&old).await.expect("put");
    let next = refresh(&user, &old.family, NOW + HOUR);
    assert_eq!(
        store
            .rotate_refresh(&old.token_hash, &next, NOW)
            .await
            .expect("rotate"),
        Rotation::Invalid,
        "expired"
    );
    let fresh = refresh(&user, &unique("family"), NOW + HOUR);
    store.put_refresh(&fresh).await.expect("put");
    let next = refresh(&user, &fresh.family, NOW + 3 * HOUR);
    assert_eq!(
        store
            .rotate_refresh(&fresh.token_hash, &next, NOW + 2 * HOUR)
            .await
            .expect("rotate"),
        Rotation::Invalid,
        "expired by the clock passed in"
    );

    // Unknown.
    let next = refresh(&user, &family, NOW + HOUR);
    assert_eq!(
        store
            .rotate_refresh(&unique("unknown"), &next, NOW)
            .await
            .expect("rotate"),
        Rotation::Invalid
    );
}

/// Revoking a family by any of its tokens ends it and no other family.
pub async fn check_refresh_revocation(store: &dyn MessageStore) {
    let user = user_id("holder");
    let (doomed, kept) = (unique("family"), unique("family"));
    let a1 = refresh(&user, &doomed, NOW + HOUR);
    let k1 = refresh(&user, &kept, NOW + HOUR);
    store.put_refresh(&a1).await.expect("put");
    store.put_refresh(&k1).await.expect("put");
    let a2 = refresh(&user, &doomed, NOW + 2 * HOUR);
    assert_eq!(
        store
            .rotate_refresh(&a1.token_hash, &a2, NOW)
            .await
            .expect("rotate"),
        Rotation::Rotated { user: user.clone() }
    );

    // By the newest token of the family.
    assert_eq!(
        store
            .revoke_refresh_family(&a2.token_hash)
            .await
            .expect("revoke"),
        Some(user.clone())
    );
    let a3 = refresh(&user, &doomed, NOW + 2 * HOUR);
    assert_eq!(
        store
            .rotate_refresh(&a2.token_hash, &a3, NOW)
            .await
            .expect("rotate"),
        Rotation::Invalid,
        "revoked"
    );
    let k2 = refresh(&user, &kept, NOW + 2 * HOUR);
    assert_eq!(
        store
            .rotate_refresh(&k1.token_hash, &k2, NOW)
            .await
            .expect("rotate"),
        Rotation::Rotated { user: user.clone() },
        "another family of the same user lives on"
    );

    // By an old, used-up token of the family.
    let k3 = refresh(&user, &kept, NOW + 2 * HOUR);
    assert_eq!(
        store
            .revoke_refresh_family(&k1.token_hash)
            .await
            .expect("revoke"),
        Some(user.clone())
    );
    assert_eq!(
        store
            .rotate_refresh(&k2.token_hash, &k3, NOW)
            .await
            .expect("rotate"),
        Rotation::Invalid
    );

    assert_eq!(
        store
            .revoke_refresh_family(&unique("unknown"))
            .await
            .expect("revoke"),
        None
    );
}

/// A login (refresh family) is recorded active with its first token, stays
/// active across rotations, and once revoked stays revoked, even when a
/// token of it is stored after the revocation (replicas may apply writes in
/// either order); a family never stored is unknown.
pub async fn check_login_state(store: &dyn MessageStore) {
    let user = user_id("holder");
    let family = unique("login");
    assert_eq!(store.login_state(&family).await.expect("read"), None);
    let t1 = refresh(&user, &family, NOW + HOUR);
    store.put_refresh(&t1).await.expect("put");
    assert_eq!(
        store.login_state(&family).await.expect("read"),
        Some(LoginState::Active)
    );
    let t2 = refresh(&user, &family, NOW + 2 * HOUR);
    store
        .rotate_refresh(&t1.token_hash, &t2, NOW)
        .await
        .expect("rotate");
    assert_eq!(
        store.login_state(&family).await.expect("read"),
        Some(LoginState::Active)
    );
    store
        .revoke_refresh_family(&t2.token_hash)
        .await
        .expect("revoke");
    assert_eq!(
        store.login_state(&family).await.expect("read"),
        Some(LoginState::Revoked)
    );
    store
        .put_refresh(&refresh(&user, &family, NOW + HOUR))
        .await
        .expect("a late token");
    assert_eq!(
        store.login_state(&family).await.expect("read"),
        Some(LoginState::Revoked),
        "revoked for good"
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
) -> super::Changes {
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
    let block = 1u64 << super::REV_BLOCK_BITS;
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

/// Account flags: clear until set, the later setting wins whatever order
/// the writes come in, one flag does not touch the other. The audit log:
/// newest first, bounded by `limit`, an entry written twice listed once.
pub async fn check_user_flags_and_audit(store: &dyn MessageStore) {
    let user = user_id("flagged");
    let flags = |admin, suspended| UserFlags { admin, suspended };
    assert_eq!(
        store.user_flags(&user).await.expect("read"),
        flags(false, false)
    );
    store
        .set_user_flag(&user, UserFlag::Suspended, true, 2_000)
        .await
        .expect("suspend");
    assert_eq!(
        store.user_flags(&user).await.expect("read"),
        flags(false, true)
    );
    // An older setting arriving late changes nothing.
    store
        .set_user_flag(&user, UserFlag::Suspended, false, 1_000)
        .await
        .expect("stale unsuspend");
    assert_eq!(
        store.user_flags(&user).await.expect("read"),
        flags(false, true)
    );
    store
        .set_user_flag(&user, UserFlag::Admin, true, 1_500)
        .await
        .expect("grant");
    store
        .set_user_flag(&user, UserFlag::Suspended, false, 3_000)
        .await
        .expect("unsuspend");
    assert_eq!(
        store.user_flags(&user).await.expect("read"),
        flags(true, false)
    );
    let other = user_id("unflagged");
    assert_eq!(
        store.user_flags(&other).await.expect("read"),
        flags(false, false)
    );

    // Real times: the log is shared by every run against this database.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let target = unique("target");
    let entries: Vec<AuditEntry> = (0..3u64)
        .map(|i| AuditEntry {
            at: now + i,
            id: 0x5eed_0000 + i,
            admin: user.clone(),
            action: ["suspend", "unsuspend", "disconnect"][i as usize].into(),
            target: target.clone(),
            node: "node-1".into(),
        })
        .collect();
    for e in &entries {
        store.append_audit(e).await.expect("audit");
    }
    store.append_audit(&entries[1]).await.expect("audit again");
    let log = store.audit(200).await.expect("audit log");
    let ours: Vec<&AuditEntry> = log.iter().filter(|e| e.target == target).collect();
    let expected: Vec<&AuditEntry> = entries.iter().rev().collect();
    assert_eq!(ours, expected, "newest first, each once");
    assert!(
        log.windows(2).all(|w| w[0].at >= w[1].at),
        "the log is ordered newest first"
    );
    assert_eq!(store.audit(2).await.expect("audit log").len(), 2, "limit");
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
