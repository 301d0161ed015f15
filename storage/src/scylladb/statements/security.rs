//! The statements of credentials and listed logins. A login's row lives
//! as long as its refresh token (TTL), so the list forgets it by itself.

use scylla::statement::prepared::PreparedStatement;

use super::prepare::Prepare;
use crate::StoreError;

/// Their statements.
pub(in crate::scylladb) struct Statements {
    pub(in crate::scylladb) put_credentials: PreparedStatement,
    pub(in crate::scylladb) select_credentials: PreparedStatement,
    pub(in crate::scylladb) put_email_owner: PreparedStatement,
    pub(in crate::scylladb) select_email_owner: PreparedStatement,
    pub(in crate::scylladb) put_login: PreparedStatement,
    pub(in crate::scylladb) select_logins: PreparedStatement,
    pub(in crate::scylladb) select_login: PreparedStatement,
    pub(in crate::scylladb) delete_login: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(p: &Prepare<'_>) -> Result<Statements, StoreError> {
        Ok(Statements {
            put_credentials: p
                .cql("INSERT INTO {ks}.user_credentials (user_id, record) VALUES (?, ?)")
                .await?,
            select_credentials: p
                .cql("SELECT record FROM {ks}.user_credentials WHERE user_id = ?")
                .await?,
            put_email_owner: p
                .cql("INSERT INTO {ks}.email_owners (address, user_id) VALUES (?, ?)")
                .await?,
            select_email_owner: p
                .cql("SELECT user_id FROM {ks}.email_owners WHERE address = ?")
                .await?,
            put_login: p
                .cql(
                    "INSERT INTO {ks}.user_logins (user_id, login_id, record) VALUES (?, ?, ?) \
                     USING TTL ?",
                )
                .await?,
            select_logins: p
                .cql("SELECT record FROM {ks}.user_logins WHERE user_id = ?")
                .await?,
            select_login: p
                .cql("SELECT record FROM {ks}.user_logins WHERE user_id = ? AND login_id = ?")
                .await?,
            delete_login: p
                .cql("DELETE FROM {ks}.user_logins WHERE user_id = ? AND login_id = ?")
                .await?,
        })
    }
}
