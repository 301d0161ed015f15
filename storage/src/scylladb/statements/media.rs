//! The statements of media records: a row per record, the owner's uploads
//! in one partition (the quota is a sum over it), and the references to a
//! file in its own partition; uploads not yet attached by day of upload
//! (a partition a day: the sweeper reads the days it needs).

use scylla::statement::prepared::PreparedStatement;

use super::prepare::Prepare;
use crate::StoreError;

/// Their statements.
pub(in crate::scylladb) struct Statements {
    pub(in crate::scylladb) put: PreparedStatement,
    pub(in crate::scylladb) select: PreparedStatement,
    pub(in crate::scylladb) delete: PreparedStatement,
    pub(in crate::scylladb) put_owned: PreparedStatement,
    pub(in crate::scylladb) select_owned: PreparedStatement,
    pub(in crate::scylladb) delete_owned: PreparedStatement,
    pub(in crate::scylladb) put_ref: PreparedStatement,
    pub(in crate::scylladb) delete_ref: PreparedStatement,
    pub(in crate::scylladb) select_refs: PreparedStatement,
    pub(in crate::scylladb) delete_refs: PreparedStatement,
    pub(in crate::scylladb) put_unattached: PreparedStatement,
    pub(in crate::scylladb) select_unattached: PreparedStatement,
    pub(in crate::scylladb) delete_unattached: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(p: &Prepare<'_>) -> Result<Statements, StoreError> {
        Ok(Statements {
            put: p
                .cql("INSERT INTO {ks}.media (id, record) VALUES (?, ?)")
                .await?,
            select: p.cql("SELECT record FROM {ks}.media WHERE id = ?").await?,
            delete: p.cql("DELETE FROM {ks}.media WHERE id = ?").await?,
            put_owned: p
                .cql("INSERT INTO {ks}.media_owners (owner, id, size) VALUES (?, ?, ?)")
                .await?,
            select_owned: p
                .cql("SELECT size FROM {ks}.media_owners WHERE owner = ?")
                .await?,
            delete_owned: p
                .cql("DELETE FROM {ks}.media_owners WHERE owner = ? AND id = ?")
                .await?,
            put_ref: p
                .cql("INSERT INTO {ks}.media_refs (media_id, ref) VALUES (?, ?)")
                .await?,
            delete_ref: p
                .cql("DELETE FROM {ks}.media_refs WHERE media_id = ? AND ref = ?")
                .await?,
            select_refs: p
                .cql("SELECT ref FROM {ks}.media_refs WHERE media_id = ? LIMIT ?")
                .await?,
            delete_refs: p
                .cql("DELETE FROM {ks}.media_refs WHERE media_id = ?")
                .await?,
            put_unattached: p
                .cql("INSERT INTO {ks}.media_unattached (day, created_at, id) VALUES (?, ?, ?)")
                .await?,
            select_unattached: p
                .cql(
                    "SELECT created_at, id FROM {ks}.media_unattached \
                     WHERE day = ? AND created_at >= ? AND created_at < ? LIMIT ?",
                )
                .await?,
            delete_unattached: p
                .cql(
                    "DELETE FROM {ks}.media_unattached WHERE day = ? AND created_at = ? AND id = ?",
                )
                .await?,
        })
    }
}
