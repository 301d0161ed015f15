//! Credentials and listed logins on the replicated store: registers, read
//! from this node's copy, written here and on every node.

use async_trait::async_trait;
use chat_protocol::UserId;

use super::store::ReplicatedStore;
use crate::credentials::Credentials;
use crate::embedded::Writes;
use crate::logins::LoginRecord;
use crate::{CredentialStore, LoginStore, StoreError};

#[async_trait]
impl CredentialStore for ReplicatedStore {
    async fn credentials(&self, user: &UserId) -> Result<Option<Credentials>, StoreError> {
        self.local.credentials(user).await
    }

    async fn put_credentials(&self, user: &UserId, c: &Credentials) -> Result<(), StoreError> {
        self.registers(Writes::credentials(user, c)?).await
    }

    async fn email_owner(&self, address: &str) -> Result<Option<UserId>, StoreError> {
        self.local.email_owner(address).await
    }

    async fn put_email_owner(&self, address: &str, user: &UserId) -> Result<(), StoreError> {
        self.registers(Writes::email_owner(address, user)?).await
    }
}

#[async_trait]
impl LoginStore for ReplicatedStore {
    async fn logins(&self, user: &UserId) -> Result<Vec<LoginRecord>, StoreError> {
        self.local.logins(user).await
    }

    async fn login(&self, user: &UserId, id: &str) -> Result<Option<LoginRecord>, StoreError> {
        self.local.login(user, id).await
    }

    async fn put_login(&self, user: &UserId, login: &LoginRecord) -> Result<(), StoreError> {
        self.registers(Writes::login(user, &login.id, Some(login))?)
            .await
    }

    async fn delete_login(&self, user: &UserId, id: &str) -> Result<(), StoreError> {
        self.registers(Writes::login(user, id, None)?).await
    }
}
