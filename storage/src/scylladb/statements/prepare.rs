//! How a statement is prepared: against the configured keyspace, as
//! idempotent unless it is a lightweight transaction.

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};

use crate::{unavailable, StoreError};

/// What a domain prepares its statements with.
pub(in crate::scylladb) struct Prepare<'a> {
    pub(super) session: &'a Session,
    pub(super) ks: &'a str,
    pub(super) serial: SerialConsistency,
}

impl Prepare<'_> {
    /// Prepares `cql`, with `{ks}` for the keyspace, as idempotent.
    pub(super) async fn cql(&self, cql: &str) -> Result<PreparedStatement, StoreError> {
        let cql = cql.replace("{ks}", self.ks);
        let mut s = self.session.prepare(cql).await.map_err(unavailable)?;
        // Retrying a write of the same values gives the same row.
        s.set_is_idempotent(true);
        Ok(s)
    }

    /// The consistency of a serial read, which sees every lightweight
    /// transaction decided so far.
    pub(super) fn serial_read(&self) -> Consistency {
        match self.serial {
            SerialConsistency::LocalSerial => Consistency::LocalSerial,
            SerialConsistency::Serial => Consistency::Serial,
        }
    }
}

/// A lightweight transaction, or a write whose retry would not give the same
/// outcome: the driver must not retry it by itself.
pub(super) fn not_idempotent(mut s: PreparedStatement) -> PreparedStatement {
    s.set_is_idempotent(false);
    s
}
