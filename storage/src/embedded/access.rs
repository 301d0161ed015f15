//! [`AccessStore`] on the embedded store: every fact read on the caller's
//! thread (each is a point read, mostly from memory; a hand-off to the
//! blocking pool and back would cost more than the reads).

use async_trait::async_trait;
use chat_protocol::UserId;

use super::EmbeddedStore;
use crate::{AccessFacts, AccessStore, StoreError};

#[async_trait]
impl AccessStore for EmbeddedStore {
    async fn access_facts(
        &self,
        user: &UserId,
        logins: &[&str],
    ) -> Result<AccessFacts, StoreError> {
        self.inline(|s| {
            Ok(AccessFacts {
                user_exists: s.user(user)?.is_some(),
                flags: s.user_flags(user)?,
                logins: logins
                    .iter()
                    .map(|l| s.login_state(l))
                    .collect::<Result<_, _>>()?,
            })
        })
    }
}
