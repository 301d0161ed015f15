//! Every statement the store runs, prepared once when it opens: one file
//! per domain in `statements/`, which this gathers into the store's `q`.

mod accounts;
mod conversations;
mod history;
mod leases;
mod media;
mod moderation;
mod notify;
mod prepare;
mod profiles;
mod relations;
mod reports;
mod security;
mod settings;

use scylla::client::session::Session;
use scylla::statement::SerialConsistency;

use crate::StoreError;
use prepare::Prepare;

/// Every statement the store runs, by domain.
pub(super) struct Statements {
    pub(super) history: history::Statements,
    pub(super) conversations: conversations::Statements,
    pub(super) accounts: accounts::Statements,
    pub(super) settings: settings::Statements,
    pub(super) leases: leases::Statements,
    pub(super) moderation: moderation::Statements,
    pub(super) notify: notify::Statements,
    pub(super) relations: relations::Statements,
    pub(super) profiles: profiles::Statements,
    pub(super) security: security::Statements,
    pub(super) reports: reports::Statements,
    pub(super) media: media::Statements,
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
            settings: settings::Statements::prepare(&p).await?,
            leases: leases::Statements::prepare(&p).await?,
            moderation: moderation::Statements::prepare(&p).await?,
            notify: notify::Statements::prepare(&p).await?,
            relations: relations::Statements::prepare(&p).await?,
            profiles: profiles::Statements::prepare(&p).await?,
            security: security::Statements::prepare(&p).await?,
            reports: reports::Statements::prepare(&p).await?,
            media: media::Statements::prepare(&p).await?,
        })
    }
}
