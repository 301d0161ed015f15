//! What the account routes read and answer: the bodies of register and
//! login (their passwords kept out of `Debug`), and the tokens and user
//! they answer with.

use std::fmt;

use chat_protocol::UserId;
use chat_storage::UserRecord;
use serde::{Deserialize, Serialize};

/// Body of `POST /register`.
#[derive(Clone, Deserialize)]
pub struct RegisterRequest {
    /// The wanted user id.
    pub username: String,
    /// 8 to 1024 bytes.
    pub password: String,
    /// Up to 128 bytes; blank means none.
    #[serde(default)]
    pub display_name: Option<String>,
}

impl fmt::Debug for RegisterRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisterRequest")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("display_name", &self.display_name)
            .finish()
    }
}

/// Body of `POST /login`.
#[derive(Clone, Deserialize)]
pub struct LoginRequest {
    /// The user id.
    pub username: String,
    /// The password.
    pub password: String,
    /// With a second factor: the authenticator's code of now.
    #[serde(default)]
    pub totp: Option<String>,
    /// With a second factor: one of the recovery codes instead.
    #[serde(default)]
    pub recovery_code: Option<String>,
}

impl fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginRequest")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("totp", &self.totp.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// What register, login and refresh answer.
#[derive(Clone, Serialize)]
pub struct TokenSet {
    /// The authenticated user.
    pub user: UserView,
    /// JWT for the WebSocket and the HTTP API.
    pub access_token: String,
    /// Opaque, single-use token for `refresh` and `logout`.
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The login the tokens belong to (the access token's `sid`).
    #[serde(skip)]
    pub login: String,
    /// When the refresh token stops working (Unix ms).
    #[serde(skip)]
    pub refresh_expires_at: u64,
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSet")
            .field("user", &self.user)
            .field("access_token", &"[redacted]")
            .field("refresh_token", &"[redacted]")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// A user as shown to clients: the record without its password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserView {
    /// The user id.
    pub id: UserId,
    /// Shown instead of the id when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Unix milliseconds.
    pub created_at: u64,
}

impl From<&UserRecord> for UserView {
    fn from(record: &UserRecord) -> Self {
        UserView {
            id: record.id.clone(),
            display_name: record.display_name.clone(),
            created_at: record.created_at,
        }
    }
}
