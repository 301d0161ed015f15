//! The statements of contacts, blocks and privacy: one record per user.

use scylla::statement::prepared::PreparedStatement;

use super::prepare::Prepare;
use crate::StoreError;

/// Their statements.
pub(in crate::scylladb) struct Statements {
    pub(in crate::scylladb) put: PreparedStatement,
    pub(in crate::scylladb) select: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(p: &Prepare<'_>) -> Result<Statements, StoreError> {
        Ok(Statements {
            put: p
                .cql("INSERT INTO {ks}.user_relations (user_id, record) VALUES (?, ?)")
                .await?,
            select: p
                .cql("SELECT record FROM {ks}.user_relations WHERE user_id = ?")
                .await?,
        })
    }
}
