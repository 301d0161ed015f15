//! A user's contacts, blocks and privacy (docs/protocol.md, "Blocking"):
//! `GET`, `PUT` and `DELETE /v1/me/contacts/{user}` and
//! `/v1/me/blocks/{user}`, and `GET`/`PUT /v1/me/privacy`. The record is the
//! user's own, read and written whole; the conversation actors and the
//! notification worker read it where it is enforced.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chat_actors::msg::RouterMsg;
use chat_protocol::people::{Privacy, Relations, MAX_BLOCKS, MAX_CONTACTS};
use chat_protocol::{ErrorCode, UserId};
use serde_json::json;

use crate::app::App;
use crate::error::HttpError;
use crate::http::{authenticate, bad_request, json_body};

type HttpResult<T> = Result<T, HttpError>;

/// Which of a user's lists a route edits.
#[derive(Clone, Copy)]
enum List {
    Contacts,
    Blocks,
}

impl List {
    fn of(self, r: &mut Relations) -> &mut std::collections::BTreeSet<UserId> {
        match self {
            List::Contacts => &mut r.contacts,
            List::Blocks => &mut r.blocks,
        }
    }

    fn name(self) -> &'static str {
        match self {
            List::Contacts => "contacts",
            List::Blocks => "blocks",
        }
    }

    fn cap(self) -> usize {
        match self {
            List::Contacts => MAX_CONTACTS,
            List::Blocks => MAX_BLOCKS,
        }
    }
}

async fn held(app: &App, user: &UserId) -> HttpResult<Relations> {
    Ok(app.store.relations(user).await?.unwrap_or_default())
}

async fn list(app: Arc<App>, headers: HeaderMap, which: List) -> HttpResult<Response> {
    let claims = authenticate(&app, &headers, None).await?;
    let mut r = held(&app, &claims.sub).await?;
    let users: Vec<&UserId> = which.of(&mut r).iter().collect();
    Ok(Json(json!({ which.name(): users })).into_response())
}

async fn edit(
    app: Arc<App>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    which: List,
    add: bool,
) -> HttpResult<StatusCode> {
    let Path(raw) = path.map_err(bad_request)?;
    let claims = authenticate(&app, &headers, None).await?;
    let other = UserId::new(&raw)
        .map_err(|e| HttpError::new(ErrorCode::BadRequest, format!("user: {e}")))?;
    if other == claims.sub {
        return Err(HttpError::new(
            ErrorCode::BadRequest,
            format!("you cannot add yourself to your {}", which.name()),
        ));
    }
    let mut r = held(&app, &claims.sub).await?;
    let set = which.of(&mut r);
    let changed = if add {
        if app.store.user(&other).await?.is_none() {
            return Err(HttpError::new(ErrorCode::NotFound, "no such user"));
        }
        if set.len() >= which.cap() && !set.contains(&other) {
            return Err(HttpError::new(
                ErrorCode::Conflict,
                format!("at most {} {}; remove one first", which.cap(), which.name()),
            ));
        }
        set.insert(other)
    } else {
        set.remove(&other)
    };
    if changed {
        app.store.put_relations(&claims.sub, &r).await?;
        // A block, or a contact gone, may hide the user's presence from
        // someone who watches it now.
        let restricts = matches!((which, add), (List::Blocks, true) | (List::Contacts, false));
        if restricts {
            presence_restricted(&app, &claims.sub);
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Has every node check its watches of `user`'s presence again.
fn presence_restricted(app: &App, user: &UserId) {
    let msg = RouterMsg::PresenceRestricted { user: user.clone() };
    if let Err(e) = app.router.cast(msg) {
        // Only while the node stops: its watches end with it.
        tracing::warn!(error = %e, "presence recheck not sent");
    }
}

/// `GET /v1/me/contacts`.
pub(crate) async fn contacts(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> HttpResult<Response> {
    list(app, headers, List::Contacts).await
}

/// `PUT /v1/me/contacts/{user}`.
pub(crate) async fn add_contact(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> HttpResult<StatusCode> {
    edit(app, headers, path, List::Contacts, true).await
}

/// `DELETE /v1/me/contacts/{user}`.
pub(crate) async fn remove_contact(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> HttpResult<StatusCode> {
    edit(app, headers, path, List::Contacts, false).await
}

/// `GET /v1/me/blocks`.
pub(crate) async fn blocks(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> HttpResult<Response> {
    list(app, headers, List::Blocks).await
}

/// `PUT /v1/me/blocks/{user}`.
pub(crate) async fn block(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> HttpResult<StatusCode> {
    edit(app, headers, path, List::Blocks, true).await
}

/// `DELETE /v1/me/blocks/{user}`.
pub(crate) async fn unblock(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> HttpResult<StatusCode> {
    edit(app, headers, path, List::Blocks, false).await
}

/// `GET /v1/me/privacy` (an addition: what `PUT` set, or the defaults).
pub(crate) async fn privacy(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> HttpResult<Json<Privacy>> {
    let claims = authenticate(&app, &headers, None).await?;
    Ok(Json(held(&app, &claims.sub).await?.privacy))
}

/// `PUT /v1/me/privacy`: `direct_messages` and `presence`, each
/// `"everyone"`, `"contacts"` or `"nobody"`.
pub(crate) async fn put_privacy(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> HttpResult<Json<Privacy>> {
    let claims = authenticate(&app, &headers, None).await?;
    let privacy: Privacy = json_body(&app, body).await?;
    let mut r = held(&app, &claims.sub).await?;
    let restricts = privacy.presence != r.privacy.presence;
    r.privacy = privacy;
    app.store.put_relations(&claims.sub, &r).await?;
    if restricts {
        presence_restricted(&app, &claims.sub);
    }
    Ok(Json(privacy))
}
