//! The webhooks' dead letters for operators: deliveries given up after
//! their retries, listed and sent again (`/v1/admin/webhooks/dead`).

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chat_notify::jobs::Work;
use chat_protocol::{now_ms, ErrorCode};
use chat_storage::Job;
use serde_json::json;

use crate::admin::{admin, audit};
use crate::app::App;
use crate::error::HttpError;
use crate::http::bad_request;

type HttpResult<T> = Result<T, HttpError>;

/// Dead letters listed at most.
const MAX_LISTED: usize = 1000;

/// `GET /v1/admin/webhooks/dead`: newest first.
pub(crate) async fn list(State(app): State<Arc<App>>, headers: HeaderMap) -> HttpResult<Response> {
    admin(&app, &headers).await?;
    let dead = app.store.dead_jobs(MAX_LISTED).await?;
    let listed: Vec<_> = dead
        .iter()
        .filter_map(|d| match Work::decode(&d.job.payload) {
            Ok(Work::Webhook {
                hook,
                event,
                delivery,
                ..
            }) => Some(json!({
                "id": d.job.id.to_string(),
                "hook": hook,
                "event": event,
                "delivery": delivery,
                "attempts": d.job.attempts,
                "failed_at": d.failed_at,
                "error": d.error,
            })),
            _ => None,
        })
        .collect();
    Ok(Json(json!({ "dead": listed })).into_response())
}

/// `POST /v1/admin/webhooks/dead/{id}/replay`: the delivery goes out again
/// (same delivery id and body) with a fresh set of retries.
pub(crate) async fn replay(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> HttpResult<Response> {
    let Path(id) = path.map_err(bad_request)?;
    let who = admin(&app, &headers).await?;
    let id: u64 = id
        .parse()
        .map_err(|_| HttpError::new(ErrorCode::BadRequest, "id: not a dead letter's id"))?;
    let Some(dead) = app.store.take_dead_job(id).await? else {
        return Err(HttpError::new(ErrorCode::NotFound, "no such dead letter"));
    };
    audit(&app, &who, "replay_webhook", &id.to_string()).await?;
    let job = Job {
        due_ms: now_ms(),
        attempts: 0,
        ..dead.job
    };
    app.store.put_jobs(&[job]).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"replayed": id.to_string()})),
    )
        .into_response())
}
