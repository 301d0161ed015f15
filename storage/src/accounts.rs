//! Accounts and logins: user records, refresh tokens and the logins (token
//! families) they rotate in, and the secrets every node of a store signs
//! with.

use async_trait::async_trait;
use chat_protocol::UserId;
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// A user account. Users that authenticate with an outside identity provider
/// get a record without a password the first time they connect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// The id (the JWT `sub`), which is also the login name.
    pub id: UserId,
    /// argon2 PHC string; `None` for users from an outside identity provider.
    pub password_hash: Option<String>,
    /// Shown instead of the id when set.
    pub display_name: Option<String>,
    /// Unix milliseconds.
    pub created_at: u64,
}

/// A refresh token, stored by the SHA-256 of its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRecord {
    /// Hex SHA-256 of the token.
    pub token_hash: String,
    /// Whose it is.
    pub user: UserId,
    /// All tokens rotated from one login share a family; reuse of a rotated
    /// token revokes the whole family.
    pub family: String,
    /// Unix milliseconds.
    pub expires_at: u64,
}

/// A login: the family of refresh tokens rotated from one sign-in, which
/// access tokens name in `sid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginState {
    /// Its tokens rotate; access tokens naming it are good.
    Active,
    /// Logged out, or a rotated token was presented again: for good.
    Revoked,
}

/// The result of presenting a refresh token for rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The old token is now used up and the new one stored.
    Rotated {
        /// The token's user.
        user: UserId,
    },
    /// Unknown, expired, or its family is revoked.
    Invalid,
    /// It had been rotated already: the family is revoked now.
    Reused,
}

/// Users, refresh tokens, logins and shared secrets. Unlike the rest of a
/// store, these writes may race (two sign-ups of one name, two rotations of
/// one token): the store itself decides between them, atomically.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Creates a user; [`StoreError::Conflict`] if the id is taken.
    async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError>;

    /// A user by id.
    async fn user(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError>;

    /// Stores a new refresh token.
    async fn put_refresh(&self, record: &RefreshRecord) -> Result<(), StoreError>;

    /// Atomically uses up the token `old_hash` and stores `new` in its family
    /// (`new.family` and `new.user` are taken from the old token). `now` decides
    /// expiry.
    async fn rotate_refresh(
        &self,
        old_hash: &str,
        new: &RefreshRecord,
        now: u64,
    ) -> Result<Rotation, StoreError>;

    /// Revokes the family of the token `token_hash`; returns its user, if the
    /// token was known.
    async fn revoke_refresh_family(&self, token_hash: &str) -> Result<Option<UserId>, StoreError>;

    /// The state of a login (refresh family), if it was ever stored.
    async fn login_state(&self, family: &str) -> Result<Option<LoginState>, StoreError>;

    /// Keeps `candidate` as the secret `name` unless one is kept already,
    /// and returns the one kept, so that every node sharing this store signs
    /// with one secret. `None` from a store on local disk, which keeps no
    /// secrets: the node keeps them in its data directory beside it.
    async fn keep_secret(&self, name: &str, candidate: &str) -> Result<Option<String>, StoreError> {
        let _ = (name, candidate);
        Ok(None)
    }
}
