//! Accounts on the embedded store: users, refresh tokens and the families
//! (logins) they rotate in.

use async_trait::async_trait;
use chat_protocol::UserId;
use serde::{Deserialize, Serialize};

use super::keys::{decode, encode, key_of};
use super::keyspaces::{Inner, Table};
use super::txn::Txn;
use super::EmbeddedStore;
use crate::{
    unavailable, AccountStore, LoginState, RefreshRecord, Rotation, StoreError, UserRecord,
};

#[derive(Serialize, Deserialize)]
struct StoredRefresh {
    user: UserId,
    family: String,
    expires_at: u64,
    used: bool,
}

/// A refresh token's record as a write carries it: a new token, or one now
/// used up. Merged into what is stored (see [`Txn::merge_refresh`]), so it
/// can be applied twice, late, or before the token's first record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RefreshToken {
    pub(crate) token_hash: String,
    pub(crate) user: UserId,
    pub(crate) family: String,
    pub(crate) expires_at: u64,
    pub(crate) used: bool,
}

impl RefreshToken {
    /// A newly issued token: not used yet.
    pub(crate) fn unused(record: &RefreshRecord) -> Self {
        RefreshToken {
            token_hash: record.token_hash.clone(),
            user: record.user.clone(),
            family: record.family.clone(),
            expires_at: record.expires_at,
            used: false,
        }
    }
}

/// What a refresh-token operation changed, as opposed to the call that
/// changed it: applying an effect again, or on a store that has it already,
/// changes nothing, whereas replaying a rotation on a store where the token is
/// used up already would revoke its family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum RefreshEffect {
    /// Merge these records in.
    Tokens(Vec<RefreshToken>),
    /// The family is revoked (for good).
    RevokeFamily(String),
}

/// A family's record: active (its tokens rotate) or revoked (for good).
const ACTIVE: u8 = 0;
const REVOKED: u8 = 1;

fn login_of(value: &[u8]) -> LoginState {
    // Anything but an active record is revoked: a record written before
    // families were recorded active was a revocation.
    match value {
        [ACTIVE] => LoginState::Active,
        _ => LoginState::Revoked,
    }
}

impl Inner {
    pub(super) fn user(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError> {
        match self
            .users
            .get(key_of(&[id.as_str()]))
            .map_err(unavailable)?
        {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    pub(super) fn login_state(&self, family: &str) -> Result<Option<LoginState>, StoreError> {
        Ok(self
            .refresh_families
            .get(key_of(&[family]))
            .map_err(unavailable)?
            .map(|v| login_of(&v)))
    }
}

impl Txn<'_> {
    /// A user as it will be once this batch is written.
    pub(crate) fn user(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError> {
        match self.get(Table::Users, &key_of(&[id.as_str()]))? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Creates a user; [`StoreError::Conflict`] if the id is taken.
    fn create_user(&mut self, user: &UserRecord) -> Result<(), StoreError> {
        if self.user(&user.id)?.is_some() {
            return Err(StoreError::Conflict);
        }
        self.set(
            Table::Users,
            key_of(&[user.id.as_str()]),
            Some(encode(user)?),
        );
        Ok(())
    }

    /// Stores a user record, or if the id is taken keeps whichever of the two
    /// records is smaller by (created_at, password_hash, display_name): a
    /// total order, so every replica keeps the same record whatever order two
    /// creations of one id (on two sides of a partition) reach it in.
    pub(crate) fn merge_user(&mut self, user: &UserRecord) -> Result<(), StoreError> {
        if let Some(held) = self.user(&user.id)? {
            let rank = |u: &UserRecord| {
                (
                    u.created_at,
                    u.password_hash.clone(),
                    u.display_name.clone(),
                )
            };
            if rank(&held) <= rank(user) {
                return Ok(());
            }
        }
        self.set(
            Table::Users,
            key_of(&[user.id.as_str()]),
            Some(encode(user)?),
        );
        Ok(())
    }

    fn refresh(&self, token_hash: &str) -> Result<Option<StoredRefresh>, StoreError> {
        match self.get(Table::RefreshTokens, &key_of(&[token_hash]))? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn family_revoked(&self, family: &str) -> Result<bool, StoreError> {
        Ok(self.login(family)? == Some(LoginState::Revoked))
    }

    /// A family's record: written active with its first token, revoked for
    /// good (a revocation applied before the token, as replication may
    /// order them, stays).
    fn login(&self, family: &str) -> Result<Option<LoginState>, StoreError> {
        Ok(self
            .get(Table::RefreshFamilies, &key_of(&[family]))?
            .map(|v| login_of(&v)))
    }

    /// Merges a token's record into the stored one: `used` only ever turns
    /// on (so a late copy of the token's first record cannot make a used-up
    /// token usable again), and the other fields, which one token's records
    /// all share, are taken from the smaller record so the merge gives the
    /// same result in any order even if they did not.
    fn merge_refresh(&mut self, token: &RefreshToken) -> Result<(), StoreError> {
        let mut merged = StoredRefresh {
            user: token.user.clone(),
            family: token.family.clone(),
            expires_at: token.expires_at,
            used: token.used,
        };
        if let Some(held) = self.refresh(&token.token_hash)? {
            merged.used |= held.used;
            if (&held.user, &held.family, held.expires_at)
                < (&merged.user, &merged.family, merged.expires_at)
            {
                (merged.user, merged.family, merged.expires_at) =
                    (held.user, held.family, held.expires_at);
            }
        }
        self.set(
            Table::RefreshTokens,
            key_of(&[&token.token_hash]),
            Some(encode(&merged)?),
        );
        Ok(())
    }

    /// Applies a refresh-token effect; applying it again changes nothing.
    pub(crate) fn apply_refresh_effect(
        &mut self,
        effect: &RefreshEffect,
    ) -> Result<(), StoreError> {
        match effect {
            RefreshEffect::Tokens(tokens) => {
                for token in tokens {
                    self.merge_refresh(token)?;
                    let family = key_of(&[&token.family]);
                    if self.get(Table::RefreshFamilies, &family)?.is_none() {
                        self.set(Table::RefreshFamilies, family, Some(vec![ACTIVE]));
                    }
                }
            }
            RefreshEffect::RevokeFamily(family) => {
                self.set(
                    Table::RefreshFamilies,
                    key_of(&[family]),
                    Some(vec![REVOKED]),
                );
            }
        }
        Ok(())
    }

    /// Decides a rotation without writing anything: its outcome and the
    /// effect that makes it so ([`Self::apply_refresh_effect`]).
    pub(crate) fn plan_rotation(
        &self,
        old_hash: &str,
        new: &RefreshRecord,
        now: u64,
    ) -> Result<(Rotation, Option<RefreshEffect>), StoreError> {
        let Some(old) = self.refresh(old_hash)? else {
            return Ok((Rotation::Invalid, None));
        };
        if self.family_revoked(&old.family)? || now >= old.expires_at {
            return Ok((Rotation::Invalid, None));
        }
        if old.used {
            // Two parties hold tokens of this family; we cannot tell which is
            // the thief, so neither keeps a session.
            return Ok((
                Rotation::Reused,
                Some(RefreshEffect::RevokeFamily(old.family)),
            ));
        }
        let used_up = RefreshToken {
            token_hash: old_hash.to_owned(),
            user: old.user.clone(),
            family: old.family.clone(),
            expires_at: old.expires_at,
            used: true,
        };
        let next = RefreshToken {
            token_hash: new.token_hash.clone(),
            user: old.user.clone(),
            family: old.family,
            expires_at: new.expires_at,
            used: false,
        };
        Ok((
            Rotation::Rotated { user: old.user },
            Some(RefreshEffect::Tokens(vec![used_up, next])),
        ))
    }

    /// Decides a revocation without writing anything: the token's user, and
    /// the effect unless the family is revoked already.
    pub(crate) fn plan_revocation(
        &self,
        token_hash: &str,
    ) -> Result<(Option<UserId>, Option<RefreshEffect>), StoreError> {
        let Some(token) = self.refresh(token_hash)? else {
            return Ok((None, None));
        };
        let effect = if self.family_revoked(&token.family)? {
            None
        } else {
            Some(RefreshEffect::RevokeFamily(token.family))
        };
        Ok((Some(token.user), effect))
    }
}

#[async_trait]
impl AccountStore for EmbeddedStore {
    async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let user = user.clone();
        self.update(move |txn| txn.create_user(&user)).await
    }

    async fn user(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError> {
        self.inline(|s| s.user(id))
    }

    async fn put_refresh(&self, record: &RefreshRecord) -> Result<(), StoreError> {
        let effect = RefreshEffect::Tokens(vec![RefreshToken::unused(record)]);
        self.update(move |txn| txn.apply_refresh_effect(&effect))
            .await
    }

    async fn rotate_refresh(
        &self,
        old_hash: &str,
        new: &RefreshRecord,
        now: u64,
    ) -> Result<Rotation, StoreError> {
        let (old_hash, new) = (old_hash.to_owned(), new.clone());
        self.update(move |txn| {
            let (rotation, effect) = txn.plan_rotation(&old_hash, &new, now)?;
            if let Some(effect) = effect {
                txn.apply_refresh_effect(&effect)?;
            }
            Ok(rotation)
        })
        .await
    }

    async fn revoke_refresh_family(&self, token_hash: &str) -> Result<Option<UserId>, StoreError> {
        let token_hash = token_hash.to_owned();
        self.update(move |txn| {
            let (user, effect) = txn.plan_revocation(&token_hash)?;
            if let Some(effect) = effect {
                txn.apply_refresh_effect(&effect)?;
            }
            Ok(user)
        })
        .await
    }

    async fn login_state(&self, family: &str) -> Result<Option<LoginState>, StoreError> {
        self.inline(|s| s.login_state(family))
    }
}
