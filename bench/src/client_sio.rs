//! chat's frames over its own Socket.IO endpoint (the `chat-socketio`
//! target): a client frame goes out as the event its `type` names, with the
//! rest of the frame as the argument and the request id as the Socket.IO
//! acknowledgement id; the node's events come as `42["<type>",{frame}]` and
//! its replies as `43<ack>[{reply}]`. Both turn back into the frame JSON
//! the native client decodes, so every scenario runs unchanged.

use std::borrow::Cow;

use anyhow::{anyhow, Result};
use chat_protocol::ClientFrame;

/// What an Engine.IO text frame holds for the client.
pub(crate) enum Packet<'a> {
    /// A frame of the node's, as JSON (a reply carries the ack id as `req`).
    Frame(Cow<'a, str>),
    /// An Engine.IO ping: answer with a pong.
    Ping,
    /// The session or the namespace was closed.
    Closed,
    /// Nothing for the client.
    Skip,
}

/// `frame` as a Socket.IO event packet: `42<req>["<type>",{fields}]`.
pub(crate) fn encode(frame: &ClientFrame) -> Result<String> {
    let mut value = serde_json::to_value(frame)?;
    let fields = value
        .as_object_mut()
        .ok_or_else(|| anyhow!("a client frame is an object"))?;
    let ty = fields
        .remove("type")
        .and_then(|t| t.as_str().map(str::to_owned))
        .ok_or_else(|| anyhow!("a client frame has a type"))?;
    let req = fields.remove("req").and_then(|r| r.as_u64());
    let payload = serde_json::to_string(&(ty, &value))?;
    Ok(match req {
        Some(r) => format!("42{r}{payload}"),
        None => format!("42{payload}"),
    })
}

/// Decodes one Engine.IO text frame.
pub(crate) fn decode(text: &str) -> Packet<'_> {
    let Some(rest) = text.strip_prefix('4') else {
        return match text.as_bytes().first() {
            Some(b'2') => Packet::Ping,
            Some(b'1') => Packet::Closed,
            _ => Packet::Skip,
        };
    };
    match rest.as_bytes().first() {
        // An event: `2["<type>",{frame}]` (the node asks no acks).
        Some(b'2') => {
            let json = rest[1..].trim_start_matches(|c: char| c.is_ascii_digit());
            match (json.find(','), json.strip_suffix(']')) {
                (Some(comma), Some(inner)) if comma < inner.len() => {
                    Packet::Frame(Cow::Borrowed(&inner[comma + 1..]))
                }
                _ => Packet::Skip,
            }
        }
        // A reply: `3<ack>[{reply}]`; the node numbered its own `req`, the
        // client knows the request by the ack id.
        Some(b'3') => {
            let digits = rest[1..].bytes().take_while(u8::is_ascii_digit).count();
            let (ack, args) = rest[1..].split_at(digits);
            let Ok(ack) = ack.parse::<u64>() else {
                return Packet::Skip;
            };
            match serde_json::from_str::<Vec<serde_json::Value>>(args) {
                Ok(mut args) if !args.is_empty() => {
                    let mut reply = args.swap_remove(0);
                    if let Some(fields) = reply.as_object_mut() {
                        fields.insert("req".into(), ack.into());
                    }
                    Packet::Frame(Cow::Owned(reply.to_string()))
                }
                _ => Packet::Skip,
            }
        }
        Some(b'1') => Packet::Closed,
        _ => Packet::Skip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_protocol::{ConversationId, ReqId};

    #[test]
    fn frames_become_events_and_events_frames() {
        let frame = ClientFrame::Leave {
            req: Some(ReqId::UInt(7)),
            conversation: ConversationId::new("g1").unwrap(),
        };
        assert_eq!(
            encode(&frame).unwrap(),
            r#"427["leave",{"conversation":"g1"}]"#
        );
        let Packet::Frame(f) = decode(r#"42["message",{"type":"message","message":{"id":"1"}}]"#)
        else {
            panic!("an event is a frame");
        };
        assert_eq!(f, r#"{"type":"message","message":{"id":"1"}}"#);
        let Packet::Frame(f) = decode(r#"4312[{"type":"ok","req":3}]"#) else {
            panic!("an ack is a frame");
        };
        let v: serde_json::Value = serde_json::from_str(&f).unwrap();
        assert_eq!(v["req"], 12, "the ack id is the request's");
        assert!(matches!(decode("2"), Packet::Ping));
        assert!(matches!(decode("41"), Packet::Closed));
    }
}
