//! Real `chat-node` processes for the process and cluster tests: start on a
//! free port, SIGKILL, SIGTERM, wait; and walks of a conversation's whole
//! history that check what was acknowledged is there.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use chat_protocol::{ClientFrame, ConversationId, Message, ReqId, ServerFrame};
use futures_util::SinkExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::*;

/// How long a node may take to print its `listening on` line.
pub const START_DEADLINE: Duration = Duration::from_secs(60);

/// How long a node may take to start: longer on a CQL cluster, where a
/// node of every test cluster waits for the one applying its keyspace's
/// migrations, and Cassandra applies the DDL of all those keyspaces one
/// statement at a time, with schema agreement across its nodes (a dozen
/// clusters starting at once on a 3-node CQL cluster at RF 3 took over a
/// minute for the last ones).
pub fn start_deadline() -> Duration {
    if std::env::var("CHAT_TEST_STORAGE").as_deref() == Ok("scylla") {
        START_DEADLINE * 3
    } else {
        START_DEADLINE
    }
}

/// A running `chat-node`; killed (SIGKILL) and reaped when dropped.
/// A build of `chat-node` to run: this one, or an earlier release's (the
/// rolling-upgrade test), with the settings that release does not know
/// (a node refuses a key it does not know) left out.
#[derive(Debug, Clone)]
pub struct Release {
    pub bin: PathBuf,
    pub unknown: Vec<String>,
}

impl Release {
    /// This build.
    pub fn this() -> Release {
        Release {
            bin: node_binary(),
            unknown: Vec::new(),
        }
    }
}

pub struct NodeProc {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl NodeProc {
    /// Starts the binary on a free port with `data` as its data directory,
    /// and waits (with a deadline) for the line announcing its address.
    pub async fn start(
        data: &Path,
        log: &Path,
        secret: Option<&str>,
        env: &[(&str, &str)],
    ) -> Self {
        let (data, log) = (data.to_path_buf(), log.to_path_buf());
        let secret = secret.map(str::to_string);
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let release = Release::this();
        tokio::task::spawn_blocking(move || {
            Self::start_blocking(&release, &data, &log, secret, env)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    pub fn start_blocking(
        release: &Release,
        data: &Path,
        log: &Path,
        secret: Option<String>,
        env: Vec<(String, String)>,
    ) -> Self {
        let mut cmd = Command::new(&release.bin);
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
        // CHAT_TEST_NODE_LOG raises what the nodes log, to diagnose a failure;
        // without it the node logs what it logs by default.
        match std::env::var("CHAT_TEST_NODE_LOG") {
            Ok(level) => cmd.env("RUST_LOG", level),
            Err(_) => cmd.env_remove("RUST_LOG"),
        };
        cmd.env("NO_COLOR", "1");
        cmd.envs(UNTHROTTLED_ENV);
        cmd.envs(storage_env());
        if let Some(s) = secret {
            cmd.env("CHAT__AUTH__JWT_SECRET", s);
        }
        cmd.envs(env);
        for k in &release.unknown {
            cmd.env_remove(k);
        }
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
        let within = start_deadline();
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let addr = line
                        .split_once("listening on http://")
                        .or_else(|| line.split_once("listening on https://"));
                    if let Some((_, addr)) = addr {
                        node.addr = addr.trim().parse().expect("address in the listening line");
                        return node;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("chat-node printed no `listening on` line within {within:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = node.child.as_mut().and_then(|c| c.wait().ok());
                    let log = std::fs::read_to_string(&node.log).unwrap_or_default();
                    // Kept past the test's temporary directory.
                    let kept = std::env::temp_dir()
                        .join(format!("chat-node-failed-start-{}.log", std::process::id()));
                    let _ = std::fs::copy(&node.log, &kept);
                    eprintln!(
                        "the node's log ({} bytes) is kept in {}",
                        log.len(),
                        kept.display()
                    );
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    panic!(
                        "chat-node exited before listening: {status:?}; its log ends:\n{}",
                        tail.join("\n")
                    )
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, no drain; checks that the process died of it (not before).
    pub fn kill9(&mut self) {
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
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends the signal named `name` (`HUP`, `TERM`...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name}: {status:?}");
    }

    /// Waits until the process exits, at most `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
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

/// Sends a frame; false when the connection is gone (no panic: the node may
/// have been killed under it).
pub async fn try_send(c: &mut Client, frame: &ClientFrame) -> bool {
    let bytes = c.codec.encode(frame).unwrap();
    let msg = if c.codec.is_binary() {
        WsMessage::Binary(bytes.into())
    } else {
        WsMessage::Text(String::from_utf8(bytes).unwrap().into())
    };
    c.ws.send(msg).await.is_ok()
}

pub fn body_of(cmid: &str) -> String {
    format!("body of {cmid}")
}

/// What a pipelined run of sends saw.
#[derive(Default)]
pub struct Sent {
    /// Acknowledged messages, in the order of their `ok`.
    pub acked: Vec<Message>,
    /// Every client_msg_id written to the socket.
    pub written: Vec<String>,
    /// The connection ended before the run did.
    pub broken: bool,
}

/// Sends `count` messages `"{prefix}-{i}"`, keeping up to `window` unanswered,
/// until all are answered or the connection ends. Reports the number of
/// acknowledgements on `progress` as they come. Every reply must be `ok`.
pub async fn pipeline(
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
pub async fn walk_back(c: &mut Client, conv: &ConversationId) -> Vec<Message> {
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
pub async fn walk_forward_http(
    addr: SocketAddr,
    conv: &ConversationId,
    token: &str,
) -> Vec<Message> {
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
pub fn check_history(history: &[Message], acked: &[Message]) {
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
pub async fn full_history(
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

pub use chat_testkit::free_port;

/// A real `redis-server` on a free loopback port, killed on drop.
/// `scripts/test.sh` installs it.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> Self {
        let mut r = RedisServer {
            port: free_port(),
            child: None,
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on the same port, empty.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}); scripts/test.sh installs it")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `cmid` until it is acknowledged, moving to another of `nodes` when
/// the connection breaks; the acknowledged message.
pub async fn send_retrying(
    c: &mut Client,
    nodes: &[SocketAddr],
    token: &str,
    conv: &ConversationId,
    cmid: &str,
) -> Message {
    let frame = frames::send(conv, cmid, &body_of(cmid));
    request_retrying(c, nodes, token, frame, cmid)
        .await
        .message
        .expect("message in ok")
}

/// Asks `frame` until it is answered `ok` (what a client does with a
/// request that is safe to repeat: a send with its `client_msg_id`, an
/// edit, a delete, a reaction), backing off on `unavailable` and moving to
/// another of `nodes` when the connection breaks.
pub async fn request_retrying(
    c: &mut Client,
    nodes: &[SocketAddr],
    token: &str,
    frame: chat_protocol::ClientFrame,
    what: &str,
) -> chat_protocol::OkReply {
    let mut attempt = 0;
    loop {
        attempt += 1;
        assert!(attempt < 200, "{what} never acknowledged");
        let frame = with_req(frame.clone(), chat_protocol::ReqId::Int(attempt));
        if try_send(c, &frame).await {
            if let Some(reply) = next_reply(c).await {
                match ok_or_back_off(reply, what).await {
                    Some(ok) => return ok,
                    None => continue,
                }
            }
        }
        // The connection broke: move to another node.
        *c = reconnect(nodes, token, attempt as usize).await;
    }
}

/// The next reply (events are skipped), or None when the connection ends
/// or stays silent for 30 s (a node busy taking a conversation over can
/// take seconds; a client then gives the connection up and retries).
pub async fn next_reply(c: &mut Client) -> Option<ServerFrame> {
    loop {
        let f = c.recv_within(Duration::from_secs(30)).await.ok()??;
        if matches!(f, ServerFrame::Ok(_) | ServerFrame::Error { .. }) {
            return Some(f);
        }
    }
}

/// Connects to the first node of `nodes` (starting at `start`) that accepts.
pub async fn reconnect(nodes: &[SocketAddr], token: &str, start: usize) -> Client {
    let next = std::sync::atomic::AtomicUsize::new(start);
    eventually_within("a node accepts a connection", START_DEADLINE, || {
        let at = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let addr = nodes[at % nodes.len()];
        async move {
            try_connect(addr, Some(token), Codec::Json)
                .await
                .map_err(|code| format!("{addr} refused: {code:?}"))
        }
    })
    .await
}

/// One node's data directory, run as a process several times (each start
/// with its own log file), and the `chat-node admin` commands run on it in
/// between.
pub struct Site {
    pub root: tempfile::TempDir,
    starts: usize,
}

impl Site {
    pub fn new() -> Self {
        Site {
            root: tempfile::tempdir().unwrap(),
            starts: 0,
        }
    }

    pub fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// Starts a node on this site's data directory, with its own log file.
    pub async fn start(&mut self, secret: Option<&str>, env: &[(&str, &str)]) -> NodeProc {
        self.starts += 1;
        let log = self.root.path().join(format!("node-{}.log", self.starts));
        NodeProc::start(&self.data(), &log, secret, env).await
    }

    /// Stops `node` with SIGTERM and checks it exits cleanly.
    pub async fn stop(&self, mut node: NodeProc) {
        node.sigterm();
        let exit = node.wait_exit(Duration::from_secs(30)).await;
        assert!(exit.success(), "a clean exit: {exit:?}");
    }

    /// `chat-node admin ARGS` on the node's data, `stdin` on its input.
    pub fn admin(&self, args: &[&str], env: &[(&str, &str)], stdin: &str) -> std::process::Output {
        let mut child = Command::new(super::node_binary())
            .arg("--data-dir")
            .arg(self.data())
            .arg("admin")
            .args(args)
            .envs(super::storage_env())
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run chat-node admin");
        {
            use std::io::Write;
            let mut input = child.stdin.take().unwrap();
            input.write_all(stdin.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    }
}
