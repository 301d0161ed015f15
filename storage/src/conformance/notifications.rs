//! The contract of [`NotificationStore`](crate::NotificationStore):
//! settings read back as written, per user and per conversation, and push
//! subscriptions listed oldest first and deleted one by one.

use chat_protocol::notify::{
    ConversationNotify, NotificationSettings, NotifyLevel, PushSubscription, QuietHours,
};

use super::fixtures::{conversation_id, unique, user_id};
use crate::MessageStore;

/// A user's settings: none until set, then the last written; another
/// user's stay unset.
pub async fn check_notification_settings(store: &dyn MessageStore) {
    let user = user_id("notified");
    assert_eq!(
        store.notification_settings(&user).await.expect("read"),
        None
    );
    let mut settings = NotificationSettings::default();
    settings.email.delay_secs = 60;
    settings.dnd = Some(QuietHours {
        start: "22:00".into(),
        end: "07:00".into(),
        tz: "Europe/Paris".into(),
    });
    store
        .put_notification_settings(&user, &settings)
        .await
        .expect("write");
    assert_eq!(
        store.notification_settings(&user).await.expect("read"),
        Some(settings.clone())
    );
    settings.push.enabled = false;
    settings.dnd = None;
    store
        .put_notification_settings(&user, &settings)
        .await
        .expect("rewrite");
    assert_eq!(
        store.notification_settings(&user).await.expect("read"),
        Some(settings)
    );
    let other = user_id("unnotified");
    assert_eq!(
        store.notification_settings(&other).await.expect("read"),
        None
    );
}

/// Per conversation: none until set, the last write wins, a user's list
/// holds exactly theirs.
pub async fn check_conversation_notify(store: &dyn MessageStore) {
    let user = user_id("muter");
    let (a, b) = (conversation_id("loud"), conversation_id("quiet"));
    assert_eq!(
        store.conversation_notify(&user, &a).await.expect("read"),
        None
    );
    assert!(store
        .conversation_notifies(&user)
        .await
        .expect("list")
        .is_empty());
    let mentions = ConversationNotify {
        level: NotifyLevel::Mentions,
        muted_until: None,
    };
    let muted = ConversationNotify {
        level: NotifyLevel::All,
        muted_until: Some(4_000_000_000_000),
    };
    store
        .put_conversation_notify(&user, &a, &mentions)
        .await
        .expect("write");
    store
        .put_conversation_notify(&user, &b, &mentions)
        .await
        .expect("write");
    store
        .put_conversation_notify(&user, &b, &muted)
        .await
        .expect("rewrite");
    assert_eq!(
        store.conversation_notify(&user, &a).await.expect("read"),
        Some(mentions)
    );
    let mut list = store.conversation_notifies(&user).await.expect("list");
    list.sort_by(|x, y| x.0.as_str().cmp(y.0.as_str()));
    let mut want = vec![(a.clone(), mentions), (b, muted)];
    want.sort_by(|x, y| x.0.as_str().cmp(y.0.as_str()));
    assert_eq!(list, want);
    let other = user_id("stranger");
    assert_eq!(
        store.conversation_notify(&other, &a).await.expect("read"),
        None
    );
}

/// Subscriptions: listed oldest first, one rewritten under its id stays
/// one, a delete says whether there was one, another user's are apart.
pub async fn check_push_subscriptions(store: &dyn MessageStore) {
    let user = user_id("subscriber");
    let sub = |n: u64| {
        PushSubscription {
        id: unique("sub"),
        endpoint: format!("https://push.example/{n}"),
        p256dh: "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM".into(),
        auth: "tBHItJI5svbpez7KI4CCXg".into(),
        created_at: 1_000 + n,
    }
    };
    let (first, second) = (sub(2), sub(1));
    assert!(store
        .push_subscriptions(&user)
        .await
        .expect("list")
        .is_empty());
    store
        .put_push_subscription(&user, &first)
        .await
        .expect("add");
    store
        .put_push_subscription(&user, &second)
        .await
        .expect("add");
    store
        .put_push_subscription(&user, &first)
        .await
        .expect("re-add");
    assert_eq!(
        store.push_subscriptions(&user).await.expect("list"),
        vec![second.clone(), first.clone()]
    );
    let other = user_id("other-subscriber");
    assert!(store
        .push_subscriptions(&other)
        .await
        .expect("list")
        .is_empty());
    assert!(!store
        .delete_push_subscription(&other, &first.id)
        .await
        .expect("delete another's"));
    assert!(store
        .delete_push_subscription(&user, &second.id)
        .await
        .expect("delete"));
    assert!(!store
        .delete_push_subscription(&user, &second.id)
        .await
        .expect("delete again"));
    assert_eq!(
        store.push_subscriptions(&user).await.expect("list"),
        vec![first]
    );
}
