//! The sign-ins of a user, as they are listed to them (`GET
//! /v1/me/sessions`): when each began, when it was last used, from what
//! client and address. A login's state (live or revoked) is the accounts'
//! domain; this is what a person needs to recognise and end one.

use async_trait::async_trait;
use chat_protocol::UserId;
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// One login (a refresh-token family) as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginRecord {
    /// The login's id (the access tokens' `sid`).
    pub id: String,
    /// Unix ms of the sign-in.
    pub created_at: u64,
    /// Unix ms of its last refresh.
    pub last_used_at: u64,
    /// Unix ms after which its refresh token no longer works: the record
    /// may be forgotten then.
    pub expires_at: u64,
    /// The client's `User-Agent`, cut short.
    #[serde(default)]
    pub user_agent: Option<String>,
    /// The client's address.
    #[serde(default)]
    pub address: Option<String>,
}

/// Logins by user.
#[async_trait]
pub trait LoginStore: Send + Sync {
    /// `user`'s listed logins, in any order (expired ones may be among
    /// them until deleted).
    async fn logins(&self, user: &UserId) -> Result<Vec<LoginRecord>, StoreError>;

    /// One of `user`'s listed logins.
    async fn login(&self, user: &UserId, id: &str) -> Result<Option<LoginRecord>, StoreError>;

    /// Lists (or updates) a login of `user`.
    async fn put_login(&self, user: &UserId, login: &LoginRecord) -> Result<(), StoreError>;

    /// Forgets a login of `user` (ended or expired).
    async fn delete_login(&self, user: &UserId, id: &str) -> Result<(), StoreError>;
}
