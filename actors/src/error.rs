//! The errors actors answer requests with; each maps to one protocol code.

use chat_protocol::{ErrorCode, ReqId, ServerFrame};

use chat_storage::StoreError;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    /// The request is malformed or makes no sense.
    #[error("{0}")]
    BadRequest(String),
    /// Not a member, or not allowed to do that here.
    #[error("{0}")]
    Forbidden(String),
    /// No such conversation or user.
    #[error("{0}")]
    NotFound(String),
    /// A field over its size limit.
    #[error("{0}")]
    TooLarge(String),
    /// Over the user's send rate.
    #[error("too many messages; retry in {retry_after_ms} ms")]
    RateLimited {
        /// When the next send will be accepted.
        retry_after_ms: u64,
    },
    /// Storage (or another dependency) is down; nothing was stored.
    #[error("{0}")]
    Unavailable(String),
    /// The user already has as many connections on this node as allowed.
    #[error("too many connections for this user")]
    TooManyConnections,
    /// A bug.
    #[error("{0}")]
    Internal(String),
}

impl ChatError {
    /// The protocol error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            ChatError::BadRequest(_) => ErrorCode::BadRequest,
            ChatError::Forbidden(_) => ErrorCode::Forbidden,
            ChatError::NotFound(_) => ErrorCode::NotFound,
            ChatError::TooLarge(_) => ErrorCode::TooLarge,
            ChatError::RateLimited { .. } => ErrorCode::RateLimited,
            ChatError::Unavailable(_) => ErrorCode::Unavailable,
            ChatError::TooManyConnections => ErrorCode::Forbidden,
            ChatError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The `error` frame answering request `req`.
    pub fn to_frame(&self, req: Option<ReqId>) -> ServerFrame {
        ServerFrame::Error {
            req,
            code: self.code(),
            message: self.to_string(),
            retry_after_ms: match self {
                ChatError::RateLimited { retry_after_ms } => Some(*retry_after_ms),
                _ => None,
            },
        }
    }
}

impl From<StoreError> for ChatError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => ChatError::Unavailable(m),
            StoreError::Conflict => ChatError::BadRequest("already exists".into()),
            StoreError::Corrupt(m) => ChatError::Internal(m),
        }
    }
}
