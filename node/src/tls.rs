//! TLS for clients on the node's own port (`[listen] tls_cert`, `tls_key`):
//! `https://` and `wss://` with no proxy in front.
//!
//! The certificate is read again on SIGHUP and when either file changes
//! (checked every `tls_watch_secs`), so a renewed certificate (certbot, a
//! mounted secret) is served without a restart: connections already open
//! keep the session they made, new ones get the new certificate. A reload
//! that fails (a half-written file, a key that does not match) keeps the
//! certificate in force and says why in the log.
//!
//! The port still answers plain HTTP, as `plain_http` says: a client that
//! typed `http://` or `ws://` gets a redirect or a clear refusal instead of
//! a reset connection. The first byte tells them apart: every TLS
//! connection opens with a handshake record (0x16), and no HTTP method
//! starts with that byte.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::{ListenSection, PlainHttp};

/// The first byte of a TLS record that carries a handshake.
const HANDSHAKE: u8 = 0x16;

/// Why the client TLS files are unusable.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// One of the pair is set.
    #[error("listen.tls_cert and listen.tls_key go together")]
    Half,
    /// A file cannot be read or holds no usable PEM.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The key is not the certificate's (or not a key rustls can sign with).
    #[error("listen.tls_key does not go with listen.tls_cert: {0}")]
    Key(String),
}

/// The certificate in force, swapped whole on reload; handshakes read it.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.0
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

/// A connection's first bytes, read.
pub enum Accepted {
    /// A TLS session, handshake done.
    Tls(Box<TlsStream<TcpStream>>),
    /// Plain HTTP on the TLS port.
    Plain(TcpStream),
    /// Closed, timed out or a failed handshake (logged at debug: scanners
    /// and wrong clients are routine on a public port).
    Gone,
}

/// Client TLS: the acceptor and the files it reloads from.
pub struct ClientTls {
    acceptor: TlsAcceptor,
    current: Arc<Current>,
    provider: Arc<CryptoProvider>,
    cert: PathBuf,
    key: PathBuf,
    plain: PlainHttp,
}

impl ClientTls {
    /// Reads `[listen]`'s certificate and key; `None` when TLS is off.
    pub fn load(listen: &ListenSection) -> Result<Option<Arc<ClientTls>>, TlsError> {
        let (cert, key) = match (&listen.tls_cert, &listen.tls_key) {
            (None, None) => return Ok(None),
            (Some(c), Some(k)) => (c.clone(), k.clone()),
            _ => return Err(TlsError::Half),
        };
        let builder = ServerConfig::builder();
        let provider = builder.crypto_provider().clone();
        let first = read(&cert, &key, &provider)?;
        let current = Arc::new(Current(RwLock::new(Arc::new(first))));
        let mut config = builder
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        // The WebSocket upgrade is an HTTP/1.1 request; a client that can
        // only speak h2 is refused in the handshake, not after it.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(Arc::new(ClientTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            current,
            provider,
            cert,
            key,
            plain: listen.plain_http,
        })))
    }

    /// Reads the files again; the certificate in force stays on an error.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = read(&self.cert, &self.key, &self.provider)?;
        *self
            .current
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(fresh);
        Ok(())
    }

    /// The certificate new connections get (DER, end entity first).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .cert
            .clone()
    }

    /// Reloads on SIGHUP, and when the files change if `every` is not
    /// zero, until `stop`.
    pub fn watch(self: &Arc<Self>, every: Duration, stop: CancellationToken) {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut hangup = match tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::hangup(),
            ) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "no SIGHUP handler: certificate reloads by file change only");
                    None
                }
            };
            let mut seen = tls.stamp();
            // A zero period would spin; such a watch never fires instead.
            let period = if every.is_zero() {
                Duration::from_secs(u64::from(u32::MAX))
            } else {
                every
            };
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let why = tokio::select! {
                    _ = stop.cancelled() => return,
                    Some(()) = async { match hangup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    } } => "SIGHUP",
                    _ = tick.tick() => {
                        let now = tls.stamp();
                        // Unreadable (a file mid-replacement) or unchanged:
                        // look again next time.
                        if now.is_none() || now == seen {
                            continue;
                        }
                        seen = now;
                        "a changed file"
                    }
                };
                match tls.reload() {
                    Ok(()) => tracing::info!(cause = why, "client TLS certificate reloaded"),
                    Err(e) => tracing::error!(
                        cause = why,
                        error = %e,
                        "client TLS certificate not reloaded; the one in force stays"
                    ),
                }
            }
        });
    }

    /// When and how large the two files are, to notice a change (a renamed
    /// or re-linked file counts: the path is looked up each time).
    fn stamp(&self) -> Option<[(SystemTime, u64); 2]> {
        let one = |p: &Path| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        };
        Some([one(&self.cert)?, one(&self.key)?])
    }

    /// Tells a TLS connection from plain HTTP and completes the handshake,
    /// all `within` the time a client has for its first request.
    pub async fn accept(&self, stream: TcpStream, within: Duration) -> Accepted {
        let accepted = tokio::time::timeout(within, async {
            let mut first = [0u8; 1];
            match stream.peek(&mut first).await {
                Ok(1) if first[0] == HANDSHAKE => {}
                Ok(1) => return Accepted::Plain(stream),
                _ => return Accepted::Gone,
            }
            match self.acceptor.accept(stream).await {
                Ok(s) => Accepted::Tls(Box::new(s)),
                Err(e) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    Accepted::Gone
                }
            }
        })
        .await;
        accepted.unwrap_or(Accepted::Gone)
    }

    /// What plain HTTP requests to this port get (one each; the connection
    /// closes after it).
    pub fn plain_routes(&self) -> axum::Router {
        let mode = self.plain;
        axum::Router::new()
            .fallback(move |req: axum::extract::Request| async move { plain_answer(mode, &req) })
    }
}

/// The certificate chain and key from their PEM files, checked to match.
fn read(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let bad = |path: &Path, why: &dyn std::fmt::Display| TlsError::File {
        path: path.to_path_buf(),
        why: why.to_string(),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(cert, &e))?;
    if chain.is_empty() {
        return Err(bad(cert, &"no certificate in the file"));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
    CertifiedKey::from_der(chain, der, provider).map_err(|e| TlsError::Key(e.to_string()))
}

/// A redirect to `https://` on the same host and port, or the refusal.
fn plain_answer(mode: PlainHttp, req: &axum::extract::Request) -> Response {
    let close = (header::CONNECTION, HeaderValue::from_static("close"));
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| is_host(h));
    match (mode, host) {
        (PlainHttp::Redirect, Some(host)) => {
            let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
            match HeaderValue::try_from(format!("https://{host}{path}")) {
                Ok(to) => (
                    StatusCode::PERMANENT_REDIRECT,
                    [(header::LOCATION, to), close],
                )
                    .into_response(),
                Err(_) => refusal(close),
            }
        }
        _ => refusal(close),
    }
}

fn refusal(close: (header::HeaderName, HeaderValue)) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [close],
        "this port speaks TLS: use https:// or wss://\n",
    )
        .into_response()
}

/// A host and optional port, nothing that could turn the redirect into
/// another URL (no `/`, `@`, `\\` or spaces).
fn is_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(host: Option<&str>, uri: &str) -> axum::extract::Request {
        let mut b = axum::http::Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header(header::HOST, h);
        }
        b.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn plain_http_is_sent_to_the_same_place_over_https_or_refused() {
        let r = plain_answer(
            PlainHttp::Redirect,
            &request(Some("chat.example:8443"), "/v1/ws?x=1"),
        );
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            r.headers()[header::LOCATION],
            "https://chat.example:8443/v1/ws?x=1"
        );
        for host in [None, Some("evil.example/x"), Some("a@b"), Some("")] {
            let r = plain_answer(PlainHttp::Redirect, &request(host, "/"));
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{host:?}");
        }
        let r = plain_answer(PlainHttp::Refuse, &request(Some("chat.example"), "/"));
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(r.headers()[header::CONNECTION], "close");
    }

    #[test]
    fn half_a_pair_or_unreadable_files_are_refused_at_start() {
        let mut listen = ListenSection {
            tls_cert: Some("/nonexistent/cert.pem".into()),
            ..ListenSection::default()
        };
        assert!(matches!(ClientTls::load(&listen), Err(TlsError::Half)));
        listen.tls_key = Some("/nonexistent/key.pem".into());
        assert!(matches!(
            ClientTls::load(&listen),
            Err(TlsError::File { .. })
        ));
        assert!(ClientTls::load(&ListenSection::default())
            .unwrap()
            .is_none());
    }
}
