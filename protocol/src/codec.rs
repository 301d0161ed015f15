//! The two encodings, chosen by the WebSocket subprotocol: JSON in text frames
//! (`chat.v1.json`, the default) and MessagePack maps in binary frames
//! (`chat.v1.msgpack`), with the same field names and structure.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ids::ReqId;

/// A frame encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// One JSON object per text frame.
    Json,
    /// One MessagePack map per binary frame.
    MsgPack,
}

/// Why bytes are not a valid frame. Carries the `req` when it could be read,
/// so the error reply still names the request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}")]
pub struct DecodeError {
    /// The request id, when it could be recovered.
    pub req: Option<ReqId>,
    /// What was wrong.
    pub reason: String,
}

/// A value could not be encoded (a bug: every protocol type encodes).
#[derive(Debug, thiserror::Error)]
#[error("encoding failed: {0}")]
pub struct EncodeError(String);

/// The `req` of a frame that failed to decode. Only a map has one: serde's
/// derived structs also accept arrays, and `[7]` must not be taken for a
/// request 7 (the client would get two answers to its real request 7).
struct ReqOnly {
    req: Option<ReqId>,
}

impl<'de> Deserialize<'de> for ReqOnly {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MapOnly;
        impl<'de> serde::de::Visitor<'de> for MapOnly {
            type Value = ReqOnly;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ReqOnly, A::Error> {
                let mut req = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "req" {
                        req = map.next_value::<Option<ReqId>>()?;
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(ReqOnly { req })
            }
        }
        d.deserialize_map(MapOnly)
    }
}

impl Codec {
    /// Subprotocol name for JSON.
    pub const JSON_PROTOCOL: &'static str = "chat.v1.json";
    /// Subprotocol name for MessagePack.
    pub const MSGPACK_PROTOCOL: &'static str = "chat.v1.msgpack";

    /// The codec a subprotocol name selects.
    pub fn from_subprotocol(name: &str) -> Option<Codec> {
        match name.trim() {
            Self::JSON_PROTOCOL => Some(Codec::Json),
            Self::MSGPACK_PROTOCOL => Some(Codec::MsgPack),
            _ => None,
        }
    }

    /// The codec's subprotocol name.
    pub fn subprotocol(self) -> &'static str {
        match self {
            Codec::Json => Self::JSON_PROTOCOL,
            Codec::MsgPack => Self::MSGPACK_PROTOCOL,
        }
    }

    /// Whether frames travel as binary WebSocket messages.
    pub fn is_binary(self) -> bool {
        self == Codec::MsgPack
    }

    /// Encodes any protocol value (maps with field names in MessagePack).
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, EncodeError> {
        match self {
            Codec::Json => serde_json::to_vec(value).map_err(|e| EncodeError(e.to_string())),
            Codec::MsgPack => {
                rmp_serde::to_vec_named(value).map_err(|e| EncodeError(e.to_string()))
            }
        }
    }

    /// Decodes any protocol value.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, DecodeError> {
        let result = match self {
            Codec::Json => decode_json_object(bytes),
            Codec::MsgPack => decode_msgpack_map(bytes),
        };
        result.map_err(|reason| DecodeError {
            req: self.recover_req(bytes),
            reason: readable(&reason),
        })
    }

    fn recover_req(self, bytes: &[u8]) -> Option<ReqId> {
        let parsed: Option<ReqOnly> = match self {
            Codec::Json => serde_json::from_slice(bytes).ok(),
            Codec::MsgPack => rmp_serde::from_slice(bytes).ok(),
        };
        parsed.and_then(|r| r.req)
    }
}

/// One JSON object: serde alone would also take a struct written as an
/// array.
fn decode_json_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err("a frame must be an object".into());
    }
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

/// What serde says is wrong with a value, in a client's words: without the
/// parser's position, and naming no type of the server's (its structs, its
/// integer types, the enum a `req` is read into).
pub fn readable(text: &str) -> String {
    let text = match text.rfind(" at line ") {
        Some(at) if text[at..].contains(" column ") => &text[..at],
        _ => text,
    };
    if text.contains("untagged enum ReqId") {
        return "req must be an integer or a string of at most 64 bytes".into();
    }
    if text.contains("untagged enum") {
        return "a value of the wrong type".into();
    }
    if let Some(field) = text.strip_prefix("duplicate field ") {
        return format!("{field} appears twice");
    }
    let (head, expected) = match text.rsplit_once(", expected ") {
        Some((head, expected)) => (head, Some(expected)),
        None => (text, None),
    };
    let head = head.replace("unknown variant ", "unknown value ");
    let mut out = without_struct_names(&head);
    if let Some(expected) = expected {
        let expected = match expected {
            "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a non-negative integer".into(),
            "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer".into(),
            "f32" | "f64" => "a number".into(),
            "variant identifier" => "a name".into(),
            other => without_struct_names(other),
        };
        out.push_str(", expected ");
        out.push_str(&expected);
    }
    out
}

/// serde names the Rust type it expected ("struct LoginRequest"): each
/// "struct <Name>" reads "an object".
fn without_struct_names(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("struct ") {
        out.push_str(&rest[..at]);
        let name = &rest[at + "struct ".len()..];
        let end = name
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(name.len());
        out.push_str("an object");
        rest = &name[end..];
    }
    out.push_str(rest);
    out
}

/// One MessagePack map and nothing after it, as the JSON decoder accepts
/// one object and nothing after it: rmp-serde alone would also take a
/// struct written as an array, and ignore trailing bytes.
fn decode_msgpack_map<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    // fixmap, map 16, map 32.
    if !matches!(bytes.first(), Some(0x80..=0x8f | 0xde | 0xdf)) {
        return Err("a frame must be a map".into());
    }
    let mut rest = bytes;
    let mut de = rmp_serde::Deserializer::new(&mut rest);
    let value = T::deserialize(&mut de).map_err(|e| e.to_string())?;
    drop(de);
    if !rest.is_empty() {
        return Err(format!("{} bytes after the frame", rest.len()));
    }
    Ok(value)
}
