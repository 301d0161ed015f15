//! The contract of [`AccountStore`](crate::AccountStore): users, refresh
//! token rotation and revocation, logins.

use chat_protocol::UserId;

use super::fixtures::{unique, user_id};
use crate::{LoginState, MessageStore, RefreshRecord, Rotation, StoreError, UserRecord};

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
