//! What proves a sign-in beyond the name: the password hash to check
//! (the one last changed, else the account's), and the second factor's
//! code, used up once accepted.

use chat_protocol::{now_ms, UserId};
use chat_storage::{Credentials, MessageStore, UserRecord};

use super::error::AuthError;
use super::totp;
use super::wire::LoginRequest;

/// The password hash that signs `user` in: the one last changed, else
/// the account's own.
pub(super) fn password_hash(
    user: Option<&UserRecord>,
    credentials: Option<&Credentials>,
) -> Option<String> {
    credentials
        .and_then(|c| c.password_hash.clone())
        .or_else(|| user.and_then(|u| u.password_hash.clone()))
}

/// Checks the second factor of a sign-in whose password was right, and
/// uses the code up.
pub(super) async fn second_factor(
    store: &dyn MessageStore,
    user: &UserId,
    mut credentials: Credentials,
    req: &LoginRequest,
) -> Result<(), AuthError> {
    let Some(state) = credentials.totp.as_mut() else {
        return Ok(());
    };
    if let Some(code) = req.totp.as_deref() {
        match totp::accept(state, code, now_ms() / 1000)? {
            Some(step) => state.last_step = step,
            None => return Err(AuthError::WrongCode),
        }
    } else if let Some(code) = req.recovery_code.as_deref() {
        if !totp::take_recovery(state, code) {
            return Err(AuthError::WrongCode);
        }
    } else {
        return Err(AuthError::TotpRequired);
    }
    Ok(store.put_credentials(user, &credentials).await?)
}
