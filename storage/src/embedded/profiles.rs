//! Profiles and the name index on the embedded store: a register per
//! profile, and one key per index entry, `name \0 user` (names hold no
//! control characters), so that a prefix of a name is a prefix of keys.

use async_trait::async_trait;
use chat_protocol::UserId;

use super::keys::{decode, encode, key_of, user_id};
use super::registers::{RegisterTable, Writes};
use super::EmbeddedStore;
use crate::profiles::{names_of, NameEntry, ProfileRecord};
use crate::{unavailable, ProfileStore, StoreError};

fn name_key(name: &str, user: &UserId) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 1 + user.as_str().len());
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key.extend_from_slice(user.as_str().as_bytes());
    key
}

fn entry_of(key: &[u8]) -> Result<NameEntry, StoreError> {
    let corrupt = || StoreError::Corrupt("malformed name index key".into());
    let at = key.iter().position(|b| *b == 0).ok_or_else(corrupt)?;
    let name = std::str::from_utf8(&key[..at]).map_err(|_| corrupt())?;
    let user = std::str::from_utf8(&key[at + 1..]).map_err(|_| corrupt())?;
    Ok(NameEntry {
        name: name.to_owned(),
        user: user_id(user)?,
    })
}

impl Writes {
    /// [`ProfileStore::put_profile`].
    pub(crate) fn profile(
        user: &UserId,
        old: Option<&ProfileRecord>,
        new: &ProfileRecord,
    ) -> Result<Writes, StoreError> {
        let mut w = Writes::default();
        let (before, after) = (names_of(user, old), names_of(user, Some(new)));
        for name in before.iter().filter(|n| !after.contains(n)) {
            w.delete(RegisterTable::UserNames, name_key(name, user));
        }
        for name in &after {
            w.put(RegisterTable::UserNames, name_key(name, user), Vec::new());
        }
        w.put(
            RegisterTable::Profiles,
            key_of(&[user.as_str()]),
            encode(new)?,
        );
        Ok(w)
    }
}

#[async_trait]
impl ProfileStore for EmbeddedStore {
    async fn profile(&self, user: &UserId) -> Result<Option<ProfileRecord>, StoreError> {
        let key = key_of(&[user.as_str()]);
        self.blocking(move |s| {
            s.profiles
                .get(&key)
                .map_err(unavailable)?
                .map(|b| decode(&b))
                .transpose()
        })
        .await
    }

    async fn put_profile(
        &self,
        user: &UserId,
        old: Option<&ProfileRecord>,
        new: &ProfileRecord,
    ) -> Result<(), StoreError> {
        self.write(Writes::profile(user, old, new)?).await
    }

    async fn find_names(&self, prefix: &str, limit: usize) -> Result<Vec<NameEntry>, StoreError> {
        let prefix = prefix.as_bytes().to_vec();
        self.blocking(move |s| {
            let mut found = Vec::new();
            for guard in s.user_names.prefix(&prefix).take(limit) {
                found.push(entry_of(&guard.key().map_err(unavailable)?)?);
            }
            Ok(found)
        })
        .await
    }
}
