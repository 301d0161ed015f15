//! Credentials and listed logins on ScyllaDB: a row per user's
//! credentials; a partition per user's logins, each row expiring with its
//! refresh token.

use async_trait::async_trait;
use chat_protocol::{now_ms, UserId};

use super::notifications::{blob, unblob};
use super::store::ScyllaStore;
use crate::credentials::Credentials;
use crate::logins::LoginRecord;
use crate::{corrupt, CredentialStore, LoginStore, StoreError};

#[async_trait]
impl CredentialStore for ScyllaStore {
    async fn credentials(&self, user: &UserId) -> Result<Option<Credentials>, StoreError> {
        self.one_blob(&self.q.security.select_credentials, (user.as_str(),))
            .await
    }

    async fn put_credentials(&self, user: &UserId, c: &Credentials) -> Result<(), StoreError> {
        self.run(&self.q.security.put_credentials, (user.as_str(), blob(c)?))
            .await?;
        Ok(())
    }

    async fn email_owner(&self, address: &str) -> Result<Option<UserId>, StoreError> {
        let rows = self
            .rows(&self.q.security.select_email_owner, (address,))
            .await?;
        match rows.maybe_first_row::<(String,)>().map_err(corrupt)? {
            Some((user,)) => Ok(Some(UserId::new(&user).map_err(corrupt)?)),
            None => Ok(None),
        }
    }

    async fn put_email_owner(&self, address: &str, user: &UserId) -> Result<(), StoreError> {
        self.run(&self.q.security.put_email_owner, (address, user.as_str()))
            .await?;
        Ok(())
    }
}

#[async_trait]
impl LoginStore for ScyllaStore {
    async fn logins(&self, user: &UserId) -> Result<Vec<LoginRecord>, StoreError> {
        let mut found = Vec::new();
        self.for_each_row(&self.q.security.select_logins, (user.as_str(),), |rows| {
            for row in rows.rows::<(Vec<u8>,)>().map_err(corrupt)? {
                let (bytes,) = row.map_err(corrupt)?;
                found.push(unblob(&bytes)?);
            }
            Ok(true)
        })
        .await?;
        Ok(found)
    }

    async fn login(&self, user: &UserId, id: &str) -> Result<Option<LoginRecord>, StoreError> {
        self.one_blob(&self.q.security.select_login, (user.as_str(), id))
            .await
    }

    async fn put_login(&self, user: &UserId, login: &LoginRecord) -> Result<(), StoreError> {
        // At least a second: a TTL of 0 would mean "for ever".
        let ttl = (login.expires_at.saturating_sub(now_ms()) / 1000).max(1);
        let ttl = i32::try_from(ttl).unwrap_or(i32::MAX);
        let values = (user.as_str(), login.id.as_str(), blob(login)?, ttl);
        self.run(&self.q.security.put_login, values).await?;
        Ok(())
    }

    async fn delete_login(&self, user: &UserId, id: &str) -> Result<(), StoreError> {
        self.run(&self.q.security.delete_login, (user.as_str(), id))
            .await?;
        Ok(())
    }
}
