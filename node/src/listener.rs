//! Accepting HTTP connections with the bounds a public listener needs, which
//! `axum::serve` does not offer: a deadline for a request's headers (which
//! is also how long a connection may sit idle before its first request or
//! between requests, WebSocket upgrade included), a cap on the
//! connections one source address holds open, and a kernel deadline for a
//! peer that takes no bytes (TCP_USER_TIMEOUT).
//!
//! ```text
//!  accept ─► per-address count (refused past the cap) ─► hyper HTTP/1 (header deadline)
//!                                                         └─► axum routes (with ConnectInfo)
//! ```
//!
//! With client TLS on, the handshake (or a plain request's answer, see
//! `tls`) comes before hyper, under the same header deadline.
//!
//! A connection upgraded to a WebSocket keeps its count until its socket
//! closes. Behind a proxy every client shares the proxy's address: set
//! `max_connections_per_ip = 0` there and cap at the proxy.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::tls::{Accepted, ClientTls};

/// The bounds of the listener.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// A request's headers must arrive within this, counted from when the
    /// connection starts waiting for them.
    pub header_read_timeout: Duration,
    /// Connections one address may hold open; 0 for no cap.
    pub max_connections_per_ip: usize,
    /// How long bytes the node wrote may wait for the peer to take them
    /// before the kernel drops the connection (TCP_USER_TIMEOUT): the
    /// backstop under every deadline above TCP. A task stuck writing to a
    /// peer that reads nothing (Engine.IO's writer, a response body) is
    /// freed, and the connection's buffers with it.
    pub send_timeout: Duration,
}

/// Open connections per source address.
#[derive(Default)]
struct PerAddress {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection; uncounted when dropped.
struct Slot {
    table: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    fn admit(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if cap != 0 && *n >= cap {
            return None;
        }
        *n += 1;
        Some(Slot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .table
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Serves `routes` on `listener` until `shutdown` is cancelled; then asks
/// every HTTP connection to finish its request and close, and returns once
/// they have (upgraded WebSockets are the node's to drain).
pub async fn serve(
    listener: TcpListener,
    routes: axum::Router,
    bounds: Bounds,
    tls: Option<Arc<ClientTls>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let plain = tls.as_ref().map(|t| t.plain_routes());
    let table = Arc::new(PerAddress::default());
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors or a connection reset before it
                    // was accepted: the listener itself is fine. A pause
                    // lets descriptors free up instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = table.admit(peer.ip(), bounds.max_connections_per_ip) else {
            tracing::debug!(%peer, "refused: too many connections from this address");
            drop(stream);
            continue;
        };
        let routes = routes.clone();
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        let plain = plain.clone();
        connections.spawn(async move {
            let _ = stream.set_nodelay(true);
            set_send_timeout(&stream, bounds.send_timeout);
            match (tls, plain) {
                (Some(tls), Some(plain)) => {
                    match tls.accept(stream, bounds.header_read_timeout).await {
                        Accepted::Tls(s) => serve_one(s, peer, routes, bounds, shutdown).await,
                        Accepted::Plain(s) => serve_one(s, peer, plain, bounds, shutdown).await,
                        Accepted::Gone => {}
                    }
                }
                _ => serve_one(stream, peer, routes, bounds, shutdown).await,
            }
            drop(slot);
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

#[cfg(any(target_os = "linux", target_os = "android", target_os = "fuchsia"))]
fn set_send_timeout(stream: &tokio::net::TcpStream, timeout: Duration) {
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(timeout)) {
        tracing::debug!(error = %e, "TCP_USER_TIMEOUT not set");
    }
}

/// Elsewhere the deadlines above TCP are all there is.
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "fuchsia")))]
fn set_send_timeout(_: &tokio::net::TcpStream, _: Duration) {}

async fn serve_one<S>(
    stream: S,
    peer: SocketAddr,
    routes: axum::Router,
    bounds: Bounds,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let routes = routes.clone();
        async move {
            let response = routes
                .oneshot(req.map(axum::body::Body::new))
                .await
                .unwrap_or_else(|never: Infallible| match never {});
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(bounds.header_read_timeout);
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_past_its_cap_until_one_of_its_connections_closes() {
        let table = Arc::new(PerAddress::default());
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let first = table.admit(a, 2).expect("first");
        let _second = table.admit(a, 2).expect("second");
        assert!(table.admit(a, 2).is_none(), "third from the same address");
        assert!(
            table.admit(b, 2).is_some(),
            "another address has its own count"
        );
        drop(first);
        assert!(table.admit(a, 2).is_some(), "a slot freed");
        assert!(table.admit(a, 0).is_some(), "0 is no cap");
    }
}
