//! Abuse over real sockets: bad input gets a clear error and harms nothing
//! else, limits are enforced with the protocol's error and close codes, and
//! memory stays bounded when a client floods or stops reading.
//!
//! Tests run in parallel in one process; those that measure the process's
//! memory run alone in a fresh process of this test binary (see [`alone`]).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, Once};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use chat_protocol::{ClientFrame, Codec, ErrorCode, Message, MessageId, ReqId, ServerFrame};
use common::frames::*;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The secret `test_config` gives every test node.
const SECRET: &str = "test-secret-test-secret-test-secret!";

// ---------------------------------------------------------------- harness

/// Threads on which a panic happened, in order.
static PANICS: Mutex<Vec<ThreadId>> = Mutex::new(Vec::new());
static PANIC_HOOK: Once = Once::new();

/// Counts panics on the test's thread (or, for a test alone in its process,
/// anywhere in the process). A `#[tokio::test]` runs the node's tasks and
/// actors on the test's own thread (current-thread runtime), so a panic in a
/// connection task or an actor of this test's node shows up here even when it
/// is caught and only logged.
struct PanicWatch {
    thread: Option<ThreadId>,
    before: usize,
}

fn panics_on(thread: Option<ThreadId>) -> usize {
    PANICS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|t| thread.is_none_or(|thread| **t == thread))
        .count()
}

impl PanicWatch {
    /// Panics on this thread from now on.
    fn start() -> PanicWatch {
        Self::watch(Some(std::thread::current().id()))
    }

    /// Panics on any thread from now on.
    fn process() -> PanicWatch {
        Self::watch(None)
    }

    fn watch(thread: Option<ThreadId>) -> PanicWatch {
        PANIC_HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                PANICS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(std::thread::current().id());
                previous(info);
            }));
        });
        PanicWatch {
            thread,
            before: panics_on(thread),
        }
    }

    fn assert_none(&self) {
        assert_eq!(
            panics_on(self.thread),
            self.before,
            "a task of this test's node panicked (see the test's output)"
        );
    }
}

/// Set in a child process that runs one test alone: the test's name.
const ALONE_ENV: &str = "CHAT_ABUSE_TEST_ALONE";

/// Runs test `name` alone in a fresh process of this test binary, for tests
/// that measure the process's memory: other tests in the same process would
/// add to it, or free heap that the measured code then reuses unseen. In
/// that child, runs `body` on a two-thread runtime and checks that nothing
/// in the process panicked.
fn alone<F: std::future::Future<Output = ()>>(name: &str, body: impl FnOnce() -> F) {
    if std::env::var(ALONE_ENV).as_deref() == Ok(name) {
        let panics = PanicWatch::process();
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(body());
        panics.assert_none();
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(ALONE_ENV, name)
        .output()
        .expect("run the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{name} failed in its own process");
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "the child process ran {name}"
    );
}

/// Encodes a free-form value in the codec's wire format.
fn raw(codec: Codec, v: &Value) -> Vec<u8> {
    match codec {
        Codec::Json => serde_json::to_vec(v).unwrap(),
        Codec::MsgPack => {
            let mut out = Vec::new();
            rmpv::encode::write_value(&mut out, &to_msgpack(v)).unwrap();
            out
        }
    }
}

fn to_msgpack(v: &Value) -> rmpv::Value {
    match v {
        Value::Null => rmpv::Value::Nil,
        Value::Bool(b) => rmpv::Value::Boolean(*b),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                rmpv::Value::from(u)
            } else if let Some(i) = n.as_i64() {
                rmpv::Value::from(i)
            } else {
                rmpv::Value::from(n.as_f64().unwrap())
            }
        }
        Value::String(s) => rmpv::Value::from(s.as_str()),
        Value::Array(a) => rmpv::Value::Array(a.iter().map(to_msgpack).collect()),
        Value::Object(o) => rmpv::Value::Map(
            o.iter()
                .map(|(k, v)| (rmpv::Value::from(k.as_str()), to_msgpack(v)))
                .collect(),
        ),
    }
}

/// Sends bytes in the frame type of the client's codec.
async fn send_bytes(c: &mut Client, bytes: Vec<u8>) {
    let msg = if c.codec.is_binary() {
        WsMessage::Binary(bytes.into())
    } else {
        WsMessage::Text(String::from_utf8(bytes).unwrap().into())
    };
    c.ws.send(msg).await.unwrap();
}

/// The next `error` frame (events meanwhile are kept): (req, code, message).
async fn next_error(c: &mut Client) -> (Option<ReqId>, ErrorCode, String, Option<u64>) {
    loop {
        let f = c
            .recv()
            .await
            .expect("connection open while waiting for an error");
        match f {
            ServerFrame::Error {
                req,
                code,
                message,
                retry_after_ms,
            } => return (req, code, message, retry_after_ms),
            ServerFrame::Ok(ok) => panic!("expected an error, got ok {ok:?}"),
            other => c.events.push_back(other),
        }
    }
}

/// Sends `frames` back to back (one flush) without reading in between.
async fn pipeline(c: &mut Client, frames: &[ClientFrame]) {
    for f in frames {
        let bytes = c.codec.encode(f).unwrap();
        let msg = if c.codec.is_binary() {
            WsMessage::Binary(bytes.into())
        } else {
            WsMessage::Text(String::from_utf8(bytes).unwrap().into())
        };
        c.ws.feed(msg).await.unwrap();
    }
    c.ws.flush().await.unwrap();
}

/// Reads until `n` replies (ok or error with a `req`) have arrived, in any
/// order; panics on a duplicate `req`. Events are kept.
async fn replies(c: &mut Client, n: usize) -> HashMap<ReqId, ServerFrame> {
    let mut out = HashMap::new();
    while out.len() < n {
        let f = c
            .recv()
            .await
            .expect("connection open while waiting for replies");
        let req = match &f {
            ServerFrame::Ok(ok) => ok.req.clone(),
            ServerFrame::Error { req, .. } => req.clone(),
            _ => None,
        };
        match req {
            Some(r) => assert!(out.insert(r.clone(), f).is_none(), "two replies to {r:?}"),
            None => c.events.push_back(f),
        }
    }
    out
}

fn ping() -> ClientFrame {
    ClientFrame::Ping { req: None }
}

fn int(i: i64) -> ReqId {
    ReqId::Int(i)
}

async fn assert_alive(c: &mut Client) {
    ok(c.request(ping()).await);
}

/// Messages that arrive as `message` events until one with `body` does.
async fn receives_body(c: &mut Client, body: &str) {
    let body = body.to_string();
    c.event(move |f| matches!(f, ServerFrame::Message { message } if message.body == body))
        .await;
}

/// This process's resident set, from /proc/self/status.
fn rss_bytes() -> u64 {
    status_kib("VmRSS:") * 1024
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

/// Resets this process's peak resident set to its current one (Linux
/// `clear_refs` 5) and returns the current one.
fn reset_peak_rss() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
    rss_bytes()
}

/// This process's peak resident set since the last reset.
fn peak_rss() -> u64 {
    status_kib("VmHWM:") * 1024
}

/// Signs a token with `secret` the way the node does (HS256, `sub`, `exp`).
fn token(secret: &str, sub: &str, exp: u64) -> String {
    let claims = json!({ "sub": sub, "exp": exp, "iat": now_secs().min(exp) });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn now_secs() -> u64 {
    chat_protocol::now_ms() / 1000
}

// ---------------------------------------------------- 1. malformed frames

/// One bad frame: what to send and the `req` the error must carry.
struct Bad {
    what: &'static str,
    bytes: Vec<u8>,
    req: Option<ReqId>,
}

fn bad(what: &'static str, bytes: Vec<u8>, req: Option<ReqId>) -> Bad {
    Bad { what, bytes, req }
}

/// Frames that are well-formed in the encoding but not valid requests; the
/// same list in both codecs.
fn invalid_requests(codec: Codec, conv: &str) -> Vec<Bad> {
    let long = "x".repeat(65);
    let v = |what, value: Value, req| bad(what, raw(codec, &value), req);
    vec![
        v(
            "unknown type",
            json!({"type": "frobnicate", "req": "r-1"}),
            Some(ReqId::Str("r-1".into())),
        ),
        v(
            "missing type",
            json!({"req": 2, "conversation": conv}),
            Some(int(2)),
        ),
        v(
            "send without client_msg_id",
            json!({"type": "send", "req": 3, "conversation": conv, "body": "hi"}),
            Some(int(3)),
        ),
        v(
            "history without conversation",
            json!({"type": "history", "req": 4}),
            Some(int(4)),
        ),
        v(
            "active: \"yes\"",
            json!({"type": "typing", "req": 5, "conversation": conv, "active": "yes"}),
            Some(int(5)),
        ),
        v(
            "limit: \"x\"",
            json!({"type": "history", "req": 6, "conversation": conv, "limit": "x"}),
            Some(int(6)),
        ),
        v(
            "limit: -1",
            json!({"type": "history", "req": 7, "conversation": conv, "limit": -1}),
            Some(int(7)),
        ),
        v(
            "up_to: -1",
            json!({"type": "read", "req": 8, "conversation": conv, "up_to": -1}),
            Some(int(8)),
        ),
        v(
            "up_to: \"-1\"",
            json!({"type": "read", "req": 9, "conversation": conv, "up_to": "-1"}),
            Some(int(9)),
        ),
        v(
            "up_to: \"abc\"",
            json!({"type": "read", "req": 10, "conversation": conv, "up_to": "abc"}),
            Some(int(10)),
        ),
        v(
            "members: a string",
            json!({"type": "create", "req": 11, "kind": "group", "members": "bob"}),
            Some(int(11)),
        ),
        v(
            "unknown conversation kind",
            json!({"type": "create", "req": 12, "kind": "party", "members": []}),
            Some(int(12)),
        ),
        v(
            "conversation id with a space",
            json!({"type": "history", "req": 13, "conversation": "has space"}),
            Some(int(13)),
        ),
        v(
            "conversation id of 65 bytes",
            json!({"type": "history", "req": 14, "conversation": long}),
            Some(int(14)),
        ),
        v(
            "empty conversation id",
            json!({"type": "history", "req": 15, "conversation": ""}),
            Some(int(15)),
        ),
        v(
            "user id with a space",
            json!({"type": "watch", "req": 16, "users": ["fine", "not fine"]}),
            Some(int(16)),
        ),
        v(
            "user id of 65 bytes",
            json!({"type": "kick", "req": 17, "conversation": conv, "user": long}),
            Some(int(17)),
        ),
        v(
            "client_msg_id of 65 bytes",
            json!({"type": "send", "req": 18, "conversation": conv,
                   "client_msg_id": long, "body": "hi"}),
            Some(int(18)),
        ),
        v(
            "body: a number",
            json!({"type": "send", "req": 19, "conversation": conv,
                   "client_msg_id": "m", "body": 5}),
            Some(int(19)),
        ),
        // A `req` that cannot be read is not echoed.
        v(
            "req of 65 bytes",
            json!({"type": "ping", "req": long}),
            None,
        ),
        v(
            "req: an object",
            json!({"type": "ping", "req": {"a": 1}}),
            None,
        ),
        v("req: a float", json!({"type": "ping", "req": 1.5}), None),
        v("an array", json!([{"type": "ping", "req": 20}]), None),
        v("a string", json!("ping"), None),
        v("null", json!(null), None),
    ]
}

async fn bad_frames_get_bad_request_and_harm_nothing(codec: Codec) {
    let panics = PanicWatch::start();
    let node = TestNode::start().await;
    let alice = node.user(&unique("alice")).await;
    let bob = node.user(&unique("bob")).await;
    let mut a = connect(node.addr, &alice.access, codec).await;
    // The bystander: another user, on the same node, in the other codec.
    let other = if codec == Codec::Json {
        Codec::MsgPack
    } else {
        Codec::Json
    };
    let mut b = connect(node.addr, &bob.access, other).await;
    let conv = group(&mut b, &[&alice.id]).await;

    let mut cases = invalid_requests(codec, conv.as_str());
    match codec {
        Codec::Json => cases.extend([
            bad("malformed JSON", b"{not json".to_vec(), None),
            bad(
                "truncated JSON",
                br#"{"type":"ping","req":1"#.to_vec(),
                None,
            ),
            bad("empty text frame", Vec::new(), None),
            bad("a JSON array of numbers", b"[1,2,3]".to_vec(), None),
        ]),
        Codec::MsgPack => cases.extend([
            bad("reserved byte 0xc1", vec![0xc1], None),
            bad(
                "truncated map",
                vec![0x82, 0xa4, b't', b'y', b'p', b'e'],
                None,
            ),
            bad("empty binary frame", Vec::new(), None),
            bad("an array of numbers", vec![0x93, 1, 2, 3], None),
            bad(
                "JSON in a binary frame",
                br#"{"type":"ping"}"#.to_vec(),
                None,
            ),
        ]),
    }
    let rejected_before = node.app.metrics.rejected_total();
    for case in &cases {
        send_bytes(&mut a, case.bytes.clone()).await;
        let (req, code, message, _) = next_error(&mut a).await;
        assert_eq!(code, ErrorCode::BadRequest, "{}: {message}", case.what);
        assert_eq!(req, case.req, "{}: req echoed iff readable", case.what);
        assert!(!message.is_empty(), "{}: the error says why", case.what);
        // The connection stays open and usable.
        assert_alive(&mut a).await;
    }
    // A JSON connection given a binary frame decodes it as JSON too.
    if codec == Codec::Json {
        a.ws.send(WsMessage::Binary(vec![0xff, 0xfe].into()))
            .await
            .unwrap();
        let (req, code, ..) = next_error(&mut a).await;
        assert_eq!((req, code), (None, ErrorCode::BadRequest));
        assert_alive(&mut a).await;
    }
    let extra = u64::from(codec == Codec::Json);
    assert_eq!(
        node.app.metrics.rejected_total() - rejected_before,
        cases.len() as u64 + extra,
        "every bad frame is counted once"
    );
    // Nothing was created or sent by the bad frames.
    let h = ok(a.request(history(&conv, None, None, None)).await);
    assert!(h.messages.unwrap().is_empty());

    // Both users can still send and receive, in both directions.
    ok(b.request(send(&conv, "b1", "still here?")).await);
    receives_body(&mut a, "still here?").await;
    ok(a.request(send(&conv, "a1", "yes")).await);
    receives_body(&mut b, "yes").await;
    assert!(
        !a.events
            .iter()
            .chain(b.events.iter())
            .any(|f| matches!(f, ServerFrame::Error { .. })),
        "no stray errors"
    );
    panics.assert_none();
}

#[tokio::test]
async fn bad_frames_get_bad_request_and_harm_nothing_json() {
    bad_frames_get_bad_request_and_harm_nothing(Codec::Json).await;
}

#[tokio::test]
async fn bad_frames_get_bad_request_and_harm_nothing_msgpack() {
    bad_frames_get_bad_request_and_harm_nothing(Codec::MsgPack).await;
}

/// A frame that is an array has no `req`, so its error must not carry one:
/// a client would take it for the reply to its own request 7 (and then get
/// a second reply to 7).
#[tokio::test]
async fn array_frames_do_not_echo_a_req() {
    let panics = PanicWatch::start();
    let node = TestNode::start().await;
    let alice = node.user(&unique("alice")).await;
    for (codec, bytes) in [
        (Codec::Json, b"[7]".to_vec()),
        (Codec::Json, br#"["abc"]"#.to_vec()),
        (Codec::MsgPack, vec![0x91, 0x07]),
    ] {
        let mut a = connect(node.addr, &alice.access, codec).await;
        send_bytes(&mut a, bytes).await;
        let (req, code, ..) = next_error(&mut a).await;
        assert_eq!((req, code), (None, ErrorCode::BadRequest));
        assert_alive(&mut a).await;
    }
    panics.assert_none();
}

// ------------------------------------------------ 2. body and page limits

async fn too_large_body_and_page_limits(codec: Codec) {
    let panics = PanicWatch::start();
    let node = TestNode::start().await;
    let alice = node.user(&unique("alice")).await;
    let mut a = connect(node.addr, &alice.access, codec).await;
    let conv = group(&mut a, &[]).await;
    let max = node.app.config.limits.max_body_bytes;
    assert_eq!(max, 16 * 1024, "the protocol's default");

    // One byte over: too_large, the req echoed, nothing stored.
    let e = a.request(send(&conv, "big", &"x".repeat(max + 1))).await;
    assert_eq!(err_code(&e), ErrorCode::TooLarge, "{e:?}");
    assert!(matches!(e, ServerFrame::Error { req: Some(_), .. }));
    assert_alive(&mut a).await;
    // Bytes count, not characters: 8193 two-byte characters.
    let e = a
        .request(send(&conv, "wide", &"é".repeat(max / 2 + 1)))
        .await;
    assert_eq!(err_code(&e), ErrorCode::TooLarge, "{e:?}");
    // Exactly the limit is fine.
    let stored = ok(a.request(send(&conv, "fits", &"y".repeat(max))).await)
        .message
        .unwrap();
    assert_eq!(stored.body.len(), max);

    // Page sizes: 1 to 200.
    for limit in [0, 201, u32::MAX] {
        let e = a.request(history(&conv, None, None, Some(limit))).await;
        assert_eq!(err_code(&e), ErrorCode::BadRequest, "limit {limit}: {e:?}");
        let e = a
            .request(ClientFrame::Conversations {
                req: None,
                limit: Some(limit),
                before: None,
            })
            .await;
        assert_eq!(err_code(&e), ErrorCode::BadRequest, "limit {limit}: {e:?}");
    }
    for limit in [1, 200] {
        let h = ok(a.request(history(&conv, None, None, Some(limit))).await);
        // Only the message that fit was stored.
        assert_eq!(h.messages.unwrap(), vec![stored.clone()]);
    }
    assert_alive(&mut a).await;

    // The same limits over HTTP.
    let path = format!("/v1/conversations/{}/messages", conv.as_str());
    let body = json!({"client_msg_id": "http-big", "body": "z".repeat(max + 1)}).to_string();
    let (status, text) = http(node.addr, "POST", &path, Some(&alice.access), Some(&body)).await;
    assert_eq!(status, 413, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["code"], "too_large");
    for limit in [0, 201] {
        let (status, text) = http(
            node.addr,
            "GET",
            &format!("{path}?limit={limit}"),
            Some(&alice.access),
            None,
        )
        .await;
        assert_eq!(status, 400, "limit {limit}: {text}");
    }
    let h = ok(a.request(history(&conv, None, None, None)).await);
    assert_eq!(h.messages.unwrap().len(), 1, "nothing too large was stored");
    panics.assert_none();
}

#[tokio::test]
async fn too_large_body_and_page_limits_json() {
    too_large_body_and_page_limits(Codec::Json).await;
}

#[tokio::test]
async fn too_large_body_and_page_limits_msgpack() {
    too_large_body_and_page_limits(Codec::MsgPack).await;
}

/// Replies may be far larger than a client's frames, but a page stops at
/// about `MAX_PAGE_BYTES` (1 MiB) of messages and says `more`: a page of
/// 200 of the largest messages (3.3 MB) comes in parts, and paging with
/// `before` gets every message, in order.
#[tokio::test]
async fn a_page_of_the_largest_messages_comes_in_parts_of_at_most_a_mebibyte() {
    let panics = PanicWatch::start();
    let node = TestNode::start().await;
    let alice = node.user(&unique("alice")).await;
    let max = node.app.config.limits.max_body_bytes;
    for codec in [Codec::Json, Codec::MsgPack] {
        let mut a = connect(node.addr, &alice.access, codec).await;
        let conv = group(&mut a, &[]).await;
        let frames: Vec<ClientFrame> = (0..200)
            .map(|i| {
                let body = char::from(b'a' + (i % 26) as u8).to_string().repeat(max);
                with_req(send(&conv, &format!("m{i}"), &body), int(i))
            })
            .collect();
        pipeline(&mut a, &frames).await;
        for (_, f) in replies(&mut a, 200).await {
            ok(f);
        }
        // 16 times the client's frame limit in one frame, and no more.
        let mut all: Vec<Message> = Vec::new();
        let mut before = None;
        loop {
            let page = ok(a.request(history(&conv, before, None, Some(200))).await);
            let messages = page.messages.unwrap();
            let bytes: usize = messages.iter().map(|m| m.body.len()).sum();
            assert!(bytes <= chat_protocol::limits::MAX_PAGE_BYTES, "{bytes}");
            if page.more.unwrap() {
                assert!(
                    messages.len() >= 60,
                    "{} messages of 16 KiB",
                    messages.len()
                );
            }
            before = messages.first().map(|m| m.id.0);
            all.splice(0..0, messages);
            if !page.more.unwrap() {
                break;
            }
        }
        assert_eq!(all.len(), 200);
        assert!(all.windows(2).all(|w| w[0].id < w[1].id));
        assert!(all.iter().all(|m| m.body.len() == max));
        let list = ok(a
            .request(ClientFrame::Conversations {
                req: None,
                limit: Some(200),
                before: None,
            })
            .await)
        .conversations
        .unwrap();
        assert!(list.iter().any(|c| c.conversation.id == conv));
        assert_alive(&mut a).await;
    }
    panics.assert_none();
}

// ------------------------------------------------------ 3. oversize frames

async fn frame_over_max_frame_bytes_closes_with_1009(codec: Codec) {
    let panics = PanicWatch::start();
    let node = TestNode::start_with(|c| {
        c.limits.max_frame_bytes = 4096;
        c.limits.max_body_bytes = 1024;
    })
    .await;
    let alice = node.user(&unique("alice")).await;
    let bob = node.user(&unique("bob")).await;
    let mut bystander = connect(node.addr, &bob.access, Codec::Json).await;
    let mut same_user = connect(node.addr, &alice.access, codec).await;
    let conv = group(&mut bystander, &[&alice.id]).await;

    // Under the frame limit but over the body limit: an error, still open.
    let mut a = connect(node.addr, &alice.access, codec).await;
    let e = a.request(send(&conv, "m", &"x".repeat(3000))).await;
    assert_eq!(err_code(&e), ErrorCode::TooLarge);
    assert_alive(&mut a).await;

    // One frame over the limit: closed with 1009.
    a.send_frame(&send(&conv, "m", &"x".repeat(5000))).await;
    assert_eq!(a.closed_with().await, Some(1009));

    // A message over the limit in fragments that are each under it.
    let mut b = connect(node.addr, &alice.access, codec).await;
    let data = if codec.is_binary() {
        Data::Binary
    } else {
        Data::Text
    };
    let chunk = vec![b' '; 2048];
    b.ws.send(WsMessage::Frame(Frame::message(
        chunk.clone(),
        OpCode::Data(data),
        false,
    )))
    .await
    .unwrap();
    for last in [false, true] {
        b.ws.send(WsMessage::Frame(Frame::message(
            chunk.clone(),
            OpCode::Data(Data::Continue),
            last,
        )))
        .await
        .unwrap();
    }
    assert_eq!(b.closed_with().await, Some(1009));

    // The user's other connection and the other user are unaffected.
    assert_alive(&mut same_user).await;
    assert_alive(&mut bystander).await;
    ok(bystander.request(send(&conv, "b1", "after")).await);
    receives_body(&mut same_user, "after").await;
    panics.assert_none();
}

#[tokio::test]
async fn frame_over_max_frame_bytes_closes_with_1009_json() {
    frame_over_max_frame_bytes_closes_with_1009(Codec::Json).await;
}

#[tokio::test]
async fn frame_over_max_frame_bytes_closes_with_1009_msgpack() {
    frame_over_max_frame_bytes_closes_with_1009(Codec::MsgPack).await;
}

// ------------------------------------------------------------ 4. upgrade

#[tokio::test]
async fn upgrade_without_a_valid_token_is_refused_with_401() {
    let panics = PanicWatch::start();
    // Tokens minted here name no login: accepted only with this off.
    let node = TestNode::start_with(|c| c.auth.require_session = false).await;
    let alice = node.user(&unique("alice")).await;
    let future = now_secs() + 600;
    // Leeway is 5 s by default: an hour ago is expired for sure.
    let expired = token(SECRET, &alice.id, now_secs() - 3600);
    let foreign = token("another-secret-another-secret-another!", &alice.id, future);
    let cases: [(&str, Option<&str>); 6] = [
        ("no token", None),
        ("garbage", Some("garbage")),
        ("three garbage parts", Some("a.b.c")),
        ("empty", Some("")),
        ("signed with another secret", Some(&foreign)),
        ("expired", Some(&expired)),
    ];
    for codec in [Codec::Json, Codec::MsgPack] {
        for (what, t) in cases {
            let r = try_connect(node.addr, t, codec).await;
            assert_eq!(r.err(), Some(401), "{what}");
        }
    }
    for (what, t) in [
        ("garbage", "garbage"),
        ("expired", &*expired),
        ("foreign", &*foreign),
    ] {
        let r = try_connect_query(node.addr, t, Codec::Json).await;
        assert_eq!(r.err(), Some(401), "{what} in the query");
        let (status, body) = http(
            node.addr,
            "GET",
            "/v1/conversations/c/messages",
            Some(t),
            None,
        )
        .await;
        assert_eq!(status, 401, "{what} over HTTP: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["code"], "unauthorized");
    }

    // Control: a token made the same way with the node's secret and a
    // future expiry works, so the refusals above are about the token.
    let good = token(SECRET, &alice.id, future);
    let mut c = connect(node.addr, &good, Codec::Json).await;
    assert_alive(&mut c).await;
    // The token in the query string works, in both codecs.
    for codec in [Codec::Json, Codec::MsgPack] {
        let mut q = try_connect_query(node.addr, &alice.access, codec)
            .await
            .expect("access_token in the query upgrades");
        assert_alive(&mut q).await;
    }
    panics.assert_none();
}

// ------------------------------------------------------ 5. token expiry

#[tokio::test]
async fn token_expiry_while_connected_closes_with_4001() {
    let panics = PanicWatch::start();
    let node = TestNode::start_with(|c| {
        c.auth.access_ttl_secs = 2;
        c.auth.leeway_secs = 1;
    })
    .await;
    let alice = node.user(&unique("alice")).await;
    let bob = node.user(&unique("bob")).await;
    let issued = Instant::now();
    let mut a = connect(node.addr, &alice.access, Codec::Json).await;
    let mut b = connect(node.addr, &bob.access, Codec::MsgPack).await;
    // No reads or writes: the node closes on its own when the token expires
    // (at most 2 s after it was issued, as `exp` has whole seconds), plus
    // the 1 s of clock-skew leeway the upgrade also allows.
    assert_eq!(a.closed_with().await, Some(4001));
    assert_eq!(b.closed_with().await, Some(4001));
    assert!(
        issued.elapsed() < Duration::from_secs(3) + WAIT / 2,
        "closed at expiry, not by some later timeout: {:?}",
        issued.elapsed()
    );
    panics.assert_none();
}

// ---------------------------------------------- 6. too many connections

#[tokio::test]
async fn third_connection_of_a_user_is_closed_with_4002() {
    let panics = PanicWatch::start();
    let node = TestNode::start_with(|c| c.limits.connections_per_user = 2).await;
    let alice = node.user(&unique("alice")).await;
    let bob = node.user(&unique("bob")).await;
    let mut bc = connect(node.addr, &bob.access, Codec::Json).await;
    let mut first = connect(node.addr, &alice.access, Codec::Json).await;
    let mut second = connect(node.addr, &alice.access, Codec::MsgPack).await;
    let conv = group(&mut bc, &[&alice.id]).await;

    let mut third = connect(node.addr, &alice.access, Codec::Json).await;
    assert_eq!(third.closed_with().await, Some(4002));

    // The first two keep working: requests, and live delivery to both.
    assert_alive(&mut first).await;
    assert_alive(&mut second).await;
    ok(bc.request(send(&conv, "m1", "to both")).await);
    receives_body(&mut first, "to both").await;
    receives_body(&mut second, "to both").await;
    // Another user is not counted against alice.
    let mut bob2 = connect(node.addr, &bob.access, Codec::Json).await;
    assert_alive(&mut bob2).await;

    // A closed connection frees its slot.
    let open = || node.app.metrics.connections_open.get();
    let before = open();
    first
        .ws
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }))
        .await
        .unwrap();
    assert_eq!(first.closed_with().await, Some(1000));
    until("the closed connection to be released", || open() < before).await;
    let mut again = connect(node.addr, &alice.access, Codec::Json).await;
    assert_alive(&mut again).await;
    assert_alive(&mut second).await;
    panics.assert_none();
}

// ------------------------------------------------------ 6b. dead clients

/// A client that stops answering pings is closed once the idle timeout
/// passes, and its slot is freed; one that keeps answering them (and sends
/// nothing else) stays, however long it is quiet.
#[tokio::test]
async fn a_client_that_stops_answering_pings_is_closed_and_a_quiet_one_is_kept() {
    let panics = PanicWatch::start();
    let node = TestNode::start_with(|c| c.limits.idle_timeout_secs = 2).await;
    let alice = node.user(&unique("alice")).await;
    let bob = node.user(&unique("bob")).await;
    // Before the connects: the node's idle clock starts after them.
    let opened = Instant::now();
    let mut quiet = connect(node.addr, &alice.access, Codec::Json).await;
    let mut dead = connect(node.addr, &bob.access, Codec::Json).await;
    let open = || node.app.metrics.connections_open.get();
    until("both connections to be open", || open() == 2).await;

    // `quiet` reads (so its client answers the pings) and sends nothing;
    // `dead` reads nothing until the node has given up on it.
    let reading = async {
        loop {
            match quiet.ws.next().await {
                Some(Ok(WsMessage::Ping(_))) => {}
                other => panic!("the quiet client got {other:?}"),
            }
        }
    };
    tokio::select! {
        _ = reading => unreachable!(),
        _ = until("the dead client to be dropped", || open() == 1) => {}
    }
    assert!(
        opened.elapsed() >= Duration::from_secs(2),
        "closed after {:?}, before the idle timeout",
        opened.elapsed()
    );
    assert_eq!(dead.closed_with().await, Some(1000));
    assert_eq!(
        dead.closed.clone().flatten().map(|f| f.reason.to_string()),
        Some("idle timeout".to_string())
    );

    // Past its own idle deadline, the quiet one still works.
    assert_alive(&mut quiet).await;
    assert_eq!(open(), 1);
    panics.assert_none();
}

// ------------------------------------------------------- 7. slow consumer

/// A member that never reads is cut with 4003 while the node's memory stays
/// bounded, and the sender is unaffected.
#[test]
fn slow_consumer_is_closed_with_4003_and_memory_stays_bounded() {
    alone(
        "slow_consumer_is_closed_with_4003_and_memory_stays_bounded",
        slow_consumer,
    );
}

async fn slow_consumer() {
    const MESSAGES: usize = 10_000;
    const BODY: usize = 4096;
    const WINDOW: usize = 200;
    let node = TestNode::start_with(|c| {
        c.limits.outbound_queue = 64;
        c.limits.sends_per_second = 1_000_000;
        c.limits.send_burst = 1_000_000;
        // A client cut with 4003 gets as long as an idle client to read its
        // backlog and the close frame; the flood may outlast the default
        // 60 s on a busy machine, and the slow reader reads only after it.
        c.limits.idle_timeout_secs = 600;
        // The bound below is the store's and the slow member's queue; the
        // search index's writer has a fixed budget of its own (16 MiB) and
        // would be measured here as the flood's 40 MiB of text is indexed.
        c.search.backend = chat_search::SearchBackend::Off;
    })
    .await;
    let Pair {
        b: slow,
        ca: mut s,
        cb: mut l,
        conv,
        ..
    } = pair_in_group(&node, "sender", "slow").await;
    // The slow member's session knows the conversation; from now on it
    // never reads.
    l.event(|f| matches!(f, ServerFrame::Conversation { .. }))
        .await;

    let body = "x".repeat(BODY);
    let rss_before = rss_bytes();
    let started = Instant::now();
    let mut last = None;
    for start in (0..MESSAGES).step_by(WINDOW) {
        let frames: Vec<ClientFrame> = (start..start + WINDOW)
            .map(|i| with_req(send(&conv, &format!("m{i}"), &body), int(i as i64)))
            .collect();
        pipeline(&mut s, &frames).await;
        let got = replies(&mut s, WINDOW).await;
        for (req, f) in got {
            let m = ok(f).message.expect("message in reply");
            if req == int((MESSAGES - 1) as i64) {
                last = Some(m.id);
            }
        }
    }
    let growth = rss_bytes().saturating_sub(rss_before);
    eprintln!(
        "sent {MESSAGES} x {BODY} B in {:?}; RSS {} MiB -> growth {} MiB",
        started.elapsed(),
        rss_before >> 20,
        growth >> 20
    );
    // The bound, measured on this machine in a fresh process (this test
    // runs alone in one): storing 10k x 4 KiB (40 MiB, under the store's
    // 64 MiB memtable, so no flush makes it vary) grows the RSS by ~50 MiB
    // with or without the slow member, i.e. the slow member costs about
    // nothing: its queue holds 64 frames (256 KiB) and its socket buffers
    // are the kernel's. With a queue that never overflows (outbound_queue
    // = 1_000_000) the same run grows by ~90 MiB: the encoded messages
    // (~42 MiB) pile up for the reader. 64 MiB sits between the two.
    assert!(
        growth < 64 << 20,
        "RSS grew by {} MiB while flooding a reader that never reads",
        growth >> 20
    );
    assert_eq!(node.app.metrics.slow_consumers.get(), 1);

    // The slow reader got a prefix of the messages, then 4003.
    let mut seen = 0usize;
    let mut previous: Option<MessageId> = None;
    while let Some(f) = l.recv().await {
        if let ServerFrame::Message { message } = f {
            assert!(previous < Some(message.id), "in order, no duplicates");
            previous = Some(message.id);
            seen += 1;
        }
    }
    assert_eq!(
        l.closed.clone().flatten().map(|f| u16::from(f.code)),
        Some(4003)
    );
    assert!(seen < MESSAGES, "cut before the end: saw {seen}");
    eprintln!("the slow reader got {seen} messages before 4003");

    // The sender still works, and the slow member catches up with history.
    assert_alive(&mut s).await;
    ok(s.request(send(&conv, "after", "after the cut")).await);
    let mut back = connect(node.addr, &slow.access, Codec::Json).await;
    let page = ok(back
        .request(history(&conv, None, previous.map(|m| m.0), Some(200)))
        .await);
    let missed = page.messages.unwrap();
    assert_eq!(missed.len(), 200);
    assert!(missed[0].id > previous.unwrap_or_default());
    let newest = ok(back.request(history(&conv, None, None, Some(2))).await)
        .messages
        .unwrap();
    assert_eq!(Some(newest[0].id), last);
    assert_eq!(newest[1].body, "after the cut");
}

// ---------------------------------------------------------- 8. rate limit

#[tokio::test]
async fn sends_over_the_rate_get_rate_limited() {
    let panics = PanicWatch::start();
    let node = TestNode::start_with(|c| {
        c.limits.sends_per_second = 5;
        c.limits.send_burst = 5;
    })
    .await;
    for codec in [Codec::Json, Codec::MsgPack] {
        let user = node.user(&unique("rate")).await;
        let mut c = connect(node.addr, &user.access, codec).await;
        let conv = group(&mut c, &[]).await;
        // Six sends at once: the burst is five.
        let frames: Vec<ClientFrame> = (1..=6)
            .map(|i| with_req(send(&conv, &format!("m{i}"), "hi"), int(100 + i)))
            .collect();
        pipeline(&mut c, &frames).await;
        let got = replies(&mut c, 6).await;
        for i in 1..=5 {
            ok(got[&int(100 + i)].clone());
        }
        let retry = match &got[&int(106)] {
            ServerFrame::Error {
                code: ErrorCode::RateLimited,
                retry_after_ms: Some(ms),
                ..
            } => *ms,
            other => panic!("expected rate_limited with retry_after_ms, got {other:?}"),
        };
        assert!(retry > 0 && retry <= 200, "one token per 200 ms: {retry}");
        assert_alive(&mut c).await;
        // The protocol says when to come back; then a send is accepted.
        tokio::time::sleep(Duration::from_millis(retry)).await;
        ok(c.request(send(&conv, "m6", "hi")).await);
        let h = ok(c.request(history(&conv, None, None, None)).await);
        assert_eq!(
            h.messages.unwrap().len(),
            6,
            "the refused send was not stored"
        );
    }

    panics.assert_none();
}

/// HTTP sends over the rate get 429 with `Retry-After`, and share the
/// user's bucket with WebSocket sends. One token a second (the slowest
/// allowed) leaves a whole second for the checks that follow the burst.
#[tokio::test]
async fn http_sends_over_the_rate_get_429_with_retry_after() {
    let panics = PanicWatch::start();
    let node = TestNode::start_with(|c| {
        c.limits.sends_per_second = 1;
        c.limits.send_burst = 5;
    })
    .await;
    let user = node.user(&unique("rate")).await;
    let mut c = connect(node.addr, &user.access, Codec::Json).await;
    let conv = group(&mut c, &[]).await;
    let path = format!("/v1/conversations/{}/messages", conv.as_str());
    let posts = (0..10).map(|i| {
        let body = json!({"client_msg_id": format!("h{i}"), "body": "hi"}).to_string();
        let (addr, path, access) = (node.addr, path.clone(), user.access.clone());
        async move { http_full(addr, "POST", &path, Some(&access), Some(&body)).await }
    });
    let answers = futures_util::future::join_all(posts).await;
    let created = answers.iter().filter(|(s, ..)| *s == 201).count();
    let limited: Vec<_> = answers.iter().filter(|(s, ..)| *s == 429).collect();
    assert_eq!(created + limited.len(), 10, "{answers:?}");
    assert!(created >= 5, "the burst is honoured: {answers:?}");
    assert!(!limited.is_empty(), "ten at once exceed a burst of five");
    for (_, headers, body) in limited {
        let retry_after: u64 = headers
            .iter()
            .find(|(k, _)| k == "retry-after")
            .and_then(|(_, v)| v.parse().ok())
            .expect("a numeric Retry-After header");
        assert!(retry_after >= 1);
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], "rate_limited");
        assert!(v["retry_after_ms"].as_u64().unwrap() > 0);
    }
    // WebSocket sends of that user are limited too (one bucket).
    let e = c.request(send(&conv, "ws", "hi")).await;
    assert_eq!(err_code(&e), ErrorCode::RateLimited);
    panics.assert_none();
}

// ----------------------------------------- 9. watch limit, membership

#[tokio::test]
async fn watch_limit_membership_and_missing_conversations() {
    let panics = PanicWatch::start();
    // The watch limit counts watches held; presence of strangers is shown
    // (and held) only where the node shows everyone's.
    let node = TestNode::start_with(|c| {
        c.presence.visible_to = chat_node::config::VisibleTo::Everyone;
    })
    .await;
    let alice = node.user(&unique("alice")).await;
    let bob = node.user(&unique("bob")).await;
    let eve = node.user(&unique("eve")).await;
    for codec in [Codec::Json, Codec::MsgPack] {
        let mut e = connect(node.addr, &eve.access, codec).await;
        let watch = |users: Vec<String>| ClientFrame::Watch {
            req: None,
            users: users.iter().map(|u| user(u)).collect(),
        };
        let names = |from: usize, to: usize| -> Vec<String> {
            (from..to).map(|i| format!("w{i}")).collect()
        };
        // 1001 at once: over the per-request and per-connection limit.
        let r = e.request(watch(names(0, 1001))).await;
        assert_eq!(err_code(&r), ErrorCode::BadRequest, "{r:?}");
        // 1000 in two requests is fine; watching them again adds none.
        ok(e.request(watch(names(0, 600))).await);
        ok(e.request(watch(names(600, 1000))).await);
        ok(e.request(watch(names(0, 1000))).await);
        // One more is over the total.
        let r = e.request(watch(vec!["w1000".into()])).await;
        assert_eq!(err_code(&r), ErrorCode::BadRequest, "{r:?}");
        // Unwatching makes room.
        ok(e.request(ClientFrame::Unwatch {
            req: None,
            users: vec![user("w0")],
        })
        .await);
        ok(e.request(watch(vec!["w1000".into()])).await);
        // The limit is per connection: a second one starts from zero.
        let mut e2 = connect(node.addr, &eve.access, codec).await;
        ok(e2.request(watch(names(2000, 3000))).await);
        assert_alive(&mut e).await;
    }

    let mut a = connect(node.addr, &alice.access, Codec::Json).await;
    let mut b = connect(node.addr, &bob.access, Codec::MsgPack).await;
    let private = group(&mut a, &[&bob.id]).await;
    ok(a.request(send(&private, "m1", "private")).await);
    receives_body(&mut b, "private").await;
    for codec in [Codec::Json, Codec::MsgPack] {
        let mut e = connect(node.addr, &eve.access, codec).await;
        // Not a member: forbidden, and nothing leaks or is stored.
        let r = e.request(history(&private, None, None, None)).await;
        assert_eq!(err_code(&r), ErrorCode::Forbidden, "{r:?}");
        let r = e.request(send(&private, "x", "let me in")).await;
        assert_eq!(err_code(&r), ErrorCode::Forbidden, "{r:?}");
        let r = e
            .request(ClientFrame::Read {
                req: None,
                conversation: private.clone(),
                up_to: MessageId(u64::MAX),
            })
            .await;
        assert_eq!(err_code(&r), ErrorCode::Forbidden, "{r:?}");
        let r = e
            .request(ClientFrame::Invite {
                req: None,
                conversation: private.clone(),
                users: vec![user(&eve.id)],
            })
            .await;
        assert_eq!(err_code(&r), ErrorCode::Forbidden, "{r:?}");
        // No such conversation: not_found.
        for missing in [format!("g:{}", unique("none")), unique("nothing")] {
            let missing = conv(&missing);
            let r = e.request(history(&missing, None, None, None)).await;
            assert_eq!(err_code(&r), ErrorCode::NotFound, "{r:?}");
            let r = e.request(send(&missing, "x", "anyone?")).await;
            assert_eq!(err_code(&r), ErrorCode::NotFound, "{r:?}");
        }
        assert_alive(&mut e).await;
    }
    // Over HTTP too.
    let path = format!("/v1/conversations/{}/messages", private.as_str());
    let (status, _) = http(node.addr, "GET", &path, Some(&eve.access), None).await;
    assert_eq!(status, 403);
    let (status, _) = http(
        node.addr,
        "GET",
        &format!("/v1/conversations/{}/messages", unique("none")),
        Some(&eve.access),
        None,
    )
    .await;
    assert_eq!(status, 404);
    // The members saw nothing of it.
    let h = ok(b.request(history(&private, None, None, None)).await);
    assert_eq!(h.messages.unwrap().len(), 1);
    assert!(!b
        .events
        .iter()
        .any(|f| matches!(f, ServerFrame::Message { .. })));
    panics.assert_none();
}

// ---------------------------------------------------------- 10. pipelining

/// 1000 requests sent without reading: with the default limits (an
/// outbound queue of 1024) every reply fits, so the client gets each
/// exactly once when it finally reads.
#[tokio::test]
async fn pipelined_requests_within_the_queue_all_get_replies() {
    let panics = PanicWatch::start();
    let node = TestNode::start().await;
    let alice = node.user(&unique("alice")).await;
    for codec in [Codec::Json, Codec::MsgPack] {
        let mut a = connect(node.addr, &alice.access, codec).await;
        let conv = group(&mut a, &[]).await;
        ok(a.request(send(&conv, "m", "hello")).await);
        let frames: Vec<ClientFrame> = (0..1000)
            .map(|i| {
                let f = if i % 2 == 0 {
                    ping()
                } else {
                    history(&conv, None, None, Some(5))
                };
                with_req(f, int(10_000 + i))
            })
            .collect();
        pipeline(&mut a, &frames).await;
        let got = replies(&mut a, 1000).await;
        for i in 0..1000 {
            let r = ok(got[&int(10_000 + i)].clone());
            if i % 2 == 1 {
                assert_eq!(r.messages.unwrap().len(), 1);
            }
        }
        assert_alive(&mut a).await;
    }
    panics.assert_none();
}

/// 1000 requests with large replies (~240 KB each, ~240 MB in all) sent
/// without reading, with a small queue: the node stops reading the client
/// while replies are unwritten instead of buffering them, so its memory
/// stays flat, and the client gets every reply once it reads. (Before, the
/// replies overflowed the queue and the client was cut with 4003.)
#[test]
fn pipelined_requests_with_large_replies_stall_instead_of_buffering() {
    alone(
        "pipelined_requests_with_large_replies_stall_instead_of_buffering",
        pipelined_large_replies,
    );
}

async fn pipelined_large_replies() {
    let node = TestNode::start_with(|c| {
        c.limits.outbound_queue = 64;
        // The bound below is the replies'; indexing the 200 messages runs
        // after their sends, into the measured window, and its writer's
        // fixed budget (16 MiB) would be counted with them.
        c.search.backend = chat_search::SearchBackend::Off;
    })
    .await;
    let alice = node.user(&unique("alice")).await;
    let mut a = connect(node.addr, &alice.access, Codec::Json).await;
    let conv = group(&mut a, &[]).await;
    let body = "p".repeat(1024);
    let frames: Vec<ClientFrame> = (0..200)
        .map(|i| with_req(send(&conv, &format!("m{i}"), &body), int(i)))
        .collect();
    pipeline(&mut a, &frames).await;
    for (_, f) in replies(&mut a, 200).await {
        ok(f);
    }

    let before = reset_peak_rss();
    let frames: Vec<ClientFrame> = (0..1000)
        .map(|i| with_req(history(&conv, None, None, Some(200)), int(1000 + i)))
        .collect();
    pipeline(&mut a, &frames).await;
    // Read them one by one, keeping nothing but their ids.
    let mut seen = HashSet::new();
    while seen.len() < 1000 {
        match a.recv().await.expect("open while replies are due") {
            ServerFrame::Ok(r) => {
                assert_eq!(r.messages.as_ref().map(Vec::len), Some(200));
                assert!(seen.insert(r.req.unwrap()), "one reply per request");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let peak = peak_rss().saturating_sub(before);
    eprintln!("peak RSS growth {} MiB", peak >> 20);
    // Buffering the replies would take ~240 MB (more with their encodings);
    // the node holds at most half its queue (32) of them.
    assert!(
        peak < 64 << 20,
        "peak RSS grew by {} MiB for a client pipelining without reading",
        peak >> 20
    );
    assert_eq!(node.app.metrics.slow_consumers.get(), 0);
    assert_alive(&mut a).await;
}
