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
//! hash, so editing them only yields an unknown token.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderMap};
use chat_protocol::{now_ms, ErrorCode, UserId};
use chat_storage::{LoginState, MessageStore, RefreshRecord, Rotation, StoreError, UserRecord};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod passwords;
mod throttle;

use passwords::Passwords;
use throttle::Throttle;
pub use throttle::ThrottleConfig;

/// Shortest accepted password, in bytes.
pub const MIN_PASSWORD_BYTES: usize = 8;
/// Longest accepted password, in bytes: bounds the work one request can cause.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Longest display name, in bytes.
pub const MAX_DISPLAY_NAME_BYTES: usize = 128;
/// Name of the file in the data directory that keeps the generated HS256
/// development secret.
pub const DEV_SECRET_FILE: &str = "jwt_secret";

/// Longest access token looked at: anything larger is not one of ours nor a
/// sane IdP token, and is refused before any base64 or JSON work.
const MAX_ACCESS_TOKEN_BYTES: usize = 8 * 1024;
/// HS256 secrets shorter than this are guessable offline from one token.
const MIN_SECRET_BYTES: usize = 32;
/// Largest accepted `leeway_secs`.
const MAX_LEEWAY_SECS: u64 = 3600;
const REFRESH_SECRET_BYTES: usize = 32;
const FAMILY_BYTES: usize = 16;

/// An argon2id hash (of a password nobody uses) with the crate's default
/// parameters. Logins of unknown users are verified against it so that they
/// take as long as logins of known users and do not reveal which names exist.
const DUMMY_PHC: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$TQrf3tcw9fDgjOdV9ZNKwQ$EsIBhzCcT3fIlFujIhkM65q7YdnKM7Y0fL6cJaK2ydw";

/// JWT signature algorithm of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Algorithm {
    /// HMAC-SHA256 with a secret shared by all nodes.
    #[default]
    HS256,
    /// RSA PKCS#1 v1.5 with SHA-256; typical of outside identity providers.
    RS256,
    /// Ed25519.
    EdDSA,
}

impl Algorithm {
    fn to_jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::HS256 => jsonwebtoken::Algorithm::HS256,
            Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
            Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Algorithm::HS256 => "HS256",
            Algorithm::RS256 => "RS256",
            Algorithm::EdDSA => "EdDSA",
        }
    }
}

/// The `[auth]` section of `cluster.toml`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Signature algorithm of access tokens.
    pub algorithm: Algorithm,
    /// HS256 secret, the same on every node. When unset, a random development
    /// secret is generated once and kept in `<data_dir>/jwt_secret`; that only
    /// works for a single node, since each node would generate its own.
    pub jwt_secret: Option<String>,
    /// RS256/EdDSA: PEM public key that verifies tokens, e.g. those of an
    /// outside identity provider.
    pub public_key_file: Option<PathBuf>,
    /// RS256/EdDSA: PEM private key, needed only if this node issues tokens
    /// itself (register, login, refresh).
    pub private_key_file: Option<PathBuf>,
    /// Required `iss` of tokens when set; put into issued tokens.
    pub issuer: Option<String>,
    /// Required `aud` of tokens when set; put into issued tokens. When unset,
    /// `aud` is not checked at all.
    pub audience: Option<String>,
    /// Lifetime of issued access tokens, in seconds.
    pub access_ttl_secs: u64,
    /// Lifetime of a refresh token, in seconds; each rotation starts a new one.
    pub refresh_ttl_secs: u64,
    /// Clock skew tolerated when checking `exp`, `nbf` and `iat`, in seconds.
    pub leeway_secs: u64,
    /// Longest lifetime accepted in a token (`exp` minus `iat`, or minus now
    /// without `iat`), in seconds: a leaked long-lived token is refused.
    pub max_token_lifetime_secs: u64,
    /// Threads hashing passwords (argon2id, 19 MiB each while it runs); 0
    /// for one per core.
    pub password_threads: usize,
    /// Logins and registrations waiting for a hashing thread; past it they
    /// are answered 503 with `Retry-After` at once.
    pub password_queue: usize,
    /// Whether an access token must name a live login (`sid`): logging out
    /// then ends it at once. Turn off to accept tokens minted elsewhere
    /// (an identity provider, a backend holding the secret) that name none;
    /// a token that names one is always checked.
    pub require_session: bool,
    /// Limits on logins and registrations.
    pub throttle: ThrottleConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            algorithm: Algorithm::HS256,
            jwt_secret: None,
            public_key_file: None,
            private_key_file: None,
            issuer: None,
            audience: None,
            access_ttl_secs: 900,
            refresh_ttl_secs: 30 * 24 * 3600,
            leeway_secs: 5,
            max_token_lifetime_secs: 24 * 3600,
            password_threads: 0,
            password_queue: 64,
            require_session: true,
            throttle: ThrottleConfig::default(),
        }
    }
}

// Hand-written so that printing the config (e.g. at startup) never prints the
// secret.
impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("algorithm", &self.algorithm)
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("public_key_file", &self.public_key_file)
            .field("private_key_file", &self.private_key_file)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("access_ttl_secs", &self.access_ttl_secs)
            .field("refresh_ttl_secs", &self.refresh_ttl_secs)
            .field("leeway_secs", &self.leeway_secs)
            .field("max_token_lifetime_secs", &self.max_token_lifetime_secs)
            .field("password_threads", &self.password_threads)
            .field("password_queue", &self.password_queue)
            .field("require_session", &self.require_session)
            .field("throttle", &self.throttle)
            .finish()
    }
}

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

/// Why authentication failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The request carries no access token.
    #[error("missing bearer token")]
    MissingToken,
    /// The token is malformed, badly signed, for someone else, or (refresh
    /// tokens) unknown, used or revoked.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// The access token has expired.
    #[error("token expired")]
    Expired,
    /// Unknown user or wrong password; deliberately not saying which.
    #[error("wrong username or password")]
    BadCredentials,
    /// Registration with a name that exists.
    #[error("username already taken")]
    UsernameTaken,
    /// An operator suspended the account: no sign-in, refresh or
    /// connection until one lifts it.
    #[error("this account is suspended")]
    Suspended,
    /// A request field breaks a rule; the message says which.
    #[error("{0}")]
    InvalidInput(String),
    /// The node only verifies tokens: it has no key to sign them with.
    #[error("this node does not issue tokens (no signing key configured)")]
    CannotIssue,
    /// Every password hashing thread is busy and the queue full: retry.
    #[error("too many logins at once; retry shortly")]
    Busy,
    /// Too many attempts from this address, or on this account.
    #[error("too many attempts; retry in {retry_after_ms} ms")]
    RateLimited {
        /// When to retry.
        retry_after_ms: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The `[auth]` configuration or its key files are unusable.
    #[error("auth configuration: {0}")]
    Config(String),
    /// A bug or a failure of the hashing or signing machinery.
    #[error("internal auth error: {0}")]
    Internal(String),
}

impl AuthError {
    /// The protocol error code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::MissingToken
            | AuthError::InvalidToken(_)
            | AuthError::Expired
            | AuthError::BadCredentials => ErrorCode::Unauthorized,
            AuthError::UsernameTaken => ErrorCode::Conflict,
            AuthError::Suspended => ErrorCode::Forbidden,
            AuthError::InvalidInput(_) => ErrorCode::BadRequest,
            AuthError::RateLimited { .. } => ErrorCode::RateLimited,
            AuthError::Busy | AuthError::Store(StoreError::Unavailable(_)) => {
                ErrorCode::Unavailable
            }
            AuthError::CannotIssue
            | AuthError::Store(_)
            | AuthError::Config(_)
            | AuthError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The HTTP status for this error: that of [`Self::code`].
    pub fn http_status(&self) -> u16 {
        self.code().http_status()
    }

    /// When a client may retry, for the errors that say so.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            AuthError::RateLimited { retry_after_ms } => Some(*retry_after_ms),
            AuthError::Busy => Some(1000),
            _ => None,
        }
    }
}

/// Body of `POST /register`.
#[derive(Clone, Deserialize)]
pub struct RegisterRequest {
    /// The wanted user id.
    pub username: String,
    /// 8 to 1024 bytes.
    pub password: String,
    /// Up to 128 bytes; blank means none.
    #[serde(default)]
    pub display_name: Option<String>,
}

impl fmt::Debug for RegisterRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisterRequest")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("display_name", &self.display_name)
            .finish()
    }
}

/// Body of `POST /login`.
#[derive(Clone, Deserialize)]
pub struct LoginRequest {
    /// The user id.
    pub username: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginRequest")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .finish()
    }
}

/// What register, login and refresh answer.
#[derive(Clone, Serialize)]
pub struct TokenSet {
    /// The authenticated user.
    pub user: UserView,
    /// JWT for the WebSocket and the HTTP API.
    pub access_token: String,
    /// Opaque, single-use token for `refresh` and `logout`.
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSet")
            .field("user", &self.user)
            .field("access_token", &"[redacted]")
            .field("refresh_token", &"[redacted]")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// A user as shown to clients: the record without its password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserView {
    /// The user id.
    pub id: UserId,
    /// Shown instead of the id when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Unix milliseconds.
    pub created_at: u64,
}

impl From<&UserRecord> for UserView {
    fn from(record: &UserRecord) -> Self {
        UserView {
            id: record.id.clone(),
            display_name: record.display_name.clone(),
            created_at: record.created_at,
        }
    }
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
    /// that the login it names is live, and that its user exists. A login
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
        match &claims.sid {
            Some(login) => match store.login_state(login).await? {
                Some(LoginState::Active) => {}
                Some(LoginState::Revoked) => {
                    return Err(AuthError::InvalidToken("this login was revoked".into()))
                }
                None => return Err(AuthError::InvalidToken("no such login".into())),
            },
            None if self.require_session => {
                return Err(AuthError::InvalidToken("the token names no login".into()))
            }
            None => {}
        }
        if claims.sid.is_some() {
            if store.user(&claims.sub).await?.is_none() {
                return Err(AuthError::InvalidToken("no such user".into()));
            }
        } else {
            ensure_user(store, &claims.sub).await?;
        }
        if store.user_flags(&claims.sub).await?.suspended {
            return Err(AuthError::Suspended);
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
        if store.user(&id).await?.is_some() {
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
        self.start_session(store, &record).await
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
        self.throttle.may_try(&id).map_err(limited)?;
        if check_password(&req.password).is_err() {
            // No account has a password outside the policy: wrong, as any
            // wrong password is (401), without hashing it.
            self.throttle.failed(&id);
            return Err(AuthError::BadCredentials);
        }
        let mut user = store.user(&id).await?;
        if user.is_none() && req.username != id.as_str() {
            // An account made before names were case-insensitive.
            if let Ok(exact) = UserId::new(&req.username) {
                user = store.user(&exact).await?;
            }
        }
        let stored_hash = user.as_ref().and_then(|u| u.password_hash.clone());
        let password_ok = self
            .passwords
            .verify(req.password.clone(), stored_hash)
            .await?;
        match user {
            Some(user) if password_ok => {
                self.throttle.succeeded(&id);
                // Said only to who knows the password.
                if store.user_flags(&user.id).await?.suspended {
                    return Err(AuthError::Suspended);
                }
                self.start_session(store, &user).await
            }
            _ => {
                self.throttle.failed(&id);
                Err(AuthError::BadCredentials)
            }
        }
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
        // Before the rotation: a suspended user's token stays as it was, to
        // work again once the suspension is lifted.
        if store.user_flags(&user).await?.suspended {
            return Err(AuthError::Suspended);
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
                    user: UserView::from(&record),
                    access_token,
                    refresh_token: new_token,
                    expires_in: self.access_ttl_secs,
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

    /// Revokes the login (refresh family) of a refresh token. Unknown or
    /// already revoked tokens are fine: logging out twice is not an error.
    /// Access tokens already issued stay valid until they expire.
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
            self.revoked(user, family.to_string());
        }
        Ok(())
    }

    fn signing_key(&self) -> Result<&jsonwebtoken::EncodingKey, AuthError> {
        self.encoding.as_ref().ok_or(AuthError::CannotIssue)
    }

    /// Starts a new refresh family for `user` and issues its first tokens.
    async fn start_session(
        &self,
        store: &dyn MessageStore,
        user: &UserRecord,
    ) -> Result<TokenSet, AuthError> {
        let family = hex::encode(random_bytes::<FAMILY_BYTES>());
        let (access_token, _) = self.issue_access(&user.id, Some(&family))?;
        let (refresh_token, record) = self.new_refresh(&user.id, &family);
        store.put_refresh(&record).await?;
        Ok(TokenSet {
            user: UserView::from(user),
            access_token,
            refresh_token,
            expires_in: self.access_ttl_secs,
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

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::fill(&mut bytes[..]);
    bytes
}

fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
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
    if !is_hex(secret, REFRESH_SECRET_BYTES) || !is_hex(family, FAMILY_BYTES) {
        return None;
    }
    Some((UserId::new(user).ok()?, family))
}

/// Usernames are case-insensitive: the id is the name in lower case.
fn parse_username(username: &str) -> Result<UserId, AuthError> {
    UserId::new(&username.to_ascii_lowercase())
        .map_err(|e| AuthError::InvalidInput(format!("username: {e}")))
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

fn check_password(password: &str) -> Result<(), AuthError> {
    let len = password.len();
    if !(MIN_PASSWORD_BYTES..=MAX_PASSWORD_BYTES).contains(&len) {
        return Err(AuthError::InvalidInput(format!(
            "password must be {MIN_PASSWORD_BYTES} to {MAX_PASSWORD_BYTES} bytes long, got {len}"
        )));
    }
    Ok(())
}

fn check_display_name(name: Option<&str>) -> Result<Option<String>, AuthError> {
    let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    if name.len() > MAX_DISPLAY_NAME_BYTES {
        return Err(AuthError::InvalidInput(format!(
            "display_name must be at most {MAX_DISPLAY_NAME_BYTES} bytes long, got {}",
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(AuthError::InvalidInput(
            "display_name must not contain control characters".into(),
        ));
    }
    Ok(Some(name.to_owned()))
}

/// argon2id with the crate's defaults; on the blocking pool because it takes
/// tens of milliseconds of CPU and would stall the async workers.
type KeyPair = (jsonwebtoken::DecodingKey, Option<jsonwebtoken::EncodingKey>);

fn hmac_keys(cfg: &AuthConfig, data_dir: &Path) -> Result<KeyPair, AuthError> {
    if cfg.public_key_file.is_some() || cfg.private_key_file.is_some() {
        return Err(AuthError::Config(
            "public_key_file and private_key_file are for RS256 and EdDSA; HS256 uses jwt_secret"
                .into(),
        ));
    }
    let secret = match &cfg.jwt_secret {
        Some(secret) if secret.is_empty() => {
            return Err(AuthError::Config("jwt_secret must not be empty".into()))
        }
        Some(secret) => {
            if secret.len() < MIN_SECRET_BYTES {
                tracing::warn!(
                    "auth.jwt_secret is shorter than {MIN_SECRET_BYTES} bytes: \
                     tokens signed with it can be brute-forced"
                );
            }
            secret.as_bytes().to_vec()
        }
        None => load_or_create_dev_secret(data_dir)?,
    };
    Ok((
        jsonwebtoken::DecodingKey::from_secret(&secret),
        Some(jsonwebtoken::EncodingKey::from_secret(&secret)),
    ))
}

fn pem_keys(cfg: &AuthConfig) -> Result<KeyPair, AuthError> {
    let alg = cfg.algorithm;
    if cfg.jwt_secret.is_some() {
        return Err(AuthError::Config(format!(
            "jwt_secret is for HS256; {} uses public_key_file and private_key_file",
            alg.name()
        )));
    }
    let public_path = cfg
        .public_key_file
        .as_ref()
        .ok_or_else(|| AuthError::Config(format!("{} needs public_key_file", alg.name())))?;
    let pem = read_key_file(public_path)?;
    let decoding = match alg {
        Algorithm::RS256 => jsonwebtoken::DecodingKey::from_rsa_pem(&pem),
        _ => jsonwebtoken::DecodingKey::from_ed_pem(&pem),
    }
    .map_err(|e| bad_key(public_path, alg, "public", &e))?;
    let encoding = match &cfg.private_key_file {
        None => None,
        Some(private_path) => {
            let pem = read_key_file(private_path)?;
            let key = match alg {
                Algorithm::RS256 => jsonwebtoken::EncodingKey::from_rsa_pem(&pem),
                _ => jsonwebtoken::EncodingKey::from_ed_pem(&pem),
            }
            .map_err(|e| bad_key(private_path, alg, "private", &e))?;
            Some(key)
        }
    };
    Ok((decoding, encoding))
}

fn read_key_file(path: &Path) -> Result<Vec<u8>, AuthError> {
    fs::read(path).map_err(|e| AuthError::Config(format!("cannot read {}: {e}", path.display())))
}

fn bad_key(path: &Path, alg: Algorithm, kind: &str, e: &jsonwebtoken::errors::Error) -> AuthError {
    AuthError::Config(format!(
        "{} is not a PEM {} {kind} key: {e}",
        path.display(),
        alg.name()
    ))
}

/// A new random HS256 secret, hex.
pub(crate) fn new_secret() -> String {
    hex::encode(random_bytes::<MIN_SECRET_BYTES>())
}

/// Reads the development secret, creating it on first start.
fn load_or_create_dev_secret(data_dir: &Path) -> Result<Vec<u8>, AuthError> {
    let path = data_dir.join(DEV_SECRET_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => return decode_dev_secret(&path, &text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(AuthError::Config(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    }
    let io_err = |what: &str, p: &Path, e: io::Error| {
        AuthError::Config(format!("cannot {what} {}: {e}", p.display()))
    };
    fs::create_dir_all(data_dir).map_err(|e| io_err("create", data_dir, e))?;
    let secret = random_bytes::<MIN_SECRET_BYTES>();
    // Written whole under a temporary name, then linked into place: a crash
    // never leaves a truncated secret, and of two processes starting on one
    // directory the second finds the first's secret instead of replacing it.
    let tmp = data_dir.join(format!(
        ".{DEV_SECRET_FILE}.{}.tmp",
        hex::encode(random_bytes::<8>())
    ));
    write_private(&tmp, hex::encode(secret).as_bytes()).map_err(|e| io_err("write", &tmp, e))?;
    let linked = fs::hard_link(&tmp, &path);
    // Best effort: a leftover temporary file is harmless.
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            // Best effort as well: losing the link in a machine crash only
            // means a new secret (and new logins) on the next start.
            if let Ok(dir) = fs::File::open(data_dir) {
                let _ = dir.sync_all();
            }
            tracing::warn!(
                path = %path.display(),
                "generated a development JWT secret; set auth.jwt_secret to the same \
                 value on every node of a cluster"
            );
            Ok(secret.to_vec())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let text = fs::read_to_string(&path).map_err(|e| io_err("read", &path, e))?;
            decode_dev_secret(&path, &text)
        }
        Err(e) => Err(io_err("create", &path, e)),
    }
}

fn decode_dev_secret(path: &Path, text: &str) -> Result<Vec<u8>, AuthError> {
    match hex::decode(text.trim()) {
        Ok(secret) if secret.len() >= MIN_SECRET_BYTES => Ok(secret),
        _ => Err(AuthError::Config(format!(
            "{} is not a hex secret of at least {MIN_SECRET_BYTES} bytes; delete it to \
             generate a new one (every issued token then becomes invalid)",
            path.display()
        ))),
    }
}

/// Creates `path` readable by the owner only, since it holds a secret.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
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
mod tests {
    use chat_storage::embedded::{Durability, EmbeddedStore};

    use super::*;

    /// Ed25519 pair made with `openssl genpkey -algorithm ed25519`.
    const ED_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIBK6W2D45NlCWX9WiqSwST5Usoulrm5fuY03vzedlODY
-----END PRIVATE KEY-----
";
    const ED_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAoVZmlCvAKPunuWDyL+GEyp2rF46KAG5ClecI7q4esM8=
-----END PUBLIC KEY-----
";
    /// The public half of another Ed25519 key.
    const ED_OTHER_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAc8y+nPI7kb7z06SNRllb6I5a9vSSN9dOd1/bkxifj2E=
-----END PUBLIC KEY-----
";
    const SECRET: &str = "0123456789abcdef0123456789abcdef-test-secret";

    fn hs256(secret: &str) -> AuthConfig {
        AuthConfig {
            jwt_secret: Some(secret.to_owned()),
            ..AuthConfig::default()
        }
    }

    fn auth(cfg: &AuthConfig) -> Auth {
        let dir = tempfile::tempdir().unwrap();
        Auth::from_config(cfg, dir.path()).unwrap()
    }

    fn uid(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    fn sign_raw(auth: &Auth, claims: &serde_json::Value) -> String {
        let header = jsonwebtoken::Header::new(auth.algorithm.to_jwt());
        jsonwebtoken::encode(&header, claims, auth.encoding.as_ref().unwrap()).unwrap()
    }

    #[test]
    fn hs256_issue_and_verify() {
        let auth = auth(&hs256(SECRET));
        let (token, exp) = auth.issue_access(&uid("alice"), Some("fam")).unwrap();
        let now = now_secs();
        assert!(exp >= now + 899 && exp <= now + 901);
        let claims = auth.verify(&token).unwrap();
        assert_eq!(
            claims,
            Claims {
                sub: uid("alice"),
                exp,
                sid: Some("fam".into())
            }
        );
        let (token, _) = auth.issue_access(&uid("bob"), None).unwrap();
        assert_eq!(auth.verify(&token).unwrap().sid, None);
    }

    #[test]
    fn tampered_or_foreign_tokens_are_rejected() {
        let auth = auth(&hs256(SECRET));
        let (alice, _) = auth.issue_access(&uid("alice"), None).unwrap();
        let (mallory, _) = auth.issue_access(&uid("mallory"), None).unwrap();
        let a: Vec<&str> = alice.split('.').collect();
        let m: Vec<&str> = mallory.split('.').collect();

        // Another user's claims under alice's signature.
        let spliced = format!("{}.{}.{}", a[0], m[1], a[2]);
        assert!(matches!(
            auth.verify(&spliced),
            Err(AuthError::InvalidToken(_))
        ));

        // One signature character changed.
        let mut sig: Vec<u8> = a[2].bytes().collect();
        sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
        let flipped = format!("{}.{}.{}", a[0], a[1], String::from_utf8(sig).unwrap());
        assert!(matches!(
            auth.verify(&flipped),
            Err(AuthError::InvalidToken(_))
        ));

        // Signed with another secret.
        let other = self::auth(&hs256("another secret that is long enough!!"));
        let (foreign, _) = other.issue_access(&uid("alice"), None).unwrap();
        assert!(matches!(
            auth.verify(&foreign),
            Err(AuthError::InvalidToken(_))
        ));

        for junk in ["", "abc", "a.b.c", &"x".repeat(MAX_ACCESS_TOKEN_BYTES + 1)] {
            assert!(matches!(auth.verify(junk), Err(AuthError::InvalidToken(_))));
        }
    }

    #[test]
    fn bad_sub_is_rejected() {
        let auth = auth(&hs256(SECRET));
        let exp = now_secs() + 60;
        let token = sign_raw(
            &auth,
            &serde_json::json!({ "sub": "no spaces", "exp": exp }),
        );
        assert!(matches!(
            auth.verify(&token),
            Err(AuthError::InvalidToken(_))
        ));
        let token = sign_raw(&auth, &serde_json::json!({ "exp": exp }));
        assert!(matches!(
            auth.verify(&token),
            Err(AuthError::InvalidToken(_))
        ));
        let token = sign_raw(&auth, &serde_json::json!({ "sub": "alice" }));
        assert!(matches!(
            auth.verify(&token),
            Err(AuthError::InvalidToken(_))
        ));
        // An outside IdP's non-string sid is ignored, not fatal.
        let token = sign_raw(
            &auth,
            &serde_json::json!({ "sub": "alice", "exp": exp, "sid": 7 }),
        );
        assert_eq!(auth.verify(&token).unwrap().sid, None);
    }

    #[test]
    fn expired_token_is_rejected_beyond_leeway() {
        let auth = auth(&hs256(SECRET));
        let now = now_secs();
        let expired = sign_raw(
            &auth,
            &serde_json::json!({ "sub": "alice", "exp": now - 60 }),
        );
        assert!(matches!(auth.verify(&expired), Err(AuthError::Expired)));
        assert_eq!(AuthError::Expired.code(), ErrorCode::Unauthorized);
        // Within the 5 s leeway: clock skew between nodes must not log users out.
        let skewed = sign_raw(
            &auth,
            &serde_json::json!({ "sub": "alice", "exp": now - 2 }),
        );
        assert_eq!(auth.verify(&skewed).unwrap().sub, uid("alice"));
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let strict = auth(&AuthConfig {
            issuer: Some("https://chat.example".into()),
            audience: Some("chat".into()),
            ..hs256(SECRET)
        });
        let (good, _) = strict.issue_access(&uid("alice"), None).unwrap();
        assert_eq!(strict.verify(&good).unwrap().sub, uid("alice"));

        let exp = now_secs() + 60;
        let cases = [
            serde_json::json!({ "sub": "a", "exp": exp }),
            serde_json::json!({ "sub": "a", "exp": exp, "aud": "chat" }),
            serde_json::json!({ "sub": "a", "exp": exp, "iss": "https://chat.example" }),
            serde_json::json!({ "sub": "a", "exp": exp, "iss": "https://evil", "aud": "chat" }),
            serde_json::json!({ "sub": "a", "exp": exp, "iss": "https://chat.example", "aud": "other" }),
        ];
        for claims in cases {
            let token = sign_raw(&strict, &claims);
            assert!(
                matches!(strict.verify(&token), Err(AuthError::InvalidToken(_))),
                "{claims}"
            );
        }

        // Without configured iss/aud, tokens carrying them are accepted.
        let lax = auth(&hs256(SECRET));
        assert_eq!(lax.verify(&good).unwrap().sub, uid("alice"));
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, text).unwrap();
        path
    }

    #[tokio::test]
    async fn eddsa_with_pem_keys() {
        let dir = tempfile::tempdir().unwrap();
        let public = write(dir.path(), "pub.pem", ED_PUBLIC);
        let private = write(dir.path(), "priv.pem", ED_PRIVATE);
        let other_public = write(dir.path(), "other.pem", ED_OTHER_PUBLIC);
        let cfg = AuthConfig {
            algorithm: Algorithm::EdDSA,
            public_key_file: Some(public.clone()),
            private_key_file: Some(private.clone()),
            ..AuthConfig::default()
        };
        let issuer = Auth::from_config(&cfg, dir.path()).unwrap();
        assert!(issuer.can_issue());
        let (token, _) = issuer.issue_access(&uid("alice"), None).unwrap();
        assert_eq!(issuer.verify(&token).unwrap().sub, uid("alice"));

        // A verify-only node, as with an outside identity provider.
        let verify_only = Auth::from_config(
            &AuthConfig {
                private_key_file: None,
                ..cfg.clone()
            },
            dir.path(),
        )
        .unwrap();
        assert!(!verify_only.can_issue());
        assert_eq!(verify_only.verify(&token).unwrap().sub, uid("alice"));
        assert!(matches!(
            verify_only.issue_access(&uid("alice"), None),
            Err(AuthError::CannotIssue)
        ));
        let (_dir, store) = test_store();
        let err = verify_only
            .register(&store, &register_req("alice", "password1"), LOCAL)
            .await
            .unwrap_err();
        assert!(matches!(err, AuthError::CannotIssue));

        // An HS256 token must not pass an EdDSA verifier.
        let hs = auth(&hs256(SECRET));
        let (hs_token, _) = hs.issue_access(&uid("alice"), None).unwrap();
        assert!(matches!(
            verify_only.verify(&hs_token),
            Err(AuthError::InvalidToken(_))
        ));

        // Another key rejects the token.
        let other = Auth::from_config(
            &AuthConfig {
                public_key_file: Some(other_public.clone()),
                private_key_file: None,
                ..cfg.clone()
            },
            dir.path(),
        )
        .unwrap();
        assert!(matches!(
            other.verify(&token),
            Err(AuthError::InvalidToken(_))
        ));

        // Keys that are not a pair are refused at startup.
        let mismatched = AuthConfig {
            public_key_file: Some(other_public),
            ..cfg.clone()
        };
        assert!(matches!(
            Auth::from_config(&mismatched, dir.path()),
            Err(AuthError::Config(_))
        ));
        // So are a missing public key, a secret, and garbage.
        for bad in [
            AuthConfig {
                public_key_file: None,
                ..cfg.clone()
            },
            AuthConfig {
                jwt_secret: Some(SECRET.into()),
                ..cfg.clone()
            },
            AuthConfig {
                public_key_file: Some(write(dir.path(), "junk.pem", "junk")),
                ..cfg.clone()
            },
            AuthConfig {
                public_key_file: Some(dir.path().join("missing.pem")),
                ..cfg.clone()
            },
        ] {
            assert!(matches!(
                Auth::from_config(&bad, dir.path()),
                Err(AuthError::Config(_))
            ));
        }
    }

    /// RS256 keys need generating; skipped (with a note) without `openssl`.
    #[test]
    fn rs256_with_openssl_generated_keys() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("rsa.pem");
        let public = dir.path().join("rsa.pub.pem");
        let generated = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(&private)
            .output()
            .is_ok_and(|o| o.status.success())
            && std::process::Command::new("openssl")
                .args(["pkey", "-pubout", "-in"])
                .arg(&private)
                .arg("-out")
                .arg(&public)
                .output()
                .is_ok_and(|o| o.status.success());
        if !generated {
            eprintln!("openssl not available: RS256 test skipped");
            return;
        }
        let cfg = AuthConfig {
            algorithm: Algorithm::RS256,
            public_key_file: Some(public),
            private_key_file: Some(private),
            issuer: Some("idp".into()),
            ..AuthConfig::default()
        };
        let auth = Auth::from_config(&cfg, dir.path()).unwrap();
        let (token, _) = auth.issue_access(&uid("carol"), Some("f")).unwrap();
        let claims = auth.verify(&token).unwrap();
        assert_eq!((claims.sub, claims.sid), (uid("carol"), Some("f".into())));
    }

    #[test]
    fn dev_secret_is_persisted_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let first = Auth::from_config(&AuthConfig::default(), &data_dir).unwrap();
        let (token, _) = first.issue_access(&uid("alice"), None).unwrap();
        let path = data_dir.join(DEV_SECRET_FILE);
        let stored = fs::read_to_string(&path).unwrap();
        assert_eq!(stored.len(), 2 * MIN_SECRET_BYTES);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        let second = Auth::from_config(&AuthConfig::default(), &data_dir).unwrap();
        assert_eq!(second.verify(&token).unwrap().sub, uid("alice"));
        assert_eq!(fs::read_to_string(&path).unwrap(), stored);
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(&data_dir).unwrap().count(), 1);

        let elsewhere = self::auth(&AuthConfig::default());
        assert!(elsewhere.verify(&token).is_err());

        fs::write(&path, "not hex").unwrap();
        assert!(matches!(
            Auth::from_config(&AuthConfig::default(), &data_dir),
            Err(AuthError::Config(_))
        ));
    }

    #[test]
    fn config_defaults_names_and_checks() {
        let cfg: AuthConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(cfg, AuthConfig::default());
        assert_eq!(
            (
                cfg.algorithm,
                cfg.access_ttl_secs,
                cfg.refresh_ttl_secs,
                cfg.leeway_secs
            ),
            (Algorithm::HS256, 900, 2_592_000, 5)
        );
        for (name, alg) in [
            ("HS256", Algorithm::HS256),
            ("RS256", Algorithm::RS256),
            ("EdDSA", Algorithm::EdDSA),
        ] {
            let cfg: AuthConfig =
                serde_json::from_str(&format!(r#"{{"algorithm":"{name}"}}"#)).unwrap();
            assert_eq!(cfg.algorithm, alg);
        }
        assert!(serde_json::from_str::<AuthConfig>(r#"{"algorithm":"none"}"#).is_err());
        assert!(serde_json::from_str::<AuthConfig>(r#"{"secret":"x"}"#).is_err());
        assert!(!format!("{:?}", hs256(SECRET)).contains(SECRET));

        let dir = tempfile::tempdir().unwrap();
        for bad in [
            hs256(""),
            AuthConfig {
                access_ttl_secs: 0,
                ..hs256(SECRET)
            },
            AuthConfig {
                issuer: Some(String::new()),
                ..hs256(SECRET)
            },
            AuthConfig {
                leeway_secs: u64::MAX,
                ..hs256(SECRET)
            },
            AuthConfig {
                public_key_file: Some("k.pem".into()),
                ..hs256(SECRET)
            },
        ] {
            assert!(matches!(
                Auth::from_config(&bad, dir.path()),
                Err(AuthError::Config(_))
            ));
        }
    }

    #[test]
    fn error_codes_and_statuses() {
        assert_eq!(AuthError::BadCredentials.http_status(), 401);
        assert_eq!(
            AuthError::InvalidToken("x".into()).code(),
            ErrorCode::Unauthorized
        );
        // The code agrees with the status: a taken name is a conflict.
        assert_eq!(AuthError::UsernameTaken.code(), ErrorCode::Conflict);
        assert_eq!(AuthError::UsernameTaken.http_status(), 409);
        assert_eq!(AuthError::Busy.http_status(), 503);
        assert_eq!(AuthError::Busy.retry_after_ms(), Some(1000));
        let limited = AuthError::RateLimited {
            retry_after_ms: 2500,
        };
        assert_eq!(limited.http_status(), 429);
        assert_eq!(limited.retry_after_ms(), Some(2500));
        assert_eq!(AuthError::InvalidInput("x".into()).http_status(), 400);
        let unavailable = AuthError::Store(StoreError::Unavailable("down".into()));
        assert_eq!(unavailable.code(), ErrorCode::Unavailable);
        assert_eq!(unavailable.http_status(), 503);
        assert_eq!(
            AuthError::Store(StoreError::Conflict).code(),
            ErrorCode::Internal
        );
        assert_eq!(AuthError::CannotIssue.http_status(), 500);
    }

    #[test]
    fn dummy_hash_costs_what_a_real_one_does() {
        let parsed = argon2::PasswordHash::new(DUMMY_PHC).unwrap();
        let params = argon2::Params::try_from(&parsed).unwrap();
        let default = argon2::Params::default();
        assert_eq!(
            (params.m_cost(), params.t_cost(), params.p_cost()),
            (default.m_cost(), default.t_cost(), default.p_cost())
        );
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
    }

    #[test]
    fn refresh_token_format() {
        let auth = auth(&hs256(SECRET));
        let family = hex::encode([7u8; FAMILY_BYTES]);
        let (token, record) = auth.new_refresh(&uid("a.b:c"), &family);
        let (user, fam) = parse_refresh_token(&token).unwrap();
        assert_eq!((user, fam), (uid("a.b:c"), family.as_str()));
        assert_eq!(record.token_hash, hash_token(&token));
        assert_eq!(record.token_hash.len(), 64);
        assert!(!record.token_hash.contains(&token));
        for bad in ["", "x", "a.b.c", &format!("{family}.{}", "0".repeat(64))] {
            assert!(parse_refresh_token(bad).is_none(), "{bad}");
        }
    }

    // ---- register, login, refresh, logout over a real store ----

    /// A real embedded store in a directory removed with the guard.
    fn test_store() -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("store"), Durability::Sync).unwrap();
        (dir, store)
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn register_req(username: &str, password: &str) -> RegisterRequest {
        RegisterRequest {
            username: username.into(),
            password: password.into(),
            display_name: None,
        }
    }

    fn login_req(username: &str, password: &str) -> LoginRequest {
        LoginRequest {
            username: username.into(),
            password: password.into(),
        }
    }

    #[tokio::test]
    async fn register_then_login() {
        let auth = auth(&hs256(SECRET));
        let (_dir, store) = test_store();
        let registered = auth
            .register(
                &store,
                &RegisterRequest {
                    display_name: Some("  Alice A.  ".into()),
                    ..register_req("alice", "correct horse")
                },
                LOCAL,
            )
            .await
            .unwrap();
        assert_eq!(registered.user.id, uid("alice"));
        assert_eq!(registered.user.display_name.as_deref(), Some("Alice A."));
        assert_eq!(registered.expires_in, 900);
        let claims = auth.verify(&registered.access_token).unwrap();
        assert_eq!(claims.sub, uid("alice"));
        let family = claims.sid.unwrap();
        assert_eq!(
            parse_refresh_token(&registered.refresh_token).unwrap().1,
            family
        );

        let stored = store.user(&uid("alice")).await.unwrap().unwrap();
        let phc = stored.password_hash.unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(!phc.contains("correct horse"));
        // The refresh token lives refresh_ttl_secs (30 days): the store
        // refuses it a minute after, and rotates it a minute before.
        let presented = hash_token(&registered.refresh_token);
        let next = RefreshRecord {
            token_hash: hash_token("the next token"),
            user: uid("alice"),
            family: family.clone(),
            expires_at: u64::MAX,
        };
        let ttl_ms = 30 * 24 * 3600 * 1000;
        let late = store
            .rotate_refresh(&presented, &next, now_ms() + ttl_ms + 60_000)
            .await
            .unwrap();
        assert_eq!(late, Rotation::Invalid);
        let in_time = store
            .rotate_refresh(&presented, &next, now_ms() + ttl_ms - 60_000)
            .await
            .unwrap();
        assert_eq!(in_time, Rotation::Rotated { user: uid("alice") });

        let logged_in = auth
            .login(&store, &login_req("alice", "correct horse"), LOCAL)
            .await
            .unwrap();
        assert_eq!(logged_in.user, registered.user);
        let login_family = auth.verify(&logged_in.access_token).unwrap().sid.unwrap();
        assert_ne!(login_family, family, "each login is its own family");

        let json = serde_json::to_value(&logged_in).unwrap();
        assert_eq!(json["user"]["id"], "alice");
        assert!(json["refresh_token"].is_string());
        assert!(!format!("{logged_in:?}").contains(&logged_in.refresh_token));
    }

    #[tokio::test]
    async fn wrong_password_unknown_user_and_passwordless_user_fail_alike() {
        let auth = auth(&hs256(SECRET));
        let (_dir, store) = test_store();
        auth.register(&store, &register_req("alice", "correct horse"), LOCAL)
            .await
            .unwrap();
        store
            .create_user(&UserRecord {
                id: uid("idp-user"),
                password_hash: None,
                display_name: None,
                created_at: 1,
            })
            .await
            .unwrap();
        for (user, password) in [
            ("alice", "wrong horse"),
            ("nobody", "correct horse"),
            // The dummy hash's own password must not open unknown accounts.
            ("nobody", "dummy password that no one has"),
            ("idp-user", "dummy password that no one has"),
        ] {
            let err = auth
                .login(&store, &login_req(user, password), LOCAL)
                .await
                .unwrap_err();
            assert!(matches!(err, AuthError::BadCredentials), "{user}: {err}");
        }
    }

    #[tokio::test]
    async fn duplicate_username_and_invalid_input() {
        let auth = auth(&hs256(SECRET));
        let (_dir, store) = test_store();
        auth.register(&store, &register_req("alice", "password1"), LOCAL)
            .await
            .unwrap();
        let err = auth
            .register(&store, &register_req("alice", "password2"), LOCAL)
            .await
            .unwrap_err();
        assert!(matches!(err, AuthError::UsernameTaken));
        assert_eq!(err.http_status(), 409);

        let long_name = "n".repeat(MAX_DISPLAY_NAME_BYTES + 1);
        let bad = [
            register_req("", "password1"),
            register_req("has space", "password1"),
            register_req(&"u".repeat(65), "password1"),
            register_req("bob", "short"),
            register_req("bob", &"p".repeat(MAX_PASSWORD_BYTES + 1)),
            RegisterRequest {
                display_name: Some(long_name),
                ..register_req("bob", "password1")
            },
            RegisterRequest {
                display_name: Some("bell\u{7}".into()),
                ..register_req("bob", "password1")
            },
        ];
        for req in bad {
            let err = auth.register(&store, &req, LOCAL).await.unwrap_err();
            assert!(matches!(err, AuthError::InvalidInput(_)), "{req:?}: {err}");
        }
        assert!(store.user(&uid("bob")).await.unwrap().is_none());
        let err = auth
            .login(&store, &login_req("bad name", "password1"), LOCAL)
            .await
            .unwrap_err();
        assert!(matches!(err, AuthError::InvalidInput(_)));
    }

    #[tokio::test]
    async fn refresh_rotates_and_reuse_revokes_the_family() {
        let auth = auth(&hs256(SECRET));
        let (_dir, store) = test_store();
        let first = auth
            .register(&store, &register_req("alice", "password1"), LOCAL)
            .await
            .unwrap();
        let family = auth.verify(&first.access_token).unwrap().sid;

        let second = auth.refresh(&store, &first.refresh_token).await.unwrap();
        assert_ne!(second.refresh_token, first.refresh_token);
        assert_eq!(second.user.id, uid("alice"));
        let claims = auth.verify(&second.access_token).unwrap();
        assert_eq!((claims.sub, claims.sid), (uid("alice"), family));

        let third = auth.refresh(&store, &second.refresh_token).await.unwrap();

        // The old token is used up; presenting it again (theft) revokes the
        // family, so the newest token stops working too.
        let err = auth
            .refresh(&store, &first.refresh_token)
            .await
            .unwrap_err();
        assert!(matches!(err, AuthError::InvalidToken(_)));
        let err = auth
            .refresh(&store, &third.refresh_token)
            .await
            .unwrap_err();
        assert!(matches!(err, AuthError::InvalidToken(_)));
        assert_eq!(err.code(), ErrorCode::Unauthorized);

        // Another login of the same user is unaffected.
        let other = auth
            .login(&store, &login_req("alice", "password1"), LOCAL)
            .await
            .unwrap();
        auth.refresh(&store, &other.refresh_token).await.unwrap();

        for junk in ["", "garbage", &first.refresh_token.replace("alice", "bob")] {
            let err = auth.refresh(&store, junk).await.unwrap_err();
            assert!(matches!(err, AuthError::InvalidToken(_)), "{junk}");
        }
    }

    #[tokio::test]
    async fn logout_revokes_and_is_idempotent() {
        let auth = auth(&hs256(SECRET));
        let (_dir, store) = test_store();
        let session = auth
            .register(&store, &register_req("alice", "password1"), LOCAL)
            .await
            .unwrap();
        let rotated = auth.refresh(&store, &session.refresh_token).await.unwrap();
        auth.logout(&store, &rotated.refresh_token).await.unwrap();
        let err = auth
            .refresh(&store, &rotated.refresh_token)
            .await
            .unwrap_err();
        assert!(matches!(err, AuthError::InvalidToken(_)));

        auth.logout(&store, &rotated.refresh_token).await.unwrap();
        auth.logout(&store, &session.refresh_token).await.unwrap();
        auth.logout(&store, "not a token").await.unwrap();
    }
}
