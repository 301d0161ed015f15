//! Error codes carried by `error` frames and HTTP error bodies, and close codes.

use serde::{Deserialize, Serialize};

/// Every error a client can be told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(test, derive(ts_rs::TS))]
pub enum ErrorCode {
    /// Not a valid frame or request.
    BadRequest,
    /// Token missing, invalid or expired.
    Unauthorized,
    /// Not a member, or not allowed to do that.
    Forbidden,
    /// No such conversation or user.
    NotFound,
    /// Body over `max_body_bytes`.
    TooLarge,
    /// The name asked for is taken (registration).
    Conflict,
    /// An HTTP route that does not take the request's method (HTTP only; an
    /// addition to version 1).
    MethodNotAllowed,
    /// Over the sender's rate; the frame carries `retry_after_ms`.
    RateLimited,
    /// A dependency is down; nothing was stored; retry.
    Unavailable,
    /// A bug.
    Internal,
    /// The account has a second factor: sign in again with a `totp` code
    /// or a `recovery_code` (HTTP only; a 1.2 addition).
    TotpRequired,
    /// Over a storage quota (HTTP only; a 1.2 addition).
    QuotaExceeded,
}

impl ErrorCode {
    /// The HTTP status that carries this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::TooLarge => 413,
            ErrorCode::Conflict => 409,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::RateLimited => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
            ErrorCode::TotpRequired => 401,
            ErrorCode::QuotaExceeded => 403,
        }
    }

    /// The code's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Conflict => "conflict",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::TotpRequired => "totp_required",
            ErrorCode::QuotaExceeded => "quota_exceeded",
        }
    }
}

/// WebSocket close codes of the protocol.
pub mod close_code {
    /// The node is shutting down: reconnect to another node.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the WebSocket protocol (reserved bits, an unmasked
    /// or orphan frame, a bad opcode).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// A frame over `max_frame_bytes`.
    pub const TOO_BIG: u16 = 1009;
    /// The token expired or was revoked.
    pub const TOKEN_EXPIRED: u16 = 4001;
    /// Too many connections for this user.
    pub const TOO_MANY_CONNECTIONS: u16 = 4002;
    /// The client reads too slowly; its outbound queue overflowed.
    pub const SLOW_CONSUMER: u16 = 4003;
    /// An operator closed the user's connections; the client may reconnect.
    pub const DISCONNECTED: u16 = 4004;
    /// The account is suspended: the client should not reconnect (signing
    /// in answers `forbidden` until an operator lifts it).
    pub const SUSPENDED: u16 = 4005;
}
