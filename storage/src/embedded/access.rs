//! [`AccessStore`] on the embedded store: every fact in one trip to the
//! blocking pool (each is a point read, mostly from memory; the hand-offs
//! to the pool and back cost more than the reads).

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
        let user = user.clone();
        let logins: Vec<String> = logins.iter().map(|l| (*l).to_owned()).collect();
        self.blocking(move |s| {
            Ok(AccessFacts {
                user_exists: s.user(&user)?.is_some(),
                flags: s.user_flags(&user)?,
                logins: logins
                    .iter()
                    .map(|l| s.login_state(l))
                    .collect::<Result<_, _>>()?,
            })
        })
        .await
    }
}
