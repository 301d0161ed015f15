//! What no single domain checks: the data of one conversation or user
//! never shows in another's whose id extends it, in any domain.

use chat_protocol::{
    Conversation, ConversationId, ConversationKind, Member, Message, MessageId, Role, UserId,
};

use super::fixtures::{bucket_start, conversation_id, message, page, user_id};
use crate::{ConversationChange, MessageStore};

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
