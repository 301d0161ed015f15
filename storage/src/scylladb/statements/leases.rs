//! The leases' statements, every write of them a lightweight transaction.

use scylla::statement::prepared::PreparedStatement;

use super::prepare::{not_idempotent, Prepare};
use crate::StoreError;

/// The leases' statements.
pub(in crate::scylladb) struct Statements {
    pub(in crate::scylladb) select_lease: PreparedStatement,
    pub(in crate::scylladb) insert_lease: PreparedStatement,
    pub(in crate::scylladb) take_lease: PreparedStatement,
    pub(in crate::scylladb) renew_lease: PreparedStatement,
    pub(in crate::scylladb) release_lease: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(p: &Prepare<'_>) -> Result<Self, StoreError> {
        Ok(Statements {
            select_lease: {
                // A serial read: it sees every transaction decided so far.
                let mut s = p
                    .cql(
                        "SELECT owner, epoch, expires_at FROM {ks}.conversation_leases \
                     WHERE conversation_id = ?",
                    )
                    .await?;
                s.set_consistency(p.serial_read());
                s
            },
            insert_lease: not_idempotent(
                p.cql(
                    "INSERT INTO {ks}.conversation_leases (conversation_id, owner, epoch, \
                   expires_at) VALUES (?, ?, ?, ?) IF NOT EXISTS",
                )
                .await?,
            ),
            take_lease: not_idempotent(
                p.cql(
                    "UPDATE {ks}.conversation_leases SET owner = ?, epoch = ?, expires_at = ? \
                   WHERE conversation_id = ? IF epoch = ?",
                )
                .await?,
            ),
            renew_lease: not_idempotent(
                p.cql(
                    "UPDATE {ks}.conversation_leases SET expires_at = ? \
                   WHERE conversation_id = ? IF owner = ? AND epoch = ?",
                )
                .await?,
            ),
            release_lease: not_idempotent(
                p.cql(
                    "UPDATE {ks}.conversation_leases SET expires_at = 0 \
                   WHERE conversation_id = ? IF owner = ? AND epoch = ?",
                )
                .await?,
            ),
        })
    }
}
