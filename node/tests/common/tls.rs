//! Clients of a node's TLS port (or of a proxy's): a CA of the test's
//! own, and `https://`, `wss://` and TLS clients that trust it alone.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chat_protocol::Codec;
use chat_protocol::ServerFrame;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::cluster::make_certs;
use super::{eventually, exchange, try_connect_to, Client, TestUser};

/// A CA and a certificate for 127.0.0.1 it signed.
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

pub fn issue(dir: &Path, ca_name: &str) -> Issued {
    let [cert, key, ca] = make_certs(dir, ca_name);
    Issued { cert, key, ca }
}

/// A client that trusts `ca` alone and speaks HTTP/1.1.
pub fn trusting(ca: &Path) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A TLS session as a client trusting `ca`: the protocol agreed by ALPN
/// and the certificate the node presented, or why the handshake failed.
pub async fn handshake(
    addr: SocketAddr,
    ca: &Path,
) -> Result<(Vec<u8>, CertificateDer<'static>), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::IpAddress(addr.ip().into());
    let tls = tokio_rustls::TlsConnector::from(trusting(ca))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (_, session) = tls.get_ref();
    let alpn = session.alpn_protocol().unwrap_or_default().to_vec();
    let served = session.peer_certificates().expect("a certificate")[0].clone();
    Ok((alpn, served.into_owned()))
}

/// Waits until a client trusting `ca` completes a handshake.
pub async fn until_trusted(addr: SocketAddr, ca: &Path, what: &str) {
    eventually(
        what,
        || async move { handshake(addr, ca).await.map(|_| ()) },
    )
    .await;
}

pub fn first_cert(path: &Path) -> CertificateDer<'static> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
}

/// A `wss://` connection as a client trusting `ca`.
pub async fn wss(addr: SocketAddr, ca: &Path, token: &str) -> Result<Client, String> {
    let tls = tokio_tungstenite::Connector::Rustls(trusting(ca));
    try_connect_to(
        &format!("wss://{addr}/v1/ws"),
        Some(token),
        Codec::Json,
        Some(tls),
    )
    .await
    .map_err(|e| format!("{e:?}"))
}

/// An HTTP client that trusts `ca` alone.
pub fn https_client(ca: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .build()
        .unwrap()
}

/// Signs up over `https://` with a client trusting `ca`.
pub async fn register_https(addr: SocketAddr, ca: &Path, name: &str) -> TestUser {
    let res = https_client(ca)
        .post(format!("https://{addr}/v1/auth/register"))
        .header("content-type", "application/json")
        .body(
            serde_json::json!({"username": name, "password": "correct horse battery"}).to_string(),
        )
        .send()
        .await
        .expect("https reaches the node");
    assert_eq!(res.status(), 201);
    let v: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    TestUser {
        id: v["user"]["id"].as_str().unwrap().to_string(),
        access: v["access_token"].as_str().unwrap().to_string(),
        refresh: v["refresh_token"].as_str().unwrap().to_string(),
    }
}

/// A plain HTTP/1.1 request to the TLS port: status, Location, body.
pub async fn plain_get(addr: SocketAddr, path: &str) -> (u16, Option<String>, String) {
    let s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let (status, headers, body) = exchange(s, &req).await;
    let location = headers
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("location"))
        .map(|(_, v)| v);
    (status, location, body)
}

pub async fn says(c: &mut Client, body: &'static str) {
    c.event(move |f| matches!(f, ServerFrame::Message { message } if message.body == body))
        .await;
}
