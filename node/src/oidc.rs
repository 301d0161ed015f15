//! Sign-in with an OpenID Connect provider (`[auth.oidc]`; docs/protocol.md,
//! "OpenID Connect"): `GET /v1/auth/oidc/start` sends the browser to the
//! provider (authorization code flow, PKCE, a fresh state and nonce), and
//! `GET /v1/auth/oidc/callback` checks the state against the browser's
//! cookie, exchanges the code with the PKCE verifier, checks the ID token
//! (signature by the provider's published keys, issuer, audience, expiry,
//! nonce), then signs in the account linked to the provider's identity or
//! verified e-mail address, making one if there is none, and sends the
//! browser to the web app with the tokens in the URL fragment.
//!
//! The state, nonce and PKCE verifier travel in an HttpOnly cookie that
//! only this path sees, so any node of a cluster can take the callback;
//! the state in the provider's redirect must match it (no cross-site
//! sign-in), and the ID token's nonce too (no replayed token).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chat_protocol::{now_ms, ErrorCode, UserId};
use chat_storage::{EmailAddress, StoreError, UserRecord};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use serde::Deserialize;
use serde_json::json;

use crate::app::App;
use crate::auth::{ensure_profile, same_secret, ClientInfo, OidcConfig};
use crate::error::HttpError;
use crate::http::query_error;

type HttpResult<T> = Result<T, HttpError>;

/// The cookie that carries a sign-in's state, nonce and PKCE verifier.
const COOKIE: &str = "chat_oidc";
/// How long a browser may take at the provider.
const FLOW_SECS: u64 = 600;
/// How long a request to the provider may take.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
/// Tries at an account name before giving up on a free one.
const NAME_TRIES: usize = 5;

/// `GET /v1/auth/providers`: what the web app offers besides passwords.
pub(crate) async fn providers(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    let oidc = app
        .config
        .auth
        .oidc
        .as_ref()
        .map(|o| json!({"name": o.name}));
    Json(json!({ "oidc": oidc }))
}

fn config(app: &App) -> HttpResult<&OidcConfig> {
    app.config.auth.oidc.as_ref().ok_or_else(|| {
        HttpError::new(
            ErrorCode::NotFound,
            "no OpenID Connect provider is configured",
        )
    })
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> HttpError {
    tracing::warn!(error = %e, "OpenID Connect: {what}");
    HttpError::new(
        ErrorCode::Unavailable,
        format!("the identity provider: {what}"),
    )
}

fn refused(why: &str) -> HttpError {
    HttpError::new(ErrorCode::Unauthorized, format!("sign-in refused: {why}"))
}

/// Requests to the provider through the reqwest client of the node, never
/// following redirects (a provider's answer that redirects is an error).
fn http_client() -> HttpResult<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(PROVIDER_TIMEOUT)
        .build()
        .map_err(|e| unavailable("client", e))
}

async fn send(
    client: reqwest::Client,
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, reqwest::Error> {
    let (parts, body) = request.into_parts();
    let response = client
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await?;
    let mut out = axum::http::Response::builder().status(response.status());
    if let Some(headers) = out.headers_mut() {
        *headers = response.headers().clone();
    }
    let bytes = response.bytes().await?;
    Ok(out
        .body(bytes.to_vec())
        .unwrap_or_else(|_| axum::http::Response::new(Vec::new())))
}

/// Discovers the provider and makes the client for it.
async fn provider(
    cfg: &OidcConfig,
    http: &reqwest::Client,
) -> HttpResult<
    CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    >,
> {
    let issuer = IssuerUrl::new(cfg.issuer.clone()).map_err(|e| unavailable("issuer", e))?;
    let call = |r| send(http.clone(), r);
    let metadata = CoreProviderMetadata::discover_async(issuer, &call)
        .await
        .map_err(|e| unavailable("discovery", e))?;
    let redirect =
        RedirectUrl::new(cfg.redirect_url.clone()).map_err(|e| unavailable("redirect_url", e))?;
    Ok(CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(cfg.client_id.clone()),
        Some(ClientSecret::new(cfg.client_secret.clone())),
    )
    .set_redirect_uri(redirect))
}

/// `GET /v1/auth/oidc/start`: 302 to the provider.
pub(crate) async fn start(State(app): State<Arc<App>>) -> HttpResult<Response> {
    let cfg = config(&app)?;
    let http = http_client()?;
    let client = provider(cfg, &http).await?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("profile".into()))
        .set_pkce_challenge(challenge)
        .url();
    // Three base64url values: no separator clash.
    let value = format!(
        "{}.{}.{}",
        state.secret(),
        nonce.secret(),
        verifier.secret()
    );
    let secure = if cfg.redirect_url.starts_with("https:") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE}={value}; Path=/v1/auth/oidc; HttpOnly; SameSite=Lax; Max-Age={FLOW_SECS}{secure}"
    );
    redirect(url.as_str(), Some(cookie))
}

fn redirect(to: &str, cookie: Option<String>) -> HttpResult<Response> {
    let location = HeaderValue::from_str(to)
        .map_err(|e| HttpError::new(ErrorCode::Internal, e.to_string()))?;
    let mut response = (StatusCode::FOUND, [(header::LOCATION, location)]).into_response();
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(header::SET_COOKIE, c);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[derive(Deserialize)]
pub(crate) struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// The state, nonce and verifier the browser's cookie holds.
fn from_cookie(headers: &HeaderMap) -> Option<(String, String, String)> {
    let cookies = headers.get_all(header::COOKIE);
    for value in cookies.iter().filter_map(|v| v.to_str().ok()) {
        for pair in value.split(';') {
            if let Some(v) = pair.trim().strip_prefix(&format!("{COOKIE}=")) {
                let mut parts = v.splitn(3, '.');
                if let (Some(s), Some(n), Some(p)) = (parts.next(), parts.next(), parts.next()) {
                    return Some((s.to_owned(), n.to_owned(), p.to_owned()));
                }
            }
        }
    }
    None
}

/// `GET /v1/auth/oidc/callback?code=&state=`: 302 to the web app with the
/// tokens in the fragment.
pub(crate) async fn callback(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    query: Result<Query<CallbackParams>, QueryRejection>,
    headers: HeaderMap,
) -> HttpResult<Response> {
    let Query(params) = query.map_err(query_error)?;
    let cfg = config(&app)?;
    if let Some(e) = params.error {
        return Err(refused(&format!("the provider said {e}")));
    }
    let (Some(code), Some(state)) = (params.code, params.state) else {
        return Err(HttpError::new(
            ErrorCode::BadRequest,
            "code and state are needed",
        ));
    };
    let (expected, nonce, verifier) =
        from_cookie(&headers).ok_or_else(|| refused("no sign-in was started in this browser"))?;
    if !same_secret(&state, &expected) {
        return Err(refused("the state does not match this browser's"));
    }
    let http = http_client()?;
    let client = provider(cfg, &http).await?;
    let call = |r| send(http.clone(), r);
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|e| unavailable("token endpoint", e))?
        .set_pkce_verifier(PkceCodeVerifier::new(verifier))
        .request_async(&call)
        .await
        .map_err(|e| {
            tracing::info!(error = %e, "OpenID Connect: code exchange refused");
            refused("the code was not accepted")
        })?;
    let id_token = tokens
        .id_token()
        .ok_or_else(|| refused("the provider gave no ID token"))?;
    let claims = id_token
        .claims(&client.id_token_verifier(), &Nonce::new(nonce))
        .map_err(|e| {
            tracing::info!(error = %e, "OpenID Connect: ID token refused");
            refused("the ID token did not check out")
        })?;
    let identity = Identity {
        key: format!("oidc|{}|{}", cfg.issuer, claims.subject().as_str()),
        email: claims
            .email()
            .filter(|_| claims.email_verified() == Some(true))
            .map(|e| e.as_str().to_lowercase()),
        username: claims.preferred_username().map(|u| u.as_str().to_owned()),
        // The part before the @ only: the address is nobody else's to see.
        local_part: claims
            .email()
            .and_then(|e| e.as_str().split('@').next().map(str::to_owned)),
    };
    let user = account_of(&app, &identity).await?;
    let store = app.store.as_ref();
    let tokens = app.auth.sign_in_external(store, &user).await?;
    let client = ClientInfo::of(&headers, peer.ip());
    app.auth.list_login(store, &tokens, &client).await?;
    let fragment = format!(
        "/#/signed-in?access_token={}&refresh_token={}&expires_in={}",
        tokens.access_token, tokens.refresh_token, tokens.expires_in
    );
    // The flow is over: the cookie goes.
    let clear = format!("{COOKIE}=; Path=/v1/auth/oidc; HttpOnly; SameSite=Lax; Max-Age=0");
    redirect(&fragment, Some(clear))
}

/// Who the provider says signed in.
struct Identity {
    /// The provider's subject, under its issuer: the lasting link.
    key: String,
    /// The address, when the provider verified it (lower case).
    email: Option<String>,
    /// The provider's username: a new account's name and display name.
    username: Option<String>,
    /// The address's local part: a new account's name when there is no
    /// username (never shown as its display name: the address is private).
    local_part: Option<String>,
}

/// The account linked to `identity`: by the provider's subject once
/// linked, else by its verified address (an account whose owner verified
/// that address), else a new one.
async fn account_of(app: &App, identity: &Identity) -> HttpResult<UserRecord> {
    let store = app.store.as_ref();
    if let Some(id) = store.email_owner(&identity.key).await? {
        if let Some(user) = store.user(&id).await? {
            return Ok(user);
        }
    }
    if let Some(email) = &identity.email {
        if let Some(id) = store.email_owner(email).await? {
            let held = store.email(&id).await?;
            if held.is_some_and(|e| e.verified && e.address.eq_ignore_ascii_case(email)) {
                if let Some(user) = store.user(&id).await? {
                    store.put_email_owner(&identity.key, &id).await?;
                    return Ok(user);
                }
            }
        }
    }
    let user = new_account(app, identity).await?;
    store.put_email_owner(&identity.key, &user.id).await?;
    if let Some(email) = &identity.email {
        let address = EmailAddress {
            address: email.clone(),
            verified: true,
            updated_at: now_ms(),
        };
        store.put_email(&user.id, &address).await?;
        store.put_email_owner(email, &user.id).await?;
    }
    Ok(user)
}

/// A new account with no password, named after the provider's username
/// or the address's local part (what of it makes a user id), with a suffix
/// when taken.
async fn new_account(app: &App, identity: &Identity) -> HttpResult<UserRecord> {
    let store = app.store.as_ref();
    let shown = identity
        .username
        .clone()
        .or_else(|| identity.local_part.clone())
        .unwrap_or_else(|| "user".into());
    let base: String = shown
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(40)
        .collect();
    let base = if base.is_empty() { "user".into() } else { base };
    for attempt in 0..NAME_TRIES {
        let name = match attempt {
            0 => base.clone(),
            _ => format!("{base}-{:04x}", rand::random::<u16>()),
        };
        let Ok(id) = UserId::new(&name) else { continue };
        let record = UserRecord {
            id,
            password_hash: None,
            display_name: None,
            created_at: now_ms(),
        };
        match store.create_user(&record).await {
            Ok(()) => {
                ensure_profile(store, &record.id, identity.username.as_deref()).await?;
                return Ok(record);
            }
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(HttpError::new(
        ErrorCode::Conflict,
        "no free account name for this identity; try again",
    ))
}
