//! The notification routes: a user's settings, a member's level and mute
//! per conversation, the cluster's VAPID key and a user's push
//! subscriptions. What is done with them is chat-notify's.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chat_notify::push::{check_endpoint, check_keys};
use chat_notify::quiet::known_zone;
use chat_protocol::notify::{
    ConversationNotify, NotificationSettingsPatch, NotifyLevel, PushSubscription,
    MAX_PUSH_ENDPOINT_LEN, MAX_PUSH_SUBSCRIPTIONS,
};
use chat_protocol::{now_ms, ErrorCode, UserId};
use serde::Deserialize;
use serde_json::json;

use crate::app::App;
use crate::error::HttpError;
use crate::http::{authenticate, bad_request, conversation_id, json_body, query_error};

type HttpResult<T> = Result<T, HttpError>;

fn bad(message: impl Into<String>) -> HttpError {
    HttpError::new(ErrorCode::BadRequest, message.into())
}

/// `GET /v1/me/notifications`.
pub(crate) async fn settings(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> HttpResult<Response> {
    let claims = authenticate(&app, &headers, None).await?;
    let settings = app
        .store
        .notification_settings(&claims.sub)
        .await?
        .unwrap_or_default();
    Ok(Json(settings).into_response())
}

/// `PUT /v1/me/notifications`: any of the fields, the rest kept.
pub(crate) async fn put_settings(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> HttpResult<Response> {
    let claims = authenticate(&app, &headers, None).await?;
    let patch: NotificationSettingsPatch = json_body(&app, body).await?;
    if let Some(Some(q)) = &patch.dnd {
        if !known_zone(&q.tz) {
            return Err(bad(format!("dnd.tz: {:?} is not a known time zone", q.tz)));
        }
    }
    let current = app
        .store
        .notification_settings(&claims.sub)
        .await?
        .unwrap_or_default();
    let next = current.patched(patch).map_err(bad)?;
    app.store
        .put_notification_settings(&claims.sub, &next)
        .await?;
    Ok(Json(next).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConversationNotifyBody {
    level: NotifyLevel,
    #[serde(default)]
    muted_until: Option<u64>,
}

/// `PUT /v1/conversations/{id}/notifications`: members only.
pub(crate) async fn put_conversation(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> HttpResult<Response> {
    let Path(id) = path.map_err(bad_request)?;
    let claims = authenticate(&app, &headers, None).await?;
    let conversation = conversation_id(&id)?;
    let body: ConversationNotifyBody = json_body(&app, body).await?;
    let member = app
        .store
        .conversation(&conversation)
        .await?
        .is_some_and(|c| c.members.iter().any(|m| m.user == claims.sub));
    if !member {
        // Not told apart from a conversation that does not exist.
        return Err(HttpError::new(
            ErrorCode::NotFound,
            "no such conversation among yours",
        ));
    }
    let notify = ConversationNotify {
        level: body.level,
        // A mute that ended is no mute.
        muted_until: body.muted_until.filter(|t| *t > now_ms()),
    };
    app.store
        .put_conversation_notify(&claims.sub, &conversation, &notify)
        .await?;
    Ok(Json(notify).into_response())
}

/// `GET /v1/push/vapid-public-key` (no token: a page asks before it
/// subscribes).
pub(crate) async fn vapid_public_key(State(app): State<Arc<App>>) -> Response {
    Json(json!({"public_key": app.push.vapid().public_key()})).into_response()
}

#[derive(Deserialize)]
struct SubscriptionKeys {
    p256dh: String,
    auth: String,
}

#[derive(Deserialize)]
struct SubscribeBody {
    endpoint: String,
    keys: SubscriptionKeys,
}

/// `POST /v1/me/push-subscriptions`: the browser's `PushSubscription`.
/// The same endpoint again replaces the old keys under the old id.
pub(crate) async fn subscribe(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> HttpResult<Response> {
    let claims = authenticate(&app, &headers, None).await?;
    let body: SubscribeBody = json_body(&app, body).await?;
    if body.endpoint.len() > MAX_PUSH_ENDPOINT_LEN {
        return Err(bad(format!(
            "endpoint is over {MAX_PUSH_ENDPOINT_LEN} bytes"
        )));
    }
    let allow_http = app.config.notifications.push.allow_loopback_http;
    check_endpoint(&body.endpoint, allow_http).map_err(bad)?;
    check_keys(&body.keys.p256dh, &body.keys.auth).map_err(|e| bad(format!("keys: {e}")))?;
    let held = app.store.push_subscriptions(&claims.sub).await?;
    let same = held.iter().find(|s| s.endpoint == body.endpoint);
    if same.is_none() && held.len() >= MAX_PUSH_SUBSCRIPTIONS {
        return Err(HttpError::new(
            ErrorCode::Conflict,
            format!("at most {MAX_PUSH_SUBSCRIPTIONS} push subscriptions; delete one first"),
        ));
    }
    let subscription = PushSubscription {
        id: same
            .map(|s| s.id.clone())
            .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>())),
        endpoint: body.endpoint,
        p256dh: body.keys.p256dh,
        auth: body.keys.auth,
        created_at: same.map_or_else(now_ms, |s| s.created_at),
    };
    app.store
        .put_push_subscription(&claims.sub, &subscription)
        .await?;
    Ok((StatusCode::CREATED, Json(json!({"id": subscription.id}))).into_response())
}

/// `GET /v1/me/push-subscriptions` (without the keys).
pub(crate) async fn subscriptions(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> HttpResult<Response> {
    let claims = authenticate(&app, &headers, None).await?;
    let subs = app.store.push_subscriptions(&claims.sub).await?;
    let listed: Vec<_> = subs
        .iter()
        .map(|s| json!({"id": s.id, "endpoint": s.endpoint, "created_at": s.created_at}))
        .collect();
    Ok(Json(json!({"subscriptions": listed})).into_response())
}

/// `DELETE /v1/me/push-subscriptions/{id}`.
pub(crate) async fn unsubscribe(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> HttpResult<StatusCode> {
    let Path(id) = path.map_err(bad_request)?;
    let claims = authenticate(&app, &headers, None).await?;
    if app.store.delete_push_subscription(&claims.sub, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(HttpError::new(ErrorCode::NotFound, "no such subscription"))
    }
}

#[derive(Deserialize)]
pub(crate) struct UnsubscribeParams {
    user: String,
    sig: String,
}

/// `GET` or `POST /v1/notifications/unsubscribe?user=&sig=` (no token: the
/// link is signed; `POST` is RFC 8058's one-click from a mail client):
/// turns the user's digests off.
pub(crate) async fn unsubscribe_email(
    State(app): State<Arc<App>>,
    query: Result<Query<UnsubscribeParams>, QueryRejection>,
) -> HttpResult<Response> {
    let Query(params) = query.map_err(query_error)?;
    if !app.links.check_unsubscribe(&params.user, &params.sig) {
        return Err(HttpError::new(
            ErrorCode::Forbidden,
            "this unsubscribe link is not valid",
        ));
    }
    let user = UserId::new(&params.user).map_err(bad_request)?;
    let mut settings = app
        .store
        .notification_settings(&user)
        .await?
        .unwrap_or_default();
    settings.email.enabled = false;
    app.store
        .put_notification_settings(&user, &settings)
        .await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "You will get no more e-mail about unread messages. Turn it back on in the app's settings.\n",
    )
        .into_response())
}
