//! Real `chat-node` processes: crash them with SIGKILL, drain them with
//! SIGTERM, restart them on the same data directory, and check that nothing
//! acknowledged is lost, repeated or reordered, and that accounts and the
//! development JWT secret survive.
//!
//! Every process is owned by a [`NodeProc`] guard that kills it when dropped,
//! so a failing test never leaks one; its log (stderr) goes to a file that is
//! printed when a test fails.

mod common;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use chat_protocol::{ClientFrame, Codec, ConversationId, Message, ReqId, ServerFrame};
use common::*;
use futures_util::SinkExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The HS256 secret given to nodes through the environment.
const SECRET: &str = "process-test-secret-0123456789abcdef-0123456789";
/// How long a node may take to print its `listening on` line.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// `shutdown.drain_timeout_secs` of the SIGTERM test.
const DRAIN_SECS: u64 = 10;
/// Sends beyond the default rate limit are fine here: the tests flood.
const NO_RATE_LIMIT: [(&str, &str); 2] = [
    ("CHAT__LIMITS__SENDS_PER_SECOND", "1000000"),
    ("CHAT__LIMITS__SEND_BURST", "1000000"),
];

/// A running `chat-node`; killed (SIGKILL) and reaped when dropped.
struct NodeProc {
    child: Option<Child>,
    addr: SocketAddr,
    log: PathBuf,
}

impl NodeProc {
    /// Starts the binary on a free port with `data` as its data directory,
    /// and waits (with a deadline) for the line announcing its address.
    async fn start(data: &Path, log: &Path, secret: Option<&str>, env: &[(&str, &str)]) -> Self {
        let (data, log) = (data.to_path_buf(), log.to_path_buf());
        let secret = secret.map(str::to_string);
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tokio::task::spawn_blocking(move || Self::start_blocking(&data, &log, secret, env))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    fn start_blocking(
        data: &Path,
        log: &Path,
        secret: Option<String>,
        env: Vec<(String, String)>,
    ) -> Self {
        let mut cmd = Command::new(node_binary());
        cmd.arg("--http")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                File::options()
                    .create(true)
                    .append(true)
                    .open(log)
                    .expect("log file"),
            ));
        // Only what this test sets configures the node.
        for (k, _) in std::env::vars() {
            if k.starts_with("CHAT__") || k == "CHAT_CONFIG" {
                cmd.env_remove(k);
            }
        }
        cmd.env("RUST_LOG", "info").env("NO_COLOR", "1");
        if let Some(s) = secret {
            cmd.env("CHAT__AUTH__JWT_SECRET", s);
        }
        cmd.envs(env);
        let mut child = cmd.spawn().expect("spawn chat-node");
        let stdout = child.stdout.take().expect("stdout");
        // The guard exists before any wait, so a panic below kills the child.
        let mut node = NodeProc {
            child: Some(child),
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            log: log.to_path_buf(),
        };
        // Read stdout on a thread (keeps draining it after the address line,
        // so the node never writes into a full or closed pipe).
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some((_, addr)) = line.split_once("listening on http://") {
                        node.addr = addr.trim().parse().expect("address in the listening line");
                        return node;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("chat-node printed no `listening on` line within {START_DEADLINE:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = node.child.as_mut().and_then(|c| c.wait().ok());
                    panic!("chat-node exited before listening: {status:?}")
                }
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, no drain; checks that the process died of it (not before).
    fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("reap");
        assert_eq!(
            status.signal(),
            Some(9),
            "chat-node died of SIGKILL, not of something else: {status:?}"
        );
    }

    /// Sends SIGTERM (with the `kill` utility: no signal crate needed).
    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM: {status:?}");
    }

    /// Waits until the process exits, at most `within`.
    async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            let child = self.child.as_mut().expect("running");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "chat-node still running {within:?} after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!(
                "--- last lines of {} ---\n{}",
                self.log.display(),
                tail.join("\n")
            );
        }
    }
}

/// A test's directory: the node's data, and its logs beside it.
struct Site {
    root: tempfile::TempDir,
    starts: usize,
}

impl Site {
    fn new() -> Self {
        Site {
            root: tempfile::tempdir().unwrap(),
            starts: 0,
        }
    }

    fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// Starts a node on this site's data directory, with its own log file.
    async fn start(&mut self, secret: Option<&str>, env: &[(&str, &str)]) -> NodeProc {
        self.starts += 1;
        let log = self.root.path().join(format!("node-{}.log", self.starts));
        NodeProc::start(&self.data(), &log, secret, env).await
    }
}

/// Sends a frame; false when the connection is gone (no panic: the node may
/// have been killed under it).
async fn try_send(c: &mut Client, frame: &ClientFrame) -> bool {
    let bytes = c.codec.encode(frame).unwrap();
    let msg = WsMessage::Text(String::from_utf8(bytes).unwrap().into());
    c.ws.send(msg).await.is_ok()
}

fn body_of(cmid: &str) -> String {
    format!("body of {cmid}")
}

/// What a pipelined run of sends saw.
#[derive(Default)]
struct Sent {
    /// Acknowledged messages, in the order of their `ok`.
    acked: Vec<Message>,
    /// Every client_msg_id written to the socket.
    written: Vec<String>,
    /// The connection ended before the run did.
    broken: bool,
}

/// Sends `count` messages `"{prefix}-{i}"`, keeping up to `window` unanswered,
/// until all are answered or the connection ends. Reports the number of
/// acknowledgements on `progress` as they come. Every reply must be `ok`.
async fn pipeline(
    c: &mut Client,
    conv: &ConversationId,
    prefix: &str,
    count: usize,
    window: usize,
    progress: Option<&tokio::sync::watch::Sender<usize>>,
) -> Sent {
    let mut out = Sent::default();
    let mut in_flight: HashMap<i64, String> = HashMap::new();
    let mut next = 0usize;
    loop {
        while in_flight.len() < window && next < count {
            let cmid = format!("{prefix}-{next}");
            let req = 1_000_000 + next as i64;
            let frame = with_req(frames::send(conv, &cmid, &body_of(&cmid)), ReqId::Int(req));
            if !try_send(c, &frame).await {
                out.broken = true;
                return out;
            }
            out.written.push(cmid.clone());
            in_flight.insert(req, cmid);
            next += 1;
        }
        if in_flight.is_empty() {
            return out;
        }
        let Some(frame) = c.recv().await else {
            out.broken = true;
            return out;
        };
        match frame {
            ServerFrame::Ok(ok) => {
                let Some(ReqId::Int(r)) = ok.req else {
                    continue;
                };
                let Some(cmid) = in_flight.remove(&r) else {
                    continue;
                };
                let m = ok.message.expect("a send's ok carries the message");
                assert_eq!(m.client_msg_id.as_str(), cmid, "reply for another send");
                assert_eq!(m.body, body_of(&cmid));
                out.acked.push(m);
                if let Some(p) = progress {
                    p.send_replace(out.acked.len());
                }
            }
            ServerFrame::Error {
                req: Some(ReqId::Int(r)),
                code,
                message,
                ..
            } if in_flight.contains_key(&r) => {
                panic!("send {} refused: {code:?} {message}", in_flight[&r])
            }
            _ => {} // events
        }
    }
}

/// The whole history, walked from the newest page down with `before`
/// (WebSocket `history`); ascending.
async fn walk_back(c: &mut Client, conv: &ConversationId) -> Vec<Message> {
    let mut pages = Vec::new();
    let mut before = None;
    for _ in 0..10_000 {
        let reply = ok(c
            .request(frames::history(conv, before, None, Some(200)))
            .await);
        let page = reply.messages.expect("messages");
        let more = reply.more.expect("more");
        assert!(page.len() <= 200);
        if more {
            assert!(!page.is_empty(), "an empty page says there is more");
        }
        before = page.first().map(|m| m.id.0);
        pages.push(page);
        if !more {
            return pages.into_iter().rev().flatten().collect();
        }
    }
    panic!("history does not end");
}

/// The whole history, walked from the oldest up with `after` (HTTP).
async fn walk_forward_http(addr: SocketAddr, conv: &ConversationId, token: &str) -> Vec<Message> {
    let mut all = Vec::new();
    let mut after = 0u64;
    for _ in 0..10_000 {
        let path = format!("/v1/conversations/{conv}/messages?after={after}&limit=200");
        let (status, body) = http(addr, "GET", &path, Some(token), None).await;
        assert_eq!(status, 200, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let page: Vec<Message> = serde_json::from_value(v["messages"].clone()).unwrap();
        let more = v["more"].as_bool().expect("more");
        if more {
            assert!(!page.is_empty(), "an empty page says there is more");
        }
        if let Some(last) = page.last() {
            after = last.id.0;
        }
        all.extend(page);
        if !more {
            return all;
        }
    }
    panic!("history does not end");
}

/// Ids strictly increase, no (sender, client_msg_id) is stored twice, and
/// every acknowledged message is in `history` exactly as acknowledged.
#[track_caller]
fn check_history(history: &[Message], acked: &[Message]) {
    for w in history.windows(2) {
        assert!(
            w[0].id < w[1].id,
            "ids do not strictly increase: {} then {}",
            w[0].id.0,
            w[1].id.0
        );
    }
    let mut keys = HashSet::new();
    for m in history {
        assert!(
            keys.insert((m.sender.clone(), m.client_msg_id.clone())),
            "{} stored twice",
            m.client_msg_id.as_str()
        );
    }
    let by_id: HashMap<u64, &Message> = history.iter().map(|m| (m.id.0, m)).collect();
    let missing: Vec<&str> = acked
        .iter()
        .filter(|m| by_id.get(&m.id.0) != Some(m))
        .map(|m| m.client_msg_id.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages are not in history as acknowledged: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );
}

/// Both walks of the history agree; returns it.
async fn full_history(
    node: &NodeProc,
    c: &mut Client,
    conv: &ConversationId,
    token: &str,
) -> Vec<Message> {
    let back = walk_back(c, conv).await;
    let forward = walk_forward_http(node.addr, conv, token).await;
    assert!(
        back == forward,
        "readers disagree: {} messages walking back, {} walking forward",
        back.len(),
        forward.len()
    );
    back
}

/// Two users and their group; Alice connected.
async fn alice_and_bob(node: &NodeProc) -> (TestUser, TestUser, Client, ConversationId) {
    let alice = register(node.addr, &unique("alice")).await;
    let bob = register(node.addr, &unique("bob")).await;
    let mut a = connect(node.addr, &alice.access, Codec::Json).await;
    let conv = group(&mut a, &[&bob.id]).await;
    (alice, bob, a, conv)
}

#[tokio::test]
async fn kill_9_after_acknowledgements_loses_nothing() {
    kill_9_after_acknowledgements(&[]).await;
}

/// `storage.durability = "buffered"` claims to survive a process crash too
/// (written to the OS before the acknowledgement, fsynced later).
#[tokio::test]
async fn kill_9_after_acknowledgements_loses_nothing_buffered() {
    kill_9_after_acknowledgements(&[("CHAT__STORAGE__DURABILITY", "buffered")]).await;
}

async fn kill_9_after_acknowledgements(env: &[(&str, &str)]) {
    let mut site = Site::new();
    let mut node = site.start(Some(SECRET), env).await;
    let (alice, bob, mut a, conv) = alice_and_bob(&node).await;

    let sent = pipeline(&mut a, &conv, "k", 500, 128, None).await;
    assert!(!sent.broken);
    assert_eq!(sent.acked.len(), 500, "every send acknowledged");

    // Crash right after the last acknowledgement: no drain, no flush.
    node.kill9();
    drop(a);
    let node = site.start(Some(SECRET), env).await;
    let mut a = connect(node.addr, &alice.access, Codec::Json).await;
    let history = full_history(&node, &mut a, &conv, &bob.access).await;
    check_history(&history, &sent.acked);
    assert_eq!(history.len(), 500, "nothing but the acknowledged messages");
    let last = history.last().unwrap().id;

    // A new send gets an id above every old one.
    let new = ok(a.request(frames::send(&conv, "after-restart", "new")).await)
        .message
        .unwrap();
    assert!(new.id > last, "{} is not above {}", new.id.0, last.0);

    // A retry of an acknowledged send answers the same message, once.
    let first = sent
        .acked
        .iter()
        .find(|m| m.client_msg_id.as_str() == "k-17")
        .unwrap();
    let retried = ok(a
        .request(frames::send(&conv, "k-17", &body_of("k-17")))
        .await)
    .message
    .unwrap();
    assert_eq!(&retried, first, "the retry answers the first message");
    let history = full_history(&node, &mut a, &conv, &bob.access).await;
    check_history(&history, &sent.acked);
    assert_eq!(history.len(), 501);
    assert_eq!(
        history
            .iter()
            .filter(|m| m.client_msg_id.as_str() == "k-17")
            .count(),
        1
    );
}

#[tokio::test]
async fn kill_9_during_traffic_loses_no_acknowledged_message() {
    let mut site = Site::new();
    let mut node = site.start(Some(SECRET), &NO_RATE_LIMIT).await;
    let (alice, bob, mut a, conv) = alice_and_bob(&node).await;

    let (progress, mut acks) = tokio::sync::watch::channel(0usize);
    let conv2 = conv.clone();
    let sender = tokio::spawn(async move {
        // Far more than can be sent before the kill: the kill ends it.
        pipeline(&mut a, &conv2, "t", 1_000_000, 64, Some(&progress)).await
    });
    let enough = tokio::time::timeout(Duration::from_secs(60), acks.wait_for(|n| *n >= 300))
        .await
        .expect("300 acknowledgements in time")
        .is_ok();
    if !enough {
        // The sender stopped early: show why.
        let sent = sender
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        panic!(
            "the sender stopped after {} acknowledgements",
            sent.acked.len()
        );
    }
    node.kill9();
    let sent = tokio::time::timeout(WAIT, sender)
        .await
        .expect("the sender notices the kill")
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    assert!(sent.broken, "the kill ended the connection");
    assert!(sent.acked.len() >= 300);
    let unanswered: Vec<&String> = {
        let acked: HashSet<&str> = sent
            .acked
            .iter()
            .map(|m| m.client_msg_id.as_str())
            .collect();
        sent.written
            .iter()
            .filter(|c| !acked.contains(c.as_str()))
            .collect()
    };

    let node = site.start(Some(SECRET), &NO_RATE_LIMIT).await;
    let mut a = connect(node.addr, &alice.access, Codec::Json).await;
    let history = full_history(&node, &mut a, &conv, &bob.access).await;
    check_history(&history, &sent.acked);
    assert!(
        history.len() <= sent.written.len(),
        "{} stored, {} sent",
        history.len(),
        sent.written.len()
    );
    let last = history.last().unwrap().id;

    // The client retries what was never answered (its outbox): each is then
    // stored exactly once, whether or not it had been stored before the kill.
    let mut retried = Vec::new();
    for cmid in &unanswered {
        let m = ok(a.request(frames::send(&conv, cmid, &body_of(cmid))).await)
            .message
            .unwrap();
        if let Some(old) = history
            .iter()
            .find(|h| h.client_msg_id.as_str() == cmid.as_str())
        {
            assert_eq!(&m, old, "a retry of a stored message answers it");
        } else {
            assert!(m.id > last, "a new message gets a new, higher id");
        }
        retried.push(m);
    }
    let history = full_history(&node, &mut a, &conv, &bob.access).await;
    check_history(&history, &sent.acked);
    check_history(&history, &retried);
    assert_eq!(
        history.len(),
        sent.written.len(),
        "every send stored exactly once"
    );
}

#[tokio::test]
async fn sigterm_closes_with_1001_exits_0_and_keeps_everything() {
    let mut site = Site::new();
    let drain = DRAIN_SECS.to_string();
    let env = [
        NO_RATE_LIMIT[0],
        NO_RATE_LIMIT[1],
        ("CHAT__SHUTDOWN__DRAIN_TIMEOUT_SECS", drain.as_str()),
    ];
    let mut node = site.start(Some(SECRET), &env).await;
    let (alice, bob, mut a, conv) = alice_and_bob(&node).await;
    let mut b = connect(node.addr, &bob.access, Codec::Json).await;

    let sent = pipeline(&mut a, &conv, "s", 200, 64, None).await;
    assert_eq!(sent.acked.len(), 200);
    let mut acked = sent.acked;
    // More sends in flight as the signal lands: those answered count too.
    let mut late = HashMap::new();
    for i in 0..100 {
        let cmid = format!("late-{i}");
        let frame = with_req(frames::send(&conv, &cmid, &body_of(&cmid)), ReqId::Int(i));
        assert!(try_send(&mut a, &frame).await);
        late.insert(i, cmid);
    }
    node.sigterm();
    let signalled = Instant::now();

    // Both clients get a close frame with 1001.
    while let Some(frame) = a.recv().await {
        if let ServerFrame::Ok(ok) = frame {
            if let Some(ReqId::Int(r)) = ok.req {
                if late.contains_key(&r) {
                    acked.push(ok.message.expect("message"));
                }
            }
        }
    }
    let code = a.closed.clone().flatten().map(|f| u16::from(f.code));
    assert_eq!(code, Some(1001), "the sender is closed with 1001");
    assert_eq!(b.closed_with().await, Some(1001), "the reader too");

    let status = node.wait_exit(Duration::from_secs(DRAIN_SECS)).await;
    assert_eq!(status.code(), Some(0), "clean exit: {status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(DRAIN_SECS));

    let node = site.start(Some(SECRET), &env).await;
    let mut a = connect(node.addr, &alice.access, Codec::Json).await;
    let history = full_history(&node, &mut a, &conv, &bob.access).await;
    check_history(&history, &acked);
    assert!(history.len() >= acked.len() && history.len() <= 300);
}

/// True when `token` passes authentication (an unknown conversation is then
/// 404 rather than 401).
async fn token_accepted(addr: SocketAddr, token: &str) -> bool {
    let (status, body) = http(
        addr,
        "GET",
        "/v1/conversations/g:not-there/messages",
        Some(token),
        None,
    )
    .await;
    match status {
        404 => true,
        401 => false,
        other => panic!("unexpected {other}: {body}"),
    }
}

#[tokio::test]
async fn restart_keeps_accounts_and_the_dev_secret() {
    let mut site = Site::new();
    // No CHAT__AUTH__JWT_SECRET: the node makes a development secret.
    let mut node = site.start(None, &[]).await;
    let (alice, bob, mut a, conv) = alice_and_bob(&node).await;
    let m = ok(a
        .request(frames::send(&conv, "before", "before the crash"))
        .await)
    .message
    .unwrap();
    assert!(
        site.data().join(chat_node::auth::DEV_SECRET_FILE).is_file(),
        "the dev secret is kept in the data dir"
    );
    node.kill9();
    drop(a);

    let node = site.start(None, &[]).await;
    // The password still logs in.
    let creds = serde_json::json!({"username": alice.id, "password": "correct horse battery"});
    let (status, body) = http(
        node.addr,
        "POST",
        "/v1/auth/login",
        None,
        Some(&creds.to_string()),
    )
    .await;
    assert_eq!(status, 200, "login after restart: {body}");
    // Tokens issued before the restart still work: over HTTP and WebSocket.
    assert!(token_accepted(node.addr, &alice.access).await);
    let history = walk_forward_http(node.addr, &conv, &bob.access).await;
    assert_eq!(history, vec![m]);
    let mut a = connect(node.addr, &alice.access, Codec::Json).await;
    ok(a.request(ClientFrame::Ping { req: None }).await);
    // And the refresh token.
    let (status, body) = http(
        node.addr,
        "POST",
        "/v1/auth/refresh",
        None,
        Some(&serde_json::json!({"refresh_token": alice.refresh}).to_string()),
    )
    .await;
    assert_eq!(status, 200, "refresh after restart: {body}");

    // Contrast: a node with another data dir has another secret and refuses
    // the token, so acceptance above came from the persisted secret.
    let mut other = Site::new();
    let stranger = other.start(None, &[]).await;
    assert!(!token_accepted(stranger.addr, &alice.access).await);
}
