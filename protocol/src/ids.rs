//! Identifiers: users, conversations, messages, client message ids and request ids.
//!
//! User and conversation ids are 1 to 64 bytes of `[A-Za-z0-9_.:-]`; they are
//! validated when decoded, so an id that exists as a Rust value is always valid.
//! They are reference counted because one id is copied into many actors,
//! interest sets and fan-out lists.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Empty or longer than 64 bytes.
    #[error("id must be 1 to 64 bytes long, got {0}")]
    Length(usize),
    /// A byte outside `[A-Za-z0-9_.:-]`.
    #[error("id may only contain A-Z a-z 0-9 _ . : -")]
    Charset,
}

/// Longest user, conversation or client message id, in bytes.
pub const MAX_ID_BYTES: usize = 64;

/// A byte an id may hold.
pub(crate) fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-')
}

fn check_id(s: &str) -> Result<(), IdError> {
    if s.is_empty() || s.len() > MAX_ID_BYTES {
        return Err(IdError::Length(s.len()));
    }
    if !s.bytes().all(is_id_byte) {
        return Err(IdError::Charset);
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[cfg_attr(test, derive(ts_rs::TS), ts(type = "string"))]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates `s` and wraps it.
            pub fn new(s: &str) -> Result<Self, IdError> {
                check_id(s)?;
                Ok(Self(Arc::from(s)))
            }
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::new(&s).map_err(de::Error::custom)
            }
        }
    };
}

string_id!(
    /// A user id (the JWT `sub`).
    UserId
);
string_id!(
    /// A conversation id.
    ConversationId
);
string_id!(
    /// The id a client gives a `send` so that a retry is recognised.
    ClientMsgId
);

impl ConversationId {
    /// The id of the direct conversation between two users: the same whoever
    /// creates it and on whichever node, so the one actor owning it decides
    /// whether it exists. Part of the stored data: never change the formula.
    pub fn direct(a: &UserId, b: &UserId) -> ConversationId {
        use sha2::{Digest, Sha256};
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let mut h = Sha256::new();
        h.update(lo.as_str().as_bytes());
        h.update([0u8]);
        h.update(hi.as_str().as_bytes());
        let digest = h.finalize();
        let id = format!("d:{}", hex::encode(&digest[..16]));
        ConversationId::new(&id).unwrap_or_else(|_| unreachable!("hex ids are valid"))
    }
}

/// A message id: milliseconds since [`EPOCH_MS`] (41 bits), the issuing
/// node's id (10 bits) and a sequence (12 bits).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
// A decimal string in JSON (ids pass 2^53); the SDK makes MessagePack's
// integers strings too.
#[cfg_attr(test, derive(ts_rs::TS), ts(type = "string"))]
pub struct MessageId(pub u64);

/// The project epoch, 2024-01-01T00:00:00Z, in Unix milliseconds.
pub const EPOCH_MS: u64 = 1_704_067_200_000;
const NODE_BITS: u32 = 10;
const SEQ_BITS: u32 = 12;
/// Largest node id a message id can carry.
pub const MAX_NODE_ID: u16 = (1 << NODE_BITS) - 1;

impl MessageId {
    /// The Unix time in milliseconds encoded in this id.
    pub fn timestamp_ms(self) -> u64 {
        (self.0 >> (NODE_BITS + SEQ_BITS)) + EPOCH_MS
    }
    /// The smallest id that could be issued at `unix_ms`.
    pub fn floor_at(unix_ms: u64) -> Self {
        MessageId(unix_ms.saturating_sub(EPOCH_MS) << (NODE_BITS + SEQ_BITS))
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for MessageId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            let mut buf = [0u8; 20];
            s.serialize_str(format_u64(self.0, &mut buf))
        } else {
            s.serialize_u64(self.0)
        }
    }
}

fn format_u64(mut v: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

struct MessageIdVisitor;

impl Visitor<'_> for MessageIdVisitor {
    type Value = MessageId;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a message id: an unsigned 64-bit integer or its decimal string")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<MessageId, E> {
        Ok(MessageId(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<MessageId, E> {
        u64::try_from(v)
            .map(MessageId)
            .map_err(|_| E::custom("a message id cannot be negative"))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<MessageId, E> {
        if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(E::custom("a message id string must be decimal digits"));
        }
        v.parse()
            .map(MessageId)
            .map_err(|_| E::custom("message id out of range"))
    }
}

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Both forms in both encodings: serde's buffering of internally tagged
        // enums does not tell the inner type which encoding it came from.
        d.deserialize_any(MessageIdVisitor)
    }
}

/// The id a client puts on a request so it can match the reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
#[serde(untagged)]
pub enum ReqId {
    /// An integer id.
    Int(i64),
    /// An unsigned id too large for `i64`.
    UInt(u64),
    /// A string id of at most 64 bytes.
    Str(#[serde(deserialize_with = "short_string")] Box<str>),
}

fn short_string<'de, D: Deserializer<'de>>(d: D) -> Result<Box<str>, D::Error> {
    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    if s.len() > MAX_ID_BYTES {
        return Err(de::Error::custom("req must be at most 64 bytes"));
    }
    Ok(s.into())
}

/// Issues message ids for one node: strictly increasing across every
/// conversation of the node (so no id is used twice), and above a floor the
/// caller gives (the conversation's last id), so ids stay ordered even when a
/// conversation moves to a node whose clock is behind. Lock-free: every
/// conversation actor of the node shares one generator.
#[derive(Debug)]
pub struct IdGenerator {
    node: u64,
    last: std::sync::atomic::AtomicU64,
}

impl IdGenerator {
    /// A generator for node `node` (at most [`MAX_NODE_ID`]).
    pub fn new(node: u16) -> Self {
        assert!(node <= MAX_NODE_ID, "node id over {MAX_NODE_ID}");
        Self {
            node: node as u64,
            last: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The next id, greater than every id issued before and than `floor`.
    pub fn next(&self, now_unix_ms: u64, floor: MessageId) -> MessageId {
        use std::sync::atomic::Ordering;
        let ms = now_unix_ms.saturating_sub(EPOCH_MS);
        let candidate = (ms << (NODE_BITS + SEQ_BITS)) | (self.node << SEQ_BITS);
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            // Same millisecond (or a clock behind the floor): take the next
            // sequence number; past 4096 it borrows from the next millisecond,
            // which keeps ids unique and increasing.
            let id = candidate.max(last.max(floor.0) + 1);
            match self
                .last
                .compare_exchange_weak(last, id, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return MessageId(id),
                Err(seen) => last = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_ids_ignore_order_and_are_valid() {
        let a = UserId::new("alice").unwrap();
        let b = UserId::new("bob").unwrap();
        assert_eq!(
            ConversationId::direct(&a, &b),
            ConversationId::direct(&b, &a)
        );
        assert_ne!(
            ConversationId::direct(&a, &b),
            ConversationId::direct(&a, &a)
        );
        // Pinned: a node computing another id would split a pair's history.
        assert_eq!(
            ConversationId::direct(&a, &b).as_str(),
            "d:141a4cd242b67e82edf4a78bb418d40a"
        );
    }

    #[test]
    fn ids_validate_length_and_charset() {
        assert!(UserId::new("alice_01:x.y-z").is_ok());
        assert_eq!(UserId::new(""), Err(IdError::Length(0)));
        assert_eq!(UserId::new(&"a".repeat(65)), Err(IdError::Length(65)));
        assert!(UserId::new(&"a".repeat(64)).is_ok());
        assert_eq!(UserId::new("a b"), Err(IdError::Charset));
        assert_eq!(UserId::new("é"), Err(IdError::Charset));
    }

    #[test]
    fn generator_increases_past_floor_and_clock_going_back() {
        let g = IdGenerator::new(3);
        let now = EPOCH_MS + 1_000_000;
        let a = g.next(now, MessageId(0));
        let b = g.next(now, MessageId(0));
        assert!(b > a);
        let c = g.next(now - 500, MessageId(0));
        assert!(c > b, "clock going back must not lower ids");
        let floor = MessageId::floor_at(now + 60_000);
        let d = g.next(now, floor);
        assert!(d > floor);
        assert_eq!(a.timestamp_ms(), now);
    }

    #[test]
    fn message_id_formats() {
        let mut buf = [0u8; 20];
        assert_eq!(format_u64(0, &mut buf), "0");
        assert_eq!(format_u64(u64::MAX, &mut buf), "18446744073709551615");
    }
}
