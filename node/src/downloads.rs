//! `GET /v1/media/{id}` and `/thumbnail` (docs/protocol.md, "Media"): the
//! bytes, whole or a range, to the uploader, to members of a conversation
//! a message of which carries the file, to anyone signed in for an avatar,
//! and to anyone holding an unexpired signed link; to everyone else the
//! same 404 as for no file, so that ids reveal nothing. Also `DELETE` of
//! an upload no message carries, which gives its bytes back to the quota.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chat_media::{is_image, Which};
use chat_protocol::media::is_media_id;
use chat_protocol::{now_ms, ErrorCode, UserId};
use chat_storage::{MediaRecord, MediaRef, MessageStore};
use serde::Deserialize;

use crate::app::App;
use crate::error::HttpError;
use crate::http::{authenticate, bad_request, query_error};
use crate::media::{collect, Collected, ReleaseError};
use crate::uploads::media_error;

type HttpResult<T> = Result<T, HttpError>;

/// References looked at to decide access: a file carried by more
/// messages than this is read by the uploader or through signed links.
const REFS_CHECKED: usize = 100;

#[derive(Deserialize)]
pub(crate) struct Signed {
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    sig: Option<String>,
}

fn no_file() -> HttpError {
    HttpError::new(ErrorCode::NotFound, "no such file")
}

/// `GET /v1/media/{id}`.
pub(crate) async fn original(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Signed>, QueryRejection>,
    headers: HeaderMap,
) -> HttpResult<Response> {
    serve(app, path, query, headers, Which::Original).await
}

/// `GET /v1/media/{id}/thumbnail`.
pub(crate) async fn thumbnail(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Signed>, QueryRejection>,
    headers: HeaderMap,
) -> HttpResult<Response> {
    serve(app, path, query, headers, Which::Thumbnail).await
}

/// The record of `id` when the request may read it: a valid signed link
/// alone, or a token of someone allowed.
async fn readable(
    app: &App,
    id: &str,
    signed: &Signed,
    headers: &HeaderMap,
) -> HttpResult<MediaRecord> {
    if !is_media_id(id) {
        return Err(no_file());
    }
    let link = match (signed.exp, signed.sig.as_deref()) {
        (Some(exp), Some(sig)) => Some(app.media.links.check(id, exp, sig, now_ms())),
        _ => None,
    };
    if link == Some(false) && !headers.contains_key(header::AUTHORIZATION) {
        return Err(HttpError::new(
            ErrorCode::Forbidden,
            "the link has expired or is not valid",
        ));
    }
    let user = match link {
        Some(true) => None,
        _ => Some(authenticate(app, headers, None).await?.sub),
    };
    let record = app.store.media(id).await?.ok_or_else(no_file)?;
    match user {
        None => Ok(record),
        Some(user) if may_read(app.store.as_ref(), &user, &record).await? => Ok(record),
        Some(_) => Err(no_file()),
    }
}

/// Whether `user` may read `record` without a link.
async fn may_read(
    store: &dyn MessageStore,
    user: &UserId,
    record: &MediaRecord,
) -> Result<bool, chat_storage::StoreError> {
    if &record.owner == user {
        return Ok(true);
    }
    let refs = store.media_refs(&record.id, REFS_CHECKED).await?;
    if refs.iter().any(|r| matches!(r, MediaRef::Avatar { .. })) {
        return Ok(true);
    }
    if !refs.iter().any(|r| matches!(r, MediaRef::Message { .. })) {
        return Ok(false);
    }
    let mine = store.user_conversations(user).await?;
    Ok(refs.iter().any(|r| match r {
        MediaRef::Message { conversation, .. } => mine.contains(conversation),
        MediaRef::Avatar { .. } => false,
    }))
}

async fn serve(
    app: Arc<App>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Signed>, QueryRejection>,
    headers: HeaderMap,
    which: Which,
) -> HttpResult<Response> {
    let Path(id) = path.map_err(bad_request)?;
    let Query(signed) = query.map_err(query_error)?;
    let record = readable(&app, &id, &signed, &headers).await?;
    let (content_type, size, etag) = match which {
        Which::Original => (
            record.content_type.clone(),
            record.size,
            format!("\"{}\"", record.sha256),
        ),
        Which::Thumbnail => {
            let t = record.thumbnail.as_ref().ok_or_else(no_file)?;
            (
                t.content_type.clone(),
                t.size,
                format!("\"{}-thumbnail\"", record.sha256),
            )
        }
    };
    let mut response = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        // Private: a shared cache must not hand one member's file to the
        // next requester; the browser may keep it as long as a link lasts.
        .header(header::CACHE_CONTROL, "private, max-age=3600");
    if !is_image(&content_type) {
        response = response
            .header(header::CONTENT_DISPOSITION, attachment(&record.name))
            // Opened anyway (a new tab): no script of it runs as ours.
            .header(
                header::CONTENT_SECURITY_POLICY,
                "sandbox; default-src 'none'",
            );
    }
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return response
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .map_err(internal);
    }
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(text) => match parse_range(text, size) {
            RangeAsk::Whole => None,
            RangeAsk::Part(r) => Some(r),
            RangeAsk::Unsatisfiable => {
                return response
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                    .body(Body::empty())
                    .map_err(internal);
            }
        },
    };
    let stream = app
        .media
        .blobs
        .get(&record.id, which, range.clone())
        .await
        .map_err(media_error)?;
    response = response.header(header::CONTENT_TYPE, content_type);
    let response = match range {
        Some(r) => response
            .status(StatusCode::PARTIAL_CONTENT)
            .header(
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{size}", r.start, r.end - 1),
            )
            .header(header::CONTENT_LENGTH, r.end - r.start),
        None => response
            .status(StatusCode::OK)
            .header(header::CONTENT_LENGTH, size),
    };
    response.body(Body::from_stream(stream)).map_err(internal)
}

/// `DELETE /v1/media/{id}`: the uploader takes back a file no message
/// carries (204); one still carried is 409.
pub(crate) async fn delete(
    State(app): State<Arc<App>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> HttpResult<Response> {
    let Path(id) = path.map_err(bad_request)?;
    let user = authenticate(&app, &headers, None).await?.sub;
    if !is_media_id(&id) {
        return Err(no_file());
    }
    app.store
        .media(&id)
        .await?
        .filter(|r| r.owner == user)
        .ok_or_else(no_file)?;
    match collect(app.store.as_ref(), &app.media.blobs, &id).await {
        Ok(Collected::Deleted | Collected::Gone) => Ok(StatusCode::NO_CONTENT.into_response()),
        Ok(Collected::Referred) => Err(HttpError::new(
            ErrorCode::Conflict,
            "a message or an avatar still carries this file",
        )),
        Err(ReleaseError::Store(e)) => Err(e.into()),
        Err(ReleaseError::Blobs(e)) => Err(media_error(e)),
    }
}

fn internal(e: axum::http::Error) -> HttpError {
    HttpError::new(ErrorCode::Internal, e.to_string())
}

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, PartialEq)]
enum RangeAsk {
    /// No range we serve (several, or malformed): the whole file, as RFC
    /// 9110 allows.
    Whole,
    /// Bytes `start..end`.
    Part(std::ops::Range<u64>),
    /// A range wholly past the end.
    Unsatisfiable,
}

fn parse_range(text: &str, size: u64) -> RangeAsk {
    let Some(spec) = text.trim().strip_prefix("bytes=") else {
        return RangeAsk::Whole;
    };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAsk::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| s.parse::<u64>().ok();
    let (start, end) = match (first.is_empty(), last.is_empty()) {
        // The last `n` bytes.
        (true, false) => {
            let Some(n) = number(last) else {
                return RangeAsk::Whole;
            };
            if n == 0 {
                return RangeAsk::Unsatisfiable;
            }
            (size.saturating_sub(n), size)
        }
        (false, true) => match number(first) {
            Some(start) => (start, size),
            None => return RangeAsk::Whole,
        },
        (false, false) => match (number(first), number(last)) {
            (Some(start), Some(last)) if last >= start => (start, last.saturating_add(1).min(size)),
            _ => return RangeAsk::Whole,
        },
        (true, true) => return RangeAsk::Whole,
    };
    if start >= size {
        return RangeAsk::Unsatisfiable;
    }
    RangeAsk::Part(start..end)
}

/// `attachment` with the name in RFC 6266's two forms: a plain ASCII
/// fallback and the exact UTF-8 name percent-encoded.
fn attachment(name: &str) -> HeaderValue {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::with_capacity(name.len() * 3);
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        assert_eq!(parse_range("bytes=0-0", 10), RangeAsk::Part(0..1));
        assert_eq!(parse_range("bytes=2-5", 10), RangeAsk::Part(2..6));
        assert_eq!(parse_range("bytes=8-", 10), RangeAsk::Part(8..10));
        assert_eq!(parse_range("bytes=-3", 10), RangeAsk::Part(7..10));
        assert_eq!(parse_range("bytes=-30", 10), RangeAsk::Part(0..10));
        assert_eq!(parse_range("bytes=5-100", 10), RangeAsk::Part(5..10));
        assert_eq!(parse_range("bytes=10-", 10), RangeAsk::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 10), RangeAsk::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-2", 10), RangeAsk::Whole);
        assert_eq!(parse_range("bytes=0-1,4-5", 10), RangeAsk::Whole);
        assert_eq!(parse_range("items=0-1", 10), RangeAsk::Whole);
        assert_eq!(parse_range("bytes=x-1", 10), RangeAsk::Whole);
    }

    #[test]
    fn attachment_names_are_quoted_safely() {
        let v = attachment("a \"b\"\\c\u{e9}.txt");
        let text = v.to_str().expect("ascii header");
        assert!(
            text.starts_with("attachment; filename=\"a _b__c_.txt\""),
            "{text}"
        );
        assert!(
            text.ends_with("filename*=UTF-8''a%20%22b%22%5Cc%C3%A9.txt"),
            "{text}"
        );
    }
}
