//! Mailpit (scripts/mailpit.sh), the real SMTP server the notification
//! tests mail to, read back through its HTTP API.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;

use serde_json::Value;
use tokio::process::{Child, Command};

use super::http;

/// A running Mailpit, killed when dropped.
pub struct Mailpit {
    /// Where it takes mail.
    pub smtp: SocketAddr,
    /// Its API.
    pub api: SocketAddr,
    _child: Child,
    _dir: tempfile::TempDir,
}

/// A mail as Mailpit shows it.
#[derive(Debug, Clone)]
pub struct Mail {
    pub id: String,
    pub to: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub headers: Value,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Mailpit binary (built on first use, cached).
async fn binary() -> String {
    let out = Command::new("bash")
        .arg(repo().join("scripts/mailpit.sh"))
        .arg("build")
        .stderr(Stdio::inherit())
        .output()
        .await
        .expect("scripts/mailpit.sh runs");
    assert!(out.status.success(), "scripts/mailpit.sh build failed");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

impl Mailpit {
    /// Starts one on free loopback ports.
    pub async fn start() -> Mailpit {
        Self::start_on(chat_testkit::free_port()).await
    }

    /// Starts one taking mail on `smtp_port`.
    pub async fn start_on(smtp_port: u16) -> Mailpit {
        let bin = binary().await;
        let dir = tempfile::tempdir().unwrap();
        let api_port = chat_testkit::free_port();
        let smtp: SocketAddr = format!("127.0.0.1:{smtp_port}").parse().unwrap();
        let api: SocketAddr = format!("127.0.0.1:{api_port}").parse().unwrap();
        let child = Command::new(bin)
            .arg("--smtp")
            .arg(smtp.to_string())
            .arg("--listen")
            .arg(api.to_string())
            .arg("--database")
            .arg(dir.path().join("mail.db"))
            .arg("--disable-version-check")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("mailpit starts");
        chat_testkit::eventually("mailpit answers", || async move {
            // Listening first: the client below expects a server.
            for addr in [api, smtp] {
                tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| format!("{addr}: {e}"))?;
            }
            let (status, body) = http(api, "GET", "/api/v1/messages", None, None).await;
            if status == 200 {
                Ok(())
            } else {
                Err(format!("{status} {body}"))
            }
        })
        .await;
        Mailpit {
            smtp,
            api,
            _child: child,
            _dir: dir,
        }
    }

    /// Every mail to `to`, oldest first.
    pub async fn mails_to(&self, to: &str) -> Vec<Mail> {
        let (status, body) = http(self.api, "GET", "/api/v1/messages?limit=500", None, None).await;
        assert_eq!(status, 200, "{body}");
        let list: Value = serde_json::from_str(&body).unwrap();
        let mut out = Vec::new();
        for m in list["messages"].as_array().into_iter().flatten().rev() {
            let addresses: Vec<String> = m["To"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a["Address"].as_str().map(str::to_owned))
                .collect();
            if !addresses.iter().any(|a| a == to) {
                continue;
            }
            let id = m["ID"].as_str().unwrap().to_owned();
            let (_, full) = http(
                self.api,
                "GET",
                &format!("/api/v1/message/{id}"),
                None,
                None,
            )
            .await;
            let full: Value = serde_json::from_str(&full).unwrap();
            let (_, headers) = http(
                self.api,
                "GET",
                &format!("/api/v1/message/{id}/headers"),
                None,
                None,
            )
            .await;
            out.push(Mail {
                id,
                to: addresses,
                subject: full["Subject"].as_str().unwrap_or_default().to_owned(),
                text: full["Text"].as_str().unwrap_or_default().to_owned(),
                html: full["HTML"].as_str().unwrap_or_default().to_owned(),
                headers: serde_json::from_str(&headers).unwrap_or(Value::Null),
            });
        }
        out
    }

    /// Waits until `to` has at least `n` mails; all of them.
    pub async fn wait_for(&self, to: &str, n: usize) -> Vec<Mail> {
        chat_testkit::eventually_within(
            &format!("{n} mails to {to}"),
            std::time::Duration::from_secs(30),
            || async move {
                let got = self.mails_to(to).await;
                if got.len() >= n {
                    Ok(got)
                } else {
                    Err(format!("{} so far", got.len()))
                }
            },
        )
        .await
    }
}

/// A node with an outbox worker (see `push::outbox_node`) that mails
/// through the SMTP server at `smtp`, its links under http://chat.test.
pub async fn mail_node(smtp: SocketAddr) -> (super::TestNode, super::push::Serial) {
    super::push::outbox_node(|c| {
        c.notifications.poll_ms = 20;
        c.notifications.smtp.url = format!("smtp://{smtp}");
        c.notifications.smtp.from = "Chat <chat@chat.test>".into();
        c.notifications.public_url = "http://chat.test".into();
    })
    .await
}
