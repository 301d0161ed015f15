//! What a connection's token is checked against before it is let in: the
//! user's record, its flags and the state of the logins the token names.
//! Every WebSocket upgrade and authenticated request asks, so a reconnect
//! storm asks once per client: a backend answers in one read where it can
//! (the embedded store in one trip to its blocking pool, not one per fact),
//! and otherwise asks for the facts at once rather than one after another.

use async_trait::async_trait;
use chat_protocol::UserId;
use futures_util::future::{try_join3, try_join_all};

use crate::{AccountStore, LoginState, ModerationStore, StoreError, UserFlags};

/// The facts of one user and some of its logins, read together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessFacts {
    /// Whether the user's record exists.
    pub user_exists: bool,
    /// The user's flags.
    pub flags: UserFlags,
    /// The state of each login asked for, in the order asked.
    pub logins: Vec<Option<LoginState>>,
}

/// Reads a token's facts together. The default asks the domain traits at
/// once; a backend overrides it when one read can do.
#[async_trait]
pub trait AccessStore: AccountStore + ModerationStore {
    /// `user`'s record and flags, and the state of each of `logins`.
    async fn access_facts(
        &self,
        user: &UserId,
        logins: &[&str],
    ) -> Result<AccessFacts, StoreError> {
        let (record, flags, logins) = try_join3(
            self.user(user),
            self.user_flags(user),
            try_join_all(logins.iter().map(|l| self.login_state(l))),
        )
        .await?;
        Ok(AccessFacts {
            user_exists: record.is_some(),
            flags,
            logins,
        })
    }
}
