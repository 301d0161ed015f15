//! The rules on what a client sends to register or sign in: usernames,
//! passwords and display names.

use chat_protocol::UserId;

use super::error::AuthError;

/// Shortest accepted password, in bytes.
pub const MIN_PASSWORD_BYTES: usize = 8;
/// Longest accepted password, in bytes: bounds the work one request can cause.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Longest display name, in bytes.
pub const MAX_DISPLAY_NAME_BYTES: usize = 128;

/// Usernames are case-insensitive: the id is the name in lower case.
pub(super) fn parse_username(username: &str) -> Result<UserId, AuthError> {
    UserId::new(&username.to_ascii_lowercase())
        .map_err(|e| AuthError::InvalidInput(format!("username: {e}")))
}

pub(crate) fn check_password(password: &str) -> Result<(), AuthError> {
    let len = password.len();
    if !(MIN_PASSWORD_BYTES..=MAX_PASSWORD_BYTES).contains(&len) {
        return Err(AuthError::InvalidInput(format!(
            "password must be {MIN_PASSWORD_BYTES} to {MAX_PASSWORD_BYTES} bytes long, got {len}"
        )));
    }
    Ok(())
}

pub(super) fn check_display_name(name: Option<&str>) -> Result<Option<String>, AuthError> {
    let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    if name.len() > MAX_DISPLAY_NAME_BYTES {
        return Err(AuthError::InvalidInput(format!(
            "display_name must be at most {MAX_DISPLAY_NAME_BYTES} bytes long, got {}",
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(AuthError::InvalidInput(
            "display_name must not contain control characters".into(),
        ));
    }
    Ok(Some(name.to_owned()))
}
