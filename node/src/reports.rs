//! Reports of abuse (docs/protocol.md, "Reports"): a user reports a user,
//! or a message of a conversation they are in (`POST /v1/reports`); admins
//! see the open ones (`GET /v1/admin/reports`, and the admin console) and
//! resolve each by dismissing it, deleting the message (every member sees
//! it deleted) or suspending the user. Every resolution is in the audit
//! log.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chat_actors::error::ChatError;
use chat_actors::rate::RateLimiter;
use chat_protocol::request::ConversationRequest;
use chat_protocol::{now_ms, ConversationId, ErrorCode, MessageId, UserId};
use chat_storage::{Report, ReportAction, Resolution};
use serde::Deserialize;
use serde_json::json;

use crate::admin::{admin, audit, suspend_user};
use crate::app::App;
use crate::error::HttpError;
use crate::http::{authenticate, bad_request, conversation_id, json_body, query_error};

type HttpResult<T> = Result<T, HttpError>;

/// Longest reason, in characters.
const MAX_REASON_CHARS: usize = 500;
/// Reports one user may file per hour (per node): enough for anyone
/// reporting in good faith, and a bound on a flood.
const REPORTS_PER_HOUR: u32 = 20;
/// Most open reports one request lists.
const MAX_LISTED: usize = 500;

fn limiter() -> &'static RateLimiter<UserId> {
    static LIMITER: OnceLock<RateLimiter<UserId>> = OnceLock::new();
    LIMITER.get_or_init(|| RateLimiter::per_period(REPORTS_PER_HOUR, Duration::from_secs(3600), 5))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewReport {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    conversation: Option<String>,
    #[serde(default)]
    message: Option<String>,
    reason: String,
}

/// `POST /v1/reports`: 201 with the report's id.
pub(crate) async fn create(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> HttpResult<Response> {
    let claims = authenticate(&app, &headers, None).await?;
    let body: NewReport = json_body(&app, body).await?;
    let reason = body.reason.trim().to_owned();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        return Err(bad_request(format!(
            "reason must be 1 to {MAX_REASON_CHARS} characters"
        )));
    }
    if reason.chars().any(|c| c.is_control() && c != '\n') {
        return Err(bad_request("reason must not contain control characters"));
    }
    let store = app.store.as_ref();
    let (user, conversation, message) = match (body.user, body.conversation, body.message) {
        (Some(user), None, None) => {
            let user = UserId::new(&user).map_err(|e| bad_request(format!("user: {e}")))?;
            if store.user(&user).await?.is_none() {
                return Err(HttpError::new(ErrorCode::NotFound, "no such user"));
            }
            (user, None, None)
        }
        (None, Some(conversation), Some(message)) => {
            let conversation = conversation_id(&conversation)?;
            let message = message
                .parse::<u64>()
                .map(MessageId)
                .map_err(|_| bad_request("message: not a message id"))?;
            let sender = sender_of(&app, &claims.sub, &conversation, message).await?;
            (sender, Some(conversation), Some(message))
        }
        _ => {
            return Err(bad_request(
                "report a user (user) or a message (conversation and message)",
            ))
        }
    };
    if user == claims.sub {
        return Err(bad_request("you cannot report yourself"));
    }
    limiter()
        .take(&claims.sub)
        .map_err(|retry_after_ms| HttpError::from(ChatError::RateLimited { retry_after_ms }))?;
    let created_at = now_ms();
    let report = Report {
        id: format!("{created_at:016x}-{:08x}", rand::random::<u32>()),
        reporter: claims.sub,
        user,
        conversation,
        message,
        reason,
        created_at,
        resolution: None,
    };
    store.put_report(&report).await?;
    Ok((StatusCode::CREATED, Json(json!({"id": report.id}))).into_response())
}

/// The sender of `message`, which `reporter` must be able to read: a
/// member's report only (no one reports what they cannot see).
async fn sender_of(
    app: &App,
    reporter: &UserId,
    conversation: &ConversationId,
    message: MessageId,
) -> HttpResult<UserId> {
    let store = app.store.as_ref();
    let not_found = || HttpError::new(ErrorCode::NotFound, "no such message");
    let c = store
        .conversation(conversation)
        .await?
        .ok_or_else(not_found)?;
    if !c.members.iter().any(|m| &m.user == reporter) {
        return Err(not_found());
    }
    let m = store
        .message(conversation, message)
        .await?
        .ok_or_else(not_found)?;
    Ok(m.sender)
}

#[derive(Deserialize)]
pub(crate) struct ListParams {
    status: Option<String>,
}

/// `GET /v1/admin/reports?status=open`: the open reports, oldest first.
pub(crate) async fn list(
    State(app): State<Arc<App>>,
    query: Result<Query<ListParams>, QueryRejection>,
    headers: HeaderMap,
) -> HttpResult<Response> {
    let Query(params) = query.map_err(query_error)?;
    admin(&app, &headers).await?;
    if params.status.as_deref().is_some_and(|s| s != "open") {
        return Err(bad_request("status: only open reports are listed"));
    }
    let reports = app.store.open_reports(MAX_LISTED).await?;
    Ok(Json(json!({ "reports": reports })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    action: ReportAction,
}

/// `POST /v1/admin/reports/{id}/resolve`: 200 with the report resolved.
pub(crate) async fn resolve(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> HttpResult<Response> {
    let Path(id) = path.map_err(bad_request)?;
    let by = admin(&app, &headers).await?;
    let body: ResolveBody = json_body(&app, body).await?;
    let store = app.store.as_ref();
    let mut report = store
        .report(&id)
        .await?
        .ok_or_else(|| HttpError::new(ErrorCode::NotFound, "no such report"))?;
    if report.resolution.is_some() {
        return Err(HttpError::new(ErrorCode::Conflict, "resolved already"));
    }
    let action = body.action;
    let name = match action {
        ReportAction::Dismiss => "report.dismiss",
        ReportAction::DeleteMessage => "report.delete_message",
        ReportAction::SuspendUser => "report.suspend_user",
    };
    audit(&app, &by, name, &format!("{} {}", report.id, report.user)).await?;
    match action {
        ReportAction::Dismiss => {}
        ReportAction::DeleteMessage => {
            let (Some(conversation), Some(message)) = (report.conversation.clone(), report.message)
            else {
                return Err(bad_request("this report names no message"));
            };
            delete_message(&app, by.clone(), conversation, message).await?;
        }
        ReportAction::SuspendUser => suspend_user(&app, &report.user).await?,
    }
    report.resolution = Some(Resolution {
        action,
        by,
        at: now_ms(),
    });
    store.put_report(&report).await?;
    Ok(Json(json!({ "report": report })).into_response())
}

/// Deletes the message through its conversation's actor, as a moderator
/// would: every member gets the update.
async fn delete_message(
    app: &App,
    by: UserId,
    conversation: ConversationId,
    message: MessageId,
) -> HttpResult<()> {
    let (tx, rx) = ractor::concurrency::oneshot();
    let body = ConversationRequest::OperatorDelete {
        conversation,
        message,
    };
    app.dispatch.operator(by, body, tx.into());
    match rx.await {
        Ok(r) => r.map(|_| ()).map_err(HttpError::from),
        Err(_) => Err(HttpError::new(
            ErrorCode::Unavailable,
            "request lost; retry",
        )),
    }
}
