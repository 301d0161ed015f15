//! The statements of the settings every node of a keyspace shares.

use scylla::statement::prepared::PreparedStatement;

use super::prepare::{not_idempotent, Prepare};
use crate::StoreError;

/// The statements of the settings every node shares.
pub(in crate::scylladb) struct Statements {
    pub(in crate::scylladb) init_setting: PreparedStatement,
    pub(in crate::scylladb) select_setting: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(p: &Prepare<'_>) -> Result<Self, StoreError> {
        Ok(Statements {
            init_setting: not_idempotent(
                p.cql("INSERT INTO {ks}.settings (name, value) VALUES (?, ?) IF NOT EXISTS")
                    .await?,
            ),
            select_setting: p
                .cql("SELECT value FROM {ks}.settings WHERE name = ?")
                .await?,
        })
    }
}
