//! Every statement the store runs, prepared once when it opens: each
//! domain prepares its own, and this is where they meet.

use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};

use super::{accounts, conversations, history, leases, moderation, store};
use crate::{unavailable, StoreError};

/// Every statement the store runs, by domain.
pub(super) struct Statements {
    pub(super) history: history::Statements,
    pub(super) conversations: conversations::Statements,
    pub(super) accounts: accounts::Statements,
    pub(super) settings: store::Statements,
    pub(super) leases: leases::Statements,
    pub(super) moderation: moderation::Statements,
}

impl Statements {
    pub(super) async fn prepare(
        session: &Session,
        ks: &str,
        serial: SerialConsistency,
    ) -> Result<Self, StoreError> {
        let p = Prepare {
            session,
            ks,
            serial,
        };
        Ok(Statements {
            history: history::Statements::prepare(&p).await?,
            conversations: conversations::Statements::prepare(&p).await?,
            accounts: accounts::Statements::prepare(&p).await?,
            settings: store::Statements::prepare(&p).await?,
            leases: leases::Statements::prepare(&p).await?,
            moderation: moderation::Statements::prepare(&p).await?,
        })
    }
}

/// What a domain prepares its statements with.
pub(super) struct Prepare<'a> {
    session: &'a Session,
    ks: &'a str,
    serial: SerialConsistency,
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
