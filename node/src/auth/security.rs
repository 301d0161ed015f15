//! What a signed-in person does to keep their account theirs: see and end
//! their logins, change their password (ending the other logins), reset
//! a forgotten one, and turn a second factor (TOTP) on and off; and the
//! second factor's check at sign-in.

use std::net::IpAddr;

use chat_protocol::{now_ms, UserId};
use chat_storage::{Credentials, LoginRecord, MessageStore, TotpState, UserRecord};

use super::checks::check_password;
use super::factors::password_hash;
use super::sessions::ClientInfo;
use super::wire::TokenSet;
use super::{logins, sessions, totp, Auth, AuthError, Claims};

/// The issuer an authenticator app shows beside the account.
const TOTP_ISSUER: &str = "chat";

impl Auth {
    /// Lists the login a sign-in (register, login) started.
    pub async fn list_login(
        &self,
        store: &dyn MessageStore,
        tokens: &TokenSet,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let user = &tokens.user.id;
        sessions::started(
            store,
            user,
            &tokens.login,
            client,
            tokens.refresh_expires_at,
        )
        .await?;
        Ok(())
    }

    /// Notes the refresh that made `tokens`; a login a password change
    /// ended without seeing it is revoked here (see [`sessions`]).
    pub async fn note_refresh(
        &self,
        store: &dyn MessageStore,
        tokens: &TokenSet,
        client: &ClientInfo,
    ) -> Result<(), AuthError> {
        let (user, login) = (&tokens.user.id, tokens.login.as_str());
        let noted =
            sessions::refreshed(store, user, login, client, tokens.refresh_expires_at).await;
        if noted.is_err() {
            self.end_login(store, user, login).await?;
        }
        noted
    }

    /// `user`'s logins that still work, most recently used first.
    pub async fn sessions(
        &self,
        store: &dyn MessageStore,
        user: &UserId,
    ) -> Result<Vec<LoginRecord>, AuthError> {
        Ok(sessions::live(store, user).await?)
    }

    /// Ends one login of `user` for good: its refresh token stops working,
    /// the access tokens naming it are refused, its connections close.
    pub async fn end_login(
        &self,
        store: &dyn MessageStore,
        user: &UserId,
        login: &str,
    ) -> Result<(), AuthError> {
        logins::revoke(store, user, login).await?;
        store.delete_login(user, login).await?;
        self.revoked(user.clone(), login.to_owned());
        Ok(())
    }

    /// Changes the password of the signed-in `claims.sub`, given the
    /// current one, and ends every other login of theirs.
    pub async fn change_password(
        &self,
        store: &dyn MessageStore,
        claims: &Claims,
        current: &str,
        new: &str,
        from: IpAddr,
    ) -> Result<(), AuthError> {
        let user = &claims.sub;
        let limited = |retry_after_ms| AuthError::RateLimited { retry_after_ms };
        self.throttle.may_try(user, from).map_err(limited)?;
        check_password(new)?;
        let record = store
            .user(user)
            .await?
            .ok_or_else(|| AuthError::InvalidToken("no such user".into()))?;
        let credentials = store.credentials(user).await?.unwrap_or_default();
        let Some(hash) = password_hash(Some(&record), Some(&credentials)) else {
            return Err(AuthError::InvalidInput(
                "this account signs in elsewhere and has no password here".into(),
            ));
        };
        let ok = check_password(current).is_ok()
            && self
                .passwords
                .verify(current.to_owned(), Some(hash))
                .await?;
        if !ok {
            self.throttle.failed(user, from);
            return Err(AuthError::WrongPassword);
        }
        self.set_password(store, user, credentials, new).await?;
        for login in sessions::live(store, user).await? {
            if claims.sid.as_deref() != Some(login.id.as_str()) {
                self.end_login(store, user, &login.id).await?;
            }
        }
        Ok(())
    }

    /// Starts a session for `user`, who proved who they are elsewhere (an
    /// OpenID Connect provider): refused while suspended, like a sign-in.
    pub async fn sign_in_external(
        &self,
        store: &dyn MessageStore,
        user: &UserRecord,
    ) -> Result<TokenSet, AuthError> {
        let generation = logins::current(store, &user.id).await?;
        if store.user_flags(&user.id).await?.suspended {
            return Err(AuthError::Suspended);
        }
        self.start_session(store, user, generation).await
    }

    /// Whether a password reset mail for `address` may be asked from
    /// `from` now.
    pub fn may_request_reset(&self, from: IpAddr, address: &str) -> Result<(), AuthError> {
        self.throttle
            .reset(from, address)
            .map_err(|retry_after_ms| AuthError::RateLimited { retry_after_ms })
    }

    /// Sets a new password for `user` (from a reset link) and ends every
    /// login of theirs.
    pub async fn reset_password(
        &self,
        store: &dyn MessageStore,
        user: &UserId,
        new: &str,
    ) -> Result<(), AuthError> {
        check_password(new)?;
        let credentials = store.credentials(user).await?.unwrap_or_default();
        self.set_password(store, user, credentials, new).await?;
        for login in store.logins(user).await? {
            self.end_login(store, user, &login.id).await?;
        }
        // The logins listed nowhere (made before listing) end with these.
        Ok(logins::end_all(store, user).await?)
    }

    /// Starts enrolling a second factor for `user` (again, if one was
    /// pending): its secret (base32) and `otpauth://` URL. Refused while
    /// one is confirmed: it is turned off first, with a code.
    pub async fn totp_enrol(
        &self,
        store: &dyn MessageStore,
        user: &UserId,
    ) -> Result<(String, String), AuthError> {
        let mut credentials = store.credentials(user).await?.unwrap_or_default();
        if credentials.totp.as_ref().is_some_and(|t| t.confirmed) {
            return Err(AuthError::InvalidInput(
                "a second factor is on already; turn it off first".into(),
            ));
        }
        let (state, url) = totp::enrol(TOTP_ISSUER, user.as_str())?;
        let secret = state.secret.clone();
        credentials.totp = Some(state);
        store.put_credentials(user, &credentials).await?;
        Ok((secret, url))
    }

    /// Confirms the pending second factor of `user` with a code from it:
    /// from now on sign-in needs a code. Returns the recovery codes, shown
    /// this once.
    pub async fn totp_confirm(
        &self,
        store: &dyn MessageStore,
        user: &UserId,
        code: &str,
        from: IpAddr,
    ) -> Result<Vec<String>, AuthError> {
        let mut credentials = store.credentials(user).await?.unwrap_or_default();
        let Some(state) = credentials.totp.as_mut().filter(|t| !t.confirmed) else {
            return Err(AuthError::InvalidInput(
                "no second factor is waiting for confirmation".into(),
            ));
        };
        let step = self.code_step(state, user, code, from)?;
        let (codes, hashes) = totp::recovery_codes();
        state.last_step = step;
        state.confirmed = true;
        state.recovery = hashes;
        store.put_credentials(user, &credentials).await?;
        Ok(codes)
    }

    /// Turns the second factor of `user` off, given a code from it (or a
    /// recovery code).
    pub async fn totp_disable(
        &self,
        store: &dyn MessageStore,
        user: &UserId,
        code: &str,
        from: IpAddr,
    ) -> Result<(), AuthError> {
        let mut credentials = store.credentials(user).await?.unwrap_or_default();
        let Some(state) = credentials.totp.as_mut().filter(|t| t.confirmed) else {
            return Err(AuthError::InvalidInput("no second factor is on".into()));
        };
        if !totp::take_recovery(state, code) {
            self.code_step(state, user, code, from)?;
        }
        credentials.totp = None;
        Ok(store.put_credentials(user, &credentials).await?)
    }

    /// The step of a right TOTP `code`; a wrong one counts as a failed
    /// attempt on the account, as a wrong password does.
    fn code_step(
        &self,
        state: &TotpState,
        user: &UserId,
        code: &str,
        from: IpAddr,
    ) -> Result<u64, AuthError> {
        let limited = |retry_after_ms| AuthError::RateLimited { retry_after_ms };
        self.throttle.may_try(user, from).map_err(limited)?;
        match totp::accept(state, code, now_ms() / 1000)? {
            Some(step) => Ok(step),
            None => {
                self.throttle.failed(user, from);
                Err(AuthError::WrongCode)
            }
        }
    }

    async fn set_password(
        &self,
        store: &dyn MessageStore,
        user: &UserId,
        mut credentials: Credentials,
        new: &str,
    ) -> Result<(), AuthError> {
        credentials.password_hash = Some(self.passwords.hash(new.to_owned()).await?);
        credentials.password_changed_at = now_ms();
        Ok(store.put_credentials(user, &credentials).await?)
    }
}
