//! What the abuse suites share (`abuse.rs`, bad input; `abuse_limits.rs`,
//! limits, close codes and bounded memory): raw frames in either codec,
//! reading errors and replies, a watch for panics in the node's tasks, and
//! running a test alone in a fresh process when it measures memory.
//! Included by those two files only (`#[path]`), not by `common`.
#![allow(dead_code)]

use crate::common::*;
use chat_protocol::{ClientFrame, Codec, ErrorCode, ReqId, ServerFrame};
use futures_util::SinkExt;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Mutex, Once};
use std::thread::ThreadId;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The secret `test_config` gives every test node.
pub const SECRET: &str = "test-secret-test-secret-test-secret!";

// ---------------------------------------------------------------- harness

/// Threads on which a panic happened, in order.
pub static PANICS: Mutex<Vec<ThreadId>> = Mutex::new(Vec::new());
pub static PANIC_HOOK: Once = Once::new();

/// Counts panics on the test's thread (or, for a test alone in its process,
/// anywhere in the process). A `#[tokio::test]` runs the node's tasks and
/// actors on the test's own thread (current-thread runtime), so a panic in a
/// connection task or an actor of this test's node shows up here even when it
/// is caught and only logged.
pub struct PanicWatch {
    thread: Option<ThreadId>,
    before: usize,
}

pub fn panics_on(thread: Option<ThreadId>) -> usize {
    PANICS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|t| thread.is_none_or(|thread| **t == thread))
        .count()
}

impl PanicWatch {
    /// Panics on this thread from now on.
    pub fn start() -> PanicWatch {
        Self::watch(Some(std::thread::current().id()))
    }

    /// Panics on any thread from now on.
    pub fn process() -> PanicWatch {
        Self::watch(None)
    }

    pub fn watch(thread: Option<ThreadId>) -> PanicWatch {
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

    pub fn assert_none(&self) {
        assert_eq!(
            panics_on(self.thread),
            self.before,
            "a task of this test's node panicked (see the test's output)"
        );
    }
}

/// Set in a child process that runs one test alone: the test's name.
pub const ALONE_ENV: &str = "CHAT_ABUSE_TEST_ALONE";

/// Runs test `name` alone in a fresh process of this test binary, for tests
/// that measure the process's memory: other tests in the same process would
/// add to it, or free heap that the measured code then reuses unseen. In
/// that child, runs `body` on a two-thread runtime and checks that nothing
/// in the process panicked.
pub fn alone<F: std::future::Future<Output = ()>>(name: &str, body: impl FnOnce() -> F) {
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
pub fn raw(codec: Codec, v: &Value) -> Vec<u8> {
    match codec {
        Codec::Json => serde_json::to_vec(v).unwrap(),
        Codec::MsgPack => {
            let mut out = Vec::new();
            rmpv::encode::write_value(&mut out, &to_msgpack(v)).unwrap();
            out
        }
    }
}

pub fn to_msgpack(v: &Value) -> rmpv::Value {
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
pub async fn send_bytes(c: &mut Client, bytes: Vec<u8>) {
    let msg = if c.codec.is_binary() {
        WsMessage::Binary(bytes.into())
    } else {
        WsMessage::Text(String::from_utf8(bytes).unwrap().into())
    };
    c.ws.send(msg).await.unwrap();
}

/// The next `error` frame (events meanwhile are kept): (req, code, message).
pub async fn next_error(c: &mut Client) -> (Option<ReqId>, ErrorCode, String, Option<u64>) {
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
pub async fn pipeline(c: &mut Client, frames: &[ClientFrame]) {
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
pub async fn replies(c: &mut Client, n: usize) -> HashMap<ReqId, ServerFrame> {
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

pub fn ping() -> ClientFrame {
    ClientFrame::Ping { req: None }
}

pub fn int(i: i64) -> ReqId {
    ReqId::Int(i)
}

pub async fn assert_alive(c: &mut Client) {
    ok(c.request(ping()).await);
}

/// Messages that arrive as `message` events until one with `body` does.
pub async fn receives_body(c: &mut Client, body: &str) {
    let body = body.to_string();
    c.event(move |f| matches!(f, ServerFrame::Message { message } if message.body == body))
        .await;
}

/// This process's resident set, from /proc/self/status.
pub fn rss_bytes() -> u64 {
    status_kib("VmRSS:") * 1024
}

pub fn status_kib(field: &str) -> u64 {
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
pub fn reset_peak_rss() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
    rss_bytes()
}

/// This process's peak resident set since the last reset.
pub fn peak_rss() -> u64 {
    status_kib("VmHWM:") * 1024
}

// ---------------------------------------------------- 1. malformed frames

/// One bad frame: what to send and the `req` the error must carry.
pub struct Bad {
    pub what: &'static str,
    pub bytes: Vec<u8>,
    pub req: Option<ReqId>,
}

pub fn bad(what: &'static str, bytes: Vec<u8>, req: Option<ReqId>) -> Bad {
    Bad { what, bytes, req }
}
