//! Users and their tokens. For the chat target a user is either registered
//! over HTTP (`POST /v1/auth/register`, argon2: tens of milliseconds of node
//! CPU each, so slow for thousands of users) or, when the node's HS256 secret
//! is known, given a token minted here; the node creates unknown users on
//! their first authenticated request, as it does for an outside identity
//! provider. Centrifugo checks the same kind of token (HS256, `sub` the
//! user), signed with its `client.token.hmac_secret_key`. The other
//! baselines check nothing: the token is the user name.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cli::{RunArgs, Target};

/// Registrations in flight at once: argon2 runs on the node's blocking pool,
/// more would only queue there.
const REGISTER_CONCURRENCY: usize = 8;
/// Lifetime of minted tokens: longer than any run.
const MINTED_TTL_SECS: u64 = 24 * 3600;

/// A prefix unique to this run, so user names never collide with a previous
/// run against the same data directory.
pub fn run_prefix() -> String {
    let ms = chat_protocol::now_ms();
    let mut n = (ms ^ ((std::process::id() as u64) << 20)) % 36u64.pow(6);
    let mut s = String::from("b");
    for _ in 0..6 {
        let d = (n % 36) as u32;
        s.push(std::char::from_digit(d, 36).unwrap_or('0'));
        n /= 36;
    }
    s
}

#[derive(Serialize)]
struct MintedClaims<'a> {
    sub: &'a str,
    exp: u64,
    iat: u64,
}

/// An HS256 access token for `user`, as the node would issue it.
pub fn mint(secret: &str, user: &str) -> Result<String> {
    let iat = chat_protocol::now_ms() / 1000;
    let claims = MintedClaims {
        sub: user,
        exp: iat + MINTED_TTL_SECS,
        iat,
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .context("minting a token")
}

/// Tokens for `users` of a run against `args.target`, in order: minted
/// with `--jwt-secret`, or registered at the nodes round-robin.
pub async fn tokens(args: &RunArgs, users: &[String], nodes: &[SocketAddr]) -> Result<Vec<String>> {
    match (args.target, args.jwt_secret.as_deref()) {
        (Target::Socketio | Target::Ceiling, _) => Ok(users.to_vec()),
        (Target::Chat | Target::ChatSocketio | Target::Centrifugo, Some(secret)) => {
            users.iter().map(|u| mint(secret, u)).collect()
        }
        (Target::Centrifugo, None) => {
            bail!("the centrifugo target needs --jwt-secret (its client.token.hmac_secret_key)")
        }
        (Target::Chat | Target::ChatSocketio, None) => register_all(users, nodes, args.quiet).await,
    }
}

async fn register_all(users: &[String], nodes: &[SocketAddr], quiet: bool) -> Result<Vec<String>> {
    let done = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let users: Arc<[String]> = users.into();
    let nodes: Arc<[SocketAddr]> = nodes.into();
    let mut workers = Vec::new();
    for _ in 0..REGISTER_CONCURRENCY.min(users.len()) {
        let (done, next, users, nodes) = (done.clone(), next.clone(), users.clone(), nodes.clone());
        workers.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= users.len() {
                    return Ok::<_, anyhow::Error>(out);
                }
                let token = register(nodes[i % nodes.len()], &users[i]).await?;
                out.push((i, token));
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let progress = (!quiet).then(|| {
        let (done, total) = (done.clone(), users.len());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                eprintln!(
                    "registering users over HTTP: {}/{total} (pass --jwt-secret to skip argon2)",
                    done.load(Ordering::Relaxed)
                );
            }
        })
    });
    let mut tokens = vec![String::new(); users.len()];
    let mut failure = None;
    for w in workers {
        match w.await {
            Ok(Ok(list)) => {
                for (i, t) in list {
                    tokens[i] = t;
                }
            }
            Ok(Err(e)) => failure = Some(e),
            Err(e) => failure = Some(anyhow!("registration task failed: {e}")),
        }
    }
    if let Some(p) = progress {
        p.abort();
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(tokens),
    }
}

/// Registers `user`; returns its access token.
pub async fn register(node: SocketAddr, user: &str) -> Result<String> {
    let body = serde_json::json!({"username": user, "password": format!("{user}-bench-password")});
    let (status, text) = http(node, "POST", "/v1/auth/register", &body.to_string()).await?;
    if status != 201 {
        bail!(
            "registering {user} at {node}: HTTP {status}: {}",
            text.trim()
        );
    }
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("registering {user}: the answer is not JSON: {text}"))?;
    v["access_token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("registering {user}: no access_token in {text}"))
}

/// A minimal HTTP/1.1 request over a fresh connection: (status, body).
pub async fn http(node: SocketAddr, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
    http_as(node, method, path, None, body).await
}

/// [`http`] as the user `token` stands for, when given.
pub async fn http_as(
    node: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Result<(u16, String)> {
    let exchange = async {
        let mut s = TcpStream::connect(node)
            .await
            .with_context(|| format!("connecting to {node}"))?;
        let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {node}\r\nConnection: close\r\n{auth}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::with_capacity(1024);
        // Answers here are small; the cap only guards against a wrong port.
        s.take(1 << 20).read_to_end(&mut buf).await?;
        Ok::<_, anyhow::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(60), exchange)
        .await
        .map_err(|_| anyhow!("{method} {path} at {node} timed out"))??;
    let text = String::from_utf8_lossy(&buf);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("{method} {path} at {node}: not an HTTP answer"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || n > rest.len() {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_a_valid_id_prefix() {
        let p = run_prefix();
        assert_eq!(p.len(), 7);
        assert!(chat_protocol::UserId::new(&format!("{p}-1")).is_ok());
    }

    #[test]
    fn dechunks() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }

    #[test]
    fn mints_three_part_tokens() {
        let t = mint("a-secret-a-secret-a-secret-a-secret", "u1").unwrap();
        assert_eq!(t.split('.').count(), 3);
    }
}
