//! Messages between nodes, carried by ractor_cluster to each node's Router.
//!
//! These are not part of the client contract, but they cross a process
//! boundary, so they live here. They are encoded with MessagePack (rmp-serde,
//! named fields). Compatibility rule while nodes of two versions may be
//! connected during a rolling upgrade: add variants and optional fields, never
//! rename or remove one — the variant name is the wire identity.
//!
//! Each node announces [`PEER_PROTOCOL`] in its heartbeat: a message
//! added in a later protocol version is sent only to peers that announced
//! at least that version (an older node could not decode it), so a cluster
//! mixing two consecutive releases keeps working.
//!
//! Delivery between two nodes is FIFO but at most once: whatever is queued when
//! a link drops is lost. Requests therefore carry an id and time out at their
//! origin, and clients retry sends with the same `client_msg_id`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::request::ConversationRequest;
use crate::{ConversationId, ErrorCode, OkReply, ServerFrame, UserId};

/// The version of these messages this build speaks. 1: releases whose
/// heartbeat had no `protocol` field (it decodes as 0, read as 1); 2: the
/// field, and node leases on a shared store.
pub const PEER_PROTOCOL: u16 = 2;

/// A connection, named cluster-wide: conn ids embed their node's id.
pub type ConnRef = u64;

/// One message from a node to another node's Router.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PeerMsg {
    /// Sent every second to each connected node; also how nodes learn each
    /// other's numeric id (duplicates refuse to join).
    Heartbeat {
        /// The sender's node name.
        from: String,
        /// The sender's node id (the one inside its message ids).
        node_id: u16,
        /// Whether the sender serves conversations yet (has joined).
        serving: bool,
        /// The sender's load over its last second, for the admin console
        /// (absent from nodes of older versions).
        #[serde(default)]
        stats: Option<NodeStats>,
        /// The sender's [`PEER_PROTOCOL`] (0 from releases before it).
        #[serde(default)]
        protocol: u16,
    },
    /// A client request for a conversation the receiver owns.
    Request {
        /// The origin node, where the reply goes.
        from: String,
        /// The origin's id for the pending reply.
        id: u64,
        /// The authenticated user making the request.
        user: UserId,
        /// The client's connection (skipped in the fan-out of its own send).
        conn: ConnRef,
        /// What to do.
        request: ConversationRequest,
        /// The sampled trace the request belongs to, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trace: Option<TraceParent>,
    },
    /// The answer to a [`PeerMsg::Request`].
    Reply {
        /// The request's id at the origin.
        id: u64,
        /// The `ok` body, or the error to send to the client. Boxed: an
        /// `ok` with a message is several times the size of any other
        /// variant, and heartbeats should not pay for it in every queue.
        result: Result<Box<OkReply>, PeerError>,
    },
    /// Events of a conversation for the receiver's local sessions.
    Deliver(Box<PeerDelivery>),
    /// A store write accepted by `op.origin`, to be made durable here and
    /// acknowledged with [`PeerMsg::Ack`].
    Replicate {
        /// Who sends it (and gets the ack).
        from: String,
        /// The write.
        op: PeerOp,
    },
    /// `op` of `origin` with `seq` is durable on `from`.
    Ack {
        /// The acknowledging node.
        from: String,
        /// Whose op.
        origin: String,
        /// Which op.
        seq: u64,
    },
    /// Anti-entropy: send me the ops I lack; `vector` says what I hold.
    Pull {
        /// Who asks.
        from: String,
        /// Per origin, the highest seq held with nothing missing below it.
        vector: BTreeMap<String, u64>,
    },
    /// Anti-entropy: a chunk of ops answering a [`PeerMsg::Pull`].
    Ops {
        /// Who sends them.
        from: String,
        /// The ops, ascending by seq per origin.
        ops: Vec<PeerOp>,
        /// Whether more are held beyond this chunk (pull again).
        more: bool,
    },
    /// The sender's sessions started (`listening`) or stopped listening to
    /// `conversations`, which the receiver owns in the sender's view `view`.
    /// Sent on a change from no local listener to some, or back, and when a
    /// session starts (with `ack`).
    Interest {
        /// Who listens.
        from: String,
        /// The fingerprint of the sender's placement.
        view: u64,
        /// Whether it listens now.
        listening: bool,
        /// Which conversations.
        conversations: Vec<ConversationId>,
        /// Answer with [`PeerMsg::InterestAck`] of this id once applied.
        #[serde(default)]
        ack: Option<u64>,
    },
    /// The [`PeerMsg::Interest`] with this `ack` id has been applied: what
    /// the receiver's owner sends from now on reaches those sessions.
    InterestAck {
        /// The id.
        id: u64,
    },
    /// Everything the sender listens to among the conversations the receiver
    /// owns in the sender's view `view`, replacing what the receiver held;
    /// sent after each change of the sender's view, in chunks.
    InterestSync {
        /// Who listens.
        from: String,
        /// The fingerprint of the sender's placement.
        view: u64,
        /// A chunk of the conversations.
        conversations: Vec<ConversationId>,
        /// The first chunk: forget what was held.
        first: bool,
        /// The last chunk: the set is whole.
        last: bool,
    },
    /// Send me an [`PeerMsg::InterestSync`]: what I hold of yours does not
    /// match my view (a sync was missed, or our views differed when it left).
    InterestAsk {
        /// Who asks.
        from: String,
    },
    /// A login was revoked (logout, or a refresh token used twice): close
    /// the connections that signed in with it.
    LoginRevoked {
        /// Whose.
        user: UserId,
        /// The login (refresh family, the access tokens' `sid`).
        login: String,
    },
    /// An event for these users' connections on the receiver (one that
    /// belongs to no conversation: a profile change).
    ToUsers {
        /// Whose connections.
        users: Vec<UserId>,
        /// The event (boxed: it is far larger than the other variants).
        frame: Box<ServerFrame>,
    },
    /// A user shows their presence to fewer people than before (a block or
    /// a stricter privacy setting): the receiver checks its watches of it
    /// again.
    PresenceRestricted {
        /// Whose presence.
        user: UserId,
    },
    /// An operator closes every connection of a user on every node (a
    /// disconnect, or a suspension: the close code tells the client which).
    CloseUser {
        /// Whose.
        user: UserId,
        /// The WebSocket close code.
        code: u16,
    },
    /// An operator asks the receiver to drain: close its connections,
    /// hand its conversations over, and exit.
    Drain {
        /// The admin who asked, for the receiver's log.
        by: UserId,
    },
    /// Sent every second with the heartbeat; answered with a [`PeerMsg::Pong`]
    /// carrying the same `sent_us`, which times the link's round trip.
    Ping {
        /// The sender's node name.
        from: String,
        /// The sender's monotonic clock, in microseconds.
        sent_us: u64,
    },
    /// The answer to a [`PeerMsg::Ping`].
    Pong {
        /// The answering node's name.
        from: String,
        /// The ping's `sent_us`.
        sent_us: u64,
    },
}

/// A node's load, as its heartbeat carries it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStats {
    /// The node's build version.
    pub version: String,
    /// WebSocket connections open.
    pub connections: u64,
    /// Session actors (users with a connection here).
    pub sessions: u64,
    /// Conversation actors running.
    pub conversations: u64,
    /// Messages accepted per second (sends to conversations it owns).
    pub messages_per_sec: f64,
    /// Message frames queued to its connections per second.
    pub deliveries_per_sec: f64,
    /// The 99th percentile of send-to-ack over the last second, in ms;
    /// `None` when it acknowledged nothing.
    pub send_p99_ms: Option<f64>,
    /// Whether its store answered its last probe.
    pub store_up: bool,
    /// Whether its presence backend answered its last probe.
    pub presence_up: bool,
}

/// One replicated store write: opaque here, decoded by the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerOp {
    /// The node that accepted the write.
    pub origin: String,
    /// Its position in the origin's op log.
    pub seq: u64,
    /// The encoded write.
    #[serde(with = "serde_bytes_compat")]
    pub bytes: Vec<u8>,
}

/// An error answered by the owner, as the client will see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerError {
    /// The protocol code.
    pub code: ErrorCode,
    /// The message.
    pub message: String,
    /// For `rate_limited`.
    pub retry_after_ms: Option<u64>,
}

/// Events of one conversation for the receiving node's sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerDelivery {
    /// Which conversation.
    pub conversation: ConversationId,
    /// Who receives: the node's listeners of the conversation, or exactly
    /// these users (membership events also reach removed members).
    pub to: Audience,
    /// Users that start listening to the conversation on the receiver (new
    /// members with a session there).
    pub listen: Vec<UserId>,
    /// Users that stop listening (removed members).
    pub unlisten: Vec<UserId>,
    /// The events, in order, each with the connection that must not get it
    /// (the sender's, which has the `ok`).
    pub events: Vec<(ServerFrame, Option<ConnRef>)>,
    /// The sampled trace of the (first traced) send among the events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceParent>,
}

/// Where a sampled trace stands: the W3C trace context's trace id and the
/// span that the receiver's spans are children of. Only sampled traces
/// travel, so there are no flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TraceParent {
    /// The trace.
    pub trace_id: [u8; 16],
    /// The parent span.
    pub span_id: [u8; 8],
}

/// Who a [`PeerDelivery`] is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Audience {
    /// Every listener of the conversation on the node but this user (the
    /// typer does not see its own typing).
    Listeners {
        /// Skipped.
        except: Option<UserId>,
    },
    /// Exactly these users, if they have a session on the node.
    Users(Vec<UserId>),
}

/// Encodes bytes as a MessagePack bin (not an array of ints).
mod serde_bytes_compat {
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(b) = seq.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// Encodes a peer message.
pub fn encode(msg: &PeerMsg) -> Result<Vec<u8>, crate::codec::EncodeError> {
    crate::Codec::MsgPack.encode(msg)
}

/// Decodes a peer message.
pub fn decode(bytes: &[u8]) -> Result<PeerMsg, crate::DecodeError> {
    crate::Codec::MsgPack.decode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientMsgId, ConversationKind, MessageId, MessageKind};

    /// A heartbeat of a node from before `stats` still decodes (rolling
    /// upgrades).
    #[test]
    fn a_heartbeat_without_stats_decodes() {
        #[derive(Serialize)]
        enum Old {
            Heartbeat {
                from: String,
                node_id: u16,
                serving: bool,
            },
        }
        let old = Old::Heartbeat {
            from: "a".into(),
            node_id: 2,
            serving: true,
        };
        let bytes = rmp_serde::to_vec_named(&old).unwrap();
        assert_eq!(
            decode(&bytes).unwrap(),
            PeerMsg::Heartbeat {
                from: "a".into(),
                node_id: 2,
                serving: true,
                stats: None,
                protocol: 0,
            }
        );
    }

    #[test]
    fn round_trips() {
        let msgs = vec![
            PeerMsg::Heartbeat {
                from: "a".into(),
                node_id: 3,
                serving: true,
                stats: Some(NodeStats {
                    version: "0.1.0".into(),
                    connections: 4,
                    send_p99_ms: Some(1.5),
                    store_up: true,
                    ..NodeStats::default()
                }),
                protocol: PEER_PROTOCOL,
            },
            PeerMsg::CloseUser {
                user: UserId::new("u").unwrap(),
                code: 4005,
            },
            PeerMsg::PresenceRestricted {
                user: UserId::new("u").unwrap(),
            },
            PeerMsg::ToUsers {
                users: vec![UserId::new("u").unwrap()],
                frame: Box::new(ServerFrame::ok(None)),
            },
            PeerMsg::Drain {
                by: UserId::new("root").unwrap(),
            },
            PeerMsg::Ping {
                from: "a".into(),
                sent_us: 17,
            },
            PeerMsg::Pong {
                from: "b".into(),
                sent_us: 17,
            },
            PeerMsg::Request {
                from: "a".into(),
                id: 7,
                user: UserId::new("u").unwrap(),
                conn: 9,
                request: ConversationRequest::Send {
                    attachments: Vec::new(),
                    conversation: ConversationId::new("g:1").unwrap(),
                    client_msg_id: ClientMsgId::new("c1").unwrap(),
                    body: "hi".into(),
                    kind: MessageKind::new("text").unwrap(),
                    reply_to: Some(MessageId(5)),
                },
                trace: Some(TraceParent {
                    trace_id: [7; 16],
                    span_id: [9; 8],
                }),
            },
            PeerMsg::Reply {
                id: 7,
                result: Err(PeerError {
                    code: ErrorCode::Forbidden,
                    message: "no".into(),
                    retry_after_ms: None,
                }),
            },
            PeerMsg::Replicate {
                from: "a".into(),
                op: PeerOp {
                    origin: "a".into(),
                    seq: 1,
                    bytes: vec![0, 1, 255],
                },
            },
            PeerMsg::Deliver(Box::new(PeerDelivery {
                conversation: ConversationId::new("g:1").unwrap(),
                to: Audience::Listeners {
                    except: Some(UserId::new("u").unwrap()),
                },
                listen: vec![],
                unlisten: vec![UserId::new("v").unwrap()],
                events: vec![(
                    ServerFrame::Typing {
                        conversation: ConversationId::new("g:1").unwrap(),
                        user: UserId::new("u").unwrap(),
                        active: true,
                    },
                    Some(4),
                )],
                trace: None,
            })),
            PeerMsg::Interest {
                from: "a".into(),
                view: u64::MAX,
                listening: false,
                conversations: vec![ConversationId::new("g:1").unwrap()],
                ack: Some(3),
            },
            PeerMsg::InterestAck { id: 3 },
            PeerMsg::InterestSync {
                from: "a".into(),
                view: 1,
                conversations: vec![],
                first: true,
                last: true,
            },
            PeerMsg::InterestAsk { from: "b".into() },
        ];
        for m in msgs {
            let bytes = encode(&m).unwrap();
            assert_eq!(decode(&bytes).unwrap(), m);
        }
    }

    #[test]
    fn a_requests_weight_follows_its_encoded_size() {
        for n in [0, 100, 10_000, 100_000] {
            let send = ConversationRequest::Send {
                attachments: Vec::new(),
                conversation: ConversationId::new("g:1").unwrap(),
                client_msg_id: ClientMsgId::new("c1").unwrap(),
                body: "x".repeat(n),
                kind: MessageKind::default(),
                reply_to: Some(MessageId(9)),
            };
            let members = (0..n / 100)
                .map(|i| UserId::new(&format!("user-{i}")).unwrap())
                .collect();
            let create = ConversationRequest::Create {
                conversation: ConversationId::new("g:1").unwrap(),
                kind: ConversationKind::Group,
                members,
                title: Some("t".repeat(n / 10)),
            };
            for r in [send, create] {
                let encoded = rmp_serde::to_vec(&r).unwrap().len();
                let weight = r.weight();
                assert!(
                    weight >= encoded && weight <= encoded + 128 + n / 100 * 8,
                    "weight {weight} for {encoded} bytes encoded"
                );
            }
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&b""[..], b"\xc1", b"\x81\xa3Foo\xc0", b"\x92\x01"] {
            assert!(decode(bytes).is_err());
        }
    }
}
