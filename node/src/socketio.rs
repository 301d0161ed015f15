//! Socket.IO clients at `/socket.io/`: Socket.IO v5 over Engine.IO v4
//! (long-polling and WebSocket), so that apps built on `socket.io-client`
//! connect unchanged (docs/protocol.md, "Socket.IO clients").
//!
//! Each client frame type is an event of the same name whose argument is
//! the frame without `type` and `req`; an acknowledgement, when asked for,
//! gets the reply frame (`ok` or `error`); every server event is emitted
//! under its `type`. Nothing of the protocol is written twice: a socket is
//! bridged to the WebSocket path's own admission, reader and writer, so
//! auth, limits, byte budgets, guarantees, metrics and traces are theirs.
//!
//! ```text
//!  socket.io-client ─► socketioxide ─► inbound.rs (event → frame, in order)
//!                                          │ bridge.rs channel (bounded)
//!                                          ▼
//!                        ws::serve: the WebSocket reader and writer
//!                                          │ frames out
//!  socket.io-client ◄─ socketioxide ◄─ bridge.rs (ack, or event by `type`)
//! ```
//!
//! Two Socket.IO servers share the path: the default JSON parser, and the
//! MessagePack one (`socket.io-msgpack-parser`) for clients that add
//! `parser=msgpack` to their query.
//!
//! ```text
//!  socketio.rs    the picture, the route, the two servers
//!  connect.rs     a socket's token, admission, and its connection started
//!  inbound.rs     events read as client frames
//!  bridge.rs      the socket as the connection's two halves
//! ```

mod bridge;
mod connect;
mod inbound;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use socketioxide::handler::ConnectHandler;
use socketioxide::{ParserConfig, SocketIo, SocketIoBuilder};
use tower::util::BoxCloneSyncService;
use tower::ServiceExt;

use crate::app::App;

/// What a Socket.IO packet adds around a frame (`42<ack id>["<event>",`
/// and `]`): a frame that fits `max_frame_bytes` on `/v1/ws` fits here.
const PACKET_BYTES: u64 = 64;

/// Where Socket.IO clients connect (their default path).
pub const PATH: &str = "/socket.io/";

/// One Socket.IO server, as a service of axum's requests.
type Server = BoxCloneSyncService<Request, Response, std::convert::Infallible>;

/// The two Socket.IO servers of a node.
#[derive(Clone)]
pub struct Servers {
    json: Server,
    msgpack: Server,
}

impl Servers {
    /// Both servers of `app`, with the node's limits.
    pub fn new(app: &Arc<App>) -> Servers {
        let json = build(
            app,
            SocketIo::builder().with_parser(ParserConfig::common()),
            false,
        );
        let msgpack = build(
            app,
            SocketIo::builder().with_parser(ParserConfig::msgpack()),
            true,
        );
        Servers { json, msgpack }
    }
}

fn build(app: &Arc<App>, builder: SocketIoBuilder, binary: bool) -> Server {
    let limits = &app.config.limits;
    let (svc, io) = builder
        .req_path(PATH.trim_end_matches('/').to_string())
        // A packet as large as a WebSocket frame may be, with its event's
        // name; Engine.IO closes a client that sends more.
        .max_payload(PACKET_BYTES + limits.max_frame_bytes as u64)
        .ws_max_message_size(PACKET_BYTES as usize + limits.max_frame_bytes)
        .ws_max_frame_size(PACKET_BYTES as usize + limits.max_frame_bytes)
        // A client that answers no ping for the idle timeout is gone, as
        // on `/v1/ws` (a polling client that stops polling, say).
        .ping_interval(Duration::from_secs((limits.idle_timeout_secs / 2).max(1)))
        .ping_timeout(Duration::from_secs((limits.idle_timeout_secs / 2).max(1)))
        // Packets Socket.IO holds for a client that is not reading, before
        // the bridge's writes wait (and the node's outbound queue bounds
        // the rest, as for a WebSocket).
        .max_buffer_size(limits.outbound_queue.max(16))
        .connect_timeout(Duration::from_secs(
            app.config.listen.header_read_timeout_secs.max(1),
        ))
        .build_svc();
    let app = app.clone();
    let handler = async |_: socketioxide::extract::SocketRef| {};
    io.ns(
        "/",
        handler.with(move |s, own, auth| connect::connect(app.clone(), binary, s, own, auth)),
    );
    BoxCloneSyncService::new(ServiceExt::<Request>::map_result(svc, |result| {
        Ok::<_, std::convert::Infallible>(match result {
            Ok(res) => res.map(axum::body::Body::new).into_response(),
            Err(e) => {
                tracing::warn!(error = %e, "socket.io request failed");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        })
    }))
}

/// `/socket.io/`: to the MessagePack server when the query says
/// `parser=msgpack`, else to the JSON one.
pub async fn route(State(servers): State<Servers>, req: Request) -> Response {
    let msgpack = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "parser=msgpack"));
    let svc = if msgpack {
        servers.msgpack
    } else {
        servers.json
    };
    match svc.oneshot(req).await {
        Ok(res) => res,
        Err(never) => match never {},
    }
}
