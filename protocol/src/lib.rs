//! The client contract of the chat cluster (version 1), as Rust types.
//!
//! Everything that crosses a process boundary is defined here and nowhere else:
//! the frames a WebSocket client and the node exchange ([`frame`]), the objects
//! they carry ([`message`], [`conversation`], [`presence`]), the identifiers and
//! their validation ([`ids`]), the error and close codes ([`error`]), the limits a
//! node enforces ([`limits`]) and the two encodings chosen by subprotocol
//! ([`codec`]). The crate does no I/O, so the node, the test clients and the load
//! harness all speak through the same types.
//!
//! Message ids are `u64`. In JSON they travel as decimal strings (JavaScript
//! loses precision past 2^53), in MessagePack as integers; both decoders accept
//! both forms so a lenient client is never rejected for it.
#![deny(missing_docs, unreachable_pub, unsafe_code)]
#![warn(clippy::mod_module_files)]

pub mod codec;
pub mod conversation;
pub mod error;
pub mod frame;
pub mod held;
pub mod ids;
pub mod limits;
pub mod media;
pub mod message;
pub mod notify;
pub mod peer;
pub mod people;
pub mod presence;
pub mod request;
#[cfg(test)]
mod typescript;

pub use codec::{Codec, DecodeError};
pub use conversation::{Conversation, ConversationKind, ConversationSummary, Member, Role};
pub use error::{close_code, ErrorCode};
pub use frame::{ClientFrame, OkReply, ReceiptKind, Rejection, ServerFrame, SharedFrame};
pub use held::{HeldMessage, HeldPage};
pub use ids::{ClientMsgId, ConversationId, IdError, IdGenerator, MessageId, ReqId, UserId};
pub use limits::Limits;
pub use media::Attachment;
pub use message::{parse_mentions, Message, MessageKind, ReactError, Reaction};
pub use presence::{Presence, Status};

/// Milliseconds since the Unix epoch on this machine's clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
