//! The conversation object and membership roles.

use serde::{Deserialize, Serialize};

use crate::ids::{ConversationId, UserId};
use crate::message::Message;

/// What sort of conversation this is; it decides who may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(test, derive(ts_rs::TS))]
pub enum ConversationKind {
    /// Exactly two users; at most one per pair.
    Direct,
    /// Any member writes.
    Group,
    /// Members read; owners and admins write.
    Channel,
}

/// A member's rights in a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(test, derive(ts_rs::TS))]
pub enum Role {
    /// The creator of a group or channel.
    Owner,
    /// May invite and kick, and write to channels.
    Admin,
    /// Reads, and writes unless the conversation is a channel.
    Member,
}

/// The wire names, for stores that keep kinds and roles as text: one table
/// here, pinned to the serde names by a test, instead of one per backend.
macro_rules! wire_names {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The name clients see in JSON.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }

            /// The value whose `as_str` is `name`.
            pub fn from_name(name: &str) -> Option<$ty> {
                match name {
                    $($name => Some($ty::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

wire_names!(ConversationKind {
    Direct => "direct",
    Group => "group",
    Channel => "channel",
});

wire_names!(Role {
    Owner => "owner",
    Admin => "admin",
    Member => "member",
});

impl Role {
    /// Whether this role may invite and kick.
    pub fn moderates(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

/// One member and its role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Member {
    /// The member.
    pub user: UserId,
    /// Its rights.
    pub role: Role,
}

/// A conversation as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Conversation {
    /// Its id.
    pub id: ConversationId,
    /// Direct, group or channel.
    pub kind: ConversationKind,
    /// An optional title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Every member with its role, or, in a conversation of more than
    /// [`INLINE_MEMBERS`] members, the first of them (page through the
    /// rest with the `members` request).
    pub members: Vec<Member>,
    /// How many members it has (in what clients are shown; see
    /// [`Conversation::for_clients`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_count: Option<u32>,
    /// Creation time, Unix milliseconds.
    pub created_at: u64,
    /// Raised by every send, edit, delete and reaction change in it; 0 in
    /// what the store returns (the conversation's actor knows the current
    /// one and fills it in).
    #[serde(default)]
    pub rev: u64,
}

/// Members a conversation object lists inline; a larger conversation lists
/// its first ones and its count, so that an object (and every event that
/// carries one) stays small whatever the conversation's size.
pub const INLINE_MEMBERS: usize = 100;

impl Conversation {
    /// The conversation as clients are shown it: at most [`INLINE_MEMBERS`]
    /// members, and their count.
    pub fn for_clients(&self) -> Conversation {
        Conversation {
            id: self.id.clone(),
            kind: self.kind,
            title: self.title.clone(),
            members: self.members.iter().take(INLINE_MEMBERS).cloned().collect(),
            member_count: Some(self.members.len().min(u32::MAX as usize) as u32),
            created_at: self.created_at,
            rev: self.rev,
        }
    }

    /// The role of `user`, if a member.
    pub fn role_of(&self, user: &UserId) -> Option<Role> {
        self.members
            .iter()
            .find(|m| &m.user == user)
            .map(|m| m.role)
    }
}

impl ConversationKind {
    /// The notification setting of a member who never chose one: channels
    /// notify only mentions, where a broadcast would otherwise ring
    /// everyone.
    pub fn default_notify(self) -> crate::notify::ConversationNotify {
        use crate::notify::{ConversationNotify, NotifyLevel};
        ConversationNotify {
            level: match self {
                ConversationKind::Channel => NotifyLevel::Mentions,
                _ => NotifyLevel::All,
            },
            muted_until: None,
        }
    }
}

/// An entry of the `conversations` reply: the conversation, its newest message
/// and how many messages the reader has not read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct ConversationSummary {
    /// The conversation.
    #[serde(flatten)]
    pub conversation: Conversation,
    /// Its newest message, if any.
    #[serde(default)]
    pub last_message: Option<Message>,
    /// Messages after the reader's read marker, sent by others.
    #[serde(default)]
    pub unread: u64,
    /// Of those, the ones that mention the reader.
    #[serde(default)]
    pub mentions: u64,
    /// What of it notifies the reader (added in 1.2; absent from older
    /// servers' lists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<crate::notify::ConversationNotify>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_are_the_serde_names() {
        for k in ConversationKind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
            assert_eq!(ConversationKind::from_name(k.as_str()), Some(*k));
        }
        for r in Role::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
            assert_eq!(Role::from_name(r.as_str()), Some(*r));
        }
        assert_eq!(Role::from_name("Owner"), None);
    }
}
