//! Authentication: JWT access tokens, argon2 passwords and rotating refresh
//! tokens.
//!
//! Access tokens are short-lived JWTs that every node can check without the
//! store, so a WebSocket upgrade or an HTTP call costs one signature check.
//! They are either issued here (register, login, refresh) or by an outside
//! identity provider whose public key is configured; both kinds carry the user
//! id in `sub`.
//!
//! Refresh tokens are long-lived opaque secrets kept in the store only as a
//! SHA-256, so a leaked store does not leak sessions. Each one can be used
//! once: `refresh` rotates it, and presenting an already rotated token (a sign
//! that it was stolen) revokes every token of its login (its family).
//!
//! A refresh token reads `<user>.<family>.<secret>`: the store's rotation
//! answers only with the user, and the new access token needs the family as
//! its `sid`, so both travel in the token; they are bound to the secret by the
//! hash, so editing them only yields an unknown token. A family's id names
//! its user, and the generation of the user's logins it belongs to, which a
//! suspension ends ([`logins`]).

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderMap};
use chat_protocol::{now_ms, UserId};
use chat_storage::{LoginState, MessageStore, RefreshRecord, Rotation, StoreError, UserRecord};
use serde::{Deserialize, Serialize};

mod accounts;
mod checks;
mod config;
mod error;
mod factors;
mod keys;
mod logins;
mod passwords;
mod profile;
mod secrets;
mod security;
mod sessions;
mod throttle;
mod totp;
mod wire;

// What the files of this module share lives in leaves (checks, config,
// error, secrets) rather than here, so that they need not import this file,
// which imports them (scripts/layers.sh refuses such circles).
pub use accounts::operator_account;
pub(crate) use checks::check_password;
use checks::{check_display_name, parse_username};
pub use checks::{MAX_DISPLAY_NAME_BYTES, MAX_PASSWORD_BYTES, MIN_PASSWORD_BYTES};
pub use config::{Algorithm, AuthConfig, OidcConfig};
pub use error::AuthError;
use factors::{password_hash, second_factor};
pub(crate) use keys::new_secret;
pub use keys::DEV_SECRET_FILE;
use keys::{hmac_keys, pem_keys};
use passwords::Passwords;
pub use profile::ensure_profile;
pub(crate) use secrets::same_secret;
use secrets::{hash_token, random_bytes};
pub use sessions::ClientInfo;
use throttle::Throttle;
pub use throttle::ThrottleConfig;
pub use totp::RECOVERY_CODES;
pub use wire::{LoginRequest, RegisterRequest, TokenSet, UserView};

/// Longest access token looked at: anything larger is not one of ours nor a
/// sane IdP token, and is refused before any base64 or JSON work.
const MAX_ACCESS_TOKEN_BYTES: usize = 8 * 1024;
/// Largest accepted `leeway_secs`.
const MAX_LEEWAY_SECS: u64 = 3600;
const REFRESH_SECRET_BYTES: usize = 32;

/// What a valid access token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The user.
    pub sub: UserId,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// The refresh-token family (the login) the token was issued for, when
    /// issued by this cluster; an outside IdP's session id otherwise, if any.
    pub sid: Option<String>,
}

/// Claims as written into tokens this node issues.
#[derive(Serialize)]
struct IssuedClaims<'a> {
    sub: &'a str,
    exp: u64,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sid: Option<&'a str>,
}

/// Claims as read from any token. `sid` is taken loosely because outside
/// identity providers may put anything there; only a string is kept.
#[derive(Deserialize)]
struct ReceivedClaims {
    sub: String,
    exp: u64,
    #[serde(default)]
    iat: Option<u64>,
    #[serde(default)]
    sid: Option<serde_json::Value>,
}

/// Verifies access tokens and, when it has a signing key, issues them and
/// runs register, login, refresh and logout. Immutable: share it in an `Arc`.
pub struct Auth {
    algorithm: Algorithm,
    decoding: jsonwebtoken::DecodingKey,
    encoding: Option<jsonwebtoken::EncodingKey>,
    validation: jsonwebtoken::Validation,
    issuer: Option<String>,
    audience: Option<String>,
    access_ttl_secs: u64,
    refresh_ttl_secs: u64,
    leeway_secs: u64,
    max_lifetime_secs: u64,
    require_session: bool,
    passwords: Passwords,
    throttle: Throttle,
    /// Names public registration refuses (lower case): the admins named in
    /// the configuration, whose accounts an operator makes.
    reserved: Vec<UserId>,
    /// Told of every login revoked, to close its connections.
    on_revoked: OnceLock<Box<dyn Fn(UserId, String) + Send + Sync>>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("algorithm", &self.algorithm)
            .field("can_issue", &self.can_issue())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("access_ttl_secs", &self.access_ttl_secs)
            .field("refresh_ttl_secs", &self.refresh_ttl_secs)
            .finish()
    }
}

impl Auth {
    /// Builds the verifier (and issuer) from the config. Reads key files, and
    /// for HS256 without a configured secret reads or creates the development
    /// secret in `data_dir`.
    pub fn from_config(cfg: &AuthConfig, data_dir: &Path) -> Result<Auth, AuthError> {
        if cfg.access_ttl_secs == 0 || cfg.refresh_ttl_secs == 0 {
            return Err(AuthError::Config(
                "access_ttl_secs and refresh_ttl_secs must be at least 1".into(),
            ));
        }
        // The library computes `now - leeway` unchecked; a leeway beyond an
        // hour is a misconfiguration anyway.
        if cfg.leeway_secs > MAX_LEEWAY_SECS {
            return Err(AuthError::Config(format!(
                "leeway_secs must be at most {MAX_LEEWAY_SECS}"
            )));
        }
        for (name, value) in [("issuer", &cfg.issuer), ("audience", &cfg.audience)] {
            if value.as_deref().is_some_and(str::is_empty) {
                return Err(AuthError::Config(format!(
                    "{name} must not be empty (leave it out to not check it)"
                )));
            }
        }
        let (decoding, encoding) = match cfg.algorithm {
            Algorithm::HS256 => hmac_keys(cfg, data_dir)?,
            Algorithm::RS256 | Algorithm::EdDSA => pem_keys(cfg)?,
        };

        if cfg.max_token_lifetime_secs < cfg.access_ttl_secs {
            return Err(AuthError::Config(
                "max_token_lifetime_secs must be at least access_ttl_secs".into(),
            ));
        }
        let mut validation = jsonwebtoken::Validation::new(cfg.algorithm.to_jwt());
        validation.leeway = cfg.leeway_secs;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &cfg.issuer {
            validation.set_issuer(&[issuer]);
            // The library checks iss only when present: a configured issuer
            // must also reject tokens that carry none.
            required.push("iss");
        }
        match &cfg.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            // Otherwise the library rejects every token that has an `aud`,
            // which IdP tokens usually do.
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);

        let auth = Auth {
            algorithm: cfg.algorithm,
            decoding,
            encoding,
            validation,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            access_ttl_secs: cfg.access_ttl_secs,
            refresh_ttl_secs: cfg.refresh_ttl_secs,
            leeway_secs: cfg.leeway_secs,
            max_lifetime_secs: cfg.max_token_lifetime_secs,
            require_session: cfg.require_session,
            on_revoked: OnceLock::new(),
            passwords: Passwords::start(
                match cfg.password_threads {
                    0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                    n => n,
                },
                cfg.password_queue,
            )?,
            throttle: Throttle::new(&cfg.throttle),
            reserved: Vec::new(),
        };
        // A private key that does not match the public key would only show
        // up as every login's token being rejected; fail at startup instead.
        if auth.can_issue() {
            let probe = UserId::new("auth-probe")
                .map_err(|e| AuthError::Internal(format!("probe user id: {e}")))?;
            let (token, _) = auth.issue_access(&probe, None)?;
            auth.verify(&token).map_err(|e| {
                AuthError::Config(format!(
                    "a token signed with private_key_file does not verify with \
                     public_key_file ({e}): the keys are not a pair"
                ))
            })?;
        }
        Ok(auth)
    }

    /// The configured algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Whether this node can issue tokens (and so serve register, login and
    /// refresh).
    pub fn can_issue(&self) -> bool {
        self.encoding.is_some()
    }

    /// Makes registration refuse `names` (in any case), as it refuses
    /// taken names: those of admins, whose accounts only an operator makes
    /// (`chat-node admin create-user`), so that nobody else takes them
    /// first.
    pub fn reserve_names<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        self.reserved = names
            .into_iter()
            .filter_map(|n| UserId::new(&n.to_ascii_lowercase()).ok())
            .collect();
    }

    /// Lifetime of issued access tokens, in seconds.
    pub fn access_ttl_secs(&self) -> u64 {
        self.access_ttl_secs
    }

    /// Checks an access token: signature, `exp` (with leeway), `iss` and
    /// `aud` when configured, and that `sub` is a valid user id.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.len() > MAX_ACCESS_TOKEN_BYTES {
            return Err(AuthError::InvalidToken("token too long".into()));
        }
        let data = jsonwebtoken::decode::<ReceivedClaims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                kind => AuthError::InvalidToken(token_problem(kind).into()),
            })?;
        let now = now_ms() / 1000;
        let issued = data.claims.iat.unwrap_or(now);
        if issued > now + self.leeway_secs {
            return Err(AuthError::InvalidToken("issued in the future".into()));
        }
        if data.claims.exp.saturating_sub(issued.min(now)) > self.max_lifetime_secs {
            return Err(AuthError::InvalidToken(format!(
                "lives longer than {} s",
                self.max_lifetime_secs
            )));
        }
        let sub = UserId::new(&data.claims.sub)
            .map_err(|_| AuthError::InvalidToken("sub is not a valid user id".into()))?;
        let sid = match data.claims.sid {
            Some(serde_json::Value::String(s)) => Some(s),
            _ => None,
        };
        Ok(Claims {
            sub,
            exp: data.claims.exp,
            sid,
        })
    }

    /// Checks the access token of a request: the `Authorization` header,
    /// else the `access_token` query parameter (browsers cannot set headers
    /// on WebSockets).
    pub fn verify_request(
        &self,
        headers: &HeaderMap,
        query_token: Option<&str>,
    ) -> Result<Claims, AuthError> {
        let token = bearer(headers, query_token).ok_or(AuthError::MissingToken)?;
        self.verify(&token)
    }

    /// Checks a request's access token, then what only the store knows:
    /// that the login it names (one of its user's) is live and was not ended
    /// by a suspension, that its user exists and is not suspended. A login
    /// is this node's, so its user must exist; a token that names none
    /// (accepted only without `require_session`) comes from an outside
    /// issuer the operator trusts, and its user's first token creates the
    /// user's record.
    pub async fn authorize(
        &self,
        store: &dyn MessageStore,
        headers: &HeaderMap,
        query_token: Option<&str>,
    ) -> Result<Claims, AuthError> {
        let claims = self.verify_request(headers, query_token)?;
        // Whoever signed the token, it may only name a login of its own
        // user.
        let login = match &claims.sid {
            Some(login) => Some((
                login.as_str(),
                logins::generation_of(login, &claims.sub).ok_or_else(|| {
                    AuthError::InvalidToken("the login it names is not its user's".into())
                })?,
            )),
            None if self.require_session => {
                return Err(AuthError::InvalidToken("the token names no login".into()))
            }
            None => None,
        };
        // Every fact in one read: a reconnect storm asks this per client.
        let marker = login.map(|(_, generation)| logins::marker(&claims.sub, generation));
        let asked: Vec<&str> = login
            .map(|(l, _)| l)
            .into_iter()
            .chain(marker.as_deref())
            .collect();
        let facts = store.access_facts(&claims.sub, &asked).await?;
        if login.is_some() {
            match facts.logins.first().copied().flatten() {
                Some(LoginState::Active) => {}
                Some(LoginState::Revoked) => return Err(revoked_login()),
                None => return Err(AuthError::InvalidToken("no such login".into())),
            }
            if !facts.user_exists {
                return Err(AuthError::InvalidToken("no such user".into()));
            }
        } else if !facts.user_exists {
            ensure_user(store, &claims.sub).await?;
        }
        // While suspended, every token is told so (a client stops there);
        // once lifted, those of the logins the suspension ended are dead.
        if facts.flags.suspended {
            return Err(AuthError::Suspended);
        }
        if facts.logins.get(1).copied().flatten() == Some(LoginState::Revoked) {
            return Err(revoked_login());
        }
        Ok(claims)
    }

    /// Calls `hook` with the user and login of every login revoked from now
    /// on (once set, it stays).
    pub fn on_login_revoked(&self, hook: impl Fn(UserId, String) + Send + Sync + 'static) {
        let _ = self.on_revoked.set(Box::new(hook));
    }

    fn revoked(&self, user: UserId, login: String) {
        if let Some(hook) = self.on_revoked.get() {
            hook(user, login);
        }
    }

    /// Signs an access token for `user`, bound to the refresh family `sid`
    /// when given. Returns the token and its expiry in Unix seconds.
    pub fn issue_access(
        &self,
        user: &UserId,
        sid: Option<&str>,
    ) -> Result<(String, u64), AuthError> {
        let key = self.encoding.as_ref().ok_or(AuthError::CannotIssue)?;
        let now = now_secs();
        let exp = now.saturating_add(self.access_ttl_secs);
        let claims = IssuedClaims {
            sub: user.as_str(),
            exp,
            iat: now,
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
            sid,
        };
        let header = jsonwebtoken::Header::new(self.algorithm.to_jwt());
        let token = jsonwebtoken::encode(&header, &claims, key)
            .map_err(|e| AuthError::Internal(format!("signing an access token: {e}")))?;
        Ok((token, exp))
    }

    /// Creates a password account and starts a session for it.
    pub async fn register(
        &self,
        store: &dyn MessageStore,
        req: &RegisterRequest,
        from: IpAddr,
    ) -> Result<TokenSet, AuthError> {
        // Checked first so that a verify-only node does not create accounts
        // nobody can log in to.
        self.signing_key()?;
        let id = parse_username(&req.username)?;
        check_password(&req.password)?;
        let display_name = check_display_name(req.display_name.as_deref())?
            // The name as typed, when its case differs from the id's.
            .or_else(|| (req.username != id.as_str()).then(|| req.username.clone()));
        self.throttle
            .registration(from)
            .map_err(|retry_after_ms| AuthError::RateLimited { retry_after_ms })?;
        // Not authoritative (create_user is), but spares the hashing work for
        // the common case of a name that is plainly taken.
        if self.reserved.contains(&id) || store.user(&id).await?.is_some() {
            return Err(AuthError::UsernameTaken);
        }
        let password_hash = self.passwords.hash(req.password.clone()).await?;
        let record = UserRecord {
            id,
            password_hash: Some(password_hash),
            display_name,
            created_at: now_ms(),
        };
        match store.create_user(&record).await {
            Ok(()) => {}
            Err(StoreError::Conflict) => return Err(AuthError::UsernameTaken),
            Err(e) => return Err(e.into()),
        }
        let generation = logins::current(store, &record.id).await?;
        self.start_session(store, &record, generation).await
    }

    /// Checks a username and password and starts a session.
    pub async fn login(
        &self,
        store: &dyn MessageStore,
        req: &LoginRequest,
        from: IpAddr,
    ) -> Result<TokenSet, AuthError> {
        self.signing_key()?;
        // The rules are public, so refusing a malformed name reveals nothing
        // about accounts.
        let id = parse_username(&req.username)?;
        let limited = |retry_after_ms| AuthError::RateLimited { retry_after_ms };
        self.throttle.login(from).map_err(limited)?;
        self.throttle.may_try(&id, from).map_err(limited)?;
        if check_password(&req.password).is_err() {
            // No account has a password outside the policy: wrong, as any
            // wrong password is (401), without hashing it.
            self.throttle.failed(&id, from);
            return Err(AuthError::BadCredentials);
        }
        let mut user = store.user(&id).await?;
        if user.is_none() && req.username != id.as_str() {
            // An account made before names were case-insensitive.
            if let Ok(exact) = UserId::new(&req.username) {
                user = store.user(&exact).await?;
            }
        }
        let credentials = match &user {
            Some(u) => store.credentials(&u.id).await?,
            None => None,
        };
        let stored_hash = password_hash(user.as_ref(), credentials.as_ref());
        let password_ok = self
            .passwords
            .verify(req.password.clone(), stored_hash)
            .await?;
        let Some(user) = user else {
            self.throttle.failed(&id, from);
            return Err(AuthError::BadCredentials);
        };
        // Read before the suspension flag: a suspension stored after that
        // read ends this generation, and so the login made here.
        let generation = logins::current(store, &user.id).await?;
        if store.user_flags(&user.id).await?.suspended {
            // The same answer, after the same hashing, whether the password
            // was right or not, and neither counted: a guesser learns
            // nothing from a suspended account.
            return Err(AuthError::Suspended);
        }
        if !password_ok {
            self.throttle.failed(&id, from);
            return Err(AuthError::BadCredentials);
        }
        if let Some(c) = credentials.filter(|c| c.totp.as_ref().is_some_and(|t| t.confirmed)) {
            if let Err(e) = second_factor(store, &user.id, c, req).await {
                if matches!(e, AuthError::WrongCode) {
                    self.throttle.failed(&id, from);
                }
                return Err(e);
            }
        }
        self.throttle.succeeded(&id, from);
        self.start_session(store, &user, generation).await
    }

    /// Exchanges a refresh token for a new access token and a new refresh
    /// token; the presented one is used up.
    pub async fn refresh(
        &self,
        store: &dyn MessageStore,
        refresh_token: &str,
    ) -> Result<TokenSet, AuthError> {
        self.signing_key()?;
        let (user, family) = parse_refresh_token(refresh_token)
            .ok_or_else(|| AuthError::InvalidToken("malformed refresh token".into()))?;
        let generation = logins::generation_of(family, &user)
            .ok_or_else(|| AuthError::InvalidToken("malformed refresh token".into()))?;
        // Told while it lasts, as a connection is; the suspension ended
        // this login all the same.
        if store.user_flags(&user).await?.suspended {
            return Err(AuthError::Suspended);
        }
        if logins::ended(store, &user, generation).await? {
            return Err(revoked_login());
        }
        let (new_token, new_record) = self.new_refresh(&user, family);
        let rotation = store
            .rotate_refresh(&hash_token(refresh_token), &new_record, now_ms())
            .await?;
        match rotation {
            Rotation::Rotated { user: owner } => {
                if owner != user {
                    // The hash covers the user part, so only a store bug
                    // gets here.
                    return Err(AuthError::Internal(format!(
                        "refresh token of {user} is stored for {owner}"
                    )));
                }
                let record = store
                    .user(&user)
                    .await?
                    .ok_or_else(|| AuthError::InvalidToken("the user no longer exists".into()))?;
                let (access_token, _) = self.issue_access(&user, Some(family))?;
                Ok(TokenSet {
                    user: profile::view(store, &record).await?,
                    access_token,
                    refresh_token: new_token,
                    expires_in: self.access_ttl_secs,
                    login: family.to_owned(),
                    refresh_expires_at: new_record.expires_at,
                })
            }
            Rotation::Reused => {
                tracing::warn!(
                    user = %user,
                    "a rotated refresh token was presented again; revoked its family"
                );
                self.revoked(user, family.to_string());
                Err(AuthError::InvalidToken(
                    "refresh token already used; this login is revoked".into(),
                ))
            }
            Rotation::Invalid => Err(AuthError::InvalidToken(
                "refresh token unknown, expired or revoked".into(),
            )),
        }
    }

    /// Revokes the login (refresh family) of a refresh token: the access
    /// tokens naming it are refused from now on, and its connections
    /// closed. Unknown or already revoked tokens are fine: logging out twice
    /// is not an error.
    pub async fn logout(
        &self,
        store: &dyn MessageStore,
        refresh_token: &str,
    ) -> Result<(), AuthError> {
        // Every token we issue parses; anything else cannot be in the store.
        let Some((_, family)) = parse_refresh_token(refresh_token) else {
            return Ok(());
        };
        let owner = store
            .revoke_refresh_family(&hash_token(refresh_token))
            .await?;
        if let Some(user) = owner {
            store.delete_login(&user, family).await?;
            self.revoked(user, family.to_string());
        }
        Ok(())
    }

    fn signing_key(&self) -> Result<&jsonwebtoken::EncodingKey, AuthError> {
        self.encoding.as_ref().ok_or(AuthError::CannotIssue)
    }

    /// Ends every login of `user` made so far, for good: their refresh
    /// tokens and the access tokens naming them stop working, though the
    /// account goes on (an operator suspends it first).
    pub async fn end_logins(
        &self,
        store: &dyn MessageStore,
        user: &UserId,
    ) -> Result<(), AuthError> {
        Ok(logins::end_all(store, user).await?)
    }

    /// Starts a new refresh family for `user` in `generation` of its
    /// logins, and issues its first tokens.
    async fn start_session(
        &self,
        store: &dyn MessageStore,
        user: &UserRecord,
        generation: u32,
    ) -> Result<TokenSet, AuthError> {
        let family = logins::new_login(&user.id, generation);
        let (access_token, _) = self.issue_access(&user.id, Some(&family))?;
        let (refresh_token, record) = self.new_refresh(&user.id, &family);
        store.put_refresh(&record).await?;
        Ok(TokenSet {
            user: profile::view(store, user).await?,
            access_token,
            refresh_token,
            expires_in: self.access_ttl_secs,
            login: family,
            refresh_expires_at: record.expires_at,
        })
    }

    /// A fresh refresh token of `family` and the record that stores it.
    fn new_refresh(&self, user: &UserId, family: &str) -> (String, RefreshRecord) {
        let secret = hex::encode(random_bytes::<REFRESH_SECRET_BYTES>());
        let token = format!("{user}.{family}.{secret}");
        let record = RefreshRecord {
            token_hash: hash_token(&token),
            user: user.clone(),
            family: family.to_owned(),
            expires_at: now_ms().saturating_add(self.refresh_ttl_secs.saturating_mul(1000)),
        };
        (token, record)
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Splits `<user>.<family>.<secret>`; user ids may contain dots, so it is
/// split from the right.
fn parse_refresh_token(token: &str) -> Option<(UserId, &str)> {
    let mut parts = token.rsplitn(3, '.');
    let secret = parts.next()?;
    let family = parts.next()?;
    let user = parts.next()?;
    let is_hex = |s: &str, bytes: usize| {
        s.len() == bytes * 2 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    if !is_hex(secret, REFRESH_SECRET_BYTES) || !logins::is_login_id(family) {
        return None;
    }
    Some((UserId::new(user).ok()?, family))
}

fn revoked_login() -> AuthError {
    AuthError::InvalidToken("this login was revoked".into())
}

/// What is wrong with a token, in words that name no library internals.
fn token_problem(kind: &jsonwebtoken::errors::ErrorKind) -> &'static str {
    use jsonwebtoken::errors::ErrorKind;
    match kind {
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::ImmatureSignature => "not valid yet (nbf)",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "wrong algorithm",
        ErrorKind::MissingRequiredClaim(_) => "a required claim is missing",
        _ => "malformed",
    }
}

/// The bearer token of a request: the `Authorization` header, else the
/// `access_token` query parameter.
pub fn bearer(headers: &HeaderMap, query_token: Option<&str>) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_string())
        .or_else(|| query_token.map(str::to_string))
}

/// Makes sure a user known by token has a record, so others can find it
/// (users of an outside identity provider never register here).
pub async fn ensure_user(store: &dyn MessageStore, user: &UserId) -> Result<(), StoreError> {
    if store.user(user).await?.is_none() {
        let record = UserRecord {
            id: user.clone(),
            password_hash: None,
            display_name: None,
            created_at: now_ms(),
        };
        match store.create_user(&record).await {
            Ok(()) | Err(StoreError::Conflict) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
