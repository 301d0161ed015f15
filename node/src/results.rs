//! `GET /v1/search` (docs/protocol.md, "search"): messages of the
//! conversations the caller is a member of now (asked of the store at each
//! search, so a member who left finds nothing more), newest first, each
//! with its matched words marked, a page at a time.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use chat_actors::media::shown;
use chat_protocol::{ErrorCode, MessageId, UserId};
use chat_search::query::{MAX_QUERY_CHARS, MAX_TERMS};
use chat_search::{Has, SearchQuery, Terms};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::App;
use crate::error::HttpError;
use crate::http::{authenticate, bad_request, conversation_id, query_error};

type HttpResult<T> = Result<T, HttpError>;

/// Results per page unless asked, and at most.
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchParams {
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    conversation: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    after: Option<u64>,
    #[serde(default)]
    before: Option<u64>,
    #[serde(default)]
    has: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    cursor: Option<String>,
}

/// `GET /v1/search`.
pub(crate) async fn search(
    State(app): State<Arc<App>>,
    query: Result<Query<SearchParams>, QueryRejection>,
    headers: HeaderMap,
) -> HttpResult<Json<Value>> {
    let Query(p) = query.map_err(query_error)?;
    let user = authenticate(&app, &headers, None).await?.sub;
    let Some(search) = &app.search else {
        return Err(HttpError::new(
            ErrorCode::Unavailable,
            "search is off on this node",
        ));
    };
    let q = p.q.unwrap_or_default();
    if q.chars().count() > MAX_QUERY_CHARS {
        return Err(bad_request(format!(
            "q is over {MAX_QUERY_CHARS} characters"
        )));
    }
    let terms = Terms::parse(&q);
    if terms.len() > MAX_TERMS {
        return Err(bad_request(format!(
            "q has more than {MAX_TERMS} words and phrases"
        )));
    }
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(bad_request(format!("limit must be 1 to {MAX_LIMIT}")));
    }
    let has = match p.has.as_deref() {
        None => None,
        Some("attachment") => Some(Has::Attachment),
        Some("link") => Some(Has::Link),
        Some(_) => return Err(bad_request("has must be attachment or link")),
    };
    let from = p
        .from
        .as_deref()
        .map(UserId::new)
        .transpose()
        .map_err(|e| bad_request(format!("from: {e}")))?;
    let below = p
        .cursor
        .as_deref()
        .map(|c| c.parse::<u64>().map(MessageId))
        .transpose()
        .map_err(|_| bad_request("cursor is not one this node gave"))?;
    // Membership now: what the caller may read is what the store says at
    // this moment, not what it said when a message was indexed.
    let mut conversations = app.store.user_conversations(&user).await?;
    if let Some(c) = p.conversation.as_deref() {
        let c = conversation_id(c)?;
        conversations.retain(|m| *m == c);
    }
    let found = search
        .index
        .search(&SearchQuery {
            terms,
            conversations,
            from,
            after: p.after,
            before: p.before,
            has,
            below,
            limit,
        })
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "search");
            HttpError::new(ErrorCode::Unavailable, "search is unavailable; retry")
        })?;
    let mut results = Vec::with_capacity(found.hits.len());
    for hit in &found.hits {
        // The index may lag a delete by a moment: the store has the last
        // word.
        match app.store.message(&hit.conversation, hit.id).await? {
            Some(m) if !m.deleted => results.push(json!({
                "message": shown(&*app.media, &m),
                "highlights": hit.highlights,
            })),
            _ => {}
        }
    }
    let mut body = json!({ "results": results });
    if found.more {
        if let Some(last) = found.hits.last() {
            body["next_cursor"] = json!(last.id.0.to_string());
        }
    }
    Ok(Json(body))
}
