//! Opening client sockets: bound to a chosen local address before connecting
//! (each 127.0.0.x has its own ~28k ephemeral ports), then the WebSocket
//! handshake with small buffers so tens of thousands of clients fit in the
//! harness's memory.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

/// A client WebSocket over plain TCP.
pub type Ws = WebSocketStream<TcpStream>;

/// Time allowed for TCP connect plus the upgrade.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Client WebSocket buffers: 4 KiB reads, writes go out as they are made
/// (clients send little), frames up to 1 MiB (history pages).
pub fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// Connects a TCP socket to `addr`, from `source` when given.
pub async fn tcp_connect(addr: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| explain_io(e, "creating a socket", source))?;
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| explain_io(e, &format!("binding to {ip}"), source))?;
    }
    let stream = socket
        .connect(addr)
        .await
        .map_err(|e| explain_io(e, &format!("connecting to {addr}"), source))?;
    // Small frames must not wait for Nagle: latency is what is measured.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

fn explain_io(e: std::io::Error, what: &str, source: Option<IpAddr>) -> anyhow::Error {
    let hint = match e.raw_os_error() {
        Some(24) => " (too many open files: raise `ulimit -n`)",
        Some(99) => " (out of local ports for this source address: add --source-ips 127.0.0.2,...)",
        Some(111) => " (connection refused: is the server running on that port?)",
        _ => "",
    };
    let from = source.map(|s| format!(" from {s}")).unwrap_or_default();
    anyhow!("{what}{from}: {e}{hint}")
}

/// Opens a WebSocket to `ws://addr{path}` with extra request headers.
pub async fn ws_connect(
    addr: SocketAddr,
    path: &str,
    headers: &[(&'static str, String)],
    source: Option<IpAddr>,
) -> Result<(Ws, Option<String>)> {
    let attempt = async {
        let stream = tcp_connect(addr, source).await?;
        let mut req = format!("ws://{addr}{path}")
            .into_client_request()
            .context("building the upgrade request")?;
        for (name, value) in headers {
            let v = HeaderValue::from_str(value)
                .with_context(|| format!("header {name} is not a valid value"))?;
            req.headers_mut().insert(*name, v);
        }
        match tokio_tungstenite::client_async_with_config(req, stream, Some(client_config())).await
        {
            Ok((ws, resp)) => {
                let proto = resp
                    .headers()
                    .get("sec-websocket-protocol")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                Ok((ws, proto))
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let status = resp.status();
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Err(anyhow!(
                    "upgrade refused by {addr}{path}: HTTP {status} {}",
                    body.trim()
                ))
            }
            Err(e) => Err(anyhow!("WebSocket handshake with {addr}: {e}")),
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .map_err(|_| anyhow!("connecting to {addr} timed out after {CONNECT_TIMEOUT:?}"))?
}
