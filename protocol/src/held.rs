//! Messages a conversation holds in memory to serve pages of history from:
//! each one's client form is encoded as JSON once, when a page first needs
//! it, and every later page (and every reader) copies those bytes instead of
//! encoding the message again.

use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use crate::Message;

/// A message as stored, with its client form's JSON made on first use.
#[derive(Debug)]
pub struct HeldMessage {
    message: Message,
    /// `None` once made: the message would not encode (it always does;
    /// then it is encoded each time like any other).
    json: OnceLock<Option<Box<RawValue>>>,
}

impl HeldMessage {
    /// Holds `message` (as stored: [`Message::for_clients`] is applied when
    /// it is encoded).
    pub fn new(message: Message) -> Self {
        HeldMessage {
            message,
            json: OnceLock::new(),
        }
    }

    /// The message, as stored.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// Its client form as JSON, made on the first call.
    pub fn json(&self) -> Option<&RawValue> {
        self.json
            // `to_raw_value` keeps the text it wrote (`from_string` would
            // parse it again to check it).
            .get_or_init(|| serde_json::value::to_raw_value(&*self.message.for_clients()).ok())
            .as_deref()
    }
}

/// A held message encodes as its client form: in JSON from the bytes it
/// holds, in any other format (MessagePack to clients and peers) field by
/// field. Only serde_json's serializers are human-readable here, and only
/// they write a `RawValue` as the JSON it holds.
impl Serialize for HeldMessage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let json = serializer.is_human_readable();
        match self.json().filter(|_| json) {
            Some(raw) => raw.serialize(serializer),
            None => self.for_clients().serialize(serializer),
        }
    }
}

impl Deref for HeldMessage {
    type Target = Message;

    fn deref(&self) -> &Message {
        &self.message
    }
}

/// A page of held messages, ascending by id. It encodes as a list of the
/// messages' client forms (see [`HeldMessage`]'s `Serialize`).
#[derive(Debug, Clone, Default)]
pub struct HeldPage(pub Vec<Arc<HeldMessage>>);

impl HeldPage {
    /// The messages in their client form.
    pub fn to_messages(&self) -> Vec<Message> {
        self.0
            .iter()
            .map(|m| m.for_clients().into_owned())
            .collect()
    }
}

/// Held messages compare by what they encode to.
impl PartialEq for HeldMessage {
    fn eq(&self, other: &Self) -> bool {
        self.for_clients() == other.for_clients()
    }
}

impl PartialEq for HeldPage {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Serialize for HeldPage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for m in &self.0 {
            seq.serialize_element(&**m)?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientMsgId, Codec, ConversationId, MessageId, OkReply, ServerFrame, UserId};

    fn message(id: u64, reactors: usize) -> Message {
        let mut m = Message {
            attachments: Vec::new(),
            id: MessageId(id),
            conversation: ConversationId::new("c").unwrap(),
            sender: UserId::new("a").unwrap(),
            body: format!("body \"{id}\"\n\u{1}"),
            kind: Default::default(),
            ts: id,
            client_msg_id: ClientMsgId::new(&format!("k{id}")).unwrap(),
            reply_to: None,
            rev: id,
            edited_at: None,
            deleted: false,
            reactions: Vec::new(),
            mentions: Vec::new(),
        };
        for r in 0..reactors {
            let user = UserId::new(&format!("u{r}")).unwrap();
            m.react(&user, "👍", true).unwrap();
        }
        m
    }

    /// A reply whose page is held encodes, in both codecs, exactly as one
    /// that lists the same messages in their client form, and decodes as
    /// that one.
    #[test]
    fn a_held_page_encodes_as_the_listed_one() {
        // The second has more reactors than a client is shown.
        let stored = [message(1, 0), message(2, 40)];
        let held = OkReply {
            held: Some(HeldPage(
                stored
                    .iter()
                    .cloned()
                    .map(HeldMessage::new)
                    .map(Arc::new)
                    .collect(),
            )),
            more: Some(true),
            ..Default::default()
        };
        let listed = OkReply {
            messages: Some(
                stored
                    .iter()
                    .map(|m| m.for_clients().into_owned())
                    .collect(),
            ),
            more: Some(true),
            ..Default::default()
        };
        assert_ne!(stored[1], listed.messages.as_ref().unwrap()[1]);
        for codec in [Codec::Json, Codec::MsgPack] {
            // Twice: the second from the JSON made by the first.
            for _ in 0..2 {
                let a = codec.encode(&ServerFrame::Ok(held.clone())).unwrap();
                let b = codec.encode(&ServerFrame::Ok(listed.clone())).unwrap();
                assert_eq!(a, b, "{codec:?}");
                let ServerFrame::Ok(back) = codec.decode::<ServerFrame>(&a).unwrap() else {
                    panic!("an ok frame");
                };
                assert_eq!(back.messages, listed.messages);
                assert!(back.held.is_none());
            }
        }
        assert_eq!(
            serde_json::to_value(&held).unwrap(),
            serde_json::to_value(&listed).unwrap()
        );
        assert_eq!(held.into_messages(), listed.messages);
    }

    /// A send's acknowledgement and its `message` event made from a held
    /// message encode as the ones made from the message itself.
    #[test]
    fn an_ack_and_an_event_from_a_held_message_encode_as_the_message() {
        let stored = message(7, 40);
        let held = Arc::new(HeldMessage::new(stored.clone()));
        let shown = stored.for_clients().into_owned();
        let ack = OkReply {
            held_message: Some(held.clone()),
            ..Default::default()
        };
        let plain = OkReply {
            message: Some(shown.clone()),
            ..Default::default()
        };
        let event = crate::SharedFrame::message_event(&held);
        let plain_event = ServerFrame::Message { message: shown };
        for codec in [Codec::Json, Codec::MsgPack] {
            let a = codec.encode(&ServerFrame::Ok(ack.clone())).unwrap();
            assert_eq!(a, codec.encode(&ServerFrame::Ok(plain.clone())).unwrap());
            let ServerFrame::Ok(back) = codec.decode::<ServerFrame>(&a).unwrap() else {
                panic!("an ok frame");
            };
            assert_eq!(back.message, plain.message);
            assert_eq!(
                &event.encoded(codec).unwrap()[..],
                &codec.encode(&plain_event).unwrap()[..],
                "{codec:?}"
            );
        }
        assert_eq!(event.frame(), &plain_event);
        assert_eq!(ack.into_message(), plain.message);
    }
}
