//! Account flags and the audit log on the embedded store.

use async_trait::async_trait;
use chat_protocol::UserId;
use serde::{Deserialize, Serialize};

use super::keys::{decode, encode, key_of};
use super::keyspaces::{Inner, Table};
use super::txn::Txn;
use super::EmbeddedStore;
use crate::{unavailable, AuditEntry, ModerationStore, StoreError, UserFlag, UserFlags};

/// A flag's setting and when (and on which node, for ties) it was made.
#[derive(Serialize, Deserialize)]
struct FlagState {
    on: bool,
    at: u64,
    origin: String,
}

fn flag_key(user: &UserId, flag: UserFlag) -> Vec<u8> {
    key_of(&[user.as_str(), flag.as_str()])
}

impl Inner {
    pub(super) fn user_flags(&self, id: &UserId) -> Result<UserFlags, StoreError> {
        let mut flags = UserFlags::default();
        for flag in UserFlag::ALL {
            if let Some(bytes) = self
                .user_flags
                .get(flag_key(id, flag))
                .map_err(unavailable)?
            {
                flags.set(flag, decode::<FlagState>(&bytes)?.on);
            }
        }
        Ok(flags)
    }

    fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let mut entries = Vec::new();
        for guard in self.audit.iter().rev().take(limit) {
            entries.push(decode(&guard.value().map_err(unavailable)?)?);
        }
        Ok(entries)
    }
}

impl Txn<'_> {
    /// Sets a flag unless a later setting (by `at`, then `origin`) holds it.
    pub(crate) fn set_user_flag(
        &mut self,
        user: &UserId,
        flag: UserFlag,
        on: bool,
        at: u64,
        origin: &str,
    ) -> Result<(), StoreError> {
        let key = flag_key(user, flag);
        if let Some(bytes) = self.get(Table::UserFlags, &key)? {
            let held: FlagState = decode(&bytes)?;
            if (held.at, held.origin.as_str()) > (at, origin) {
                return Ok(());
            }
        }
        let state = FlagState {
            on,
            at,
            origin: origin.to_owned(),
        };
        self.set(Table::UserFlags, key, Some(encode(&state)?));
        Ok(())
    }

    /// Records an admin action (the same entry twice is one).
    pub(crate) fn put_audit(&mut self, entry: &AuditEntry) -> Result<(), StoreError> {
        let mut key = Vec::with_capacity(16);
        key.extend_from_slice(&entry.at.to_be_bytes());
        key.extend_from_slice(&entry.id.to_be_bytes());
        self.set(Table::Audit, key, Some(encode(entry)?));
        Ok(())
    }
}

#[async_trait]
impl ModerationStore for EmbeddedStore {
    async fn set_user_flag(
        &self,
        user: &UserId,
        flag: UserFlag,
        on: bool,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        let user = user.clone();
        self.update(move |txn| txn.set_user_flag(&user, flag, on, at_ms, ""))
            .await
    }

    async fn user_flags(&self, user: &UserId) -> Result<UserFlags, StoreError> {
        self.inline(|s| s.user_flags(user))
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let entry = entry.clone();
        self.update(move |txn| txn.put_audit(&entry)).await
    }

    async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.blocking(move |s| s.audit(limit)).await
    }
}
