//! HTTP routes: auth, history and sending over plain HTTP, health, metrics.
//! Errors are JSON `{"code","message"}` with the status of their code.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use chat_actors::conversation::ConversationMsg;
use chat_actors::router::RouterMsg;
use chat_actors::store::PageQuery;
use chat_actors::ChatError;
use chat_protocol::{
    limits, ClientMsgId, ConversationId, ErrorCode, MessageId, MessageKind, OkReply, UserId,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use crate::app::App;
use crate::auth::{AuthError, Claims, LoginRequest, RegisterRequest};

/// An error answered over HTTP.
#[derive(Debug)]
pub struct HttpError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    retry_after_ms: Option<u64>,
}

impl HttpError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        HttpError {
            status: StatusCode::from_u16(code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }
}

impl From<ChatError> for HttpError {
    fn from(e: ChatError) -> Self {
        let mut h = HttpError::new(e.code(), e.to_string());
        if let ChatError::RateLimited { retry_after_ms } = e {
            h.retry_after_ms = Some(retry_after_ms);
        }
        h
    }
}

impl From<AuthError> for HttpError {
    fn from(e: AuthError) -> Self {
        HttpError {
            status: StatusCode::from_u16(e.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code: e.code(),
            message: e.to_string(),
            retry_after_ms: None,
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut body = json!({ "code": self.code, "message": self.message });
        let mut resp = match self.retry_after_ms {
            Some(ms) => {
                body["retry_after_ms"] = json!(ms);
                let secs = ms.div_ceil(1000).max(1);
                let mut r = (self.status, Json(body)).into_response();
                if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                r
            }
            None => (self.status, Json(body)).into_response(),
        };
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

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

/// The bearer token of a request: the `Authorization` header, else the
/// `access_token` query parameter (browsers cannot set headers on WebSockets).
pub fn bearer(headers: &HeaderMap, query_token: Option<&str>) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_string())
        .or_else(|| query_token.map(str::to_string))
}

/// Verifies the request's token.
pub fn authenticate(
    app: &App,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> HttpResult<Claims> {
    let token = bearer(headers, query_token)
        .ok_or_else(|| HttpError::new(ErrorCode::Unauthorized, "missing bearer token"))?;
    Ok(app.auth.verify(&token)?)
}

/// Makes sure a user known by token has a record, so others can find it
/// (users of an outside identity provider never register here).
pub async fn ensure_user(app: &App, user: &UserId) -> Result<(), ChatError> {
    let store = &app.services.store;
    if store.user(user).await?.is_none() {
        let record = chat_actors::store::UserRecord {
            id: user.clone(),
            password_hash: None,
            display_name: None,
            created_at: chat_protocol::now_ms(),
        };
        match store.create_user(&record).await {
            Ok(()) | Err(chat_actors::store::StoreError::Conflict) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The node's routes.
pub fn routes(app: Arc<App>) -> axum::Router {
    let body_limit = app.config.limits.max_frame_bytes;
    axum::Router::new()
        .route("/v1/ws", get(crate::ws::upgrade))
        .route("/v1/auth/register", post(register))
        .route("/v1/auth/login", post(login))
        .route("/v1/auth/refresh", post(refresh))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/conversations/{id}/messages", get(history).post(send))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/cluster", get(cluster_status))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(app)
}

async fn register(
    State(app): State<Arc<App>>,
    body: Result<Bytes, BytesRejection>,
) -> HttpResult<Response> {
    let req: RegisterRequest = json_body(body)?;
    let tokens = app.auth.register(app.services.store.as_ref(), &req).await?;
    Ok((StatusCode::CREATED, Json(tokens)).into_response())
}

async fn login(
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

async fn refresh(
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

async fn logout(
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
struct HistoryParams {
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

async fn ask(
    app: &App,
    conversation: ConversationId,
    make: impl FnOnce(chat_actors::conversation::Reply) -> ConversationMsg,
) -> HttpResult<OkReply> {
    let (tx, rx) = ractor::concurrency::oneshot();
    let msg = make(tx.into());
    app.router
        .cast(RouterMsg::Route { conversation, msg })
        .map_err(|_| HttpError::new(ErrorCode::Unavailable, "node is shutting down"))?;
    match rx.await {
        Ok(r) => Ok(r?),
        Err(_) => Err(HttpError::new(
            ErrorCode::Unavailable,
            "request lost; retry",
        )),
    }
}

async fn history(
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
    let query = PageQuery {
        before: parse_id(params.before.as_deref(), "before")?,
        after: parse_id(params.after.as_deref(), "after")?,
        limit: limit as usize,
    };
    let reply = ask(&app, conversation, |reply| ConversationMsg::History {
        reader: claims.sub,
        query,
        reply,
    })
    .await?;
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

async fn send(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> HttpResult<Response> {
    let received = Instant::now();
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
    if let Err(retry_after_ms) = app.services.rate.take(&claims.sub) {
        app.services.metrics.rate_limited.inc();
        return Err(ChatError::RateLimited { retry_after_ms }.into());
    }
    let reply = ask(&app, conversation, |reply| ConversationMsg::Send {
        sender: claims.sub,
        client_msg_id: req.client_msg_id,
        body: req.body,
        kind: req.kind,
        reply_to: req.reply_to,
        origin: None,
        received,
        reply,
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "message": reply.message })),
    )
        .into_response())
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
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
async fn cluster_status(State(app): State<Arc<App>>) -> Response {
    match ractor::call!(app.router, |reply| RouterMsg::Status { reply }) {
        Ok(status) => Json(status).into_response(),
        Err(e) => HttpError::new(ErrorCode::Unavailable, e.to_string()).into_response(),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
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
