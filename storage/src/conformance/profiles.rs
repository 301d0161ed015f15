//! Profiles and the name index: none until written, then as written; the
//! index finds a user by the start of their id or display name (lower
//! case), in name order, and forgets a display name once changed.

use super::fixtures::{unique, user_id};
use crate::profiles::{index_name, ProfileRecord};
use crate::MessageStore;

/// A profile round-trips and its names are found by prefix.
pub async fn check_profiles(store: &dyn MessageStore) {
    // A prefix of this run's own, so that rows of earlier runs on a kept
    // database do not show.
    let tag = unique("pz").replace('-', "");
    let ann = user_id(&format!("{tag}ann"));
    let bob = user_id(&format!("{tag}bob"));
    assert_eq!(store.profile(&ann).await.expect("read"), None);

    let first = ProfileRecord {
        display_name: Some(format!("Zq{tag} Annie")),
        status_text: Some("out for lunch".into()),
        avatar: None,
        updated_at: 1,
    };
    store.put_profile(&ann, None, &first).await.expect("put");
    assert_eq!(
        store.profile(&ann).await.expect("read"),
        Some(first.clone())
    );
    assert_eq!(store.profile(&bob).await.expect("read"), None, "per user");
    store
        .put_profile(&bob, None, &ProfileRecord::default())
        .await
        .expect("put bob");

    // By id: both, in name order; by display name, in any case: Ann.
    let by_id = store.find_names(&tag, 10).await.expect("find");
    let users: Vec<_> = by_id.iter().map(|e| e.user.clone()).collect();
    assert_eq!(users, vec![ann.clone(), bob.clone()], "{by_id:?}");
    assert_eq!(by_id[0].name, index_name(ann.as_str()));
    let by_name = store
        .find_names(&index_name(&format!("ZQ{tag} an")), 10)
        .await
        .expect("find");
    assert_eq!(by_name.len(), 1, "{by_name:?}");
    assert_eq!(by_name[0].user, ann);
    assert_eq!(
        store.find_names(&tag, 1).await.expect("find").len(),
        1,
        "limit"
    );

    // A new display name: found by it, no longer by the old one.
    let second = ProfileRecord {
        display_name: Some(format!("Xw{tag}")),
        status_text: None,
        updated_at: 2,
        ..first.clone()
    };
    store
        .put_profile(&ann, Some(&first), &second)
        .await
        .expect("put again");
    assert_eq!(store.profile(&ann).await.expect("read"), Some(second));
    let old = store
        .find_names(&index_name(&format!("zq{tag}")), 10)
        .await
        .expect("find");
    assert!(old.is_empty(), "the old name is forgotten: {old:?}");
    let new = store
        .find_names(&index_name(&format!("xw{tag}")), 10)
        .await
        .expect("find");
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].user, ann);
    // The id's entry stays.
    assert_eq!(store.find_names(&tag, 10).await.expect("find").len(), 2);
}
