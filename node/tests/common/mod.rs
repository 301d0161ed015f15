//! Test harness: real nodes on free loopback ports, real HTTP and WebSocket
//! clients over real sockets. Waits are on conditions with deadlines, never
//! bare sleeps.
#![allow(dead_code, unreachable_pub)]

pub mod cluster;
pub mod cql;
pub mod mailpit;
pub mod media;
pub mod media_sweep;
pub mod oidc;
pub mod procs;
pub mod push;
pub mod target;
pub mod tls;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chat_node::{App, Config};
use chat_protocol::{ClientFrame, Codec, ReqId, ServerFrame};
// Not every test binary waits for each kind of condition.
#[allow(unused_imports)]
pub use chat_testkit::{eventually, eventually_within, until};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single expected event may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// A node running in this process.
pub struct TestNode {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    pub dir: Option<tempfile::TempDir>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The storage backend the node suites run on: embedded unless
/// `CHAT_TEST_STORAGE=scylla` (then the CQL server of `SCYLLA_NODES`, as
/// `scripts/test.sh` runs the suites that prove the guarantees a second
/// time), as environment overrides for nodes run as processes.
pub fn storage_env() -> Vec<(String, String)> {
    let mut env = backend_env();
    env.extend(search_env());
    env
}

/// The search backend the node suites run on: the embedded index unless
/// `CHAT_TEST_SEARCH=opensearch` (then the OpenSearch at `OPENSEARCH_URL`,
/// which `scripts/test.sh` starts with scripts/opensearch.sh).
pub fn search_env() -> Vec<(String, String)> {
    match std::env::var("CHAT_TEST_SEARCH").as_deref() {
        Ok("opensearch") => {
            let url = std::env::var("OPENSEARCH_URL").expect(
                "CHAT_TEST_SEARCH=opensearch needs OPENSEARCH_URL (scripts/opensearch.sh start)",
            );
            vec![
                ("CHAT__SEARCH__BACKEND".into(), "opensearch".into()),
                ("CHAT__SEARCH__OPENSEARCH__URL".into(), url),
            ]
        }
        Ok("embedded") | Err(_) => Vec::new(),
        Ok(other) => panic!("CHAT_TEST_SEARCH={other}: embedded or opensearch"),
    }
}

fn backend_env() -> Vec<(String, String)> {
    match std::env::var("CHAT_TEST_STORAGE").as_deref() {
        Ok("scylla") => {
            let nodes = std::env::var("SCYLLA_NODES")
                .expect("CHAT_TEST_STORAGE=scylla needs SCYLLA_NODES (scripts/cql.sh start)");
            // A test server on a busy two-core machine: generous timeouts.
            // CHAT_TEST_SCYLLA_RF=3 (a 3-node CQL cluster): 3 replicas, QUORUM.
            let mut env = match std::env::var("CHAT_TEST_SCYLLA_RF").ok().as_deref() {
                None | Some("1") => scylla_env(&nodes, "chat_e2e", 20_000),
                Some(rf) => {
                    let mut env = scylla_env(&nodes, &format!("chat_e2e_rf{rf}"), 20_000);
                    env.push((
                        "CHAT__STORAGE__SCYLLA__REPLICATION_FACTOR".into(),
                        rf.into(),
                    ));
                    env.push(("CHAT__STORAGE__SCYLLA__CONSISTENCY".into(), "quorum".into()));
                    env
                }
            };
            env.push(("CHAT__NODE__ID".into(), fresh_node_id().to_string()));
            env
        }
        Ok("embedded") | Err(_) => Vec::new(),
        Ok(other) => panic!("CHAT_TEST_STORAGE={other}: embedded or scylla"),
    }
}

/// A node id no other node of this test process has. Nodes sharing a
/// keyspace need distinct ids (ids of messages and groups embed it), as a
/// cluster's nodes have, and the tests of one process run their nodes at
/// once on one keyspace: two tests' nodes with one id, creating a group in
/// the same millisecond, would both pick the same group id.
pub fn fresh_node_id() -> u64 {
    node_id_at(fresh_node_ids(1), 0)
}

/// The first of `n` node ids no other node of this test process has (the
/// `k`th is `node_id_at(first, k)`).
pub fn fresh_node_ids(n: u64) -> u64 {
    static NEXT_ID: AtomicU64 = AtomicU64::new(0);
    NEXT_ID.fetch_add(n, Ordering::Relaxed)
}

/// The `k`th id of a block from [`fresh_node_ids`]: ids 100-999, which no
/// test names itself.
pub fn node_id_at(first: u64, k: usize) -> u64 {
    100 + (first + k as u64) % 900
}

/// Environment for a node on the CQL server at `nodes` (`host:port,...`).
pub fn scylla_env(nodes: &str, keyspace: &str, timeout_ms: u64) -> Vec<(String, String)> {
    let list: Vec<String> = nodes
        .split(',')
        .map(|n| format!("{:?}", n.trim()))
        .collect();
    // A node on ScyllaDB searches in OpenSearch (`search_env`) or not at
    // all: it refuses an index on its own disk.
    let search = match std::env::var("CHAT_TEST_SEARCH").as_deref() {
        Ok("opensearch") => search_env(),
        _ => vec![("CHAT__SEARCH__BACKEND".into(), "off".into())],
    };
    let mut env = vec![
        ("CHAT__STORAGE__BACKEND".into(), "scylla".into()),
        (
            "CHAT__STORAGE__SCYLLA__NODES".into(),
            format!("[{}]", list.join(",")),
        ),
        ("CHAT__STORAGE__SCYLLA__KEYSPACE".into(), keyspace.into()),
        (
            "CHAT__STORAGE__SCYLLA__REQUEST_TIMEOUT_MS".into(),
            timeout_ms.to_string(),
        ),
    ];
    env.extend(search);
    env
}

/// A config for tests: a fresh data dir, a fixed secret, free port, the
/// storage backend of [`storage_env`].
pub fn test_config(dir: &Path) -> Config {
    let mut c = Config::load(None, storage_env()).expect("test storage config");
    c.node.data_dir = dir.to_path_buf();
    c.listen.http = "127.0.0.1:0".parse().unwrap();
    c.auth.jwt_secret = Some("test-secret-test-secret-test-secret!".into());
    // Tests register and log in many users from one address: the limits on
    // that are out of the way unless a test is about them.
    c.auth.throttle = chat_node::auth::ThrottleConfig {
        logins_per_minute: 1_000_000,
        login_burst: 1_000_000,
        registrations_per_hour: 1_000_000,
        registration_burst: 1_000_000,
        ..Default::default()
    };
    c
}

/// The same as environment overrides, for nodes run as processes.
pub const UNTHROTTLED_ENV: [(&str, &str); 4] = [
    ("CHAT__AUTH__THROTTLE__LOGINS_PER_MINUTE", "1000000"),
    ("CHAT__AUTH__THROTTLE__LOGIN_BURST", "1000000"),
    ("CHAT__AUTH__THROTTLE__REGISTRATIONS_PER_HOUR", "1000000"),
    ("CHAT__AUTH__THROTTLE__REGISTRATION_BURST", "1000000"),
];

impl TestNode {
    pub async fn start() -> TestNode {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        tweak(&mut config);
        let mut node = Self::start_config(config).await;
        node.dir = Some(dir);
        node
    }

    pub async fn start_config(config: Config) -> TestNode {
        let listener = chat_node::serve::bind(config.listen.http, config.listen.backlog).unwrap();
        let addr = listener.local_addr().unwrap();
        let app = App::start(config).await.expect("node starts");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = app.clone();
        let task = tokio::spawn(async move {
            chat_node::serve::serve(serving, listener, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        let node = TestNode {
            addr,
            app,
            dir: None,
            stop: Some(stop),
            task: Some(task),
        };
        // On a shared store a node is ready once it holds its lease, which
        // a busy CQL server can take seconds to grant: wait for that (and
        // only that: some tests start a node whose other parts are down).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (status, body) = http(node.addr, "GET", "/readyz", None, None).await;
            if status == 200 || !body.contains("no lease on the database") {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the node is not ready after 60 s: {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        node
    }

    /// Drains the node and waits until it has stopped.
    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("node drains in time")
                .unwrap();
        }
    }

    pub async fn user(&self, name: &str) -> TestUser {
        register(self.addr, name).await
    }
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A name unique in this test process.
pub fn unique(prefix: &str) -> String {
    // The time of the process's first call too: a ScyllaDB keyspace keeps
    // the users of earlier runs, whose process ids may repeat.
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64 % 1_000_000)
            .unwrap_or(0)
    });
    format!(
        "{prefix}{}x{start}x{}",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    )
}

/// Signs a token with `secret` the way the node does (HS256, `sub`, `exp`).
pub fn token(secret: &str, sub: &str, exp: u64) -> String {
    let claims = serde_json::json!({ "sub": sub, "exp": exp, "iat": now_secs().min(exp) });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

pub fn now_secs() -> u64 {
    chat_protocol::now_ms() / 1000
}

/// A registered user.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub id: String,
    pub access: String,
    pub refresh: String,
}

pub async fn register(addr: SocketAddr, name: &str) -> TestUser {
    let body = serde_json::json!({"username": name, "password": "correct horse battery"});
    let (status, body) = http(
        addr,
        "POST",
        "/v1/auth/register",
        None,
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(status, 201, "register {name}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    TestUser {
        id: v["user"]["id"].as_str().unwrap().to_string(),
        access: v["access_token"].as_str().unwrap().to_string(),
        refresh: v["refresh_token"].as_str().unwrap().to_string(),
    }
}

/// Waits until the node's metric `name` (with its labels) reaches `at_least`.
pub async fn wait_metric(addr: SocketAddr, name: &str, at_least: f64) {
    chat_testkit::eventually(&format!("{name} >= {at_least}"), || async move {
        let n = metric(addr, name).await;
        if n >= at_least {
            Ok(())
        } else {
            Err(format!("{n}"))
        }
    })
    .await
}

/// One request with a JSON body; the answer's status and body as JSON (a
/// string when it is not JSON).
pub async fn call_json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string());
    let (status, text) = http(addr, method, path, token, body.as_deref()).await;
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, v)
}

/// A minimal HTTP/1.1 client over a real socket: (status, body).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let (status, _, body) = http_full(addr, method, path, token, body).await;
    (status, body)
}

/// Like [`http`], with the response headers (lower-cased names).
pub async fn http_full(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Vec<(String, String)>, String) {
    let s = TcpStream::connect(addr).await.unwrap();
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    exchange(s, &req).await
}

/// Writes a whole HTTP/1.1 request (made with `Connection: close`) on `s`
/// and reads the answer to its end: (status, headers with lower-cased
/// names, body, de-chunked). Tests that need their own request line,
/// headers or source address build the request and the socket themselves.
pub async fn exchange(mut s: TcpStream, req: &str) -> (u16, Vec<(String, String)>, String) {
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("http response in time")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, headers, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n..];
        s = s.strip_prefix("\r\n").unwrap_or(s);
    }
    out
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client speaking the protocol with one codec.
pub struct Client {
    pub ws: Ws,
    pub codec: Codec,
    /// Events (non-replies) received while waiting for replies.
    pub events: VecDeque<ServerFrame>,
    next_req: i64,
    /// The close frame, once the server closed.
    pub closed: Option<Option<CloseFrame>>,
}

/// Connects; panics unless the upgrade succeeds.
pub async fn connect(addr: SocketAddr, token: &str, codec: Codec) -> Client {
    try_connect(addr, Some(token), codec)
        .await
        .expect("websocket upgrade")
}

/// Connects, returning the HTTP status on a refused upgrade.
pub async fn try_connect(
    addr: SocketAddr,
    token: Option<&str>,
    codec: Codec,
) -> Result<Client, u16> {
    try_connect_to(&format!("ws://{addr}/v1/ws"), token, codec, None)
        .await
        .map_err(|e| e.unwrap_or_else(|e| panic!("connect failed: {e}")))
}

/// Connects to `url` (`ws://` or `wss://`, with `tls` for the latter):
/// the HTTP status of a refused upgrade, or the error of a connection
/// that failed before one (a TLS handshake, say).
pub async fn try_connect_to(
    url: &str,
    token: Option<&str>,
    codec: Codec,
    tls: Option<tokio_tungstenite::Connector>,
) -> Result<Client, Result<u16, String>> {
    let mut req = url.into_client_request().unwrap();
    if let Some(t) = token {
        req.headers_mut()
            .insert("Authorization", format!("Bearer {t}").parse().unwrap());
    }
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        codec.subprotocol().parse().unwrap(),
    );
    match tokio_tungstenite::connect_async_tls_with_config(req, None, false, tls).await {
        Ok((ws, resp)) => {
            let picked = resp
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            assert_eq!(
                picked.as_deref(),
                Some(codec.subprotocol()),
                "server picks the offered subprotocol"
            );
            Ok(Client {
                ws,
                codec,
                events: VecDeque::new(),
                next_req: 1,
                closed: None,
            })
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(Ok(resp.status().as_u16())),
        Err(e) => Err(Err(e.to_string())),
    }
}

impl Client {
    /// Sends a frame as-is.
    pub async fn send_frame(&mut self, frame: &ClientFrame) {
        let bytes = self.codec.encode(frame).unwrap();
        self.send_raw(bytes).await;
    }

    /// Sends raw bytes in the codec's frame type.
    pub async fn send_raw(&mut self, bytes: Vec<u8>) {
        let msg = if self.codec.is_binary() {
            WsMessage::Binary(bytes.into())
        } else {
            WsMessage::Text(String::from_utf8(bytes).expect("utf8").into())
        };
        self.ws.send(msg).await.unwrap();
    }

    /// The next frame from the server (reply or event), or None when closed.
    pub async fn recv(&mut self) -> Option<ServerFrame> {
        self.recv_within(WAIT).await.expect("a frame in time")
    }

    /// The next frame, `Ok(None)` when closed, `Err` when none comes within
    /// `within` (a client that gives up on a connection).
    pub async fn recv_within(
        &mut self,
        within: Duration,
    ) -> Result<Option<ServerFrame>, tokio::time::error::Elapsed> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next()).await?;
            return Ok(match msg {
                Some(Ok(WsMessage::Text(t))) => {
                    assert_eq!(
                        self.codec,
                        Codec::Json,
                        "text frame on a msgpack connection"
                    );
                    Some(self.codec.decode(t.as_bytes()).expect("valid server frame"))
                }
                Some(Ok(WsMessage::Binary(b))) => {
                    assert_eq!(
                        self.codec,
                        Codec::MsgPack,
                        "binary frame on a json connection"
                    );
                    Some(self.codec.decode(&b).expect("valid server frame"))
                }
                Some(Ok(WsMessage::Close(f))) => {
                    self.closed = Some(f);
                    None
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => {
                    if self.closed.is_none() {
                        self.closed = Some(None);
                    }
                    None
                }
            });
        }
    }

    /// Sends a request with a fresh `req` and returns its reply, keeping
    /// events that arrive meanwhile.
    pub async fn request(&mut self, frame: ClientFrame) -> ServerFrame {
        let req = ReqId::Int(self.next_req);
        self.next_req += 1;
        let frame = with_req(frame, req.clone());
        self.send_frame(&frame).await;
        self.reply_to(&req).await
    }

    /// Waits for the reply to `req`. Replies to pipelined requests come in
    /// any order, so one that came while waiting for another is taken from
    /// the frames kept meanwhile.
    pub async fn reply_to(&mut self, req: &ReqId) -> ServerFrame {
        let answers = |f: &ServerFrame| match f {
            ServerFrame::Ok(ok) => ok.req.as_ref() == Some(req),
            ServerFrame::Error { req: Some(r), .. } => r == req,
            _ => false,
        };
        if let Some(i) = self.events.iter().position(answers) {
            return self.events.remove(i).expect("a kept frame");
        }
        loop {
            let Some(f) = self.recv().await else {
                panic!(
                    "connection closed while waiting for a reply: {:?}",
                    self.closed
                )
            };
            if answers(&f) {
                return f;
            }
            self.events.push_back(f);
        }
    }

    /// The next event matching `pred` (earlier non-matching events are kept).
    pub async fn event(&mut self, pred: impl Fn(&ServerFrame) -> bool) -> ServerFrame {
        if let Some(pos) = self.events.iter().position(&pred) {
            return self.events.remove(pos).unwrap();
        }
        loop {
            let f = self
                .recv()
                .await
                .expect("connection open while waiting for an event");
            if pred(&f) {
                return f;
            }
            self.events.push_back(f);
        }
    }

    /// Waits until the server closes the connection; returns the close code.
    pub async fn closed_with(&mut self) -> Option<u16> {
        while self.closed.is_none() {
            let _ = self.recv().await;
        }
        self.closed.clone().flatten().map(|f| u16::from(f.code))
    }
}

/// Returns `frame` with its `req` set.
pub fn with_req(mut frame: ClientFrame, r: ReqId) -> ClientFrame {
    frame.set_req(Some(r));
    frame
}

/// The `ok` payload, or a panic naming the error.
pub fn ok(frame: ServerFrame) -> chat_protocol::OkReply {
    match frame {
        ServerFrame::Ok(ok) => ok,
        other => panic!("expected ok, got {other:?}"),
    }
}

/// Sends a message and gives back what was stored, doing with
/// `unavailable` what a client does: back off and send again under the same
/// `client_msg_id` (on a shared database a loaded node's lease can run out
/// during a write; the retry delivers the message whether that write landed
/// or not). Any other error fails the test.
pub async fn send_stored(
    c: &mut Client,
    conversation: &chat_protocol::ConversationId,
    cmid: &str,
    body: &str,
) -> chat_protocol::Message {
    for _ in 0..100 {
        let reply = c.request(frames::send(conversation, cmid, body)).await;
        if let Some(ok) = ok_or_back_off(reply, cmid).await {
            return ok.message.expect("the stored message");
        }
    }
    panic!("{cmid}: still unavailable after 100 tries")
}

/// What a client does with the reply to a request it may repeat: its
/// `ok`, or after `unavailable` a back-off (then `None`: ask again). Any
/// other reply fails the test.
pub async fn ok_or_back_off(reply: ServerFrame, what: &str) -> Option<chat_protocol::OkReply> {
    match reply {
        ServerFrame::Ok(ok) => Some(ok),
        ServerFrame::Error {
            code: chat_protocol::ErrorCode::Unavailable,
            ..
        } => {
            // A client backs off before retrying; this is that back-off,
            // not a wait for a condition.
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
        other => panic!("{what}: expected ok, got {other:?}"),
    }
}

/// The error code of an `error` frame, or a panic.
pub fn err_code(frame: &ServerFrame) -> chat_protocol::ErrorCode {
    match frame {
        ServerFrame::Error { code, .. } => *code,
        other => panic!("expected error, got {other:?}"),
    }
}

pub mod frames {
    //! Builders for client frames.
    use chat_protocol::*;

    pub fn conv(id: &str) -> ConversationId {
        ConversationId::new(id).unwrap()
    }
    pub fn user(id: &str) -> UserId {
        UserId::new(id).unwrap()
    }
    pub fn send(c: &ConversationId, cmid: &str, body: &str) -> ClientFrame {
        ClientFrame::Send {
            req: None,
            conversation: c.clone(),
            client_msg_id: ClientMsgId::new(cmid).unwrap(),
            body: body.into(),
            kind: MessageKind::default(),
            reply_to: None,
            attachments: Vec::new(),
        }
    }
    pub fn send_files(c: &ConversationId, cmid: &str, body: &str, files: &[&str]) -> ClientFrame {
        ClientFrame::Send {
            req: None,
            conversation: c.clone(),
            client_msg_id: ClientMsgId::new(cmid).unwrap(),
            body: body.into(),
            kind: MessageKind::default(),
            reply_to: None,
            attachments: files.iter().map(|f| f.to_string()).collect(),
        }
    }
    pub fn history(
        c: &ConversationId,
        before: Option<u64>,
        after: Option<u64>,
        limit: Option<u32>,
    ) -> ClientFrame {
        ClientFrame::History {
            req: None,
            conversation: c.clone(),
            before: before.map(MessageId),
            after: after.map(MessageId),
            limit,
        }
    }
    pub fn edit(c: &ConversationId, message: MessageId, body: &str) -> ClientFrame {
        ClientFrame::Edit {
            req: None,
            conversation: c.clone(),
            message,
            body: body.into(),
        }
    }
    pub fn delete(c: &ConversationId, message: MessageId) -> ClientFrame {
        ClientFrame::Delete {
            req: None,
            conversation: c.clone(),
            message,
        }
    }
    pub fn react(c: &ConversationId, message: MessageId, emoji: &str, on: bool) -> ClientFrame {
        ClientFrame::React {
            req: None,
            conversation: c.clone(),
            message,
            emoji: emoji.into(),
            on,
        }
    }
    pub fn changes(c: &ConversationId, after_rev: u64, limit: Option<u32>) -> ClientFrame {
        ClientFrame::Changes {
            req: None,
            conversation: c.clone(),
            after_rev,
            limit,
        }
    }
    pub fn create(kind: ConversationKind, members: &[&str], title: Option<&str>) -> ClientFrame {
        ClientFrame::Create {
            req: None,
            kind,
            members: members.iter().map(|m| user(m)).collect(),
            title: title.map(str::to_string),
        }
    }
}

/// The caller's conversation list (`limit` per page, the first page).
pub async fn conversations(
    c: &mut Client,
    limit: Option<u32>,
) -> Vec<chat_protocol::ConversationSummary> {
    ok(c.request(ClientFrame::Conversations {
        req: None,
        limit,
        before: None,
    })
    .await)
    .conversations
    .expect("conversations in the reply")
}

/// The caller's list entry for `conv`.
pub async fn summary(
    c: &mut Client,
    conv: &chat_protocol::ConversationId,
) -> chat_protocol::ConversationSummary {
    conversations(c, None)
        .await
        .into_iter()
        .find(|s| &s.conversation.id == conv)
        .expect("listed")
}

/// Creates a group of `owner` with `members`; returns its id.
pub async fn group(owner: &mut Client, members: &[&str]) -> chat_protocol::ConversationId {
    let reply = ok(owner
        .request(frames::create(
            chat_protocol::ConversationKind::Group,
            members,
            Some("g"),
        ))
        .await);
    reply.conversation.expect("conversation in reply").id
}

/// Path of the built `chat-node` binary.
pub fn node_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_chat-node"))
}

impl Client {
    /// Wraps a WebSocket that was upgraded some other way (a custom request
    /// or socket).
    pub fn from_ws(ws: WebSocketStream<MaybeTlsStream<TcpStream>>, codec: Codec) -> Client {
        Client {
            ws,
            codec,
            events: VecDeque::new(),
            next_req: 1,
            closed: None,
        }
    }
}

/// Connects with the token in the `access_token` query parameter (as
/// browsers do) instead of the `Authorization` header; returns the HTTP
/// status on a refused upgrade.
pub async fn try_connect_query(addr: SocketAddr, token: &str, codec: Codec) -> Result<Client, u16> {
    let url = format!("ws://{addr}/v1/ws?access_token={token}");
    try_connect_to(&url, None, codec, None)
        .await
        .map_err(|e| e.unwrap_or_else(|e| panic!("connect failed: {e}")))
}

/// The value of an unlabelled sample in Prometheus text.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().expect("a number"))
    })
}

/// An unlabelled sample of a node's `/metrics` (0 when absent).
pub async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let (status, text) = http(addr, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200, "{text}");
    sample(&text, name).unwrap_or(0.0)
}

/// Two users on one node, each with a JSON connection, in a group the
/// first created.
pub struct Pair {
    pub a: TestUser,
    pub b: TestUser,
    pub ca: Client,
    pub cb: Client,
    pub conv: chat_protocol::ConversationId,
}

/// A [`Pair`] of fresh users named after `a` and `b` on `node`.
pub async fn pair_in_group(node: &TestNode, a: &str, b: &str) -> Pair {
    let a = node.user(&unique(a)).await;
    let b = node.user(&unique(b)).await;
    let mut ca = connect(node.addr, &a.access, Codec::Json).await;
    let cb = connect(node.addr, &b.access, Codec::Json).await;
    let conv = group(&mut ca, &[&b.id]).await;
    Pair { a, b, ca, cb, conv }
}

/// True when `token` passes authentication (an unknown conversation is then
/// 404 rather than 401).
pub async fn token_accepted(addr: SocketAddr, token: &str) -> bool {
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
