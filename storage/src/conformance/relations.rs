//! Contacts, blocks and privacy: none until set, then the record as
//! written, replaced whole, kept per user.

use chat_protocol::people::{Audience, Relations};

use super::fixtures::user_id;
use crate::MessageStore;

/// A user's record round-trips and is theirs alone.
pub async fn check_relations(store: &dyn MessageStore) {
    let ann = user_id("rel-ann");
    let bob = user_id("rel-bob");
    assert_eq!(store.relations(&ann).await.expect("read"), None);
    let mut r = Relations::default();
    r.blocks.insert(bob.clone());
    r.contacts.insert(user_id("rel-cat"));
    r.privacy.direct_messages = Audience::Contacts;
    store.put_relations(&ann, &r).await.expect("put");
    assert_eq!(store.relations(&ann).await.expect("read"), Some(r.clone()));
    assert_eq!(store.relations(&bob).await.expect("read"), None, "per user");
    // Replaced whole: an unblock is the record without them.
    r.blocks.clear();
    r.privacy.presence = Audience::Nobody;
    store.put_relations(&ann, &r).await.expect("put again");
    let back = store.relations(&ann).await.expect("read").expect("kept");
    assert!(back.blocks.is_empty());
    assert_eq!(back.privacy.presence, Audience::Nobody);
    assert_eq!(back, r);
}
