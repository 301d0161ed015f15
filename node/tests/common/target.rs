//! A `chat-node` process under attack, and the bound on its memory.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::eventually;
use super::procs::NodeProc;
use super::Client;

/// How much a node's resident memory may grow under any one attack.
pub const MEMORY_BOUND: u64 = 128 << 20;

/// A node process in its own directory.
pub struct Target {
    pub node: NodeProc,
    _dir: tempfile::TempDir,
}

impl Target {
    /// A node whose tokens are signed with `secret`.
    pub async fn start(secret: &str, env: &[(&str, &str)]) -> Target {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let log = dir.path().join("node.log");
        let node = NodeProc::start(&data, &log, Some(secret), env).await;
        Target { node, _dir: dir }
    }

    pub fn addr(&self) -> SocketAddr {
        self.node.addr
    }

    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.node.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc status"))
    }

    pub fn rss(&self) -> u64 {
        self.status_kib("VmRSS:") << 10
    }

    /// Starts measuring the peak from now: returns the resident memory.
    pub fn mark(&self) -> u64 {
        // 5 resets the peak resident size (VmHWM) to the current one.
        std::fs::write(format!("/proc/{}/clear_refs", self.node.pid()), "5").unwrap();
        self.rss()
    }

    /// The peak resident memory since [`Target::mark`].
    pub fn peak(&self) -> u64 {
        self.status_kib("VmHWM:") << 10
    }

    /// The memory bound held during the attack, and holds once it is over.
    pub async fn assert_bounded(&self, what: &str, before: u64) {
        let peak = self.peak();
        assert!(
            peak <= before + MEMORY_BOUND,
            "{what}: the node grew from {} MiB to a peak of {} MiB",
            before >> 20,
            peak >> 20
        );
        eventually(&format!("{what}: memory back within the bound"), || async {
            let now = self.rss();
            (now <= before + MEMORY_BOUND).then_some(()).ok_or(format!(
                "{} MiB, from {} MiB",
                now >> 20,
                before >> 20
            ))
        })
        .await;
    }
}

/// Pipelines one request (a JSON text frame) without reading a reply,
/// until the node stops reading (a write blocks for 2 s) or 5 s pass;
/// returns how many went out.
pub async fn pipeline_unread(c: Client, frame: String) -> usize {
    let (mut sink, _never_read) = c.ws.split();
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(5) && n < 5_000 {
        let send = sink.send(WsMessage::Text(frame.clone().into()));
        match tokio::time::timeout(Duration::from_secs(2), send).await {
            Ok(Ok(())) => n += 1,
            _ => break,
        }
    }
    n
}
