//! Media records: kept whole; an owner's usage is the sum of their
//! files; references are a set; deleting a record takes its references and
//! its usage with it.

use chat_protocol::{ClientMsgId, ConversationId};

use super::fixtures::{unique, user_id};
use crate::media::{MediaRecord, MediaRef, ThumbnailRecord};
use crate::MessageStore;

/// A media id (32 hex digits) no run has used: a kept database holds
/// earlier runs' records.
fn media_id(n: u64) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    unique("m").hash(&mut h);
    format!("{:016x}{:016x}", h.finish(), n)
}

/// Records round-trip, usage sums, references add, list and go.
pub async fn check_media(store: &dyn MessageStore) {
    let owner = user_id("media-owner");
    let record = |n: u64, size: u64| MediaRecord {
        id: media_id(n),
        owner: owner.clone(),
        name: format!("file {n}.png"),
        content_type: "image/png".into(),
        size,
        sha256: "ab".repeat(32),
        width: Some(10),
        height: Some(20),
        thumbnail: (n == 1).then(|| ThumbnailRecord {
            width: 5,
            height: 10,
            content_type: "image/png".into(),
            size: 99,
        }),
        created_at: n,
    };
    let (a, b) = (record(1, 1000), record(2, 2500));
    assert_ne!(a.id, b.id);
    assert_eq!(store.media(&a.id).await.expect("read"), None);
    assert_eq!(store.media_usage(&owner).await.expect("usage"), 0);
    store.put_media(&a).await.expect("put");
    store.put_media(&b).await.expect("put");
    assert_eq!(store.media(&a.id).await.expect("read"), Some(a.clone()));
    assert_eq!(store.media(&b.id).await.expect("read"), Some(b.clone()));
    assert_eq!(store.media_usage(&owner).await.expect("usage"), 3500);
    assert_eq!(
        store
            .media_usage(&user_id("media-other"))
            .await
            .expect("usage"),
        0,
        "usage is the owner's own"
    );

    let conversation = ConversationId::new(&unique("mc")).unwrap();
    let in_message = |n: u32| MediaRef::Message {
        conversation: conversation.clone(),
        sender: owner.clone(),
        client_msg_id: ClientMsgId::new(&format!("cm-{n}")).unwrap(),
    };
    let avatar = MediaRef::Avatar {
        user: owner.clone(),
    };
    assert!(store.media_refs(&a.id, 10).await.expect("refs").is_empty());
    store
        .add_media_ref(&a.id, &in_message(1))
        .await
        .expect("ref");
    store
        .add_media_ref(&a.id, &in_message(1))
        .await
        .expect("again");
    store
        .add_media_ref(&a.id, &in_message(2))
        .await
        .expect("ref");
    store.add_media_ref(&a.id, &avatar).await.expect("ref");
    let mut refs = store.media_refs(&a.id, 10).await.expect("refs");
    assert_eq!(refs.len(), 3, "a reference written twice is one: {refs:?}");
    for r in [in_message(1), in_message(2), avatar.clone()] {
        assert!(refs.contains(&r), "{r:?} in {refs:?}");
    }
    assert_eq!(store.media_refs(&a.id, 2).await.expect("refs").len(), 2);
    assert!(store.media_refs(&b.id, 10).await.expect("refs").is_empty());

    store
        .remove_media_ref(&a.id, &in_message(1))
        .await
        .expect("unref");
    store
        .remove_media_ref(&a.id, &in_message(9))
        .await
        .expect("unref of none");
    refs = store.media_refs(&a.id, 10).await.expect("refs");
    assert_eq!(refs.len(), 2);
    assert!(!refs.contains(&in_message(1)));

    store.delete_media(&a).await.expect("delete");
    assert_eq!(store.media(&a.id).await.expect("read"), None);
    assert!(store.media_refs(&a.id, 10).await.expect("refs").is_empty());
    assert_eq!(store.media_usage(&owner).await.expect("usage"), 2500);
    assert_eq!(store.media(&b.id).await.expect("read"), Some(b));
}
