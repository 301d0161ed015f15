//! An account's e-mail address: set (a verification mail goes out through the notification outbox, so
//! a mail server that is down delays it rather than failing the request)
//! and verified by the mailed token.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chat_notify::jobs::{job_id, Work};
use chat_notify::links::hash_token;
use chat_notify::mail::check_address;
use chat_protocol::{now_ms, ErrorCode};
use chat_storage::{EmailAddress, Job, TokenPurpose};
use serde::Deserialize;
use serde_json::json;

use crate::app::App;
use crate::error::HttpError;
use crate::http::{authenticate, json_body};

type HttpResult<T> = Result<T, HttpError>;

/// Longest address accepted (RFC 5321's path limit).
const MAX_EMAIL_LEN: usize = 254;
/// A user may have a verification mail sent at most this often: the
/// address is someone else's until verified, and must not be flooded.
const VERIFY_EVERY_MS: u64 = 60_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailBody {
    email: String,
}

/// `PUT /v1/me/email`: 202, unverified until the mailed link is opened.
pub(crate) async fn put_email(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> HttpResult<Response> {
    let claims = authenticate(&app, &headers, None).await?;
    let body: EmailBody = json_body(&app, body).await?;
    let address = body.email.trim().to_owned();
    if address.len() > MAX_EMAIL_LEN {
        return Err(HttpError::new(
            ErrorCode::BadRequest,
            format!("email is over {MAX_EMAIL_LEN} bytes"),
        ));
    }
    check_address(&address).map_err(|e| HttpError::new(ErrorCode::BadRequest, e))?;
    let now = now_ms();
    if let Some(held) = app.store.email(&claims.sub).await? {
        if now.saturating_sub(held.updated_at) < VERIFY_EVERY_MS {
            return Err(HttpError::new(
                ErrorCode::RateLimited,
                "one address change a minute; try again shortly",
            ));
        }
    }
    let email = EmailAddress {
        address: address.clone(),
        verified: false,
        updated_at: now,
    };
    app.store.put_email(&claims.sub, &email).await?;
    let work = Work::VerifyEmail {
        user: claims.sub.clone(),
        address,
    };
    let job = Job::new(claims.sub.as_str(), now, job_id(), work.encode());
    app.store.put_jobs(&[job]).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"email": email.address}))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    token: String,
}

/// `POST /v1/auth/verify-email` (no access token: the mailed link is the
/// proof): 204, or 400 for a token used, expired, unknown, or for an
/// address the user has changed since.
pub(crate) async fn verify_email(
    State(app): State<Arc<App>>,
    body: Body,
) -> HttpResult<StatusCode> {
    let body: TokenBody = json_body(&app, body).await?;
    let refused = || {
        HttpError::new(
            ErrorCode::BadRequest,
            "this link is used, expired or unknown",
        )
    };
    let token = app
        .store
        .take_email_token(&hash_token(body.token.trim()))
        .await?
        .ok_or_else(refused)?;
    if token.purpose != TokenPurpose::VerifyEmail || token.expires_at <= now_ms() {
        return Err(refused());
    }
    let Some(mut email) = app.store.email(&token.user).await? else {
        return Err(refused());
    };
    if email.address != token.address {
        return Err(refused());
    }
    email.verified = true;
    email.updated_at = now_ms();
    app.store.put_email(&token.user, &email).await?;
    // Where a password reset for this address starts.
    app.store
        .put_email_owner(&email.address.to_lowercase(), &token.user)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
