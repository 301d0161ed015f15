//! The message object.

use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize};

use crate::ids::{ClientMsgId, ConversationId, MessageId, UserId};

/// One stored chat message, as every reader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Unique in the cluster, increasing within the conversation.
    pub id: MessageId,
    /// The conversation it belongs to.
    pub conversation: ConversationId,
    /// Who sent it.
    pub sender: UserId,
    /// The text (or a media reference for other kinds).
    pub body: String,
    /// `"text"` unless the client said otherwise.
    #[serde(default)]
    pub kind: MessageKind,
    /// Acceptance time, server clock, Unix milliseconds.
    pub ts: u64,
    /// The sender's idempotency key.
    pub client_msg_id: ClientMsgId,
    /// The message this one answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<MessageId>,
}

/// What a message body holds: 1 to 32 bytes of `[a-z0-9_.-]`, `text` by default.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MessageKind(Box<str>);

impl MessageKind {
    /// Validates and wraps a kind.
    pub fn new(s: &str) -> Option<Self> {
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
            });
        ok.then(|| MessageKind(s.into()))
    }
    /// The kind as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Kinds only the server writes (clients may not send them).
    pub fn is_reserved(&self) -> bool {
        &*self.0 == "system"
    }
}

impl Default for MessageKind {
    fn default() -> Self {
        MessageKind("text".into())
    }
}

impl fmt::Debug for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl Serialize for MessageKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for MessageKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        MessageKind::new(&s)
            .ok_or_else(|| de::Error::custom("kind must be 1 to 32 bytes of a-z 0-9 _ . -"))
    }
}
