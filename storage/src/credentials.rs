//! What proves a user is who they say, beyond the account record: the
//! password as last changed, and the second factor (TOTP, RFC 6238) with
//! its recovery codes. One record per user, written whole by the user's
//! own requests (a sign-in writes the TOTP step it used up).

use async_trait::async_trait;
use chat_protocol::UserId;
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// A user's credentials, when they changed anything since sign-up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// argon2 PHC string; supersedes the account record's once set.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// Unix ms of the last password change or reset (0: never). Logins
    /// made before it that are not listed are ended by it.
    #[serde(default)]
    pub password_changed_at: u64,
    /// The second factor, enrolled or pending.
    #[serde(default)]
    pub totp: Option<TotpState>,
}

/// A TOTP second factor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TotpState {
    /// The shared secret, base32.
    pub secret: String,
    /// Whether the user proved they hold it: until then sign-in does not
    /// ask for a code.
    pub confirmed: bool,
    /// The last 30 s step whose code was accepted: codes of it and of
    /// earlier steps are refused (each code works once).
    #[serde(default)]
    pub last_step: u64,
    /// Hex SHA-256 of the recovery codes not used yet.
    #[serde(default)]
    pub recovery: Vec<String>,
}

/// Credentials by user, and who verified which address (what a password
/// reset and a sign-in by e-mail start from).
#[async_trait]
pub trait CredentialStore: Send + Sync {
    /// `user`'s record; `None` until first written.
    async fn credentials(&self, user: &UserId) -> Result<Option<Credentials>, StoreError>;

    /// Replaces `user`'s record.
    async fn put_credentials(&self, user: &UserId, c: &Credentials) -> Result<(), StoreError>;

    /// Who last verified `address` (lower case). The answer may be stale
    /// (they changed address since): callers check the user's address.
    async fn email_owner(&self, address: &str) -> Result<Option<UserId>, StoreError>;

    /// Notes that `user` verified `address` (lower case).
    async fn put_email_owner(&self, address: &str, user: &UserId) -> Result<(), StoreError>;
}
