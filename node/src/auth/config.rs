//! The `[auth]` section of `cluster.toml`, and the signature algorithms it
//! chooses from.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::throttle::ThrottleConfig;

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
    pub(super) fn to_jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::HS256 => jsonwebtoken::Algorithm::HS256,
            Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
            Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        }
    }

    pub(super) fn name(self) -> &'static str {
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
    /// Sign-in with an OpenID Connect provider (`[auth.oidc]`), if any.
    pub oidc: Option<OidcConfig>,
}

/// `[auth.oidc]`: sign-in with an OpenID Connect provider (the
/// authorization code flow with PKCE). Accounts are linked by the
/// provider's verified e-mail address.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer URL (its discovery document is under
    /// `/.well-known/openid-configuration`).
    pub issuer: String,
    /// This cluster's client id at the provider.
    pub client_id: String,
    /// Its client secret.
    pub client_secret: String,
    /// Where the provider sends the browser back:
    /// `<public URL>/v1/auth/oidc/callback`.
    pub redirect_url: String,
    /// The provider's name on the web app's button ("Sign in with ...").
    #[serde(default = "default_oidc_name")]
    pub name: String,
}

fn default_oidc_name() -> String {
    "SSO".into()
}

impl fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("redirect_url", &self.redirect_url)
            .field("name", &self.name)
            .finish()
    }
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
            oidc: None,
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
            .field("oidc", &self.oidc)
            .finish()
    }
}
