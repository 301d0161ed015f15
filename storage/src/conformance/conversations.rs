//! The contract of [`ConversationStore`](crate::ConversationStore):
//! records, members, each user's list, read markers.

use std::collections::BTreeSet;

use chat_protocol::{
    Conversation, ConversationId, ConversationKind, Member, MessageId, Role, UserId,
};

use super::fixtures::{bucket_start, conversation_id, user_id};
use crate::{ConversationChange, MessageStore};

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

/// Every conversation's id comes once, a page at a time.
pub async fn check_conversation_ids(store: &dyn MessageStore) {
    let ours: Vec<ConversationId> = (0..3).map(|_| conversation_id("walk")).collect();
    let owner = user_id("walker");
    for id in &ours {
        store
            .apply_conversation(&ConversationChange {
                conversation: Conversation {
                    rev: 0,
                    id: id.clone(),
                    kind: ConversationKind::Group,
                    title: None,
                    members: Vec::new(),
                    member_count: None,
                    created_at: 1,
                },
                upsert: vec![Member {
                    user: owner.clone(),
                    role: Role::Owner,
                }],
                remove: Vec::new(),
            })
            .await
            .expect("create");
    }
    let mut seen = std::collections::HashSet::new();
    let mut after: Option<ConversationId> = None;
    loop {
        let page = store
            .conversation_ids(after.as_ref(), 2)
            .await
            .expect("page");
        assert!(page.len() <= 2);
        let Some(last) = page.last().cloned() else {
            break;
        };
        for id in page {
            assert!(seen.insert(id.clone()), "{id} twice");
        }
        after = Some(last);
    }
    for id in &ours {
        assert!(seen.contains(id), "{id} walked past");
    }
}
