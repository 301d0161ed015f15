//! The two encodings, chosen by the WebSocket subprotocol: JSON in text frames
//! (`chat.v1.json`, the default) and MessagePack maps in binary frames
//! (`chat.v1.msgpack`), with the same field names and structure.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::frame::ClientFrame;
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
            Codec::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
            Codec::MsgPack => decode_msgpack_map(bytes),
        };
        result.map_err(|reason| DecodeError {
            req: self.recover_req(bytes),
            reason,
        })
    }

    /// Decodes a client frame.
    pub fn decode_client(self, bytes: &[u8]) -> Result<ClientFrame, DecodeError> {
        self.decode(bytes)
    }

    fn recover_req(self, bytes: &[u8]) -> Option<ReqId> {
        let parsed: Option<ReqOnly> = match self {
            Codec::Json => serde_json::from_slice(bytes).ok(),
            Codec::MsgPack => rmp_serde::from_slice(bytes).ok(),
        };
        parsed.and_then(|r| r.req)
    }
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
