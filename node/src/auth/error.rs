//! Why authentication failed, and what a client is told of it.

use chat_protocol::ErrorCode;
use chat_storage::StoreError;

/// Why authentication failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The request carries no access token.
    #[error("missing bearer token")]
    MissingToken,
    /// The token is malformed, badly signed, for someone else, or (refresh
    /// tokens) unknown, used or revoked.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// The access token has expired.
    #[error("token expired")]
    Expired,
    /// Unknown user or wrong password; deliberately not saying which.
    #[error("wrong username or password")]
    BadCredentials,
    /// The password was right, and the account has a second factor: a
    /// code is needed too.
    #[error("this account needs a code from its authenticator app, or a recovery code")]
    TotpRequired,
    /// A second factor's code that is wrong, used, or too old.
    #[error("wrong, used or expired code")]
    WrongCode,
    /// A signed-in user's current password, given to change it, is wrong.
    #[error("the current password is wrong")]
    WrongPassword,
    /// Registration with a name that exists.
    #[error("username already taken")]
    UsernameTaken,
    /// An operator suspended the account: no sign-in, refresh or
    /// connection until one lifts it.
    #[error("this account is suspended")]
    Suspended,
    /// A request field breaks a rule; the message says which.
    #[error("{0}")]
    InvalidInput(String),
    /// The node only verifies tokens: it has no key to sign them with.
    #[error("this node does not issue tokens (no signing key configured)")]
    CannotIssue,
    /// Every password hashing thread is busy and the queue full: retry.
    #[error("too many logins at once; retry shortly")]
    Busy,
    /// Too many attempts from this address, or on this account.
    #[error("too many attempts; retry in {retry_after_ms} ms")]
    RateLimited {
        /// When to retry.
        retry_after_ms: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The `[auth]` configuration or its key files are unusable.
    #[error("auth configuration: {0}")]
    Config(String),
    /// A bug or a failure of the hashing or signing machinery.
    #[error("internal auth error: {0}")]
    Internal(String),
}

impl AuthError {
    /// The protocol error code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::MissingToken
            | AuthError::InvalidToken(_)
            | AuthError::Expired
            | AuthError::BadCredentials
            | AuthError::WrongCode => ErrorCode::Unauthorized,
            AuthError::TotpRequired => ErrorCode::TotpRequired,
            AuthError::WrongPassword => ErrorCode::Forbidden,
            AuthError::UsernameTaken => ErrorCode::Conflict,
            AuthError::Suspended => ErrorCode::Forbidden,
            AuthError::InvalidInput(_) => ErrorCode::BadRequest,
            AuthError::RateLimited { .. } => ErrorCode::RateLimited,
            AuthError::Busy | AuthError::Store(StoreError::Unavailable(_)) => {
                ErrorCode::Unavailable
            }
            AuthError::CannotIssue
            | AuthError::Store(_)
            | AuthError::Config(_)
            | AuthError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The HTTP status for this error: that of [`Self::code`].
    pub fn http_status(&self) -> u16 {
        self.code().http_status()
    }

    /// When a client may retry, for the errors that say so.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            AuthError::RateLimited { retry_after_ms } => Some(*retry_after_ms),
            AuthError::Busy => Some(1000),
            _ => None,
        }
    }
}
