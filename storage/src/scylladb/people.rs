//! E-mail addresses and mailed tokens on ScyllaDB; a token is taken by a
//! lightweight transaction, so that of two nodes taking it at once one
//! gets it.

use async_trait::async_trait;
use chat_protocol::UserId;

use super::cql::applied;
use super::notifications::blob;
use super::store::ScyllaStore;
use crate::people::{EmailAddress, EmailToken};
use crate::{PeopleStore, StoreError};

#[async_trait]
impl PeopleStore for ScyllaStore {
    async fn email(&self, user: &UserId) -> Result<Option<EmailAddress>, StoreError> {
        self.one_blob(&self.q.notify.select_email, (user.as_str(),))
            .await
    }

    async fn put_email(&self, user: &UserId, email: &EmailAddress) -> Result<(), StoreError> {
        self.run(&self.q.notify.put_email, (user.as_str(), blob(email)?))
            .await?;
        Ok(())
    }

    async fn put_email_token(&self, token: &EmailToken) -> Result<(), StoreError> {
        self.run(
            &self.q.notify.put_token,
            (token.hash.as_str(), blob(token)?),
        )
        .await?;
        Ok(())
    }

    async fn take_email_token(&self, hash: &str) -> Result<Option<EmailToken>, StoreError> {
        let Some(token) = self
            .one_blob::<EmailToken>(&self.q.notify.select_token, (hash,))
            .await?
        else {
            return Ok(None);
        };
        let result = self.run(&self.q.notify.take_token, (hash,)).await?;
        Ok(applied(result)?.then_some(token))
    }
}
