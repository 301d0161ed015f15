//! The contract of [`PeopleStore`](crate::PeopleStore): an address reads
//! back as last written; a token is taken once, whoever asks twice or at
//! once.

use super::fixtures::{unique, user_id};
use crate::people::{EmailAddress, EmailToken, TokenPurpose};
use crate::MessageStore;

/// Addresses per user, and single-use tokens.
pub async fn check_emails_and_tokens(store: &dyn MessageStore) {
    let user = user_id("mailed");
    assert_eq!(store.email(&user).await.expect("read"), None);
    let mut email = EmailAddress {
        address: format!("{}@example.com", unique("who")),
        verified: false,
        updated_at: 1_000,
    };
    store.put_email(&user, &email).await.expect("write");
    assert_eq!(store.email(&user).await.expect("read"), Some(email.clone()));
    email.verified = true;
    email.updated_at = 2_000;
    store.put_email(&user, &email).await.expect("verify");
    assert_eq!(store.email(&user).await.expect("read"), Some(email.clone()));
    assert_eq!(store.email(&user_id("unmailed")).await.expect("read"), None);

    let token = EmailToken {
        hash: unique("hash"),
        user: user.clone(),
        address: email.address.clone(),
        purpose: TokenPurpose::VerifyEmail,
        expires_at: 4_000_000_000_000,
    };
    assert_eq!(
        store.take_email_token(&token.hash).await.expect("take"),
        None
    );
    store.put_email_token(&token).await.expect("keep");
    // Two takers at once: exactly one gets it.
    let (a, b) = tokio::join!(
        store.take_email_token(&token.hash),
        store.take_email_token(&token.hash)
    );
    let taken: Vec<EmailToken> = [a.expect("take"), b.expect("take")]
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(taken, vec![token.clone()], "a token is taken once");
    assert_eq!(
        store.take_email_token(&token.hash).await.expect("again"),
        None
    );
}
