//! The operators' API under `/v1/admin/`, behind the admin console at
//! `/admin`: the cluster's nodes and their load, a user's account and
//! presence, which node owns a conversation, and the actions (drain a
//! node, disconnect or suspend a user), each recorded in the audit log
//! that every node shares through the store.
//!
//! An admin is a user named in `[admin] users` or given the admin flag
//! (`chat-node admin grant USER`). Without a token every route answers 401,
//! to anyone else 403. A named admin's account is the operator's to make
//! (`chat-node admin create-user NAME`): registration refuses those names,
//! so that the first comer cannot take one, and a node warns at start of
//! each that has no account yet.

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chat_actors::cluster::Owner;
use chat_actors::msg::RouterMsg;
use chat_protocol::{close_code, now_ms, ErrorCode, Status, UserId};
use chat_storage::{AuditEntry, UserFlag};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::app::App;
use crate::config::Config;
use crate::error::HttpError;
use crate::http::{authenticate, bad_request, conversation_id, query_error};

type HttpResult<T> = Result<T, HttpError>;

/// Audit entries answered at most.
const MAX_AUDIT: usize = 500;

/// Whether the configuration names `user` an admin (names are
/// case-insensitive, as at registration).
fn named(config: &Config, user: &UserId) -> bool {
    config
        .admin
        .users
        .iter()
        .any(|u| u.eq_ignore_ascii_case(user.as_str()))
}

/// The caller, if an admin.
pub(crate) async fn admin(app: &App, headers: &HeaderMap) -> HttpResult<UserId> {
    let claims = authenticate(app, headers, None).await?;
    if named(&app.config, &claims.sub) || app.store.user_flags(&claims.sub).await?.admin {
        Ok(claims.sub)
    } else {
        Err(HttpError::new(
            ErrorCode::Forbidden,
            "this account is not an admin",
        ))
    }
}

/// Writes an action to the audit log (before it is answered: an action
/// the log does not show did not happen).
pub(crate) async fn audit(app: &App, admin: &UserId, action: &str, target: &str) -> HttpResult<()> {
    let entry = AuditEntry {
        at: now_ms(),
        id: rand::random(),
        admin: admin.clone(),
        action: action.to_owned(),
        target: target.to_owned(),
        node: app.config.node.name.clone(),
    };
    tracing::warn!(%admin, action, target, "admin action");
    app.store.append_audit(&entry).await?;
    Ok(())
}

/// One node as the console lists it.
#[derive(Serialize)]
struct NodeView {
    name: String,
    node_id: Option<u16>,
    /// The node that answered.
    local: bool,
    /// Heard within the peer deadline (always, for the local node).
    up: bool,
    serving: bool,
    heard_ms_ago: Option<u64>,
    rtt_ms: Option<f64>,
    version: Option<String>,
    connections: Option<u64>,
    sessions: Option<u64>,
    conversations: Option<u64>,
    messages_per_sec: Option<f64>,
    deliveries_per_sec: Option<f64>,
    send_p99_ms: Option<f64>,
    store_up: Option<bool>,
    presence_up: Option<bool>,
}

/// A node heard from within this is up.
const UP_WITHIN_MS: u64 = 3_000;

pub(crate) async fn nodes(State(app): State<Arc<App>>, headers: HeaderMap) -> HttpResult<Response> {
    admin(&app, &headers).await?;
    let status = ractor::call!(app.router, |reply| RouterMsg::Status { reply })
        .map_err(|e| HttpError::new(ErrorCode::Unavailable, e.to_string()))?;
    let s = &status.stats;
    let mut nodes = vec![NodeView {
        name: status.node.clone(),
        node_id: Some(app.config.node.id),
        local: true,
        up: true,
        serving: status.serving,
        heard_ms_ago: Some(0),
        rtt_ms: None,
        version: Some(s.version.clone()),
        connections: Some(s.connections),
        sessions: Some(s.sessions),
        conversations: Some(s.conversations),
        messages_per_sec: Some(s.messages_per_sec),
        deliveries_per_sec: Some(s.deliveries_per_sec),
        send_p99_ms: s.send_p99_ms,
        store_up: Some(s.store_up),
        presence_up: Some(s.presence_up),
    }];
    for p in status.peers {
        let st = p.stats.as_ref();
        nodes.push(NodeView {
            up: p.heard_ms_ago.is_some_and(|ms| ms <= UP_WITHIN_MS),
            name: p.name,
            node_id: p.node_id,
            local: false,
            serving: p.serving,
            heard_ms_ago: p.heard_ms_ago,
            rtt_ms: p.rtt_ms,
            version: st.map(|s| s.version.clone()),
            connections: st.map(|s| s.connections),
            sessions: st.map(|s| s.sessions),
            conversations: st.map(|s| s.conversations),
            messages_per_sec: st.map(|s| s.messages_per_sec),
            deliveries_per_sec: st.map(|s| s.deliveries_per_sec),
            send_p99_ms: st.and_then(|s| s.send_p99_ms),
            store_up: st.map(|s| s.store_up),
            presence_up: st.map(|s| s.presence_up),
        });
    }
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(json!({ "nodes": nodes })).into_response())
}

pub(crate) async fn drain(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> HttpResult<Response> {
    let Path(node) = path.map_err(bad_request)?;
    let by = admin(&app, &headers).await?;
    let local = node == app.config.node.name;
    if !local {
        let known = ractor::call!(app.router, |reply| RouterMsg::DrainPeer {
            node: node.clone(),
            by: by.clone(),
            reply,
        })
        .map_err(|e| HttpError::new(ErrorCode::Unavailable, e.to_string()))?;
        if !known {
            return Err(HttpError::new(
                ErrorCode::NotFound,
                format!("no node {node:?} is connected"),
            ));
        }
    }
    audit(&app, &by, "drain", &node).await?;
    if local {
        // After the answer is on its way: the drain closes this listener.
        let shutdown = app.shutdown.clone();
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            tracing::warn!("draining at an operator's request");
            shutdown.cancel();
        });
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "node": node, "draining": true })),
    )
        .into_response())
}

/// A user as the console shows it.
#[derive(Serialize)]
struct UserView {
    id: UserId,
    display_name: Option<String>,
    created_at: u64,
    admin: bool,
    suspended: bool,
    online: bool,
    last_seen: Option<u64>,
}

fn user_id(raw: &str) -> HttpResult<UserId> {
    UserId::new(raw).map_err(|e| HttpError::new(ErrorCode::BadRequest, format!("user: {e}")))
}

async fn user_view(app: &App, id: &UserId) -> HttpResult<UserView> {
    let store = &app.store;
    let record = store
        .user(id)
        .await?
        .ok_or_else(|| HttpError::new(ErrorCode::NotFound, format!("no user {id}")))?;
    let flags = store.user_flags(id).await?;
    // Presence down: the account still shows, as offline and unknown.
    let presence = app
        .presence
        .query(std::slice::from_ref(id))
        .await
        .ok()
        .and_then(|mut p| p.pop());
    Ok(UserView {
        admin: flags.admin || named(&app.config, id),
        suspended: flags.suspended,
        online: presence
            .as_ref()
            .is_some_and(|p| p.status == Status::Online),
        last_seen: presence.and_then(|p| p.last_seen),
        display_name: record.display_name,
        created_at: record.created_at,
        id: record.id,
    })
}

pub(crate) async fn user(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> HttpResult<Response> {
    let Path(raw) = path.map_err(bad_request)?;
    admin(&app, &headers).await?;
    Ok(Json(user_view(&app, &user_id(&raw)?).await?).into_response())
}

/// What an admin does to a user.
#[derive(Clone, Copy)]
enum UserAction {
    Disconnect,
    Suspend,
    Unsuspend,
}

impl UserAction {
    fn name(self) -> &'static str {
        match self {
            UserAction::Disconnect => "disconnect",
            UserAction::Suspend => "suspend",
            UserAction::Unsuspend => "unsuspend",
        }
    }
}

async fn act_on_user(
    app: &App,
    raw: &str,
    headers: &HeaderMap,
    action: UserAction,
) -> HttpResult<Response> {
    let by = admin(app, headers).await?;
    let id = user_id(raw)?;
    let store = &app.store;
    if store.user(&id).await?.is_none() {
        return Err(HttpError::new(ErrorCode::NotFound, format!("no user {id}")));
    }
    audit(app, &by, action.name(), id.as_str()).await?;
    match action {
        UserAction::Disconnect => close_user(app, &id, close_code::DISCONNECTED)?,
        UserAction::Suspend => suspend_user(app, &id).await?,
        UserAction::Unsuspend => {
            store
                .set_user_flag(&id, UserFlag::Suspended, false, now_ms())
                .await?;
        }
    }
    Ok(Json(user_view(app, &id).await?).into_response())
}

/// Suspends `id` (the caller wrote the audit entry): stored first, so a
/// client reconnecting after the close is refused; every token it holds
/// ends, so only signing in again works once the suspension is lifted;
/// its connections close with 4005 on every node.
pub(crate) async fn suspend_user(app: &App, id: &UserId) -> HttpResult<()> {
    let store = &app.store;
    store
        .set_user_flag(id, UserFlag::Suspended, true, now_ms())
        .await?;
    app.auth.end_logins(store.as_ref(), id).await?;
    close_user(app, id, close_code::SUSPENDED)
}

fn close_user(app: &App, id: &UserId, code: u16) -> HttpResult<()> {
    app.router
        .cast(RouterMsg::CloseUser {
            user: id.clone(),
            code,
        })
        .map_err(|e| HttpError::new(ErrorCode::Unavailable, e.to_string()))
}

macro_rules! user_action {
    ($name:ident, $action:expr) => {
        pub(crate) async fn $name(
            State(app): State<Arc<App>>,
            path: Result<Path<String>, PathRejection>,
            headers: HeaderMap,
        ) -> HttpResult<Response> {
            let Path(raw) = path.map_err(bad_request)?;
            act_on_user(&app, &raw, &headers, $action).await
        }
    };
}

user_action!(disconnect, UserAction::Disconnect);
user_action!(suspend, UserAction::Suspend);
user_action!(unsuspend, UserAction::Unsuspend);

pub(crate) async fn conversation(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> HttpResult<Response> {
    let Path(raw) = path.map_err(bad_request)?;
    admin(&app, &headers).await?;
    let id = conversation_id(&raw)?;
    let store = &app.store;
    let record = store
        .conversation(&id)
        .await?
        .ok_or_else(|| HttpError::new(ErrorCode::NotFound, format!("no conversation {id}")))?;
    let owner = match app.cluster.owner(&id) {
        Owner::Local => app.config.node.name.clone(),
        Owner::Remote(node, _) => node.to_string(),
    };
    let rev = store.last_rev(&id).await?;
    let last = store.last_message(&id).await?.map(|m| m.id.0);
    let mut members: Vec<_> = record.members.iter().map(|m| (&m.user, m.role)).collect();
    members.sort();
    let mut markers = store.read_markers(&id).await?;
    markers.sort();
    Ok(Json(json!({
        "id": id,
        "kind": record.kind,
        "owner": owner,
        "members": record.members.len(),
        "rev": rev,
        "last_message_id": last,
        "read_markers": markers.len(),
        "digest": digest(&json!([members, last, rev, markers])),
    }))
    .into_response())
}

/// A short digest of what this node's store holds of a conversation
/// (members and roles, last message, revision, read markers): equal on
/// every node once their replicas converged, which an operator (or a test)
/// compares after a partition heals.
fn digest(state: &serde_json::Value) -> String {
    use sha2::{Digest, Sha256};
    let hash = Sha256::digest(state.to_string().as_bytes());
    hash[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Deserialize)]
pub(crate) struct AuditParams {
    limit: Option<usize>,
}

pub(crate) async fn audit_log(
    State(app): State<Arc<App>>,
    query: Result<Query<AuditParams>, QueryRejection>,
    headers: HeaderMap,
) -> HttpResult<Response> {
    let Query(params) = query.map_err(query_error)?;
    admin(&app, &headers).await?;
    let limit = params.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_AUDIT {
        return Err(HttpError::new(
            ErrorCode::BadRequest,
            format!("limit must be 1 to {MAX_AUDIT}"),
        ));
    }
    let entries = app.store.audit(limit).await?;
    Ok(Json(json!({ "entries": entries })).into_response())
}
