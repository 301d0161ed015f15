//! The leases' statements, every write of them a lightweight transaction.

use scylla::statement::prepared::PreparedStatement;

use super::prepare::{not_idempotent, Prepare};
use crate::StoreError;

/// The leases' statements: node leases, and the conversations' claims and
/// expiring leases (one table).
pub(in crate::scylladb) struct Statements {
    pub(in crate::scylladb) select_lease: PreparedStatement,
    pub(in crate::scylladb) insert_lease: PreparedStatement,
    pub(in crate::scylladb) take_lease: PreparedStatement,
    pub(in crate::scylladb) renew_lease: PreparedStatement,
    pub(in crate::scylladb) release_lease: PreparedStatement,
    pub(in crate::scylladb) select_node: PreparedStatement,
    pub(in crate::scylladb) insert_node: PreparedStatement,
    pub(in crate::scylladb) take_node: PreparedStatement,
    pub(in crate::scylladb) renew_node: PreparedStatement,
    pub(in crate::scylladb) release_node: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(p: &Prepare<'_>) -> Result<Self, StoreError> {
        // Serial reads: they see every transaction decided so far.
        let serial = |mut s: PreparedStatement| {
            s.set_consistency(p.serial_read());
            s
        };
        let lwt = |cql: &'static str| async move {
            Ok::<_, StoreError>(not_idempotent(p.cql(cql).await?))
        };
        Ok(Statements {
            select_lease: serial(
                p.cql(
                    "SELECT owner, epoch, expires_at, incarnation FROM {ks}.conversation_leases \
                     WHERE conversation_id = ?",
                )
                .await?,
            ),
            insert_lease: lwt(
                "INSERT INTO {ks}.conversation_leases (conversation_id, owner, epoch, \
                 expires_at, incarnation) VALUES (?, ?, ?, ?, ?) IF NOT EXISTS",
            )
            .await?,
            take_lease: lwt(
                "UPDATE {ks}.conversation_leases SET owner = ?, epoch = ?, expires_at = ?, \
                 incarnation = ? WHERE conversation_id = ? IF epoch = ?",
            )
            .await?,
            renew_lease: lwt("UPDATE {ks}.conversation_leases SET expires_at = ? \
                 WHERE conversation_id = ? IF owner = ? AND epoch = ?")
            .await?,
            release_lease: lwt("UPDATE {ks}.conversation_leases SET expires_at = 0 \
                 WHERE conversation_id = ? IF owner = ? AND epoch = ?")
            .await?,
            select_node: serial(
                p.cql("SELECT incarnation, expires_at FROM {ks}.node_leases WHERE node = ?")
                    .await?,
            ),
            // Every write sets both columns with the row's time to live, so
            // that a dead process's row goes a day after its last renewal
            // and a live one's never loses a column.
            insert_node: lwt(
                "INSERT INTO {ks}.node_leases (node, incarnation, expires_at) VALUES (?, ?, ?) \
                 IF NOT EXISTS USING TTL 86400",
            )
            .await?,
            // Races with the holder's renewal: one of the two wins.
            take_node: lwt(
                "UPDATE {ks}.node_leases USING TTL 86400 SET incarnation = ?, expires_at = ? \
                 WHERE node = ? IF incarnation = ? AND expires_at = ?",
            )
            .await?,
            renew_node: lwt(
                "UPDATE {ks}.node_leases USING TTL 86400 SET incarnation = ?, expires_at = ? \
                 WHERE node = ? IF incarnation = ?",
            )
            .await?,
            release_node: lwt(
                "UPDATE {ks}.node_leases USING TTL 86400 SET incarnation = ?, expires_at = ? \
                 WHERE node = ? IF incarnation = ?",
            )
            .await?,
        })
    }
}
