//! A push service for the notification runs (`--offline-share`): the
//! endpoint every offline member's push subscription names. It takes each
//! push the node sends (an RFC 8030 POST with an encrypted body) and answers
//! `201 Created` the way a real push service does, counting what came; it
//! does not decrypt (the node's tests check the encryption against an
//! independent implementation): here only the rate and the node's CPU matter.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;

/// A running sink: its address and what it has taken.
pub struct PushSink {
    pub addr: SocketAddr,
    received: Arc<AtomicU64>,
}

impl PushSink {
    /// Starts a sink on `127.0.0.1`, on a free port.
    pub async fn start() -> Result<PushSink> {
        let received = Arc::new(AtomicU64::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the push sink")?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/push/{user}", post(take))
            .with_state(received.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("push sink stopped: {e}");
            }
        });
        Ok(PushSink { addr, received })
    }

    /// The endpoint for `user`'s subscription.
    pub fn endpoint(&self, user: &str) -> String {
        format!("http://{}/push/{user}", self.addr)
    }

    /// Pushes taken so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

async fn take(State(received): State<Arc<AtomicU64>>, _body: axum::body::Bytes) -> StatusCode {
    received.fetch_add(1, Ordering::Relaxed);
    StatusCode::CREATED
}

/// A browser's keys for the subscriptions: the receiver's key pair of
/// RFC 8291's worked example (section 5). Every offline member uses the
/// same: the node still derives a fresh shared secret per push.
pub const P256DH: &str =
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
pub const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
