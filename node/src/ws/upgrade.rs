//! The upgrade: authentication before it, the codec the client offered, and
//! the connection attached to its user's session before the 101 goes out.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chat_actors::ChatError;
use chat_protocol::{Codec, ErrorCode};
use futures_util::{FutureExt, StreamExt};

use super::admission::{admit, take_slot, FULL, FULL_RETRY_AFTER_SECS};
use super::reader::serve;
use crate::app::App;
use crate::error::HttpError;

/// `GET /v1/ws`.
pub async fn upgrade(
    State(app): State<Arc<App>>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // axum's own rejection is plain text with no code: a client that
    // reached this route without upgrading (a fetch, a proxy that drops
    // the upgrade headers) gets the JSON error every other route answers.
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            let why = rejection.body_text();
            return HttpError::new(
                ErrorCode::BadRequest,
                format!("a WebSocket upgrade is required here: {why}"),
            )
            .into_response();
        }
    };
    if app.shutdown.is_cancelled() {
        return HttpError::from(ChatError::Unavailable("node is shutting down".into()))
            .into_response();
    }
    let Some(slot) = take_slot(&app) else {
        let mut refused = HttpError::new(ErrorCode::Unavailable, FULL).into_response();
        refused.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(FULL_RETRY_AFTER_SECS),
        );
        return refused;
    };
    let token = params.get("access_token").map(String::as_str);
    let store = app.store.as_ref();
    let claims = match app.auth.authorize(store, &headers, token).await {
        Ok(c) => c,
        Err(e) => return HttpError::from(e).into_response(),
    };
    let ws = ws.protocols([Codec::JSON_PROTOCOL, Codec::MSGPACK_PROTOCOL]);
    let codec = ws
        .selected_protocol()
        .and_then(|p| p.to_str().ok())
        .and_then(Codec::from_subprotocol)
        .unwrap_or(Codec::Json);
    let limits = &app.config.limits;
    let ws = ws
        .max_frame_size(limits.max_frame_bytes)
        .max_message_size(limits.max_frame_bytes)
        // Small buffers keep an idle connection cheap; tungstenite grows
        // them for larger frames as needed.
        .read_buffer_size(READ_BUFFER)
        // Frames gather in the write buffer until the writer flushes at the
        // end of a batch (or this much is buffered): one syscall per batch,
        // not per frame, which is what a busy connection's fan-out needs.
        // The buffer only grows to what a batch holds.
        .write_buffer_size(WRITE_BUFFER)
        // The writer waits for each frame to be accepted before the next,
        // so the buffer holds at most `WRITE_BUFFER` and one frame, plus
        // the pongs tungstenite answers pings with (which the reader also
        // bounds). The cap must exceed the largest frame: a page of
        // history or changes stops at `MAX_PAGE_BYTES` as encoded.
        .max_write_buffer_size(MAX_WRITE_BUFFER);
    // Attached before the 101 goes out: once a client sees its upgrade
    // accepted, whatever its conversations accept reaches it live (the
    // frames wait in its queue until the socket is there). In a task of its
    // own: a client that hangs up drops this handler, and an attachment
    // made after that must still be dropped, and so detached.
    let admitted = match tokio::spawn(admit(app.clone(), claims.clone(), codec)).await {
        Ok(admitted) => admitted,
        Err(e) => {
            tracing::error!(error = %e, "admitting a connection failed");
            return HttpError::from(ChatError::Unavailable("cannot admit the connection".into()))
                .into_response();
        }
    };
    let tracker = app.connections.clone();
    // The callback's captures stay in the upgrade's task for the
    // connection's life: one box, emptied once the socket is there.
    let start = Box::new((app, claims, admitted, slot));
    ws.on_upgrade(move |socket| {
        let (app, claims, admitted, slot) = *start;
        let serving = serve(app, socket.split(), claims, codec, admitted);
        tracker.track_future(serving.map(move |()| drop(slot)))
    })
}

/// Bytes buffered before a write happens even within a batch.
const WRITE_BUFFER: usize = 32 * 1024;

/// Bytes the read buffer starts with, and reads at most at once: client
/// frames are small (a send is a few hundred bytes), and every connection
/// holds this much while idle. Larger frames grow it (up to
/// `max_frame_bytes`).
const READ_BUFFER: usize = 1024;

/// The largest write buffer tungstenite may hold: above the largest frame
/// the node writes (a page, cut at `MAX_PAGE_BYTES` as encoded) plus a
/// batch, with room left for the pongs the reader lets the client owe.
const MAX_WRITE_BUFFER: usize = 6 * chat_protocol::limits::MAX_PAGE_BYTES + 2 * WRITE_BUFFER;
