//! Credentials and listed logins: none until written, then as written,
//! per user; logins listed under their user alone, updated in place and
//! forgotten when deleted.

use chat_protocol::now_ms;

use super::fixtures::user_id;
use crate::credentials::{Credentials, TotpState};
use crate::logins::LoginRecord;
use crate::MessageStore;

/// A user's credentials round-trip and are replaced whole.
pub async fn check_credentials(store: &dyn MessageStore) {
    let ann = user_id("cred-ann");
    let bob = user_id("cred-bob");
    assert_eq!(store.credentials(&ann).await.expect("read"), None);
    let mut c = Credentials {
        password_hash: Some("$argon2id$v=19$fake".into()),
        password_changed_at: 5,
        totp: Some(TotpState {
            secret: "JBSWY3DPEHPK3PXP".into(),
            confirmed: false,
            last_step: 0,
            recovery: vec!["aa".into(), "bb".into()],
        }),
    };
    store.put_credentials(&ann, &c).await.expect("put");
    assert_eq!(
        store.credentials(&ann).await.expect("read"),
        Some(c.clone())
    );
    assert_eq!(
        store.credentials(&bob).await.expect("read"),
        None,
        "per user"
    );
    if let Some(t) = c.totp.as_mut() {
        t.confirmed = true;
        t.last_step = 99;
        t.recovery.remove(0);
    }
    store.put_credentials(&ann, &c).await.expect("put again");
    assert_eq!(store.credentials(&ann).await.expect("read"), Some(c));

    // An address's owner: the last to verify it.
    let address = format!("{}@example.com", ann.as_str());
    assert_eq!(store.email_owner(&address).await.expect("read"), None);
    store.put_email_owner(&address, &ann).await.expect("put");
    assert_eq!(
        store.email_owner(&address).await.expect("read"),
        Some(ann.clone())
    );
    store.put_email_owner(&address, &bob).await.expect("put");
    assert_eq!(store.email_owner(&address).await.expect("read"), Some(bob));
}

/// Logins are listed per user, updated in place, and deleted.
pub async fn check_logins(store: &dyn MessageStore) {
    let ann = user_id("login-ann");
    let bob = user_id("login-bob");
    let now = now_ms();
    let login = |id: &str| LoginRecord {
        id: id.into(),
        created_at: now,
        last_used_at: now,
        expires_at: now + 3_600_000,
        user_agent: Some("test agent".into()),
        address: Some("127.0.0.1".into()),
    };
    assert!(store.logins(&ann).await.expect("list").is_empty());
    store.put_login(&ann, &login("l1")).await.expect("put");
    store.put_login(&ann, &login("l2")).await.expect("put");
    store.put_login(&bob, &login("l1")).await.expect("put");
    let mut listed = store.logins(&ann).await.expect("list");
    listed.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(listed, vec![login("l1"), login("l2")]);
    let mut used = login("l1");
    used.last_used_at = now + 10;
    store.put_login(&ann, &used).await.expect("update");
    assert_eq!(store.login(&ann, "l1").await.expect("read"), Some(used));
    assert_eq!(store.login(&ann, "l3").await.expect("read"), None);
    store.delete_login(&ann, "l1").await.expect("delete");
    let listed = store.logins(&ann).await.expect("list");
    assert_eq!(listed, vec![login("l2")]);
    assert_eq!(store.logins(&bob).await.expect("list").len(), 1, "per user");
}
