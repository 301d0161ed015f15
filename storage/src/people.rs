//! What a person adds to their account after making it: for now the
//! e-mail address (with whether it was verified) and the single-use tokens
//! mailed to prove it. Tokens are kept by their SHA-256, never as sent.

use async_trait::async_trait;
use chat_protocol::UserId;
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// A user's e-mail address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailAddress {
    /// As the user gave it.
    pub address: String,
    /// Whether a verification link sent to it was opened.
    pub verified: bool,
    /// When it was set or verified (Unix ms).
    pub updated_at: u64,
}

/// What a mailed token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenPurpose {
    /// Proves the address is the user's.
    VerifyEmail,
    /// Sets a new password.
    ResetPassword,
}

/// A token mailed to a user, stored under the SHA-256 of its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailToken {
    /// Hex SHA-256 of the secret sent.
    pub hash: String,
    /// Whose.
    pub user: UserId,
    /// The address it went to (a verification holds only for it).
    pub address: String,
    /// What for.
    pub purpose: TokenPurpose,
    /// Unusable after this (Unix ms).
    pub expires_at: u64,
}

/// E-mail addresses and mailed tokens.
#[async_trait]
pub trait PeopleStore: Send + Sync {
    /// `user`'s address, if they gave one.
    async fn email(&self, user: &UserId) -> Result<Option<EmailAddress>, StoreError>;

    /// Sets `user`'s address.
    async fn put_email(&self, user: &UserId, email: &EmailAddress) -> Result<(), StoreError>;

    /// Keeps a token until it is taken or expires.
    async fn put_email_token(&self, token: &EmailToken) -> Result<(), StoreError>;

    /// Takes the token stored under `hash`: of two takers, one gets it
    /// (single use), even on different nodes. Expired tokens are returned
    /// too; the caller checks `expires_at`.
    async fn take_email_token(&self, hash: &str) -> Result<Option<EmailToken>, StoreError>;
}
