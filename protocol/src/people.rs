//! Who a user keeps close (contacts), keeps away (blocks), and who may start
//! a direct conversation with them or see them online (privacy). When A
//! blocks B: B cannot start a direct conversation with A, write in their
//! direct conversation, or invite A anywhere; B stops seeing A's presence;
//! A is not notified of B's messages. Group and channel messages still
//! reach both.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::UserId;

/// Most contacts one user keeps.
pub const MAX_CONTACTS: usize = 1_000;
/// Most users one user blocks.
pub const MAX_BLOCKS: usize = 1_000;

/// Longest status text, in characters.
pub const MAX_STATUS_TEXT_CHARS: usize = 140;
/// Shortest prefix a user lookup takes: shorter ones would list the
/// directory.
pub const MIN_LOOKUP_PREFIX_CHARS: usize = 2;
/// Most users one lookup answers.
pub const MAX_LOOKUP_RESULTS: usize = 50;

/// What others see of a user (`GET /v1/users/{id}`, the `profile` event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Profile {
    /// Whose.
    #[serde(rename = "id")]
    pub user: UserId,
    /// The name to show (the id when they set none).
    pub display_name: String,
    /// A line of their own, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_text: Option<String>,
    /// A media id (an image of theirs), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    /// The avatar's thumbnail as a signed link (valid at least an hour),
    /// for an `<img>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
}

/// Who a privacy setting lets in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// Anyone (who has not been blocked).
    #[default]
    Everyone,
    /// Only the user's contacts.
    Contacts,
    /// No one.
    Nobody,
}

/// `PUT /v1/me/privacy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Privacy {
    /// Who may start a direct conversation with the user.
    pub direct_messages: Audience,
    /// Who sees the user online.
    pub presence: Audience,
}

/// A user's contacts, blocks and privacy, kept as one record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relations {
    /// Users added as contacts.
    pub contacts: BTreeSet<UserId>,
    /// Users blocked.
    pub blocks: BTreeSet<UserId>,
    /// Who may reach or see the user.
    pub privacy: Privacy,
}

impl Relations {
    /// Whether the user blocked `other`.
    pub fn blocks(&self, other: &UserId) -> bool {
        self.blocks.contains(other)
    }

    fn admits(&self, audience: Audience, other: &UserId) -> bool {
        !self.blocks(other)
            && match audience {
                Audience::Everyone => true,
                Audience::Contacts => self.contacts.contains(other),
                Audience::Nobody => false,
            }
    }

    /// Whether `other` may start a direct conversation with the user.
    pub fn admits_direct_from(&self, other: &UserId) -> bool {
        self.admits(self.privacy.direct_messages, other)
    }

    /// Whether `other` sees the user's presence.
    pub fn shows_presence_to(&self, other: &UserId) -> bool {
        self.admits(self.privacy.presence, other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    #[test]
    fn blocks_and_privacy_decide_who_gets_in() {
        let mut r = Relations::default();
        assert!(r.admits_direct_from(&u("bob")));
        assert!(r.shows_presence_to(&u("bob")));
        r.blocks.insert(u("bob"));
        assert!(!r.admits_direct_from(&u("bob")));
        assert!(!r.shows_presence_to(&u("bob")));
        r.contacts.insert(u("cat"));
        r.privacy.direct_messages = Audience::Contacts;
        assert!(r.admits_direct_from(&u("cat")));
        assert!(!r.admits_direct_from(&u("dan")));
        assert!(r.shows_presence_to(&u("dan")));
        r.privacy.presence = Audience::Nobody;
        assert!(!r.shows_presence_to(&u("cat")));
        // A blocked contact is blocked.
        r.blocks.insert(u("cat"));
        assert!(!r.admits_direct_from(&u("cat")));
    }

    #[test]
    fn privacy_speaks_the_contracts_words() {
        let p: Privacy =
            serde_json::from_str(r#"{"direct_messages":"contacts","presence":"nobody"}"#).unwrap();
        assert_eq!(p.direct_messages, Audience::Contacts);
        assert_eq!(p.presence, Audience::Nobody);
        assert!(serde_json::from_str::<Privacy>(
            r#"{"direct_messages":"friends","presence":"nobody"}"#
        )
        .is_err());
    }
}
