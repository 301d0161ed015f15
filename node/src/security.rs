//! Keeping an account one's own (docs/protocol.md, "Account security"):
//! the logins listed and ended one by one, the password changed (the other
//! logins end) or reset from a mailed link (every login ends), and the
//! second factor turned on, confirmed and off. The rules live in
//! `crate::auth`; these are their routes.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chat_actors::msg::RouterMsg;
use chat_notify::jobs::{job_id, Work};
use chat_notify::links::hash_token;
use chat_protocol::{close_code, now_ms, ErrorCode};
use chat_storage::{Job, TokenPurpose};
use serde::Deserialize;
use serde_json::json;

use crate::app::App;
use crate::auth::check_password;
use crate::error::HttpError;
use crate::http::{authenticate, bad_request, json_body};

type HttpResult<T> = Result<T, HttpError>;

/// Longest address a reset is asked for (RFC 5321's path limit).
const MAX_EMAIL_LEN: usize = 254;

/// `GET /v1/me/sessions`: the caller's logins that still work.
pub(crate) async fn sessions(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> HttpResult<Response> {
    let claims = authenticate(&app, &headers, None).await?;
    let logins = app.auth.sessions(app.store.as_ref(), &claims.sub).await?;
    let listed: Vec<_> = logins
        .into_iter()
        .map(|l| {
            let mut v = json!({
                "id": l.id,
                "created_at": l.created_at,
                "last_used_at": l.last_used_at,
                "current": claims.sid.as_deref() == Some(l.id.as_str()),
            });
            if let Some(ua) = l.user_agent {
                v["user_agent"] = json!(ua);
            }
            if let Some(a) = l.address {
                v["address"] = json!(a);
            }
            v
        })
        .collect();
    Ok(Json(json!({ "sessions": listed })).into_response())
}

/// `DELETE /v1/me/sessions/{id}`: that login ends, its sockets close
/// with 4001 on every node.
pub(crate) async fn end_session(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> HttpResult<StatusCode> {
    let Path(id) = path.map_err(bad_request)?;
    let claims = authenticate(&app, &headers, None).await?;
    let store = app.store.as_ref();
    let listed = app.auth.sessions(store, &claims.sub).await?;
    if !listed.iter().any(|l| l.id == id) {
        return Err(HttpError::new(ErrorCode::NotFound, "no such session"));
    }
    app.auth.end_login(store, &claims.sub, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current: String,
    new: String,
}

/// `POST /v1/auth/password`: the caller's other logins end.
pub(crate) async fn change_password(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> HttpResult<StatusCode> {
    let claims = authenticate(&app, &headers, None).await?;
    let body: PasswordChange = json_body(&app, body).await?;
    let store = app.store.as_ref();
    app.auth
        .change_password(store, &claims, &body.current, &body.new, peer.ip())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetRequest {
    email: String,
}

/// `POST /v1/auth/password-reset` (no access token): 202 whatever the
/// address. The request queues a job for any well-formed address, and the
/// notification worker looks its owner up, so the answer and its timing
/// say nothing of accounts.
pub(crate) async fn request_reset(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Body,
) -> HttpResult<StatusCode> {
    let body: ResetRequest = json_body(&app, body).await?;
    let address = body.email.trim().to_lowercase();
    if address.len() > MAX_EMAIL_LEN || chat_notify::mail::check_address(&address).is_err() {
        return Err(bad_request("email is not an address"));
    }
    app.auth.may_request_reset(peer.ip(), &address)?;
    // The outbox's key is the address's hash: where the job's shard comes
    // from, and no address in the store's keys.
    let key = hash_token(&address);
    let work = Work::ResetPassword { address };
    let job = Job::new(&key, now_ms(), job_id(), work.encode());
    app.store.put_jobs(&[job]).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetConfirm {
    token: String,
    password: String,
}

/// `POST /v1/auth/password-reset/confirm` (no access token: the mailed
/// link is the proof): 204, every login of the user ended; 400 for a
/// token used, expired, unknown, or for an address changed since.
pub(crate) async fn confirm_reset(
    State(app): State<Arc<App>>,
    body: Body,
) -> HttpResult<StatusCode> {
    let body: ResetConfirm = json_body(&app, body).await?;
    // Before the token is taken: a password the policy refuses does not
    // use up the link.
    check_password(&body.password)?;
    let refused = || bad_request("this link is used, expired or unknown");
    let store = app.store.as_ref();
    let token = store
        .take_email_token(&hash_token(body.token.trim()))
        .await?
        .ok_or_else(refused)?;
    if token.purpose != TokenPurpose::ResetPassword || token.expires_at <= now_ms() {
        return Err(refused());
    }
    let current = store.email(&token.user).await?;
    if current.is_none_or(|e| !e.verified || !e.address.eq_ignore_ascii_case(&token.address)) {
        return Err(refused());
    }
    app.auth
        .reset_password(store, &token.user, &body.password)
        .await?;
    // Connections of logins that were never listed close too.
    let close = RouterMsg::CloseUser {
        user: token.user,
        code: close_code::TOKEN_EXPIRED,
    };
    if let Err(e) = app.router.cast(close) {
        tracing::warn!(error = %e, "connections not closed after a password reset");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/me/totp`: a pending second factor's secret and URL.
pub(crate) async fn totp_enrol(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> HttpResult<Response> {
    let claims = authenticate(&app, &headers, None).await?;
    let (secret, url) = app.auth.totp_enrol(app.store.as_ref(), &claims.sub).await?;
    Ok(Json(json!({"secret": secret, "otpauth_url": url})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Code {
    code: String,
}

/// `POST /v1/me/totp/confirm`: the factor is on; the recovery codes.
pub(crate) async fn totp_confirm(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> HttpResult<Response> {
    let claims = authenticate(&app, &headers, None).await?;
    let body: Code = json_body(&app, body).await?;
    let codes = app
        .auth
        .totp_confirm(app.store.as_ref(), &claims.sub, &body.code, peer.ip())
        .await?;
    Ok(Json(json!({ "recovery_codes": codes })).into_response())
}

/// `DELETE /v1/me/totp`, with a code: the factor is off.
pub(crate) async fn totp_disable(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> HttpResult<StatusCode> {
    let claims = authenticate(&app, &headers, None).await?;
    let body: Code = json_body(&app, body).await?;
    app.auth
        .totp_disable(app.store.as_ref(), &claims.sub, &body.code, peer.ip())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
