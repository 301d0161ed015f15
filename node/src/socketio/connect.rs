//! A Socket.IO client's connection: the token checked and the connection
//! attached to its user's session before Socket.IO confirms the connect
//! (as a WebSocket's is before its 101), then the WebSocket path's reader
//! and writer started on the socket's bridge.

use std::convert::Infallible;
use std::sync::Arc;

use chat_protocol::Codec;
use futures_util::FutureExt;
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::handler::{FromConnectParts, Value};
use socketioxide::socket::Socket;

use super::bridge::{Bridge, Cut};
use super::inbound::Inbound;
use crate::app::App;
use crate::ws::{admit, serve, take_slot, FULL};

/// The socket itself, which the bridge's writer emits on.
pub(super) struct Own(Arc<Socket>);

impl FromConnectParts<LocalAdapter> for Own {
    type Error = Infallible;

    fn from_connect_parts(s: &Arc<Socket>, _: &Option<Value>) -> Result<Self, Infallible> {
        Ok(Own(s.clone()))
    }
}

/// Why a connect was refused: the client's `connect_error` says it, with
/// the protocol's error code first.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub(super) struct Refused {
    code: &'static str,
    message: String,
}

/// Checks the token (the `auth` payload's `token`, or the `access_token`
/// query parameter, or an `Authorization` header), attaches the connection
/// and starts its reader and writer.
pub(super) async fn connect(
    app: Arc<App>,
    binary: bool,
    s: SocketRef,
    Own(socket): Own,
    TryData(auth): TryData<serde_json::Value>,
) -> Result<(), Refused> {
    if app.shutdown.is_cancelled() {
        return Err(Refused {
            code: chat_protocol::ErrorCode::Unavailable.as_str(),
            message: "node is shutting down".into(),
        });
    }
    let slot = take_slot(&app).ok_or_else(|| Refused {
        code: chat_protocol::ErrorCode::Unavailable.as_str(),
        message: FULL.into(),
    })?;
    let parts = s.req_parts();
    let token = auth
        .ok()
        .and_then(|a| a.get("token").and_then(|t| t.as_str()).map(str::to_string))
        .or_else(|| query_token(parts.uri.query()));
    let claims = app
        .auth
        .authorize(app.store.as_ref(), &parts.headers, token.as_deref())
        .await
        .map_err(|e| Refused {
            code: e.code().as_str(),
            message: e.to_string(),
        })?;
    // In a task of its own, as for a WebSocket: an attachment made after
    // the client hung up must still be dropped, and so detached.
    let admitted = tokio::spawn(admit(app.clone(), claims.clone(), Codec::Json))
        .await
        .map_err(|_| Refused {
            code: chat_protocol::ErrorCode::Unavailable.as_str(),
            message: "cannot admit the connection".into(),
        })?;
    if let Err((code, reason)) = &admitted.attached {
        return Err(Refused {
            code: if *code == chat_protocol::close_code::TOO_MANY_CONNECTIONS {
                chat_protocol::ErrorCode::RateLimited.as_str()
            } else {
                chat_protocol::ErrorCode::Unavailable.as_str()
            },
            message: reason.clone(),
        });
    }
    let limits = &app.config.limits;
    // Frames waiting for the reader: as many as its window.
    let capacity = limits
        .inflight_per_connection
        .min(limits.outbound_queue / 2)
        .max(1);
    let cut = Cut {
        closer: admitted.end.closer.clone(),
        stall: std::time::Duration::from_secs(limits.idle_timeout_secs),
    };
    let (bridge, halves) = Bridge::new(socket, capacity, binary, cut);
    s.extensions.insert(bridge.clone());
    s.on_fallback(async |_: Inbound| {});
    let gone = bridge.clone();
    s.on_disconnect(async move || gone.disconnected());
    let tracker = app.connections.clone();
    let serving = serve(app, halves, claims, Codec::Json, admitted);
    tokio::spawn(tracker.track_future(serving.map(move |()| {
        // Ended by the node (4001, 4003, a drain): the socket goes too.
        bridge.disconnected();
        drop(slot);
    })));
    Ok(())
}

/// `access_token` from a query string, as browsers pass it to `/v1/ws`
/// (a token is base64url and dots: nothing to decode).
fn query_token(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "access_token").then(|| v.to_string())
    })
}
