//! Accounts an operator makes from the command line
//! (`chat-node admin create-user`), under the rules registration keeps.

use chat_protocol::now_ms;
use chat_storage::UserRecord;

use super::checks::{check_display_name, check_password, parse_username};
use super::error::AuthError;
use super::passwords;

/// The account `username` with `password`, ready to store: the name and the
/// password checked as registration checks them (the id in lower case, the
/// name as typed its display name when the case differs), the password
/// hashed on this thread.
pub fn operator_account(username: &str, password: &str) -> Result<UserRecord, AuthError> {
    let id = parse_username(username)?;
    check_password(password)?;
    let display_name = check_display_name(Some(username))?.filter(|name| name != id.as_str());
    Ok(UserRecord {
        id,
        password_hash: Some(passwords::hash_once(password)?),
        display_name,
        created_at: now_ms(),
    })
}
