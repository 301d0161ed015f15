//! The accounts' statements: users, refresh tokens, logins.

use scylla::statement::prepared::PreparedStatement;

use super::prepare::{not_idempotent, Prepare};
use crate::StoreError;

/// Write timestamps that order a login's two states: revocation wins.
const LOGIN_ACTIVE_TS: i64 = 1;
const LOGIN_REVOKED_TS: i64 = 2;

/// The accounts' statements.
pub(in crate::scylladb) struct Statements {
    pub(in crate::scylladb) create_user: PreparedStatement,
    pub(in crate::scylladb) select_user: PreparedStatement,
    pub(in crate::scylladb) insert_refresh: PreparedStatement,
    pub(in crate::scylladb) select_refresh: PreparedStatement,
    pub(in crate::scylladb) use_refresh: PreparedStatement,
    pub(in crate::scylladb) activate_login: PreparedStatement,
    pub(in crate::scylladb) revoke_login: PreparedStatement,
    pub(in crate::scylladb) select_login: PreparedStatement,
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
