//! `POST /v1/media` (docs/protocol.md, "Media"): a file as the raw body,
//! streamed into the object store (never held whole), its type sniffed
//! from its bytes, images measured and thumbnailed under the decoding
//! limits, and counted against the uploader's quota.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chat_actors::error::ChatError;
use chat_actors::rate::RateLimiter;
use chat_media::{clean_name, is_image, new_media_id, process_image, sniff, MediaError};
use chat_protocol::{now_ms, ErrorCode, UserId};
use chat_storage::{MediaRecord, ThumbnailRecord};
use serde::Deserialize;
use serde_json::json;

use crate::app::App;
use crate::error::HttpError;
use crate::http::{authenticate, query_error};
use crate::media::MediaService;

type HttpResult<T> = Result<T, HttpError>;

/// Uploads one user may start per minute (per node): a person sharing a
/// burst of photos stays well under it.
const UPLOADS_PER_MINUTE: u32 = 60;

fn limiter() -> &'static RateLimiter<UserId> {
    static LIMITER: OnceLock<RateLimiter<UserId>> = OnceLock::new();
    LIMITER.get_or_init(|| RateLimiter::per_period(UPLOADS_PER_MINUTE, Duration::from_secs(60), 20))
}

#[derive(Deserialize)]
pub(crate) struct UploadQuery {
    #[serde(default)]
    name: Option<String>,
}

/// What a client is told of a stored file (also `GET`'s metadata).
pub(crate) fn media_json(media: &MediaService, record: &MediaRecord) -> serde_json::Value {
    let now = now_ms();
    json!({
        "id": record.id,
        "name": record.name,
        "content_type": record.content_type,
        "size": record.size,
        "sha256": record.sha256,
        "width": record.width,
        "height": record.height,
        "thumbnail": record.thumbnail.as_ref().map(|t| json!({"width": t.width, "height": t.height})),
        "url": media.url(&record.id, false, now),
        "thumbnail_url": record.thumbnail.as_ref().map(|_| media.url(&record.id, true, now)),
    })
}

/// The client's error for what went wrong with the bytes.
pub(crate) fn media_error(e: MediaError) -> HttpError {
    match e {
        MediaError::TooLarge { limit } => HttpError::new(
            ErrorCode::TooLarge,
            format!("the file is over the limit of {limit} bytes"),
        )
        .with("limit_bytes", limit),
        MediaError::ImageTooLarge {
            width,
            height,
            limit,
        } => HttpError::new(
            ErrorCode::TooLarge,
            format!("the image is {width} x {height} pixels, over the limit of {limit} pixels"),
        )
        .with("limit_pixels", limit)
        .with("width", width)
        .with("height", height),
        MediaError::Undecodable(why) => HttpError::new(
            ErrorCode::BadRequest,
            format!("the image cannot be decoded: {why}"),
        ),
        MediaError::Empty => HttpError::new(ErrorCode::BadRequest, "the file is empty"),
        MediaError::Body(why) => HttpError::new(
            ErrorCode::BadRequest,
            format!("the upload was cut off: {why}"),
        ),
        MediaError::NotFound => HttpError::new(ErrorCode::NotFound, "no such file"),
        other => {
            tracing::warn!(error = %other, "media store");
            HttpError::new(
                ErrorCode::Unavailable,
                "the file store is unavailable; retry",
            )
        }
    }
}

/// `POST /v1/media?name=`: 201 with the file's record.
pub(crate) async fn upload(
    State(app): State<Arc<App>>,
    query: Result<Query<UploadQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> HttpResult<Response> {
    let Query(query) = query.map_err(query_error)?;
    let claims = authenticate(&app, &headers, None).await?;
    let user = claims.sub;
    limiter()
        .take(&user)
        .map_err(|retry_after_ms| HttpError::from(ChatError::RateLimited { retry_after_ms }))?;
    let media = &app.media;
    let max = media.config.max_upload_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(media_error(MediaError::TooLarge { limit: max }));
    }
    let quota = media.config.quota_bytes;
    let used = app.store.media_usage(&user).await?;
    let room = quota.saturating_sub(used);
    let over_quota = || {
        HttpError::new(
            ErrorCode::QuotaExceeded,
            format!("uploads would pass your quota of {quota} bytes ({used} used)"),
        )
        .with("quota_bytes", quota)
        .with("used_bytes", used)
    };
    if declared.is_some_and(|n| n > room) || room == 0 {
        return Err(over_quota());
    }
    let id = new_media_id();
    let limit = max.min(room);
    let uploaded = match media
        .blobs
        .upload(&id, body.into_data_stream(), limit)
        .await
    {
        Ok(u) => u,
        Err(MediaError::TooLarge { .. }) if limit < max => return Err(over_quota()),
        Err(e) => return Err(media_error(e)),
    };
    let content_type = sniff(&uploaded.head);
    let name = clean_name(query.name.as_deref().unwrap_or(""));
    let mut record = MediaRecord {
        id: id.clone(),
        owner: user,
        name,
        content_type,
        size: uploaded.size,
        sha256: uploaded.sha256,
        width: None,
        height: None,
        thumbnail: None,
        created_at: now_ms(),
        released: false,
    };
    let stored = async {
        if is_image(&record.content_type) {
            measure(media, &mut record).await?;
        }
        app.store.put_media(&record).await?;
        Ok::<(), HttpError>(())
    }
    .await;
    if let Err(e) = stored {
        // Nothing refers to bytes without a record: take them back.
        if let Err(d) = media.blobs.delete(&id).await {
            tracing::warn!(error = %d, media = %id, "deleting a refused upload's bytes");
        }
        return Err(e);
    }
    Ok((StatusCode::CREATED, Json(media_json(media, &record))).into_response())
}

/// Decodes the image (one at a time on this node), notes its dimensions
/// and stores its thumbnail.
async fn measure(media: &MediaService, record: &mut MediaRecord) -> HttpResult<()> {
    let _turn = media
        .decoding
        .acquire()
        .await
        .map_err(|_| HttpError::new(ErrorCode::Unavailable, "shutting down"))?;
    let bytes = media
        .blobs
        .read_all(&record.id, record.size)
        .await
        .map_err(media_error)?;
    let config = media.config.clone();
    let info = tokio::task::spawn_blocking(move || process_image(&bytes, &config))
        .await
        .map_err(|e| HttpError::new(ErrorCode::Internal, e.to_string()))?
        .map_err(media_error)?;
    record.width = Some(info.width);
    record.height = Some(info.height);
    if let Some(t) = info.thumbnail {
        let size = t.bytes.len() as u64;
        media
            .blobs
            .put_thumbnail(&record.id, t.bytes)
            .await
            .map_err(media_error)?;
        record.thumbnail = Some(ThumbnailRecord {
            width: t.width,
            height: t.height,
            content_type: t.content_type.to_owned(),
            size,
        });
    }
    Ok(())
}
