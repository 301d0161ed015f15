//! Credentials, e-mail owners and listed logins on the embedded store: a
//! register per user's credentials and per address, and one per login
//! under its user's prefix.

use async_trait::async_trait;
use chat_protocol::UserId;

use super::keys::{decode, encode, key_of};
use super::registers::{RegisterTable, Writes};
use super::EmbeddedStore;
use crate::credentials::Credentials;
use crate::logins::LoginRecord;
use crate::{unavailable, CredentialStore, LoginStore, StoreError};

impl Writes {
    /// [`CredentialStore::put_credentials`].
    pub(crate) fn credentials(user: &UserId, c: &Credentials) -> Result<Writes, StoreError> {
        Ok(Writes::one(
            RegisterTable::Credentials,
            key_of(&[user.as_str()]),
            Some(encode(c)?),
        ))
    }

    /// [`CredentialStore::put_email_owner`].
    pub(crate) fn email_owner(address: &str, user: &UserId) -> Result<Writes, StoreError> {
        Ok(Writes::one(
            RegisterTable::EmailOwners,
            key_of(&[address]),
            Some(encode(user)?),
        ))
    }

    /// [`LoginStore::put_login`] (`Some`) and [`LoginStore::delete_login`].
    pub(crate) fn login(
        user: &UserId,
        id: &str,
        login: Option<&LoginRecord>,
    ) -> Result<Writes, StoreError> {
        Ok(Writes::one(
            RegisterTable::Logins,
            key_of(&[user.as_str(), id]),
            login.map(encode).transpose()?,
        ))
    }
}

#[async_trait]
impl CredentialStore for EmbeddedStore {
    async fn credentials(&self, user: &UserId) -> Result<Option<Credentials>, StoreError> {
        let key = key_of(&[user.as_str()]);
        self.blocking(move |s| {
            s.credentials
                .get(&key)
                .map_err(unavailable)?
                .map(|b| decode(&b))
                .transpose()
        })
        .await
    }

    async fn put_credentials(&self, user: &UserId, c: &Credentials) -> Result<(), StoreError> {
        self.write(Writes::credentials(user, c)?).await
    }

    async fn email_owner(&self, address: &str) -> Result<Option<UserId>, StoreError> {
        let key = key_of(&[address]);
        self.blocking(move |s| {
            s.email_owners
                .get(&key)
                .map_err(unavailable)?
                .map(|b| decode(&b))
                .transpose()
        })
        .await
    }

    async fn put_email_owner(&self, address: &str, user: &UserId) -> Result<(), StoreError> {
        self.write(Writes::email_owner(address, user)?).await
    }
}

#[async_trait]
impl LoginStore for EmbeddedStore {
    async fn logins(&self, user: &UserId) -> Result<Vec<LoginRecord>, StoreError> {
        let prefix = key_of(&[user.as_str()]);
        self.blocking(move |s| {
            let mut found = Vec::new();
            for guard in s.logins.prefix(&prefix) {
                let (_, value) = guard.into_inner().map_err(unavailable)?;
                found.push(decode(&value)?);
            }
            Ok(found)
        })
        .await
    }

    async fn login(&self, user: &UserId, id: &str) -> Result<Option<LoginRecord>, StoreError> {
        let key = key_of(&[user.as_str(), id]);
        self.blocking(move |s| {
            s.logins
                .get(&key)
                .map_err(unavailable)?
                .map(|b| decode(&b))
                .transpose()
        })
        .await
    }

    async fn put_login(&self, user: &UserId, login: &LoginRecord) -> Result<(), StoreError> {
        self.write(Writes::login(user, &login.id, Some(login))?)
            .await
    }

    async fn delete_login(&self, user: &UserId, id: &str) -> Result<(), StoreError> {
        self.write(Writes::login(user, id, None)?).await
    }
}
