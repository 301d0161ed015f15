//! E-mail addresses and mailed tokens on the embedded store.

use async_trait::async_trait;
use chat_protocol::UserId;

use super::keys::{decode, encode, key_of};
use super::keyspaces::Table;
use super::registers::{RegisterTable, Writes};
use super::EmbeddedStore;
use crate::people::{EmailAddress, EmailToken};
use crate::{unavailable, PeopleStore, StoreError};

impl Writes {
    /// [`PeopleStore::put_email`].
    pub(crate) fn email(user: &UserId, email: &EmailAddress) -> Result<Writes, StoreError> {
        let key = key_of(&[user.as_str()]);
        Ok(Writes::one(
            RegisterTable::Emails,
            key,
            Some(encode(email)?),
        ))
    }

    /// [`PeopleStore::put_email_token`].
    pub(crate) fn email_token(token: &EmailToken) -> Result<Writes, StoreError> {
        let key = key_of(&[token.hash.as_str()]);
        Ok(Writes::one(
            RegisterTable::EmailTokens,
            key,
            Some(encode(token)?),
        ))
    }

    /// [`PeopleStore::take_email_token`]'s removal.
    pub(crate) fn delete_email_token(hash: &str) -> Writes {
        Writes::one(RegisterTable::EmailTokens, key_of(&[hash]), None)
    }
}

#[async_trait]
impl PeopleStore for EmbeddedStore {
    async fn email(&self, user: &UserId) -> Result<Option<EmailAddress>, StoreError> {
        let key = key_of(&[user.as_str()]);
        self.blocking(move |s| {
            s.emails
                .get(&key)
                .map_err(unavailable)?
                .map(|b| decode(&b))
                .transpose()
        })
        .await
    }

    async fn put_email(&self, user: &UserId, email: &EmailAddress) -> Result<(), StoreError> {
        self.write(Writes::email(user, email)?).await
    }

    async fn put_email_token(&self, token: &EmailToken) -> Result<(), StoreError> {
        self.write(Writes::email_token(token)?).await
    }

    async fn take_email_token(&self, hash: &str) -> Result<Option<EmailToken>, StoreError> {
        let key = key_of(&[hash]);
        // On the single writer thread: a read and a delete no other write
        // can come between.
        self.update(move |txn| {
            let held = txn.get(Table::EmailTokens, &key)?;
            if held.is_some() {
                txn.set(Table::EmailTokens, key, None);
            }
            held.map(|b| decode(&b)).transpose()
        })
        .await
    }
}
