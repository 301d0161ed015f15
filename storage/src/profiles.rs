//! What a user shows others of themselves (display name, status text,
//! avatar), and the index that finds users by the start of their id or
//! display name, for starting conversations.
//!
//! The index holds one entry per user for their id and one for their
//! display name, each under the name in lower case. Entries are written
//! beside the profile, not in one transaction with it on every backend, so
//! a lookup may meet an entry of a name since changed: readers check each
//! candidate against the profile it names.

use async_trait::async_trait;
use chat_protocol::UserId;
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// A user's profile as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileRecord {
    /// Shown instead of the id when set.
    #[serde(default)]
    pub display_name: Option<String>,
    /// A line of their own.
    #[serde(default)]
    pub status_text: Option<String>,
    /// A media id.
    #[serde(default)]
    pub avatar: Option<String>,
    /// Unix milliseconds of the last change.
    #[serde(default)]
    pub updated_at: u64,
}

/// An entry of the name index: the name (lower case) and whose it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NameEntry {
    /// The id or display name, in lower case.
    pub name: String,
    /// Whose.
    pub user: UserId,
}

/// How a name is kept in the index (and a prefix looked up): lower case.
pub fn index_name(name: &str) -> String {
    name.to_lowercase()
}

/// The names `user` is found by with `profile`: their id, and their
/// display name when set and different.
pub fn names_of(user: &UserId, profile: Option<&ProfileRecord>) -> Vec<String> {
    let mut names = vec![index_name(user.as_str())];
    if let Some(name) = profile.and_then(|p| p.display_name.as_deref()) {
        let name = index_name(name);
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// Profiles and the name index.
#[async_trait]
pub trait ProfileStore: Send + Sync {
    /// `user`'s profile; `None` until first written.
    async fn profile(&self, user: &UserId) -> Result<Option<ProfileRecord>, StoreError>;

    /// Replaces `user`'s profile with `new`, moving their index entries
    /// from the names of `old` (what the caller read before) to those of
    /// `new`.
    async fn put_profile(
        &self,
        user: &UserId,
        old: Option<&ProfileRecord>,
        new: &ProfileRecord,
    ) -> Result<(), StoreError>;

    /// Index entries whose name starts with `prefix` (lower case, at least
    /// two characters), in name order, at most `limit`.
    async fn find_names(&self, prefix: &str, limit: usize) -> Result<Vec<NameEntry>, StoreError>;
}
