//! HTTP routes: auth, history and sending over plain HTTP (and a message's
//! edits, deletes, reactions and changes), health, metrics.
//! Errors are JSON `{"code","message"}` with the status of their code.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chat_actors::dispatch::Caller;
use chat_actors::msg::RouterMsg;
use chat_protocol::codec::readable;
use chat_protocol::{
    limits, ClientFrame, ClientMsgId, ConversationId, ErrorCode, MessageId, MessageKind, OkReply,
    UserId,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use crate::app::App;
use crate::auth::{Claims, ClientInfo, LoginRequest, RegisterRequest};
use crate::error::HttpError;

type HttpResult<T> = Result<T, HttpError>;

/// Reads and parses a JSON body, with our error format, within the body
/// deadline: a client that sends its headers and then withholds or trickles
/// the body is cut off instead of holding the connection.
pub(crate) async fn json_body<T: DeserializeOwned>(app: &App, body: Body) -> HttpResult<T> {
    let limit = app.config.limits.max_frame_bytes;
    let secs = app.config.listen.body_read_timeout_secs;
    let read = axum::body::to_bytes(body, limit);
    let bytes = match tokio::time::timeout(Duration::from_secs(secs), read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) if is_over_limit(&e) => {
            return Err(HttpError::new(
                ErrorCode::TooLarge,
                format!("request body over {limit} bytes"),
            ))
        }
        Ok(Err(_)) => {
            return Err(HttpError::new(
                ErrorCode::BadRequest,
                "request body could not be read",
            ))
        }
        Err(_) => {
            return Err(HttpError::new(
                ErrorCode::BadRequest,
                format!("request body not received within {secs} s"),
            ))
        }
    };
    // serde alone would also take an array for the object.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(HttpError::new(
            ErrorCode::BadRequest,
            "invalid body: not a JSON object",
        ));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| HttpError::new(ErrorCode::BadRequest, json_error(&e)))
}

fn is_over_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// What was wrong with a JSON body, in words for the client: without the
/// parser's line and column or the server's type names.
pub(crate) fn json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => "invalid body: not valid JSON".into(),
        Category::Data => format!("invalid body: {}", readable(&e.to_string())),
    }
}

/// A path rejection as our JSON 400.
pub(crate) fn bad_request(e: impl std::fmt::Display) -> HttpError {
    HttpError::new(ErrorCode::BadRequest, e.to_string())
}

/// A query string that does not parse, as our JSON 400: what is wrong, in
/// the words a frame's error uses, without the extractor's own.
pub(crate) fn query_error(e: QueryRejection) -> HttpError {
    let text = e.body_text();
    let text = text
        .strip_prefix("Failed to deserialize query string: ")
        .unwrap_or(&text);
    HttpError::new(
        ErrorCode::BadRequest,
        format!("invalid query: {}", readable(text)),
    )
}

/// Verifies the request's token, its login and its user.
pub(crate) async fn authenticate(
    app: &App,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> HttpResult<Claims> {
    let store = app.store.as_ref();
    Ok(app.auth.authorize(store, headers, query_token).await?)
}

pub(crate) async fn register(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> HttpResult<Response> {
    let req: RegisterRequest = json_body(&app, body).await?;
    let store = app.store.as_ref();
    let tokens = app.auth.register(store, &req, peer.ip()).await?;
    let client = ClientInfo::of(&headers, peer.ip());
    app.auth.list_login(store, &tokens, &client).await?;
    Ok((StatusCode::CREATED, Json(tokens)).into_response())
}

pub(crate) async fn login(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> HttpResult<Response> {
    let req: LoginRequest = json_body(&app, body).await?;
    let store = app.store.as_ref();
    let tokens = app.auth.login(store, &req, peer.ip()).await?;
    let client = ClientInfo::of(&headers, peer.ip());
    app.auth.list_login(store, &tokens, &client).await?;
    Ok(Json(tokens).into_response())
}

#[derive(Deserialize)]
struct RefreshBody {
    refresh_token: String,
}

pub(crate) async fn refresh(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> HttpResult<Response> {
    let req: RefreshBody = json_body(&app, body).await?;
    let store = app.store.as_ref();
    let tokens = app.auth.refresh(store, &req.refresh_token).await?;
    let client = ClientInfo::of(&headers, peer.ip());
    app.auth.note_refresh(store, &tokens, &client).await?;
    Ok(Json(tokens).into_response())
}

pub(crate) async fn logout(State(app): State<Arc<App>>, body: Body) -> HttpResult<StatusCode> {
    let req: RefreshBody = json_body(&app, body).await?;
    app.auth
        .logout(app.store.as_ref(), &req.refresh_token)
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

pub(crate) fn conversation_id(raw: &str) -> HttpResult<ConversationId> {
    ConversationId::new(raw)
        .map_err(|e| HttpError::new(ErrorCode::BadRequest, format!("conversation: {e}")))
}

/// Asks a conversation through the dispatcher, as a WebSocket frame would.
pub(crate) async fn ask(app: &App, user: UserId, frame: ClientFrame) -> HttpResult<OkReply> {
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
    let Query(params) = query.map_err(query_error)?;
    let claims = authenticate(&app, &headers, params.access_token.as_deref()).await?;
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
    let more = reply.more.unwrap_or(false);
    Ok(Json(json!({
        "messages": reply.into_messages().unwrap_or_default(),
        "more": more,
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
    #[serde(default)]
    attachments: Vec<String>,
}

pub(crate) async fn send(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> HttpResult<Response> {
    let Path(id) = path.map_err(bad_request)?;
    let claims = authenticate(&app, &headers, None).await?;
    let conversation = conversation_id(&id)?;
    let req: SendBody = json_body(&app, body).await?;
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
        attachments: req.attachments,
    };
    let frame = validated(&app, frame)?;
    let reply = ask(&app, claims.sub, frame).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "message": reply.into_message() })),
    )
        .into_response())
}

/// A frame checked as the WebSocket path checks it.
pub(crate) fn validated(app: &App, frame: ClientFrame) -> HttpResult<ClientFrame> {
    frame
        .validate(&app.config.limits)
        .map_err(|r| HttpError::new(r.code, r.message))?;
    Ok(frame)
}

fn message_id(raw: &str) -> HttpResult<MessageId> {
    Ok(parse_id(Some(raw), "the message")?.unwrap_or(MessageId(0)))
}

/// Answers a request that returns one message (the edits, deletes and
/// reactions).
async fn ask_message(app: &App, user: UserId, frame: ClientFrame) -> HttpResult<Response> {
    let frame = validated(app, frame)?;
    let reply = ask(app, user, frame).await?;
    Ok(Json(json!({ "message": reply.into_message() })).into_response())
}

#[derive(Deserialize)]
struct EditBody {
    body: String,
}

/// `PATCH /v1/conversations/{id}/messages/{mid}`: `edit`.
pub(crate) async fn edit(
    State(app): State<Arc<App>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> HttpResult<Response> {
    let Path((id, mid)) = path.map_err(bad_request)?;
    let claims = authenticate(&app, &headers, None).await?;
    let frame = ClientFrame::Edit {
        req: None,
        conversation: conversation_id(&id)?,
        message: message_id(&mid)?,
        body: json_body::<EditBody>(&app, body).await?.body,
    };
    ask_message(&app, claims.sub, frame).await
}

/// `DELETE /v1/conversations/{id}/messages/{mid}`: `delete`.
pub(crate) async fn delete(
    State(app): State<Arc<App>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> HttpResult<Response> {
    let Path((id, mid)) = path.map_err(bad_request)?;
    let claims = authenticate(&app, &headers, None).await?;
    let frame = ClientFrame::Delete {
        req: None,
        conversation: conversation_id(&id)?,
        message: message_id(&mid)?,
    };
    ask_message(&app, claims.sub, frame).await
}

async fn react(
    app: &App,
    path: Result<Path<(String, String, String)>, PathRejection>,
    headers: &HeaderMap,
    on: bool,
) -> HttpResult<Response> {
    let Path((id, mid, emoji)) = path.map_err(bad_request)?;
    let claims = authenticate(app, headers, None).await?;
    let frame = ClientFrame::React {
        req: None,
        conversation: conversation_id(&id)?,
        message: message_id(&mid)?,
        emoji,
        on,
    };
    ask_message(app, claims.sub, frame).await
}

/// `PUT .../messages/{mid}/reactions/{emoji}`: `react` on.
pub(crate) async fn react_on(
    State(app): State<Arc<App>>,
    path: Result<Path<(String, String, String)>, PathRejection>,
    headers: HeaderMap,
) -> HttpResult<Response> {
    react(&app, path, &headers, true).await
}

/// `DELETE .../messages/{mid}/reactions/{emoji}`: `react` off.
pub(crate) async fn react_off(
    State(app): State<Arc<App>>,
    path: Result<Path<(String, String, String)>, PathRejection>,
    headers: HeaderMap,
) -> HttpResult<Response> {
    react(&app, path, &headers, false).await
}

#[derive(Deserialize)]
pub(crate) struct ChangesParams {
    after_rev: Option<u64>,
    limit: Option<u32>,
    access_token: Option<String>,
}

/// `GET /v1/conversations/{id}/changes?after_rev=&limit=`: `changes`.
pub(crate) async fn changes(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ChangesParams>, QueryRejection>,
    headers: HeaderMap,
) -> HttpResult<Response> {
    let Path(id) = path.map_err(bad_request)?;
    let Query(params) = query.map_err(query_error)?;
    let claims = authenticate(&app, &headers, params.access_token.as_deref()).await?;
    let frame = validated(
        &app,
        ClientFrame::Changes {
            req: None,
            conversation: conversation_id(&id)?,
            after_rev: params.after_rev.unwrap_or(0),
            limit: params.limit,
        },
    )?;
    let reply = ask(&app, claims.sub, frame).await?;
    Ok(Json(json!({
        "messages": reply.messages.unwrap_or_default(),
        "more": reply.more.unwrap_or(false),
        "rev": reply.rev.unwrap_or(0),
    }))
    .into_response())
}

pub(crate) async fn readyz(State(app): State<Arc<App>>) -> Response {
    let mut problems = app.health.probe(&app.services).await;
    if let Err(e) = app.media.blobs.probe().await {
        problems.push(format!("media: {e}"));
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
    let queues = app.sessions.queues();
    let m = &app.metrics;
    m.outbound_queued_frames.set(queues.frames as i64);
    m.outbound_queued_bytes.set(queues.bytes as i64);
    m.outbound_queue_max_frames.set(queues.max_frames as i64);
    if let Some(n) = app.store.database_requests() {
        // The driver's count only grows; a max keeps two scrapes at once
        // from adding it twice.
        m.store_requests
            .inner()
            .fetch_max(n, std::sync::atomic::Ordering::Relaxed);
    }
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

/// Any path the node does not serve.
pub(crate) async fn not_found() -> HttpError {
    HttpError::new(ErrorCode::NotFound, "no such route")
}

/// A route the node serves, with a method it does not take (axum adds the
/// `Allow` header).
pub(crate) async fn method_not_allowed() -> HttpError {
    HttpError::new(ErrorCode::MethodNotAllowed, "method not allowed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_errors_name_no_rust_type_line_or_column() {
        let e = serde_json::from_str::<LoginRequest>("[1]").unwrap_err();
        let m = json_error(&e);
        assert!(m.starts_with("invalid body: "), "{m}");
        assert!(!m.contains("struct") && !m.contains("LoginRequest"), "{m}");
        assert!(!m.contains("line") && !m.contains("column"), "{m}");
        assert_eq!(
            readable("invalid type: map, expected struct A_b1 or struct C"),
            "invalid type: map, expected an object or an object"
        );
    }
}
