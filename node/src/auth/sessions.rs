//! The logins of a user as they are listed to them (`GET
//! /v1/me/sessions`): a sign-in lists its login with the client's user
//! agent and address, each refresh notes its use, and the list shows only
//! logins that still work.
//!
//! Logins made before logins were listed get listed at their next refresh,
//! unless their user changed their password since: a password change
//! ends every other listed login, and these, which it could not see, end
//! at their next refresh instead (within an access token's lifetime).

use std::net::IpAddr;

use axum::http::{header, HeaderMap};
use chat_protocol::{now_ms, UserId};
use chat_storage::{LoginRecord, LoginState, MessageStore, StoreError};

use super::error::AuthError;
use super::logins;

/// Longest user agent kept.
const MAX_USER_AGENT_CHARS: usize = 200;

/// Who signed in or refreshed: what a person recognises a login by.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// The `User-Agent` header, cut short.
    pub user_agent: Option<String>,
    /// The peer's address.
    pub address: Option<String>,
}

impl ClientInfo {
    /// From a request's headers and peer address.
    pub fn of(headers: &HeaderMap, peer: IpAddr) -> ClientInfo {
        let user_agent = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| {
                ua.chars()
                    .filter(|c| !c.is_control())
                    .take(MAX_USER_AGENT_CHARS)
                    .collect()
            });
        ClientInfo {
            user_agent,
            address: Some(peer.to_string()),
        }
    }

    /// The listing of a login this client starts now.
    fn new_login(&self, login: &str, expires_at: u64) -> LoginRecord {
        let now = now_ms();
        LoginRecord {
            id: login.to_owned(),
            created_at: now,
            last_used_at: now,
            expires_at,
            user_agent: self.user_agent.clone(),
            address: self.address.clone(),
        }
    }
}

/// Lists a new login of `user`.
pub(super) async fn started(
    store: &dyn MessageStore,
    user: &UserId,
    login: &str,
    client: &ClientInfo,
    expires_at: u64,
) -> Result<(), StoreError> {
    let record = client.new_login(login, expires_at);
    store.put_login(user, &record).await
}

/// Notes a refresh of `login`; refuses a login that was never listed when
/// its user changed their password since listing began (see the module
/// doc), which the caller then revokes.
pub(super) async fn refreshed(
    store: &dyn MessageStore,
    user: &UserId,
    login: &str,
    client: &ClientInfo,
    expires_at: u64,
) -> Result<(), AuthError> {
    let now = now_ms();
    let record = match store.login(user, login).await? {
        Some(mut r) => {
            r.last_used_at = now;
            r.expires_at = expires_at;
            r.user_agent = client.user_agent.clone().or(r.user_agent);
            r.address = client.address.clone().or(r.address);
            r
        }
        None => {
            let changed = store
                .credentials(user)
                .await?
                .is_some_and(|c| c.password_changed_at > 0);
            if changed {
                return Err(AuthError::InvalidToken(
                    "this login was revoked by a password change".into(),
                ));
            }
            client.new_login(login, expires_at)
        }
    };
    Ok(store.put_login(user, &record).await?)
}

/// `user`'s logins that still work, newest use first; the others are
/// forgotten on the way.
pub(super) async fn live(
    store: &dyn MessageStore,
    user: &UserId,
) -> Result<Vec<LoginRecord>, StoreError> {
    let now = now_ms();
    let mut live = Vec::new();
    for r in store.logins(user).await? {
        let works = r.expires_at > now
            && store.login_state(&r.id).await? == Some(LoginState::Active)
            && match logins::generation_of(&r.id, user) {
                Some(g) => !logins::ended(store, user, g).await?,
                None => false,
            };
        if works {
            live.push(r);
        } else {
            store.delete_login(user, &r.id).await?;
        }
    }
    live.sort_by_key(|l| std::cmp::Reverse(l.last_used_at));
    Ok(live)
}
