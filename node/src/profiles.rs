//! Profiles (docs/protocol.md, "Profiles"): `GET` and `PATCH /v1/me`, a user by id
//! (`GET /v1/users/{id}`) and by the start of their id or display name
//! (`GET /v1/users?prefix=`), and the `profile` event a change sends to
//! the people who share a direct conversation or a group with the user.
//!
//! The profile is the source of the display name shown everywhere (the
//! account record keeps the one given at sign-up, for accounts made before
//! profiles existed: their first sign-in copies it over).

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chat_actors::msg::RouterMsg;
use chat_protocol::people::{
    Profile, MAX_LOOKUP_RESULTS, MAX_STATUS_TEXT_CHARS, MIN_LOOKUP_PREFIX_CHARS,
};
use chat_protocol::{now_ms, ConversationKind, ErrorCode, ServerFrame, UserId};
use chat_storage::profiles::index_name;
use chat_storage::{MessageStore, ProfileRecord, UserRecord};
use serde::{Deserialize, Deserializer};
use serde_json::json;

use crate::app::App;
use crate::auth::{ensure_profile, MAX_DISPLAY_NAME_BYTES};
use crate::error::HttpError;
use crate::http::{authenticate, bad_request, json_body, query_error};
use crate::media::MediaService;

type HttpResult<T> = Result<T, HttpError>;

/// Lookups answer this many users unless asked for another number.
const DEFAULT_LOOKUP_RESULTS: usize = 20;
/// The conversations of a user whose members hear of a profile change;
/// those past it are left out (a change is cosmetic, and one request must
/// not become unbounded work).
const MAX_AUDIENCE_CONVERSATIONS: usize = 500;
/// Most users a profile change is sent to.
const MAX_AUDIENCE_USERS: usize = 10_000;

/// What others see of `user`: the avatar with a link to its thumbnail.
pub(crate) fn public(media: &MediaService, user: &UserId, p: Option<&ProfileRecord>) -> Profile {
    let p = p.cloned().unwrap_or_default();
    Profile {
        user: user.clone(),
        display_name: p.display_name.unwrap_or_else(|| user.to_string()),
        status_text: p.status_text,
        avatar_url: p.avatar.as_deref().map(|id| media.url(id, true, now_ms())),
        avatar: p.avatar,
    }
}

/// A field of a `PATCH`: absent (`None`), `null` (`Some(None)`) or a value.
fn patched<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfilePatch {
    #[serde(default, deserialize_with = "patched")]
    display_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "patched")]
    status_text: Option<Option<String>>,
    #[serde(default, deserialize_with = "patched")]
    avatar: Option<Option<String>>,
}

/// A text field's value, trimmed (blank is none), or why it is refused.
fn text(
    field: &str,
    value: Option<String>,
    max: usize,
    count: fn(&str) -> usize,
) -> HttpResult<Option<String>> {
    let Some(v) = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if count(&v) > max {
        return Err(bad_request(format!("{field} is longer than {max}")));
    }
    if v.chars().any(char::is_control) {
        return Err(bad_request(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(Some(v))
}

/// `GET /v1/me`.
pub(crate) async fn me(State(app): State<Arc<App>>, headers: HeaderMap) -> HttpResult<Response> {
    let claims = authenticate(&app, &headers, None).await?;
    let store = app.store.as_ref();
    let user = account(store, &claims.sub).await?;
    let profile = ensure_profile(store, &user.id, user.display_name.as_deref()).await?;
    me_json(&app, &user, &profile).await
}

async fn account(store: &dyn MessageStore, id: &UserId) -> HttpResult<UserRecord> {
    store
        .user(id)
        .await?
        .ok_or_else(|| HttpError::new(ErrorCode::NotFound, "no such user"))
}

/// The body of `GET /v1/me` (and of `PATCH /v1/me`): `user` with
/// `profile`, and what the store holds of their address and second factor.
async fn me_json(app: &App, user: &UserRecord, profile: &ProfileRecord) -> HttpResult<Response> {
    let store = app.store.as_ref();
    let id = &user.id;
    let email = store.email(id).await?;
    let mut body = serde_json::to_value(public(&app.media, id, Some(profile)))
        .map_err(|e| HttpError::new(ErrorCode::Internal, e.to_string()))?;
    body["email_verified"] = json!(email.as_ref().is_some_and(|e| e.verified));
    let totp = store.credentials(id).await?.and_then(|c| c.totp);
    body["totp_enabled"] = json!(totp.is_some_and(|t| t.confirmed));
    body["created_at"] = json!(user.created_at);
    if let Some(e) = email {
        body["email"] = json!(e.address);
    }
    Ok(Json(body).into_response())
}

/// `PATCH /v1/me`: `display_name`, `status_text`, `avatar` (a media id of
/// an image of theirs, or `null`); answers as `GET /v1/me`.
pub(crate) async fn patch_me(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> HttpResult<Response> {
    let claims = authenticate(&app, &headers, None).await?;
    let patch: ProfilePatch = json_body(&app, body).await?;
    let store = app.store.as_ref();
    let record = account(store, &claims.sub).await?;
    let old = ensure_profile(store, &claims.sub, record.display_name.as_deref()).await?;
    let mut new = old.clone();
    if let Some(v) = patch.display_name {
        new.display_name = text("display_name", v, MAX_DISPLAY_NAME_BYTES, str::len)?;
    }
    if let Some(v) = patch.status_text {
        let chars = |s: &str| s.chars().count();
        new.status_text = text("status_text", v, MAX_STATUS_TEXT_CHARS, chars)?;
    }
    if let Some(v) = patch.avatar {
        if let Some(id) = &v {
            crate::avatars::check(&app, &claims.sub, id).await?;
        }
        new.avatar = v;
    }
    let avatar_changed = new.avatar != old.avatar;
    if let Some(id) = new.avatar.as_deref().filter(|_| avatar_changed) {
        crate::avatars::refer(&app, &claims.sub, id).await?;
    }
    if new != old {
        new.updated_at = now_ms();
        store.put_profile(&claims.sub, Some(&old), &new).await?;
        if let Some(id) = old.avatar.as_deref().filter(|_| avatar_changed) {
            crate::avatars::release(&app, &claims.sub, id);
        }
        let profile = public(&app.media, &claims.sub, Some(&new));
        tokio::spawn(announce(app.clone(), profile));
    }
    me_json(&app, &record, &new).await
}

/// Sends the `profile` event to whoever shares a direct conversation or a
/// group with its user (and to the user's own other devices).
async fn announce(app: Arc<App>, profile: Profile) {
    let store = app.store.as_ref();
    let user = profile.user.clone();
    let mut audience = BTreeSet::from([user.clone()]);
    let conversations = match store.user_conversations(&user).await {
        Ok(c) => c,
        Err(e) => return tracing::warn!(error = %e, "profile event: conversations unread"),
    };
    for id in conversations.iter().rev().take(MAX_AUDIENCE_CONVERSATIONS) {
        match store.conversation(id).await {
            Ok(Some(c)) if c.kind != ConversationKind::Channel => {
                audience.extend(c.members.into_iter().map(|m| m.user));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, conversation = %id, "profile event: members unread")
            }
        }
        if audience.len() >= MAX_AUDIENCE_USERS {
            break;
        }
    }
    let msg = RouterMsg::ToUsers {
        users: audience.into_iter().collect(),
        frame: Box::new(ServerFrame::Profile { profile }),
    };
    if let Err(e) = app.router.cast(msg) {
        tracing::warn!(error = %e, "profile event not sent");
    }
}

/// `GET /v1/users/{id}`.
pub(crate) async fn user(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> HttpResult<Json<Profile>> {
    let Path(raw) = path.map_err(bad_request)?;
    authenticate(&app, &headers, None).await?;
    let id = UserId::new(&raw).map_err(|e| bad_request(format!("user: {e}")))?;
    let store = app.store.as_ref();
    let record = account(store, &id).await?;
    let p = match store.profile(&id).await? {
        Some(p) => p,
        None => ProfileRecord {
            display_name: record.display_name,
            ..ProfileRecord::default()
        },
    };
    Ok(Json(public(&app.media, &id, Some(&p))))
}

#[derive(Deserialize)]
pub(crate) struct LookupParams {
    prefix: String,
    limit: Option<usize>,
}

/// `GET /v1/users?prefix=&limit=`: users whose id or display name starts
/// with `prefix` (in any case), in name order. Those who block the caller
/// are left out: they are not to be found for a conversation.
pub(crate) async fn lookup(
    State(app): State<Arc<App>>,
    query: Result<Query<LookupParams>, QueryRejection>,
    headers: HeaderMap,
) -> HttpResult<Response> {
    let Query(params) = query.map_err(query_error)?;
    let claims = authenticate(&app, &headers, None).await?;
    let prefix = index_name(params.prefix.trim());
    if prefix.chars().count() < MIN_LOOKUP_PREFIX_CHARS {
        return Err(bad_request(format!(
            "prefix must be at least {MIN_LOOKUP_PREFIX_CHARS} characters"
        )));
    }
    if prefix.chars().any(char::is_control) || prefix.len() > MAX_DISPLAY_NAME_BYTES {
        return Err(bad_request("prefix is not a name"));
    }
    let limit = params.limit.unwrap_or(DEFAULT_LOOKUP_RESULTS);
    if !(1..=MAX_LOOKUP_RESULTS).contains(&limit) {
        return Err(bad_request(format!(
            "limit must be between 1 and {MAX_LOOKUP_RESULTS}"
        )));
    }
    let store = app.store.as_ref();
    // Twice as many entries as wanted: a user may be found under both
    // names, and an entry may be of a name since changed.
    let entries = store.find_names(&prefix, limit * 2).await?;
    let mut seen = BTreeSet::new();
    let mut users = Vec::new();
    for e in entries {
        if users.len() == limit {
            break;
        }
        if seen.contains(&e.user) {
            continue;
        }
        let Some(p) = store.profile(&e.user).await? else {
            continue;
        };
        let current = e.name == index_name(e.user.as_str())
            || p.display_name.as_deref().map(index_name) == Some(e.name.clone());
        let blocked = store
            .relations(&e.user)
            .await?
            .is_some_and(|r| r.blocks.contains(&claims.sub));
        if current && !blocked {
            users.push(public(&app.media, &e.user, Some(&p)));
            seen.insert(e.user);
        }
    }
    Ok(Json(json!({ "users": users })).into_response())
}
