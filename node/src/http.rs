//! HTTP routes: auth, history and sending over plain HTTP, health, metrics.
//! Errors are JSON `{"code","message"}` with the status of their code.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chat_actors::dispatch::Caller;
use chat_actors::msg::RouterMsg;
use chat_protocol::{
    limits, ClientFrame, ClientMsgId, ConversationId, ErrorCode, MessageId, MessageKind, OkReply,
    UserId,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Claims, LoginRequest, RegisterRequest};
use crate::error::HttpError;
use crate::state::App;

type HttpResult<T> = Result<T, HttpError>;

/// Parses a JSON body with our error format (axum's own rejections are text,
/// so handlers take them as `Result`s and turn them into ours here).
fn json_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> HttpResult<T> {
    let body = body.map_err(|e| {
        let code = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ErrorCode::TooLarge
        } else {
            ErrorCode::BadRequest
        };
        HttpError::new(code, e.body_text())
    })?;
    serde_json::from_slice(&body)
        .map_err(|e| HttpError::new(ErrorCode::BadRequest, format!("invalid body: {e}")))
}

/// A path or query rejection as our JSON 400.
fn bad_request(e: impl std::fmt::Display) -> HttpError {
    HttpError::new(ErrorCode::BadRequest, e.to_string())
}

/// Verifies the request's token.
pub(crate) fn authenticate(
    app: &App,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> HttpResult<Claims> {
    Ok(app.auth.verify_request(headers, query_token)?)
}

pub(crate) async fn register(
    State(app): State<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> HttpResult<Response> {
    let req: RegisterRequest = json_body(body)?;
    let tokens = app.auth.register(app.services.store.as_ref(), &req).await?;
    Ok((StatusCode::CREATED, Json(tokens)).into_response())
}

pub(crate) async fn login(
    State(app): State<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> HttpResult<Response> {
    let req: LoginRequest = json_body(body)?;
    let tokens = app.auth.login(app.services.store.as_ref(), &req).await?;
    Ok(Json(tokens).into_response())
}

#[derive(Deserialize)]
struct RefreshBody {
    refresh_token: String,
}

pub(crate) async fn refresh(
    State(app): State<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> HttpResult<Response> {
    let req: RefreshBody = json_body(body)?;
    let tokens = app
        .auth
        .refresh(app.services.store.as_ref(), &req.refresh_token)
        .await?;
    Ok(Json(tokens).into_response())
}

pub(crate) async fn logout(
    State(app): State<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> HttpResult<StatusCode> {
    let req: RefreshBody = json_body(body)?;
    app.auth
        .logout(app.services.store.as_ref(), &req.refresh_token)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub(crate) struct HistoryParams {
    before: Option<String>,
    after: Option<String>,
    limit: Option<u32>,
    access_token: Option<String>,
}

fn parse_id(s: Option<&str>, what: &str) -> HttpResult<Option<MessageId>> {
    s.filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u64>().map(MessageId).map_err(|_| {
                HttpError::new(
                    ErrorCode::BadRequest,
                    format!("{what} must be a message id"),
                )
            })
        })
        .transpose()
}

fn conversation_id(raw: &str) -> HttpResult<ConversationId> {
    ConversationId::new(raw)
        .map_err(|e| HttpError::new(ErrorCode::BadRequest, format!("conversation: {e}")))
}

/// Asks a conversation through the dispatcher, as a WebSocket frame would.
async fn ask(app: &App, user: UserId, frame: ClientFrame) -> HttpResult<OkReply> {
    let (tx, rx) = ractor::concurrency::oneshot();
    let caller = Caller {
        user,
        conn: None,
        session: None,
    };
    app.dispatch.dispatch(&caller, frame, tx.into());
    match rx.await {
        Ok(r) => Ok(r?),
        Err(_) => Err(HttpError::new(
            ErrorCode::Unavailable,
            "request lost; retry",
        )),
    }
}

pub(crate) async fn history(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HistoryParams>, QueryRejection>,
    headers: HeaderMap,
) -> HttpResult<Response> {
    let Path(id) = path.map_err(bad_request)?;
    let Query(params) = query.map_err(bad_request)?;
    let claims = authenticate(&app, &headers, params.access_token.as_deref())?;
    let conversation = conversation_id(&id)?;
    let limit = params.limit.unwrap_or(limits::DEFAULT_HISTORY_LIMIT);
    if limit == 0 || limit > limits::MAX_HISTORY_LIMIT {
        return Err(HttpError::new(
            ErrorCode::BadRequest,
            format!("limit must be 1 to {}", limits::MAX_HISTORY_LIMIT),
        ));
    }
    let frame = ClientFrame::History {
        req: None,
        conversation,
        before: parse_id(params.before.as_deref(), "before")?,
        after: parse_id(params.after.as_deref(), "after")?,
        limit: Some(limit),
    };
    let reply = ask(&app, claims.sub, frame).await?;
    Ok(Json(json!({
        "messages": reply.messages.unwrap_or_default(),
        "more": reply.more.unwrap_or(false),
    }))
    .into_response())
}

#[derive(Deserialize)]
struct SendBody {
    client_msg_id: ClientMsgId,
    body: String,
    #[serde(default)]
    kind: MessageKind,
    #[serde(default)]
    reply_to: Option<MessageId>,
}

pub(crate) async fn send(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> HttpResult<Response> {
    let Path(id) = path.map_err(bad_request)?;
    let claims = authenticate(&app, &headers, None)?;
    let conversation = conversation_id(&id)?;
    let req: SendBody = json_body(body)?;
    let max = app.config.limits.max_body_bytes;
    if req.body.len() > max {
        return Err(HttpError::new(
            ErrorCode::TooLarge,
            format!("body is {} bytes, over the limit of {max}", req.body.len()),
        ));
    }
    let frame = ClientFrame::Send {
        req: None,
        conversation,
        client_msg_id: req.client_msg_id,
        body: req.body,
        kind: req.kind,
        reply_to: req.reply_to,
    };
    let reply = ask(&app, claims.sub, frame).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "message": reply.message })),
    )
        .into_response())
}

pub(crate) async fn readyz(State(app): State<Arc<App>>) -> Response {
    let mut problems = Vec::new();
    let probe = UserId::new("readyz.probe").unwrap_or_else(|_| unreachable!("valid id"));
    if let Err(e) = app.services.store.user(&probe).await {
        problems.push(format!("storage: {e}"));
    }
    if let Err(e) = app.services.presence.ready().await {
        problems.push(format!("presence: {e}"));
    }
    if app.shutdown.is_cancelled() {
        problems.push("node is draining".to_string());
    }
    if problems.is_empty() {
        (StatusCode::OK, Json(json!({ "status": "ready" }))).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "reasons": problems })),
        )
            .into_response()
    }
}

/// What this node sees of the cluster: serving nodes, peers with their
/// last heartbeat and sync state. For operators; no auth, like /metrics.
pub(crate) async fn cluster_status(State(app): State<Arc<App>>) -> Response {
    match ractor::call!(app.router, |reply| RouterMsg::Status { reply }) {
        Ok(status) => Json(status).into_response(),
        Err(e) => HttpError::new(ErrorCode::Unavailable, e.to_string()).into_response(),
    }
}

pub(crate) async fn metrics(State(app): State<Arc<App>>) -> Response {
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, &app.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        )
            .into_response(),
        Err(e) => HttpError::new(ErrorCode::Internal, e.to_string()).into_response(),
    }
}
