//! The message object.

use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize};

use crate::ids::{ClientMsgId, ConversationId, MessageId, UserId};
use crate::media::Attachment;

/// One stored chat message, as every reader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
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
    /// The message this one answers (of the same conversation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<MessageId>,
    /// The conversation revision of this message's last change: its send,
    /// or its latest edit, delete or reaction change. 0 for messages stored
    /// before revisions existed.
    #[serde(default)]
    pub rev: u64,
    /// When it was last edited, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<u64>,
    /// Deleted: the body is empty and the reactions and mentions are gone.
    #[serde(default)]
    pub deleted: bool,
    /// Reactions, each emoji in the order it was first used.
    #[serde(default)]
    pub reactions: Vec<Reaction>,
    /// Members named with `@user` in the body, in order of first mention.
    #[serde(default)]
    pub mentions: Vec<UserId>,
    /// Files it carries (at most [`crate::media::MAX_ATTACHMENTS`]); gone
    /// when it is deleted (the node then releases their bytes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

/// One emoji's reactions to a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Reaction {
    /// 1 to [`MAX_EMOJI_BYTES`] bytes.
    pub emoji: String,
    /// How many users reacted with it.
    pub count: u32,
    /// Who, in the order they reacted. Stored with every reacting user (that
    /// is what makes a reaction idempotent per user and lets the eleventh
    /// move up when one of the first ten takes theirs back); clients are
    /// shown the first [`SHOWN_REACTORS`] ([`Message::for_clients`]).
    pub users: Vec<UserId>,
}

/// Longest emoji a reaction may carry, in bytes.
pub const MAX_EMOJI_BYTES: usize = 32;
/// Most distinct emoji on one message.
pub const MAX_DISTINCT_EMOJI: usize = 20;
/// Reacting users a client is shown per emoji.
pub const SHOWN_REACTORS: usize = 10;
/// Most reactions (user, emoji pairs) one message holds: its stored state
/// lists every reacting user, so this bounds a message's size.
pub const MAX_REACTIONS_PER_MESSAGE: usize = 5_000;
/// Most users one message mentions.
pub const MAX_MENTIONS: usize = 50;

impl Message {
    /// The message as clients are shown it: at most [`SHOWN_REACTORS`] users
    /// per reaction. Borrowed when there is nothing to cut (the common case,
    /// so a send costs no copy).
    pub fn for_clients(&self) -> std::borrow::Cow<'_, Message> {
        if self
            .reactions
            .iter()
            .all(|r| r.users.len() <= SHOWN_REACTORS)
        {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut m = self.clone();
        for r in &mut m.reactions {
            r.users.truncate(SHOWN_REACTORS);
        }
        std::borrow::Cow::Owned(m)
    }

    /// An upper bound of this message's size as a client receives it, in
    /// either codec: JSON is never smaller than MessagePack, and its
    /// escapes make a body of control characters up to six times longer
    /// than stored. Pages of history and of changes are cut by this, so
    /// that a page's encoded reply fits the bytes reserved for it whatever
    /// its bodies hold; counts only what [`Message::for_clients`] keeps.
    pub fn encoded_len_bound(&self) -> usize {
        // Field names, the numbers and the fixed-width values.
        const FIXED: usize = 256;
        // A reaction's own field names and count; an id's quotes and comma.
        const PER_REACTION: usize = 48;
        const PER_ID: usize = 3;
        // An attachment's field names and numbers, and its two signed
        // links (added when shown) at their longest.
        const PER_ATTACHMENT: usize = 160 + 2 * 256;
        let ids = |users: &[UserId], n: usize| -> usize {
            users
                .iter()
                .take(n)
                .map(|u| u.as_str().len() + PER_ID)
                .sum()
        };
        let mut n = FIXED
            + json_string_len(&self.body)
            + self.conversation.as_str().len()
            + self.sender.as_str().len()
            + json_string_len(self.client_msg_id.as_str())
            + ids(&self.mentions, usize::MAX)
            + self
                .attachments
                .iter()
                .map(|a| {
                    PER_ATTACHMENT
                        + a.id.len()
                        + json_string_len(&a.name)
                        + json_string_len(&a.content_type)
                })
                .sum::<usize>();
        for r in &self.reactions {
            n += PER_REACTION + json_string_len(&r.emoji) + ids(&r.users, SHOWN_REACTORS);
        }
        n
    }

    /// Puts this message in its deleted state at `rev`.
    pub fn delete(&mut self, rev: u64) {
        self.deleted = true;
        self.body.clear();
        self.reactions.clear();
        self.mentions.clear();
        self.attachments.clear();
        self.rev = rev;
    }

    /// Adds (`on`) or takes back `user`'s `emoji`; whether that changed
    /// anything, or why it cannot.
    pub fn react(&mut self, user: &UserId, emoji: &str, on: bool) -> Result<bool, ReactError> {
        let at = self.reactions.iter().position(|r| r.emoji == emoji);
        if !on {
            let Some(at) = at else { return Ok(false) };
            let r = &mut self.reactions[at];
            let Some(u) = r.users.iter().position(|u| u == user) else {
                return Ok(false);
            };
            r.users.remove(u);
            r.count = r.users.len() as u32;
            if r.users.is_empty() {
                self.reactions.remove(at);
            }
            return Ok(true);
        }
        let total: usize = self.reactions.iter().map(|r| r.users.len()).sum();
        match at {
            Some(at) => {
                let r = &mut self.reactions[at];
                if r.users.contains(user) {
                    return Ok(false);
                }
                if total >= MAX_REACTIONS_PER_MESSAGE {
                    return Err(ReactError::Full);
                }
                r.users.push(user.clone());
                r.count = r.users.len() as u32;
            }
            None => {
                if self.reactions.len() >= MAX_DISTINCT_EMOJI {
                    return Err(ReactError::TooManyEmoji);
                }
                if total >= MAX_REACTIONS_PER_MESSAGE {
                    return Err(ReactError::Full);
                }
                self.reactions.push(Reaction {
                    emoji: emoji.to_owned(),
                    count: 1,
                    users: vec![user.clone()],
                });
            }
        }
        Ok(true)
    }
}

/// Whether `s` may be a reaction: one emoji of Unicode's list (with its
/// skin tones, flags and joined sequences), at most [`MAX_EMOJI_BYTES`]
/// bytes. Not markup, zero-width characters or direction overrides, which
/// any other string could carry into every member's screen.
pub fn is_reaction_emoji(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_EMOJI_BYTES && emojis::get(s).is_some()
}

/// The length of `s` as a JSON string, quotes included: serde_json writes
/// `"` and `\\` as two bytes and other control characters as at most six.
pub fn json_string_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' => 2,
            0..=0x1f | 0x7f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// Why a reaction cannot be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReactError {
    /// The message has [`MAX_DISTINCT_EMOJI`] emoji already.
    #[error("a message holds at most {MAX_DISTINCT_EMOJI} distinct emoji")]
    TooManyEmoji,
    /// The message has [`MAX_REACTIONS_PER_MESSAGE`] reactions already.
    #[error("a message holds at most {MAX_REACTIONS_PER_MESSAGE} reactions")]
    Full,
}

/// The members `@mentioned` in `body`, in order of first mention: `@` then a
/// user id (`[A-Za-z0-9_.:-]`, up to 64 bytes) for which `is_member` holds.
/// Trailing `.`, `:` and `-` (the end of a sentence: "thanks @bob.") are
/// tried off when the whole run is not a member.
pub fn parse_mentions(body: &str, is_member: impl Fn(&str) -> bool) -> Vec<UserId> {
    let bytes = body.as_bytes();
    let mut found: Vec<UserId> = Vec::new();
    let mut i = 0;
    while let Some(at) = bytes[i..].iter().position(|&b| b == b'@') {
        let start = i + at + 1;
        // An `@` inside a word (an e-mail address) mentions no one.
        let in_word = i + at > 0 && crate::ids::is_id_byte(bytes[i + at - 1]);
        let len = bytes[start..]
            .iter()
            .take_while(|&&b| crate::ids::is_id_byte(b))
            .count();
        i = start + len;
        if in_word || len == 0 || len > 64 {
            continue;
        }
        let mut name = &body[start..start + len];
        loop {
            if is_member(name) {
                if !found.iter().any(|u| u.as_str() == name) {
                    if let Ok(u) = UserId::new(name) {
                        found.push(u);
                    }
                }
                break;
            }
            match name.strip_suffix(['.', ':', '-']) {
                Some(shorter) if !shorter.is_empty() => name = shorter,
                _ => break,
            }
        }
        if found.len() == MAX_MENTIONS {
            break;
        }
    }
    found
}

/// What a message body holds: 1 to 32 bytes of `[a-z0-9_.-]`, `text` by default.
#[derive(Clone, PartialEq, Eq, Hash)]
#[cfg_attr(test, derive(ts_rs::TS), ts(type = "string"))]
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

#[cfg(test)]
mod tests {
    use super::*;

    fn members<'a>(names: &'a [&'static str]) -> impl Fn(&str) -> bool + 'a {
        move |n| names.contains(&n)
    }

    #[test]
    fn mentions_are_members_named_after_an_at() {
        let is = members(&["bob", "carol.x", "dan"]);
        let got = parse_mentions(
            "hi @bob and @carol.x. @bob again, @eve, mail a@dan.org @dan:",
            is,
        );
        let got: Vec<&str> = got.iter().map(UserId::as_str).collect();
        assert_eq!(got, ["bob", "carol.x", "dan"]);
        assert!(parse_mentions("@ @@ nobody", members(&["bob"])).is_empty());
    }

    fn user(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    fn message() -> Message {
        Message {
            attachments: Vec::new(),
            id: MessageId(1),
            conversation: ConversationId::new("c").unwrap(),
            sender: user("a"),
            body: "hello @b".into(),
            kind: MessageKind::default(),
            ts: 1,
            client_msg_id: ClientMsgId::new("k").unwrap(),
            reply_to: None,
            rev: 1,
            edited_at: None,
            deleted: false,
            reactions: Vec::new(),
            mentions: vec![user("b")],
        }
    }

    #[test]
    fn reactions_are_idempotent_per_user_and_bounded() {
        let mut m = message();
        assert_eq!(m.react(&user("a"), "x", true), Ok(true));
        assert_eq!(m.react(&user("a"), "x", true), Ok(false));
        assert_eq!(m.react(&user("b"), "x", true), Ok(true));
        assert_eq!((m.reactions[0].count, m.reactions.len()), (2, 1));
        assert_eq!(m.react(&user("c"), "x", false), Ok(false));
        assert_eq!(m.react(&user("a"), "x", false), Ok(true));
        assert_eq!(m.reactions[0].users, [user("b")]);
        assert_eq!(m.react(&user("b"), "x", false), Ok(true));
        assert!(m.reactions.is_empty(), "an emoji no one uses is gone");
        for e in 0..MAX_DISTINCT_EMOJI {
            m.react(&user("a"), &format!("e{e}"), true).unwrap();
        }
        assert_eq!(
            m.react(&user("a"), "one-more", true),
            Err(ReactError::TooManyEmoji)
        );
        assert_eq!(
            m.react(&user("b"), "e0", true),
            Ok(true),
            "a used emoji still takes users"
        );
    }

    #[test]
    fn clients_see_ten_reactors_and_the_count() {
        let mut m = message();
        for u in 0..12 {
            m.react(&user(&format!("u{u}")), "x", true).unwrap();
        }
        let shown = m.for_clients();
        assert_eq!(shown.reactions[0].count, 12);
        assert_eq!(shown.reactions[0].users.len(), SHOWN_REACTORS);
        assert_eq!(shown.reactions[0].users[0], user("u0"));
        m.react(&user("u0"), "x", false).unwrap();
        assert_eq!(
            m.for_clients().reactions[0].users[9],
            user("u10"),
            "the eleventh moves up"
        );
    }

    #[test]
    fn a_deleted_message_keeps_only_its_identity() {
        let mut m = message();
        m.react(&user("b"), "x", true).unwrap();
        m.delete(7);
        assert!(m.deleted && m.body.is_empty() && m.reactions.is_empty() && m.mentions.is_empty());
        assert_eq!((m.id, m.rev), (MessageId(1), 7));
    }

    #[test]
    fn the_encoded_bound_holds_in_both_codecs_for_the_worst_bodies() {
        let long = |c: char| "x".repeat(60) + &c.to_string();
        let mut m = message();
        m.id = MessageId(u64::MAX >> 1);
        m.ts = u64::MAX >> 1;
        m.rev = u64::MAX;
        m.reply_to = Some(MessageId(u64::MAX >> 1));
        m.edited_at = Some(u64::MAX >> 1);
        m.conversation = ConversationId::new(&long('c')).unwrap();
        m.sender = user(&long('s'));
        m.client_msg_id = ClientMsgId::new(&"k".repeat(64)).unwrap();
        for (i, body) in [
            "\u{1}".repeat(16_384),
            "\"\\".repeat(8_192),
            "é".repeat(8_192),
        ]
        .into_iter()
        .enumerate()
        {
            m.body = body;
            m.mentions = (0..MAX_MENTIONS)
                .map(|n| user(&format!("{}{n}", long('m'))))
                .collect();
            m.reactions = (0..MAX_DISTINCT_EMOJI)
                .map(|e| Reaction {
                    emoji: "\u{1}".repeat(MAX_EMOJI_BYTES - 1) + &e.to_string(),
                    count: u32::MAX,
                    users: (0..50)
                        .map(|u| user(&format!("{}{u}", long('r'))))
                        .collect(),
                })
                .collect();
            let shown = m.for_clients();
            let json = serde_json::to_vec(&*shown).unwrap().len();
            let msgpack = rmp_serde::to_vec_named(&*shown).unwrap().len();
            let bound = m.encoded_len_bound();
            assert!(
                json <= bound,
                "body {i}: JSON {json} over the bound {bound}"
            );
            assert!(
                msgpack <= bound,
                "body {i}: MessagePack {msgpack} over {bound}"
            );
            assert!(
                bound < json + json / 4 + 1024,
                "body {i}: {bound} is far above {json}"
            );
        }
    }
}
