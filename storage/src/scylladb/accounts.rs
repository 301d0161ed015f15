//! Accounts on ScyllaDB: users (a username taken with a lightweight
//! transaction), refresh tokens (used up with one), logins, and the secrets
//! every node shares.

use async_trait::async_trait;
use chat_protocol::{now_ms, UserId};

use super::cql::applied;
use super::store::ScyllaStore;
use crate::{corrupt, AccountStore, LoginState, RefreshRecord, Rotation, StoreError, UserRecord};

/// How long a refresh token's row outlives its expiry (then the database
/// drops it by itself), and the longest TTL it is given (Cassandra refuses expiry past 2038).
const REFRESH_GRACE_SECS: u64 = 7 * 24 * 3600;
const MAX_TTL_SECS: u64 = 10 * 365 * 24 * 3600;

#[async_trait]
impl AccountStore for ScyllaStore {
    async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let result = self
            .run(
                &self.q.accounts.create_user,
                (
                    user.id.as_str(),
                    user.password_hash.as_deref(),
                    user.display_name.as_deref(),
                    user.created_at as i64,
                ),
            )
            .await?;
        if applied(result)? {
            Ok(())
        } else {
            Err(StoreError::Conflict)
        }
    }

    async fn user(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError> {
        let rows = self
            .rows(&self.q.accounts.select_user, (id.as_str(),))
            .await?;
        type UserRow = (String, Option<String>, Option<String>, Option<i64>);
        match rows.maybe_first_row::<UserRow>().map_err(corrupt)? {
            Some((user, password_hash, display_name, created_at)) => Ok(Some(UserRecord {
                id: UserId::new(&user).map_err(corrupt)?,
                password_hash,
                display_name,
                created_at: created_at.unwrap_or(0) as u64,
            })),
            None => Ok(None),
        }
    }

    async fn put_refresh(&self, record: &RefreshRecord) -> Result<(), StoreError> {
        // The login first: a token never exists without its family's state.
        self.run(&self.q.accounts.activate_login, (record.family.as_str(),))
            .await?;
        self.run(
            &self.q.accounts.insert_refresh,
            (
                record.token_hash.as_str(),
                record.user.as_str(),
                record.family.as_str(),
                record.expires_at as i64,
                refresh_ttl(record.expires_at),
            ),
        )
        .await?;
        Ok(())
    }

    async fn rotate_refresh(
        &self,
        old_hash: &str,
        new: &RefreshRecord,
        now: u64,
    ) -> Result<Rotation, StoreError> {
        let rows = self
            .rows(&self.q.accounts.select_refresh, (old_hash,))
            .await?;
        type RefreshRow = (String, String, i64, Option<bool>);
        let Some((user, family, expires_at, _)) =
            rows.maybe_first_row::<RefreshRow>().map_err(corrupt)?
        else {
            return Ok(Rotation::Invalid);
        };
        if self.login_state(&family).await? == Some(LoginState::Revoked) || now >= expires_at as u64
        {
            return Ok(Rotation::Invalid);
        }
        // The transaction decides between two presenters of one token
        // (two nodes, or a thief and its owner): one rotates, and the other
        // is a reuse that revokes the family.
        let used = self.run(&self.q.accounts.use_refresh, (old_hash,)).await?;
        if !applied(used)? {
            self.run(&self.q.accounts.revoke_login, (family.as_str(),))
                .await?;
            return Ok(Rotation::Reused);
        }
        let user = UserId::new(&user).map_err(corrupt)?;
        self.put_refresh(&RefreshRecord {
            token_hash: new.token_hash.clone(),
            user: user.clone(),
            family,
            expires_at: new.expires_at,
        })
        .await?;
        Ok(Rotation::Rotated { user })
    }

    async fn revoke_refresh_family(&self, token_hash: &str) -> Result<Option<UserId>, StoreError> {
        let rows = self
            .rows(&self.q.accounts.select_refresh, (token_hash,))
            .await?;
        type RefreshRow = (String, String, i64, Option<bool>);
        let Some((user, family, _, _)) = rows.maybe_first_row::<RefreshRow>().map_err(corrupt)?
        else {
            return Ok(None);
        };
        self.run(&self.q.accounts.revoke_login, (family.as_str(),))
            .await?;
        Ok(Some(UserId::new(&user).map_err(corrupt)?))
    }

    async fn login_state(&self, family: &str) -> Result<Option<LoginState>, StoreError> {
        let rows = self.rows(&self.q.accounts.select_login, (family,)).await?;
        Ok(
            match rows.maybe_first_row::<(Option<bool>,)>().map_err(corrupt)? {
                Some((Some(true),)) => Some(LoginState::Revoked),
                Some((Some(false),)) => Some(LoginState::Active),
                _ => None,
            },
        )
    }

    async fn keep_secret(&self, name: &str, candidate: &str) -> Result<Option<String>, StoreError> {
        self.init_setting(&format!("secret.{name}"), candidate)
            .await
            .map(Some)
    }
}

/// A refresh token row's TTL: its remaining life plus a grace period, so
/// the database forgets used-up tokens by itself.
fn refresh_ttl(expires_at: u64) -> i32 {
    let left = expires_at.saturating_sub(now_ms()) / 1000;
    (left + REFRESH_GRACE_SECS).min(MAX_TTL_SECS) as i32
}
