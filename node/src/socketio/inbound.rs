//! A Socket.IO event read as the client frame it stands for: the event's
//! name is the frame's `type`, its argument the rest of the frame, and an
//! acknowledgement asked for gives it a `req`.
//!
//! This runs as an extractor, in the order Socket.IO reads the events,
//! before any task is spawned for them (Socket.IO runs each handler in a
//! task of its own, and tasks may run in any order): the frames reach the
//! reader in the order the client sent them, as on a WebSocket.

use std::convert::Infallible;
use std::sync::Arc;

use chat_protocol::{ErrorCode, ServerFrame};
use serde_json::{Map, Value as Json};
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::{Event, TryData};
use socketioxide::handler::{FromMessageParts, Value};
use socketioxide::socket::Socket;

use super::bridge::Bridge;

/// A socket's event, handed to its connection's reader.
pub(super) struct Inbound;

impl FromMessageParts<LocalAdapter> for Inbound {
    type Error = Infallible;

    fn from_message_parts(
        s: &Arc<Socket>,
        v: &mut Value,
        ack: &Option<i64>,
    ) -> Result<Self, Infallible> {
        let Some(bridge) = s.extensions.get::<Arc<Bridge>>() else {
            return Ok(Inbound);
        };
        let event = Event::from_message_parts(s, v, ack).map(|e| e.0);
        let Ok(TryData(data)) = TryData::<Json>::from_message_parts(s, v, ack);
        let fields = match (event, data) {
            (Ok(event), Ok(data)) => frame_of(event, data),
            (Err(e), _) | (_, Err(e)) => Err(format!("unreadable event: {e}")),
        };
        let refused = match fields {
            Ok(mut fields) => {
                let queued = bridge.take(
                    |req| {
                        if let Some(req) = req {
                            fields.insert("req".into(), req.into());
                        }
                        serde_json::to_vec(&fields).unwrap_or_default()
                    },
                    *ack,
                );
                match queued {
                    Ok(()) => return Ok(Inbound),
                    Err(()) => ServerFrame::error(
                        None,
                        ErrorCode::RateLimited,
                        "too many requests not yet answered; wait for their replies",
                    ),
                }
            }
            Err(why) => ServerFrame::error(None, ErrorCode::BadRequest, why),
        };
        // Refused before the reader saw it: answered here, as the reader
        // answers (on the acknowledgement, or as an `error` event).
        bridge.refuse(s, *ack, refused);
        Ok(Inbound)
    }
}

/// The frame an event stands for, as fields; `req` is the bridge's to set.
fn frame_of(event: String, data: Json) -> Result<Map<String, Json>, String> {
    let mut fields = match data {
        Json::Object(fields) => fields,
        Json::Null => Map::new(),
        _ => {
            return Err(format!(
                "the argument of `{event}` is the frame without `type` and `req`, as an object"
            ));
        }
    };
    fields.remove("req");
    fields.insert("type".into(), Json::String(event));
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_a_frame_named_by_it() {
        let f = frame_of("send".into(), serde_json::json!({"body": "hi", "req": 7})).unwrap();
        assert_eq!(f["type"], "send");
        assert!(f.get("req").is_none(), "the client's own req is not used");
        assert_eq!(frame_of("ping".into(), Json::Null).unwrap()["type"], "ping");
        assert!(frame_of("send".into(), serde_json::json!(["x"])).is_err());
        assert!(frame_of("send".into(), serde_json::json!("x")).is_err());
    }
}
