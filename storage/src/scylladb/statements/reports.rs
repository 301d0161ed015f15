//! The statements of reports: a row per report, and the queue of open
//! ones in one partition clustered by id (which sorts by time).

use scylla::statement::prepared::PreparedStatement;

use super::prepare::Prepare;
use crate::StoreError;

/// Their statements.
pub(in crate::scylladb) struct Statements {
    pub(in crate::scylladb) put: PreparedStatement,
    pub(in crate::scylladb) select: PreparedStatement,
    pub(in crate::scylladb) open: PreparedStatement,
    pub(in crate::scylladb) close: PreparedStatement,
    pub(in crate::scylladb) select_open: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(p: &Prepare<'_>) -> Result<Statements, StoreError> {
        Ok(Statements {
            put: p
                .cql("INSERT INTO {ks}.reports (id, record) VALUES (?, ?)")
                .await?,
            select: p
                .cql("SELECT record FROM {ks}.reports WHERE id = ?")
                .await?,
            open: p
                .cql("INSERT INTO {ks}.open_reports (part, id) VALUES (0, ?)")
                .await?,
            close: p
                .cql("DELETE FROM {ks}.open_reports WHERE part = 0 AND id = ?")
                .await?,
            select_open: p
                .cql("SELECT id FROM {ks}.open_reports WHERE part = 0 LIMIT ?")
                .await?,
        })
    }
}
