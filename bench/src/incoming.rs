//! What a client reads from any target, as far as the harness cares: every
//! client (chat-node, Socket.IO, Centrifugo) decodes its server's frames
//! into this, so that scenarios read all targets alike.

use chat_protocol::OkReply;

/// A frame from the server, as far as the harness cares.
#[derive(Debug)]
pub enum Incoming {
    /// A send (or join) succeeded; `id` is the stored message's id when known.
    Ack {
        /// The request it answers.
        req: u64,
        /// Message id.
        id: Option<u64>,
    },
    /// A control request (create, invite, history) succeeded.
    Reply {
        /// The request it answers.
        req: u64,
        /// The reply.
        ok: Box<OkReply>,
    },
    /// A request (or the connection) failed.
    Error {
        /// The request it answers, if any.
        req: Option<u64>,
        /// The protocol's error code (or the baseline's).
        code: String,
        /// Details.
        message: String,
    },
    /// A message from another member.
    Delivery {
        /// Message id (protocol v1 only).
        id: Option<u64>,
        /// The send time its sender wrote in the body.
        sent_us: Option<u64>,
    },
    /// The client's own message coming back to it (Centrifugo sends a
    /// publication to every subscriber, its publisher too): not a delivery.
    Echo {
        /// Message id (stream offset).
        id: Option<u64>,
    },
    /// A page of history, or the messages a resubscription recovered.
    Page {
        /// The request it answers.
        req: u64,
        /// Smallest message id in it.
        oldest: Option<u64>,
        /// Largest message id in it.
        newest: Option<u64>,
        /// Messages in it.
        count: usize,
        /// More to read in the direction of the request (for a recovery:
        /// not everything missed could be recovered, page forward).
        more: bool,
    },
    /// The user was added to a conversation.
    Joined {
        /// Its id.
        conversation: String,
    },
    /// Anything else (typing, presence, ...), with a note when unexpected.
    Other(String),
}
