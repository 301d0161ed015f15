//! Logins bound to their user, and the end of every login of an account at
//! once when an operator suspends it.
//!
//! A login (a refresh-token family, which access tokens name in `sid`) is
//! written `<generation>-<nonce>-<tag>`, the tag a hash of the user, the
//! generation and the nonce. The store keeps a login's state by id alone,
//! not whose it is; the tag is what ties it to its user: a token whose `sid`
//! is another user's live login fails the tag, whoever signed the token,
//! and only this node makes ids that the store holds live, each for the
//! user it signs in.
//!
//! The store lists no user's logins either, so a suspension cannot revoke
//! them one by one. Instead each login belongs to a generation of its
//! user's logins, and a suspension ends the current generation: it revokes
//! a marker login derived from the user and the generation, and the store's
//! revocations are for good. A login whose generation's marker is revoked
//! is refused like a revoked one; sign-ins after the suspension belong to
//! the next generation, the first whose marker is not revoked. That costs
//! one lookup per token check, and at sign-in one per past suspension of
//! the account.

use chat_protocol::{now_ms, UserId};
use chat_storage::{LoginState, MessageStore, RefreshRecord, StoreError};
use sha2::{Digest, Sha256};

use super::secrets::{hash_token, random_bytes};

/// Random bytes of a login id: as many as the ids had before they named
/// their user.
const NONCE_BYTES: usize = 16;
/// Bytes of the tag: a collision would have to be found for a live login.
const TAG_BYTES: usize = 16;

fn tag(user: &UserId, generation: u32, nonce: &str) -> String {
    let mut h = Sha256::new();
    for part in ["chat login", user.as_str(), &generation.to_string(), nonce] {
        h.update(part.as_bytes());
        // Parts cannot run into each other: none holds a NUL.
        h.update([0]);
    }
    hex::encode(&h.finalize()[..TAG_BYTES])
}

fn is_hex(s: &str, bytes: usize) -> bool {
    s.len() == bytes * 2 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A new login id of `user`, in `generation`.
pub(super) fn new_login(user: &UserId, generation: u32) -> String {
    let nonce = hex::encode(random_bytes::<NONCE_BYTES>());
    let tag = tag(user, generation, &nonce);
    format!("{generation}-{nonce}-{tag}")
}

/// Whether `login` is written as a login id at all (of anyone).
pub(super) fn is_login_id(login: &str) -> bool {
    let mut parts = login.split('-');
    let well_formed = match (parts.next(), parts.next(), parts.next()) {
        (Some(generation), Some(nonce), Some(tag)) => {
            generation.parse::<u32>().is_ok()
                && is_hex(nonce, NONCE_BYTES)
                && is_hex(tag, TAG_BYTES)
        }
        _ => false,
    };
    well_formed && parts.next().is_none()
}

/// The generation of `login` when it is a login of `user`; `None` when it
/// is another user's, or no login id of this node (those made before ids
/// named their user included: their tokens are refused, and their users
/// sign in again).
pub(super) fn generation_of(login: &str, user: &UserId) -> Option<u32> {
    if !is_login_id(login) {
        return None;
    }
    let mut parts = login.splitn(3, '-');
    let generation: u32 = parts.next()?.parse().ok()?;
    let nonce = parts.next()?;
    (parts.next()? == tag(user, generation, nonce)).then_some(generation)
}

/// The marker whose revocation ends `generation` of `user`'s logins. Its
/// form is no login id's, so no token can name it as its login.
pub(super) fn marker(user: &UserId, generation: u32) -> String {
    let mut h = Sha256::new();
    h.update(b"chat login generation\0");
    h.update(user.as_str().as_bytes());
    format!(
        "ended-{generation}-{}",
        hex::encode(&h.finalize()[..TAG_BYTES])
    )
}

/// Whether a suspension ended `generation` of `user`'s logins.
pub(super) async fn ended(
    store: &dyn MessageStore,
    user: &UserId,
    generation: u32,
) -> Result<bool, StoreError> {
    Ok(store.login_state(&marker(user, generation)).await? == Some(LoginState::Revoked))
}

/// The generation new logins of `user` belong to.
pub(super) async fn current(store: &dyn MessageStore, user: &UserId) -> Result<u32, StoreError> {
    let mut generation = 0;
    while ended(store, user, generation).await? {
        generation += 1;
    }
    Ok(generation)
}

/// Ends every login of `user` made so far, for good.
pub(super) async fn end_all(store: &dyn MessageStore, user: &UserId) -> Result<(), StoreError> {
    let generation = current(store, user).await?;
    revoke(store, user, &marker(user, generation)).await
}

/// Revokes the login (or marker) `family` of `user`, for good.
pub(super) async fn revoke(
    store: &dyn MessageStore,
    user: &UserId,
    family: &str,
) -> Result<(), StoreError> {
    // The store revokes a login through one of its tokens: it gets one
    // that nobody holds (its secret is not kept), expired from the start.
    // (A revoked login stays revoked: storing a token does not revive it.)
    let token = hex::encode(random_bytes::<32>());
    let record = RefreshRecord {
        token_hash: hash_token(&token),
        user: user.clone(),
        family: family.to_owned(),
        expires_at: now_ms(),
    };
    store.put_refresh(&record).await?;
    store.revoke_refresh_family(&record.token_hash).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_id_names_its_user_and_generation() {
        let ann = UserId::new("ann").unwrap();
        let bob = UserId::new("bob").unwrap();
        let login = new_login(&ann, 3);
        assert!(is_login_id(&login), "{login}");
        assert_eq!(generation_of(&login, &ann), Some(3));
        assert_eq!(generation_of(&login, &bob), None, "not bob's");
        let other_generation = login.replacen('3', "4", 1);
        assert_eq!(generation_of(&other_generation, &ann), None);
        // Ids from before logins named their user: 32 hex digits.
        assert_eq!(generation_of(&"ab".repeat(16), &ann), None);
        assert!(!is_login_id(&marker(&ann, 0)), "a marker is no login");
        assert_ne!(marker(&ann, 0), marker(&bob, 0));
        assert_ne!(marker(&ann, 0), marker(&ann, 1));
    }
}
