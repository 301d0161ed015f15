//! Accounts on ScyllaDB: users (a username taken with a lightweight
//! transaction), refresh tokens (used up with one), logins, and the secrets
//! every node shares.

use async_trait::async_trait;
use chat_protocol::{now_ms, UserId};
use scylla::statement::prepared::PreparedStatement;

use super::statements::{not_idempotent, Prepare};
use super::store::{applied, ScyllaStore};
use crate::{corrupt, AccountStore, LoginState, RefreshRecord, Rotation, StoreError, UserRecord};

/// How long a refresh token's row outlives its expiry (then the database
/// drops it by itself), and the longest TTL it is given (Cassandra refuses expiry past 2038).
const REFRESH_GRACE_SECS: u64 = 7 * 24 * 3600;
const MAX_TTL_SECS: u64 = 10 * 365 * 24 * 3600;

/// Write timestamps that order a login's two states: revocation wins.
const LOGIN_ACTIVE_TS: i64 = 1;
const LOGIN_REVOKED_TS: i64 = 2;

/// The accounts' statements.
pub(super) struct Statements {
    pub(super) create_user: PreparedStatement,
    pub(super) select_user: PreparedStatement,
    pub(super) insert_refresh: PreparedStatement,
    pub(super) select_refresh: PreparedStatement,
    pub(super) use_refresh: PreparedStatement,
    pub(super) activate_login: PreparedStatement,
    pub(super) revoke_login: PreparedStatement,
    pub(super) select_login: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(p: &Prepare<'_>) -> Result<Self, StoreError> {
        Ok(Statements {
            create_user: not_idempotent(
                p.cql(
                    "INSERT INTO {ks}.users (user_id, password_hash, display_name, created_at) \
                   VALUES (?, ?, ?, ?) IF NOT EXISTS",
                )
                .await?,
            ),
            select_user: p
                .cql(
                    "SELECT user_id, password_hash, display_name, created_at \
                 FROM {ks}.users WHERE user_id = ?",
                )
                .await?,
            // The write time is the setting's time: the later one wins in
            // every replica without a read.
            insert_refresh: p
                .cql(
                    "INSERT INTO {ks}.refresh_tokens (token_hash, user_id, family, \
                 expires_at, used) VALUES (?, ?, ?, ?, false) USING TTL ?",
                )
                .await?,
            select_refresh: p
                .cql(
                    "SELECT user_id, family, expires_at, used \
                 FROM {ks}.refresh_tokens WHERE token_hash = ?",
                )
                .await?,
            use_refresh: not_idempotent(
                p.cql(
                    "UPDATE {ks}.refresh_tokens SET used = true WHERE token_hash = ? \
                   IF used = false",
                )
                .await?,
            ),
            activate_login: p
                .cql(&format!(
                    "UPDATE {{ks}}.logins USING TIMESTAMP {LOGIN_ACTIVE_TS} SET revoked = false \
                 WHERE family = ?"
                ))
                .await?,
            revoke_login: p
                .cql(&format!(
                    "UPDATE {{ks}}.logins USING TIMESTAMP {LOGIN_REVOKED_TS} SET revoked = true \
                 WHERE family = ?"
                ))
                .await?,
            select_login: p
                .cql("SELECT revoked FROM {ks}.logins WHERE family = ?")
                .await?,
        })
    }
}

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
