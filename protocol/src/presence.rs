//! The presence object.

use serde::{Deserialize, Serialize};

use crate::ids::UserId;

/// Online while at least one connection of the user lives on a live node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(test, derive(ts_rs::TS))]
pub enum Status {
    /// At least one connection.
    Online,
    /// None.
    Offline,
}

/// A user's presence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Presence {
    /// The user.
    pub user: UserId,
    /// Online or offline.
    pub status: Status,
    /// When the user was last online, Unix milliseconds, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<u64>,
}
