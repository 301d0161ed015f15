//! The contract of [`AccessStore`](crate::AccessStore): the facts read
//! together are the facts each domain's own read gives.

use super::fixtures::{unique, user_id};
use crate::{LoginState, MessageStore, RefreshRecord, UserFlag, UserFlags, UserRecord};

/// An unknown user with unknown logins; then a user who exists, is
/// suspended, with one active and one revoked login: each fact as the
/// domain reads give it, the logins in the order asked.
pub async fn check_access_facts(store: &dyn MessageStore) {
    let user = user_id("gated");
    let (active, revoked, unknown) = (unique("on"), unique("off"), unique("none"));
    let facts = store
        .access_facts(&user, &[&active, &unknown])
        .await
        .expect("read");
    assert!(!facts.user_exists);
    assert_eq!(facts.flags, UserFlags::default());
    assert_eq!(facts.logins, vec![None, None]);

    store
        .create_user(&UserRecord {
            id: user.clone(),
            password_hash: None,
            display_name: None,
            created_at: 1,
        })
        .await
        .expect("create");
    store
        .set_user_flag(&user, UserFlag::Suspended, true, 1_000)
        .await
        .expect("suspend");
    for family in [&active, &revoked] {
        let token = RefreshRecord {
            token_hash: unique("hash"),
            user: user.clone(),
            family: family.clone(),
            expires_at: u64::MAX / 2,
        };
        store.put_refresh(&token).await.expect("put");
        if family == &revoked {
            store
                .revoke_refresh_family(&token.token_hash)
                .await
                .expect("revoke");
        }
    }
    let facts = store
        .access_facts(&user, &[&revoked, &unknown, &active])
        .await
        .expect("read");
    assert!(facts.user_exists);
    assert_eq!(facts.flags, store.user_flags(&user).await.expect("flags"));
    assert!(facts.flags.suspended);
    assert_eq!(
        facts.logins,
        vec![Some(LoginState::Revoked), None, Some(LoginState::Active)]
    );
    let none = store.access_facts(&user, &[]).await.expect("read");
    assert!(none.logins.is_empty() && none.user_exists);
}
