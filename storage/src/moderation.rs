//! What operators set on accounts and what they did: account flags (an
//! admin, a suspended user) and the audit log of admin actions. Kept apart
//! from [`crate::UserRecord`], which is written once when the account is
//! made, because flags change and every backend merges them by time.

use async_trait::async_trait;
use chat_protocol::UserId;
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// A flag an operator sets or clears on an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserFlag {
    /// May use the admin console and the `/v1/admin/` API.
    Admin,
    /// May not sign in, refresh or connect.
    Suspended,
}

impl UserFlag {
    /// Every flag.
    pub const ALL: [UserFlag; 2] = [UserFlag::Admin, UserFlag::Suspended];

    /// The flag's name in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            UserFlag::Admin => "admin",
            UserFlag::Suspended => "suspended",
        }
    }

    /// The flag named `name` by [`UserFlag::as_str`].
    pub fn from_name(name: &str) -> Option<UserFlag> {
        UserFlag::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

/// An account's flags; all clear for an account no operator touched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserFlags {
    /// [`UserFlag::Admin`].
    pub admin: bool,
    /// [`UserFlag::Suspended`].
    pub suspended: bool,
}

impl UserFlags {
    /// Sets one flag.
    pub fn set(&mut self, flag: UserFlag, on: bool) {
        match flag {
            UserFlag::Admin => self.admin = on,
            UserFlag::Suspended => self.suspended = on,
        }
    }
}

/// One admin action, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Unix milliseconds.
    pub at: u64,
    /// Random: tells apart two entries of one millisecond.
    pub id: u64,
    /// Who did it.
    pub admin: UserId,
    /// What (`drain`, `disconnect`, `suspend`, `unsuspend`, `grant`, ...).
    pub action: String,
    /// On what: a user id or a node name.
    pub target: String,
    /// The node that carried it out.
    pub node: String,
}

/// Account flags and the audit log.
#[async_trait]
pub trait ModerationStore: Send + Sync {
    /// Sets or clears `flag` on `user` as of `at_ms` (Unix ms): of two
    /// settings of one flag, the later `at_ms` wins wherever they land
    /// first (on a tie, the one stored last here).
    async fn set_user_flag(
        &self,
        user: &UserId,
        flag: UserFlag,
        on: bool,
        at_ms: u64,
    ) -> Result<(), StoreError>;

    /// A user's flags (all clear when never set).
    async fn user_flags(&self, user: &UserId) -> Result<UserFlags, StoreError>;

    /// Records an admin action.
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;

    /// The newest `limit` admin actions, newest first.
    async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;
}
