//! Profiles and the name index on ScyllaDB: a row per profile, written
//! whole, and a row per index entry (see `statements/profiles.rs`).

use async_trait::async_trait;
use chat_protocol::UserId;
use futures_util::future::try_join_all;

use super::notifications::blob;
use super::store::ScyllaStore;
use crate::profiles::{names_of, NameEntry, ProfileRecord};
use crate::{corrupt, ProfileStore, StoreError};

/// The index partition of a name: its first two characters.
fn bucket(name: &str) -> &str {
    let end = name.char_indices().nth(2).map_or(name.len(), |(i, _)| i);
    &name[..end]
}

#[async_trait]
impl ProfileStore for ScyllaStore {
    async fn profile(&self, user: &UserId) -> Result<Option<ProfileRecord>, StoreError> {
        self.one_blob(&self.q.profiles.select, (user.as_str(),))
            .await
    }

    async fn put_profile(
        &self,
        user: &UserId,
        old: Option<&ProfileRecord>,
        new: &ProfileRecord,
    ) -> Result<(), StoreError> {
        let q = &self.q.profiles;
        let (before, after) = (names_of(user, old), names_of(user, Some(new)));
        // The new entries first: a lookup meanwhile finds the user under
        // both names, never under neither.
        try_join_all(
            after
                .iter()
                .map(|name| self.run(&q.put_name, (bucket(name), name.as_str(), user.as_str()))),
        )
        .await?;
        self.run(&q.put, (user.as_str(), blob(new)?)).await?;
        try_join_all(
            before
                .iter()
                .filter(|n| !after.contains(n))
                .map(|name| self.run(&q.delete_name, (bucket(name), name.as_str(), user.as_str()))),
        )
        .await?;
        Ok(())
    }

    async fn find_names(&self, prefix: &str, limit: usize) -> Result<Vec<NameEntry>, StoreError> {
        let end = format!("{prefix}\u{10FFFF}");
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let rows = self
            .rows(
                &self.q.profiles.find_names,
                (bucket(prefix), prefix, end.as_str(), limit),
            )
            .await?;
        let mut found = Vec::new();
        for row in rows.rows::<(&str, &str)>().map_err(corrupt)? {
            let (name, user) = row.map_err(corrupt)?;
            found.push(NameEntry {
                name: name.to_owned(),
                user: UserId::new(user).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            });
        }
        Ok(found)
    }
}
