//! The moderation's statements: account flags, the audit log by day.

use scylla::statement::prepared::PreparedStatement;

use super::prepare::Prepare;
use crate::StoreError;

/// Days of audit log read back at most (one partition per day).
const AUDIT_DAYS: i32 = 400;

/// The moderation's statements.
pub(in crate::scylladb) struct Statements {
    pub(in crate::scylladb) set_user_flag: PreparedStatement,
    pub(in crate::scylladb) select_user_flags: PreparedStatement,
    pub(in crate::scylladb) insert_audit_day: PreparedStatement,
    pub(in crate::scylladb) insert_audit: PreparedStatement,
    pub(in crate::scylladb) select_audit_days: PreparedStatement,
    pub(in crate::scylladb) select_audit: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(p: &Prepare<'_>) -> Result<Self, StoreError> {
        Ok(Statements {
            set_user_flag: p
                .cql(
                    "UPDATE {ks}.user_flags USING TIMESTAMP ? SET enabled = ? \
                 WHERE user_id = ? AND flag = ?",
                )
                .await?,
            select_user_flags: p
                .cql("SELECT flag, enabled FROM {ks}.user_flags WHERE user_id = ?")
                .await?,
            insert_audit_day: p
                .cql("INSERT INTO {ks}.audit_days (part, day) VALUES (0, ?)")
                .await?,
            insert_audit: p
                .cql(
                    "INSERT INTO {ks}.audit_log (day, at, id, admin, action, target, \
                 node) VALUES (?, ?, ?, ?, ?, ?, ?)",
                )
                .await?,
            select_audit_days: p
                .cql(&format!(
                    "SELECT day FROM {{ks}}.audit_days WHERE part = 0 LIMIT {AUDIT_DAYS}"
                ))
                .await?,
            select_audit: p
                .cql(
                    "SELECT at, id, admin, action, target, node FROM {ks}.audit_log \
                 WHERE day = ? LIMIT ?",
                )
                .await?,
        })
    }
}
