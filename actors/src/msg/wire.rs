//! The wire side of the messages: how a [`RouterMsg`] crosses to another
//! node (MessagePack, see `chat_protocol::peer`), and how errors travel in
//! a peer's reply.

use std::sync::atomic::{AtomicU64, Ordering};

use chat_protocol::peer::PeerError;
use chat_protocol::ErrorCode;
use ractor::message::{BoxedDowncastErr, SerializedMessage};

use super::RouterMsg;
use crate::error::ChatError;

/// Peer messages that could not be decoded (ractor_cluster drops them).
pub static PEER_DECODE_FAILURES: AtomicU64 = AtomicU64::new(0);

impl ractor::Message for RouterMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        let args = match self {
            RouterMsg::Wire(bytes) => bytes.to_vec(),
            RouterMsg::Peer(msg) => {
                chat_protocol::peer::encode(&msg).map_err(|_| BoxedDowncastErr)?
            }
            // Everything else carries ports or actor refs: local only.
            _ => return Err(BoxedDowncastErr),
        };
        Ok(SerializedMessage::Cast {
            variant: "peer".into(),
            args,
            metadata: None,
        })
    }

    fn deserialize(msg: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        match msg {
            SerializedMessage::Cast { variant, args, .. } if variant == "peer" => {
                chat_protocol::peer::decode(&args)
                    .map(RouterMsg::Peer)
                    .map_err(|e| {
                        PEER_DECODE_FAILURES.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "undecodable message from a peer");
                        BoxedDowncastErr
                    })
            }
            _ => {
                PEER_DECODE_FAILURES.fetch_add(1, Ordering::Relaxed);
                Err(BoxedDowncastErr)
            }
        }
    }
}

impl From<&ChatError> for PeerError {
    fn from(e: &ChatError) -> Self {
        PeerError {
            code: e.code(),
            message: e.to_string(),
            retry_after_ms: match e {
                ChatError::RateLimited { retry_after_ms } => Some(*retry_after_ms),
                _ => None,
            },
        }
    }
}

impl From<PeerError> for ChatError {
    fn from(e: PeerError) -> Self {
        match e.code {
            ErrorCode::BadRequest => ChatError::BadRequest(e.message),
            ErrorCode::Forbidden => ChatError::Forbidden(e.message),
            ErrorCode::NotFound => ChatError::NotFound(e.message),
            ErrorCode::TooLarge => ChatError::TooLarge(e.message),
            ErrorCode::RateLimited => ChatError::RateLimited {
                retry_after_ms: e.retry_after_ms.unwrap_or(1000),
            },
            ErrorCode::Unavailable => ChatError::Unavailable(e.message),
            _ => ChatError::Internal(e.message),
        }
    }
}
