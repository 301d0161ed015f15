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
        released: false,
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

/// Uploads are listed by creation time until forgotten or deleted; the
/// list pages by time across days; marking a record released rewrites it
/// alone.
pub async fn check_unattached_media(store: &dyn MessageStore) {
    let owner = user_id("media-unattached");
    // Ten ms before a midnight of 2001-2004 that this run picks: a window
    // no other run or test writes, crossing a day (ScyllaDB's partitions).
    let day = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        unique("day").hash(&mut h);
        11_323 + h.finish() % 1_000
    };
    let t0 = day * 86_400_000 - 10;
    let record = |n: u64, at: u64| MediaRecord {
        id: media_id(100 + n),
        owner: owner.clone(),
        name: format!("u{n}.bin"),
        content_type: "application/octet-stream".into(),
        size: 10,
        sha256: "cd".repeat(32),
        width: None,
        height: None,
        thumbnail: None,
        created_at: at,
        released: false,
    };
    let (c, d, e) = (record(1, t0), record(2, t0 + 5), record(3, t0 + 20));
    for r in [&e, &c, &d] {
        store.put_media(r).await.expect("put");
    }
    let listed = |from: u64, before: u64, limit: usize| async move {
        store
            .unattached_media(from, before, limit)
            .await
            .expect("unattached")
    };
    let at = |r: &MediaRecord| (r.created_at, r.id.clone());
    assert_eq!(listed(t0, t0 + 10, 10).await, vec![at(&c), at(&d)]);
    assert_eq!(listed(t0, t0 + 10, 1).await, vec![at(&c)], "oldest first");
    assert_eq!(
        listed(t0, t0 + 30, 10).await,
        vec![at(&c), at(&d), at(&e)],
        "across a day"
    );
    assert_eq!(listed(t0 + 1, t0 + 20, 10).await, vec![at(&d)]);
    assert!(listed(t0 + 30, t0, 10).await.is_empty());

    store
        .forget_unattached(c.created_at, &c.id)
        .await
        .expect("forget");
    store
        .forget_unattached(c.created_at, &c.id)
        .await
        .expect("forget again");
    assert_eq!(listed(t0, t0 + 30, 10).await, vec![at(&d), at(&e)]);
    assert_eq!(store.media(&c.id).await.expect("read"), Some(c.clone()));

    let mut released = d.clone();
    released.released = true;
    store.update_media(&released).await.expect("update");
    assert_eq!(
        store.media(&d.id).await.expect("read"),
        Some(released.clone())
    );
    assert_eq!(store.media_usage(&owner).await.expect("usage"), 30);
    assert_eq!(listed(t0, t0 + 30, 10).await, vec![at(&d), at(&e)]);

    store.delete_media(&released).await.expect("delete");
    assert_eq!(listed(t0, t0 + 30, 10).await, vec![at(&e)]);
    for r in [&c, &e] {
        store.delete_media(r).await.expect("delete");
    }
    assert!(listed(t0, t0 + 30, 10).await.is_empty());
    assert_eq!(store.media_usage(&owner).await.expect("usage"), 0);
}
