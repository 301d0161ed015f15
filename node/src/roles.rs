//! A conversation's roles and title over HTTP (docs/protocol.md, "Roles"):
//! `PUT /v1/conversations/{id}/members/{user}` with a `role`, and `PATCH
//! /v1/conversations/{id}` with a `title`. Both go to the conversation's
//! actor as the `role` and `title` frames do, which enforces who may.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chat_protocol::{ClientFrame, Role, UserId};
use serde::Deserialize;
use serde_json::json;

use crate::app::App;
use crate::error::HttpError;
use crate::http::{ask, authenticate, bad_request, conversation_id, json_body, validated};

type HttpResult<T> = Result<T, HttpError>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleBody {
    role: Role,
}

/// `PUT /v1/conversations/{id}/members/{user}`: 200 with the conversation.
pub(crate) async fn set_role(
    State(app): State<Arc<App>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> HttpResult<Response> {
    let Path((id, user)) = path.map_err(bad_request)?;
    let claims = authenticate(&app, &headers, None).await?;
    let conversation = conversation_id(&id)?;
    let user = UserId::new(&user).map_err(|e| bad_request(format!("user: {e}")))?;
    let body: RoleBody = json_body(&app, body).await?;
    let frame = ClientFrame::Role {
        req: None,
        conversation,
        user,
        role: body.role,
    };
    answer(ask(&app, claims.sub, frame).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TitleBody {
    title: Option<String>,
}

/// `PATCH /v1/conversations/{id}`: 200 with the conversation.
pub(crate) async fn set_title(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> HttpResult<Response> {
    let Path(id) = path.map_err(bad_request)?;
    let claims = authenticate(&app, &headers, None).await?;
    let conversation = conversation_id(&id)?;
    let body: TitleBody = json_body(&app, body).await?;
    let frame = ClientFrame::Title {
        req: None,
        conversation,
        title: body.title,
    };
    let frame = validated(&app, frame)?;
    answer(ask(&app, claims.sub, frame).await?)
}

fn answer(ok: chat_protocol::OkReply) -> HttpResult<Response> {
    Ok(Json(json!({ "conversation": ok.conversation })).into_response())
}
