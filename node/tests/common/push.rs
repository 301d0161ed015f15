//! The push-service stand-in (scripts/push-service.py) as tests drive it:
//! subscriptions it makes up as a browser would, the pushes it received,
//! decrypted and checked with code that is not the node's.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;

use serde_json::Value;
use tokio::process::{Child, Command};

use super::http;

/// A running stand-in, killed when dropped.
pub struct PushService {
    pub addr: SocketAddr,
    _child: Child,
}

/// A browser's subscription at the stand-in.
#[derive(Clone, Debug)]
pub struct Browser {
    /// The stand-in's id for it.
    pub id: String,
    /// What the browser hands the node (`endpoint`, `keys`).
    pub subscription: Value,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The tests' Python (a virtualenv with http-ece, py-vapid and pyotp),
/// made on first use by scripts/push-service.sh.
pub async fn test_python() -> String {
    let out = Command::new("bash")
        .arg(repo().join("scripts/push-service.sh"))
        .arg("python")
        .stderr(Stdio::inherit())
        .output()
        .await
        .expect("scripts/push-service.sh runs");
    assert!(
        out.status.success(),
        "scripts/push-service.sh python failed"
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

impl PushService {
    /// Starts one on a free loopback port (making its Python environment
    /// on first use).
    pub async fn start() -> PushService {
        let python = test_python().await;
        let port = chat_testkit::free_port();
        let child = Command::new(python)
            .arg(repo().join("scripts/push-service.py"))
            .arg("--port")
            .arg(port.to_string())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the push service starts");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        chat_testkit::eventually("the push service listens", || async move {
            tokio::net::TcpStream::connect(addr)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await;
        PushService {
            addr,
            _child: child,
        }
    }

    /// A new browser's subscription.
    pub async fn browser(&self) -> Browser {
        let (status, body) = http(self.addr, "POST", "/subscribe", None, Some("{}")).await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        Browser {
            id: v["id"].as_str().unwrap().to_owned(),
            subscription: serde_json::json!({"endpoint": v["endpoint"], "keys": v["keys"]}),
        }
    }

    /// Every push `browser` received, in order.
    pub async fn received(&self, browser: &Browser) -> Vec<Value> {
        let path = format!("/received/{}", browser.id);
        let (status, body) = http(self.addr, "GET", &path, None, None).await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Waits until `browser` has received at least `n` pushes; all of them.
    pub async fn wait_for(&self, browser: &Browser, n: usize) -> Vec<Value> {
        chat_testkit::eventually(&format!("{n} pushes to {}", browser.id), || async move {
            let got = self.received(browser).await;
            if got.len() >= n {
                Ok(got)
            } else {
                Err(format!("{} so far: {got:?}", got.len()))
            }
        })
        .await
    }

    /// Answers the next `times` pushes to `browser` with `status`.
    pub async fn fail(&self, browser: &Browser, status: u16, times: u32) {
        let body = serde_json::json!({"status": status, "times": times}).to_string();
        let path = format!("/fail/{}", browser.id);
        let (code, text) = http(self.addr, "POST", &path, None, Some(&body)).await;
        assert_eq!(code, 204, "{text}");
    }

    /// Makes a webhook receiver `name` checking signatures with `secret`;
    /// its URL.
    pub async fn hook(&self, name: &str, secret: &str) -> String {
        let body = serde_json::json!({ "secret": secret }).to_string();
        let (code, text) = http(
            self.addr,
            "POST",
            &format!("/hooks/{name}"),
            None,
            Some(&body),
        )
        .await;
        assert_eq!(code, 204, "{text}");
        format!("http://{}/hook/{name}", self.addr)
    }

    /// Every delivery to hook `name`, in order.
    pub async fn deliveries(&self, name: &str) -> Vec<Value> {
        let (status, body) =
            http(self.addr, "GET", &format!("/deliveries/{name}"), None, None).await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Waits until hook `name` has had at least `n` deliveries; all of them.
    pub async fn wait_deliveries(&self, name: &str, n: usize) -> Vec<Value> {
        chat_testkit::eventually(&format!("{n} deliveries to {name}"), || async move {
            let got = self.deliveries(name).await;
            if got.len() >= n {
                Ok(got)
            } else {
                Err(format!("{} so far: {got:?}", got.len()))
            }
        })
        .await
    }

    /// Fails the next `times` deliveries to hook `name` with `status`.
    pub async fn fail_hook(&self, name: &str, status: u16, times: u32) {
        let body = serde_json::json!({"status": status, "times": times}).to_string();
        let (code, text) = http(
            self.addr,
            "POST",
            &format!("/fail/{name}"),
            None,
            Some(&body),
        )
        .await;
        assert_eq!(code, 204, "{text}");
    }

    /// Pushes that failed the stand-in's checks (VAPID, encryption).
    pub async fn errors(&self) -> Vec<String> {
        let (_, body) = http(self.addr, "GET", "/errors", None, None).await;
        serde_json::from_str(&body).unwrap()
    }
}

/// Held by a test of notifications on ScyllaDB while it runs.
pub type Serial = Option<tokio::sync::MutexGuard<'static, ()>>;

/// A node for a test of notifications, with `tweak` applied. On ScyllaDB
/// these tests run one at a time, on a keyspace of their own: nodes that
/// are not clustered each work the whole outbox of their keyspace with
/// their own idea of who is online, so two tests' nodes on one keyspace
/// would notify each other's users.
pub async fn outbox_node(tweak: impl FnOnce(&mut chat_node::Config)) -> (super::TestNode, Serial) {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let scylla = std::env::var("CHAT_TEST_STORAGE").as_deref() == Ok("scylla");
    let serial = if scylla {
        Some(SERIAL.lock().await)
    } else {
        None
    };
    let node = super::TestNode::start_with(|c| {
        if scylla {
            c.storage.scylla.keyspace = "chat_notify".into();
        }
        tweak(c);
    })
    .await;
    (node, serial)
}
