//! Hostile clients against a real `chat-node` process, over real sockets:
//! each attack that could once take a node's memory or hold its resources
//! runs here, and the node's resident memory (read from /proc) must stay
//! within [`MEMORY_BOUND`] of what it was before, during the attack and after
//! it; the attacks that are about limits get the protocol's answers.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chat_protocol::{ClientFrame, Codec};
use common::frames::*;
use common::target::{pipeline_unread, Target};
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const SECRET: &str = "hostile-secret-hostile-secret-hostile!";

async fn post(addr: SocketAddr, path: &str, body: &Value) -> (u16, Vec<(String, String)>, Value) {
    let (status, headers, text) =
        http_full(addr, "POST", path, None, Some(&body.to_string())).await;
    let v = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, headers, v)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

// ------------------------------------------------------------ logins

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_logins_for_unknown_users_is_bounded_and_answered_busy() {
    // The address limits are lifted: this is about what one burst costs.
    let t = Target::start(SECRET, &[("CHAT__AUTH__PASSWORD_QUEUE", "16")]).await;
    let addr = t.addr();
    let before = t.mark();
    let logins = (0..192).map(|i| async move {
        let body = json!({"username": format!("nobody{i}"), "password": "wrong password"});
        post(addr, "/v1/auth/login", &body).await
    });
    let answers = futures_util::future::join_all(logins).await;
    let mut busy = 0;
    for (status, headers, v) in &answers {
        match status {
            401 => assert_eq!(v["code"], "unauthorized"),
            503 => {
                busy += 1;
                assert_eq!(v["code"], "unavailable");
                assert_eq!(header(headers, "retry-after"), Some("1"));
            }
            other => panic!("login answered {other}: {v}"),
        }
    }
    assert!(busy > 0, "192 logins at once, none refused as busy");
    t.assert_bounded("192 concurrent logins", before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_lock_the_account_and_one_address_cannot_register_in_bulk() {
    let t = Target::start(
        SECRET,
        &[
            ("CHAT__AUTH__THROTTLE__FREE_FAILURES", "3"),
            ("CHAT__AUTH__THROTTLE__LOCKOUT_SECS", "30"),
            ("CHAT__AUTH__THROTTLE__REGISTRATION_BURST", "3"),
            ("CHAT__AUTH__THROTTLE__REGISTRATIONS_PER_HOUR", "3"),
        ],
    )
    .await;
    let addr = t.addr();
    let name = unique("victim");
    let reg = |n: &str| json!({"username": n, "password": "correct horse battery"});
    assert_eq!(post(addr, "/v1/auth/register", &reg(&name)).await.0, 201);
    let wrong = json!({"username": name, "password": "guess guess guess"});
    for _ in 0..3 {
        assert_eq!(post(addr, "/v1/auth/login", &wrong).await.0, 401);
    }
    // Locked now, whatever the password: even the right one waits.
    for body in [&wrong, &reg(&name)] {
        let (status, headers, v) = post(addr, "/v1/auth/login", body).await;
        assert_eq!(status, 429, "{v}");
        assert_eq!(v["code"], "rate_limited");
        let wait: u64 = header(&headers, "retry-after").unwrap().parse().unwrap();
        assert!((1..=30).contains(&wait), "{wait}");
    }
    // Another account is not locked.
    let other = unique("other");
    assert_eq!(post(addr, "/v1/auth/register", &reg(&other)).await.0, 201);
    assert_eq!(post(addr, "/v1/auth/login", &reg(&other)).await.0, 200);

    // Two registered from this address, one more allowed, then 429.
    assert_eq!(
        post(addr, "/v1/auth/register", &reg(&unique("x"))).await.0,
        201
    );
    let (status, headers, v) = post(addr, "/v1/auth/register", &reg(&unique("y"))).await;
    assert_eq!(status, 429, "{v}");
    assert!(header(&headers, "retry-after").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usernames_are_case_insensitive() {
    let t = Target::start(SECRET, &[]).await;
    let addr = t.addr();
    let name = unique("Ann");
    let body = |n: &str| json!({"username": n, "password": "correct horse battery"});
    let (status, _, v) = post(addr, "/v1/auth/register", &body(&name)).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["user"]["id"], name.to_ascii_lowercase());
    assert_eq!(v["user"]["display_name"], name, "shown as typed");
    let (status, _, v) = post(addr, "/v1/auth/register", &body(&name.to_ascii_lowercase())).await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["code"], "conflict");
    let (status, _, _) = post(addr, "/v1/auth/login", &body(&name.to_ascii_uppercase())).await;
    assert_eq!(status, 200, "any case logs in");
}

// ------------------------------------------------------------ HTTP

/// Reads until the server closes the socket; how long that took.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("still open after {limit:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slow_http_clients_are_cut_off_and_one_address_is_capped() {
    let t = Target::start(
        SECRET,
        &[
            ("CHAT__LISTEN__HEADER_READ_TIMEOUT_SECS", "1"),
            ("CHAT__LISTEN__BODY_READ_TIMEOUT_SECS", "1"),
            ("CHAT__LISTEN__MAX_CONNECTIONS_PER_IP", "4"),
        ],
    )
    .await;
    let addr = t.addr();
    let limit = Duration::from_secs(5);

    // Says nothing at all.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    closed_within(&mut silent, limit).await;

    // Half of a request's headers.
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    closed_within(&mut half, limit).await;

    // Headers, then a body that never comes.
    let mut trickle = TcpStream::connect(addr).await.unwrap();
    trickle
        .write_all(b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(limit, trickle.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("not received within 1 s"), "{answer}");

    // Four open connections from one address; the fifth is refused at
    // once, and a slot frees when one closes.
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        open.push(s);
    }
    let mut fifth = TcpStream::connect(addr).await.unwrap();
    let _ = fifth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let took = closed_within(&mut fifth, limit).await;
    assert!(
        took < Duration::from_secs(1),
        "refused at once, not timed out"
    );
    drop(open.pop());
    eventually("a freed slot serves again", || healthz(addr)).await;
}

/// `GET /healthz` on a new connection: Ok once it answers 200.
async fn healthz(addr: SocketAddr) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    let answer = String::from_utf8_lossy(&answer);
    answer
        .starts_with("HTTP/1.1 200")
        .then_some(())
        .ok_or_else(|| answer.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_errors_are_json_with_codes_that_match_and_no_internals() {
    let t = Target::start(SECRET, &[]).await;
    let addr = t.addr();
    let (status, body) = http(addr, "GET", "/no/such/route", None, None).await;
    assert_eq!(status, 404);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["code"], "not_found");
    let (status, body) = http(addr, "DELETE", "/v1/auth/login", None, None).await;
    assert_eq!(status, 405);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["message"].is_string(), "{body}");

    // A parse error names no line, column or Rust type.
    let (status, _, v) = post(addr, "/v1/auth/login", &json!({"username": 5})).await;
    assert_eq!(status, 400);
    let m = v["message"].as_str().unwrap();
    assert!(
        !m.contains("line") && !m.contains("column") && !m.contains("struct"),
        "{m}"
    );
    let (status, body) = http(addr, "POST", "/v1/auth/login", None, Some("{not json")).await;
    assert_eq!(status, 400);
    assert!(!body.contains("line"), "{body}");
    // A bad token does not list the algorithms the node accepts.
    let (status, body) = http(
        addr,
        "GET",
        "/v1/conversations/c/messages",
        Some("a.b.c"),
        None,
    )
    .await;
    assert_eq!(status, 401);
    assert!(!body.contains("HS") && !body.contains("RS256"), "{body}");
}

// ------------------------------------------------------------ WebSocket

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_floods_pings_and_never_reads_is_bounded_and_dropped() {
    let t = Target::start(SECRET, &[("CHAT__LIMITS__IDLE_TIMEOUT_SECS", "2")]).await;
    let user = register(t.addr(), &unique("pinger")).await;
    let client = connect(t.addr(), &user.access, Codec::Json).await;
    let (mut sink, _never_read) = client.ws.split();
    let before = t.mark();
    let payload = vec![7u8; 125];
    let started = Instant::now();
    let mut sent = 0u64;
    // Until the node stops reading (the send blocks) or drops the
    // connection, for at most 8 s.
    while started.elapsed() < Duration::from_secs(8) {
        let send = sink.send(WsMessage::Ping(payload.clone().into()));
        match tokio::time::timeout(Duration::from_secs(3), send).await {
            Ok(Ok(())) => sent += 1,
            Ok(Err(_)) => break,
            Err(_) => break, // the node stopped reading
        }
    }
    assert!(sent > 1000, "the flood never started: {sent} pings");
    t.assert_bounded(&format!("{sent} pings never read"), before)
        .await;
    // The node gives up on a client whose socket takes nothing.
    let sink = tokio::sync::Mutex::new(sink);
    eventually("the flooder dropped", || async {
        let mut sink = sink.lock().await;
        let ping = sink.send(WsMessage::Ping(Vec::new().into()));
        match tokio::time::timeout(Duration::from_millis(200), ping).await {
            Ok(Err(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_large_pages_to_readers_that_never_read_are_bounded() {
    let t = Target::start(SECRET, &[]).await;
    let addr = t.addr();
    let user = register(addr, &unique("reader")).await;
    let mut c = connect(addr, &user.access, Codec::Json).await;
    let conv = group(&mut c, &[]).await;
    // 200 messages of 16 KiB: each page of 200 is 3.3 MB as JSON.
    let body = "x".repeat(16 * 1024);
    for i in 0..200 {
        ok(c.request(send(&conv, &format!("m{i}"), &body)).await);
    }
    drop(c);
    let before = t.mark();
    let mut readers = Vec::new();
    for _ in 0..6 {
        let c = connect(addr, &user.access, Codec::Json).await;
        let frame = serde_json::to_string(&history(&conv, None, None, Some(200))).unwrap();
        readers.push(pipeline_unread(c, frame));
    }
    let sent: Vec<usize> = futures_util::future::join_all(readers).await;
    t.assert_bounded(&format!("history pages pipelined {sent:?} times"), before)
        .await;
}

/// Sends raw bytes as one WebSocket frame of the client's making.
async fn raw_frame(addr: SocketAddr, token: &str, frame: &[u8]) -> Option<u16> {
    let mut c = connect(addr, token, Codec::Json).await;
    let stream = c.ws.get_mut();
    let tcp = match stream {
        tokio_tungstenite::MaybeTlsStream::Plain(s) => s,
        _ => unreachable!("plain test connection"),
    };
    tcp.write_all(frame).await.unwrap();
    c.closed_with().await
}

/// A masked client frame: `first` is FIN/RSV/opcode, then the payload.
fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![first, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_websocket_framing_closes_with_1002_and_bad_utf8_with_1007() {
    let t = Target::start(SECRET, &[]).await;
    let user = register(t.addr(), &unique("framer")).await;
    let cases: [(&str, Vec<u8>, u16); 4] = [
        (
            "invalid UTF-8 in a text frame",
            masked(0x81, &[0xff, 0xfe, 0x41]),
            1007,
        ),
        ("reserved bits set", masked(0xC1, b"{}"), 1002),
        (
            "an unmasked client frame",
            vec![0x81, 0x02, b'{', b'}'],
            1002,
        ),
        ("an orphan continuation", masked(0x80, b"{}"), 1002),
    ];
    for (what, bytes, code) in cases {
        assert_eq!(
            raw_frame(t.addr(), &user.access, &bytes).await,
            Some(code),
            "{what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_with_a_req_is_answered_and_without_one_is_not() {
    let t = Target::start(SECRET, &[]).await;
    let user = register(t.addr(), &unique("typist")).await;
    let mut c = connect(t.addr(), &user.access, Codec::Json).await;
    let conv = group(&mut c, &[]).await;
    let typing = ClientFrame::Typing {
        req: None,
        conversation: conv.clone(),
        active: true,
    };
    ok(c.request(typing).await);
    // Without a req, nothing comes back: by the time the ping sent after it
    // is answered, no `ok` without a req has come either.
    c.send_frame(&ClientFrame::Typing {
        req: None,
        conversation: conv,
        active: false,
    })
    .await;
    ok(c.request(ClientFrame::Ping { req: None }).await);
    let stray = c
        .events
        .iter()
        .filter(|f| matches!(f, chat_protocol::ServerFrame::Ok(_)))
        .count();
    assert_eq!(stray, 0, "{:?}", c.events);
}

// ------------------------------------------------------------ frames

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_are_held_to_what_the_protocol_says() {
    let t = Target::start(SECRET, &[]).await;
    let user = register(t.addr(), &unique("strict")).await;
    let mut c = connect(t.addr(), &user.access, Codec::Json).await;
    let conv = group(&mut c, &[]).await;
    let other = group(&mut c, &[]).await;
    let first = ok(c.request(send(&conv, "m1", "first")).await)
        .message
        .unwrap();
    let elsewhere = ok(c.request(send(&other, "o1", "over there")).await)
        .message
        .unwrap();

    // A reply names a message of its own conversation.
    let reply_to = |key: &str, id: u64| ClientFrame::Send {
        attachments: Vec::new(),
        req: None,
        conversation: conv.clone(),
        client_msg_id: chat_protocol::ClientMsgId::new(key).unwrap(),
        body: "re".into(),
        kind: Default::default(),
        reply_to: Some(chat_protocol::MessageId(id)),
    };
    ok(c.request(reply_to("r1", first.id.0)).await);
    for (what, id) in [
        ("no such message", first.id.0 + 12345),
        ("another conversation's", elsewhere.id.0),
    ] {
        let e = c.request(reply_to(&format!("r-{id}"), id)).await;
        assert_eq!(err_code(&e), chat_protocol::ErrorCode::BadRequest, "{what}");
    }
    // The server's own kind, and control characters in a title.
    let system = ClientFrame::Send {
        attachments: Vec::new(),
        req: None,
        conversation: conv.clone(),
        client_msg_id: chat_protocol::ClientMsgId::new("s1").unwrap(),
        body: "I am the server".into(),
        kind: chat_protocol::MessageKind::new("system").unwrap(),
        reply_to: None,
    };
    assert_eq!(
        err_code(&c.request(system).await),
        chat_protocol::ErrorCode::BadRequest
    );
    for title in ["nul\u{0}", "esc\u{1b}[31m"] {
        let create = frames::create(chat_protocol::ConversationKind::Group, &[], Some(title));
        assert_eq!(
            err_code(&c.request(create).await),
            chat_protocol::ErrorCode::BadRequest,
            "{title:?}"
        );
    }

    // MessagePack: one map, nothing after it, as JSON is one object.
    let mut m = connect(t.addr(), &user.access, Codec::MsgPack).await;
    let pack = |v: rmpv::Value| {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &v).unwrap();
        out
    };
    let ping = pack(rmpv::Value::Map(vec![
        ("type".into(), "ping".into()),
        ("req".into(), 7.into()),
    ]));
    let mut trailing = ping.clone();
    trailing.extend_from_slice(&[0xc0, 0xc0]);
    let array = pack(rmpv::Value::Array(vec!["ping".into(), 7.into()]));
    for (what, bytes) in [("trailing bytes", trailing), ("a top-level array", array)] {
        m.ws.send(WsMessage::Binary(bytes.into())).await.unwrap();
        match m.recv().await.expect("an answer") {
            chat_protocol::ServerFrame::Error { code, .. } => {
                assert_eq!(code, chat_protocol::ErrorCode::BadRequest, "{what}")
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    m.ws.send(WsMessage::Binary(ping.into())).await.unwrap();
    assert!(matches!(
        m.recv().await,
        Some(chat_protocol::ServerFrame::Ok(_))
    ));
}

// ------------------------------------------------------------ tokens

fn mint(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_not_yet_valid_from_the_future_or_too_long_lived_are_refused() {
    let t = Target::start(SECRET, &[("CHAT__AUTH__REQUIRE_SESSION", "false")]).await;
    let user = register(t.addr(), &unique("holder")).await;
    let now = chat_protocol::now_ms() / 1000;
    let sub = user.id.as_str();
    let cases = [
        (
            "not valid for an hour (nbf)",
            json!({"sub": sub, "exp": now + 600, "nbf": now + 3600}),
        ),
        (
            "issued in an hour (iat)",
            json!({"sub": sub, "exp": now + 7200, "iat": now + 3600}),
        ),
        (
            "valid for a year",
            json!({"sub": sub, "exp": now + 365 * 24 * 3600, "iat": now}),
        ),
    ];
    for (what, claims) in cases {
        let r = try_connect(t.addr(), Some(&mint(claims)), Codec::Json).await;
        assert_eq!(r.err(), Some(401), "{what}");
    }
    // The control: the same, valid.
    let good = mint(json!({"sub": sub, "exp": now + 600, "iat": now}));
    assert!(try_connect(t.addr(), Some(&good), Codec::Json)
        .await
        .is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_must_name_a_live_login_of_a_user_that_exists() {
    let t = Target::start(SECRET, &[]).await;
    let addr = t.addr();
    let user = register(addr, &unique("signed")).await;
    let now = chat_protocol::now_ms() / 1000;
    let claims = |sub: &str, sid: Option<&str>| {
        let mut c = json!({"sub": sub, "exp": now + 600, "iat": now});
        if let Some(sid) = sid {
            c["sid"] = json!(sid);
        }
        mint(c)
    };
    let cases = [
        ("no login at all", claims(&user.id, None)),
        (
            "a made-up login",
            claims(&user.id, Some("00112233445566778899aabbccddeeff")),
        ),
        ("nobody who exists", claims("no-such-user", None)),
    ];
    for (what, token) in &cases {
        assert_eq!(
            try_connect(addr, Some(token), Codec::Json).await.err(),
            Some(401),
            "{what}"
        );
        let (status, _) = http(
            addr,
            "GET",
            "/v1/conversations/c/messages",
            Some(token),
            None,
        )
        .await;
        assert_eq!(status, 401, "{what} over HTTP");
    }
    assert!(try_connect(addr, Some(&user.access), Codec::Json)
        .await
        .is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_out_closes_that_logins_sockets_with_4001_and_ends_its_token() {
    let t = Target::start(SECRET, &[]).await;
    let addr = t.addr();
    let name = unique("leaver");
    let user = register(addr, &name).await;
    // A second login of the same user, on another device.
    let (status, _, other) = post(
        addr,
        "/v1/auth/login",
        &json!({"username": name, "password": "correct horse battery"}),
    )
    .await;
    assert_eq!(status, 200);
    let other_access = other["access_token"].as_str().unwrap().to_string();
    let mut a = connect(addr, &user.access, Codec::Json).await;
    let mut b = connect(addr, &user.access, Codec::MsgPack).await;
    let mut kept = connect(addr, &other_access, Codec::Json).await;
    let started = Instant::now();
    let (status, _, _) = post(
        addr,
        "/v1/auth/logout",
        &json!({"refresh_token": user.refresh}),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(a.closed_with().await, Some(4001));
    assert_eq!(b.closed_with().await, Some(4001));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    ok(kept.request(ClientFrame::Ping { req: None }).await);
    assert_eq!(
        try_connect(addr, Some(&user.access), Codec::Json)
            .await
            .err(),
        Some(401)
    );
    let (status, _) = http(
        addr,
        "GET",
        "/v1/conversations/c/messages",
        Some(&user.access),
        None,
    )
    .await;
    assert_eq!(status, 401);

    // A refresh token used twice (stolen) revokes its login the same way.
    let mut c = connect(addr, &other_access, Codec::Json).await;
    let refresh = other["refresh_token"].as_str().unwrap();
    for expected in [200, 401] {
        let (status, _, _) =
            post(addr, "/v1/auth/refresh", &json!({"refresh_token": refresh})).await;
        assert_eq!(status, expected);
    }
    assert_eq!(c.closed_with().await, Some(4001));
    assert_eq!(kept.closed_with().await, Some(4001));
}

// ------------------------------------------------------------ presence

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_shown_only_to_those_who_share_a_conversation() {
    let t = Target::start(SECRET, &[]).await;
    let addr = t.addr();
    let (a, b, stranger) = (
        register(addr, &unique("looker")).await,
        register(addr, &unique("friend")).await,
        register(addr, &unique("stranger")).await,
    );
    let mut ca = connect(addr, &a.access, Codec::Json).await;
    group(&mut ca, &[&b.id]).await;
    let _cb = connect(addr, &b.access, Codec::Json).await;
    let cs = connect(addr, &stranger.access, Codec::Json).await;
    let answer = ok(ca
        .request(ClientFrame::Watch {
            req: None,
            users: vec![user(&b.id), user(&stranger.id)],
        })
        .await)
    .presence
    .unwrap();
    let of = |id: &str| {
        answer
            .iter()
            .find(|p| p.user.as_str() == id)
            .unwrap()
            .clone()
    };
    // The friend's connect reaches the presence backend shortly after the
    // upgrade: either the answer says online, or an event does at once.
    if of(&b.id).status != chat_protocol::Status::Online {
        ca.event(|f| {
            matches!(f, chat_protocol::ServerFrame::Presence(p)
                if p.user.as_str() == b.id && p.status == chat_protocol::Status::Online)
        })
        .await;
    }
    let hidden = of(&stranger.id);
    assert_eq!(
        hidden.status,
        chat_protocol::Status::Offline,
        "online, but not shown"
    );
    assert_eq!(hidden.last_seen, None);
    // The stranger goes away and comes back: nothing is told; the friend's
    // change, made after, is, so anything about the stranger would be too.
    drop(cs);
    let _cs = connect(addr, &stranger.access, Codec::Json).await;
    drop(_cb);
    ca.event(|f| matches!(f, chat_protocol::ServerFrame::Presence(p) if p.user.as_str() == b.id))
        .await;
    assert!(!ca.events.iter().any(
        |f| matches!(f, chat_protocol::ServerFrame::Presence(p) if p.user.as_str() == stranger.id)
    ));
}

// ------------------------------------------------------------ group size

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_capped_and_large_ones_announce_changes_not_lists() {
    let t = Target::start(
        SECRET,
        &[
            ("CHAT__AUTH__REQUIRE_SESSION", "false"),
            ("CHAT__LIMITS__MAX_GROUP_MEMBERS", "150"),
        ],
    )
    .await;
    let addr = t.addr();
    let now = chat_protocol::now_ms() / 1000;
    let token = |id: &str| mint(json!({"sub": id, "exp": now + 600, "iat": now}));
    // 160 users, made by their first token (no password hashing).
    let prefix = unique("m");
    let ids: Vec<String> = (0..160).map(|i| format!("{prefix}-{i:03}")).collect();
    for id in &ids {
        let (status, _) = http(
            addr,
            "GET",
            "/v1/conversations/none/messages",
            Some(&token(id)),
            None,
        )
        .await;
        assert_ne!(status, 401, "{id}");
    }
    let mut owner = connect(addr, &token(&ids[0]), Codec::Json).await;
    let mut member = connect(addr, &token(&ids[1]), Codec::Json).await;
    let mut joiner = connect(addr, &token(&ids[100]), Codec::Json).await;
    let first: Vec<&str> = ids[1..100].iter().map(String::as_str).collect();
    let created = ok(owner
        .request(frames::create(
            chat_protocol::ConversationKind::Group,
            &first,
            Some("big"),
        ))
        .await)
    .conversation
    .unwrap();
    assert_eq!(created.member_count, Some(100));
    assert_eq!(created.members.len(), 100);
    let conv = created.id.clone();
    member
        .event(|f| matches!(f, chat_protocol::ServerFrame::Conversation { .. }))
        .await;

    // 20 more: the conversation object lists the first 100 and counts all.
    let invite = |users: &[String]| ClientFrame::Invite {
        req: None,
        conversation: conv.clone(),
        users: users.iter().map(|u| user(u)).collect(),
    };
    let grown = ok(owner.request(invite(&ids[100..120])).await)
        .conversation
        .unwrap();
    assert_eq!((grown.members.len(), grown.member_count), (100, Some(120)));
    // A member is told the change alone.
    let change = member
        .event(|f| matches!(f, chat_protocol::ServerFrame::Membership { .. }))
        .await;
    match &change {
        chat_protocol::ServerFrame::Membership {
            added,
            removed,
            member_count,
            ..
        } => {
            assert_eq!(added.len(), 20);
            assert!(removed.is_empty());
            assert_eq!(*member_count, 120);
        }
        _ => unreachable!(),
    }
    assert!(
        serde_json::to_vec(&change).unwrap().len() < 4_000,
        "the change, not the list"
    );
    assert!(!member
        .events
        .iter()
        .any(|f| matches!(f, chat_protocol::ServerFrame::Conversation { .. })));
    // One who joined learns of the conversation itself.
    joiner
        .event(|f| matches!(f, chat_protocol::ServerFrame::Conversation { conversation } if conversation.id == conv))
        .await;

    // Past the cap: refused, nothing changes.
    let over = owner.request(invite(&ids[120..151])).await;
    assert_eq!(err_code(&over), chat_protocol::ErrorCode::Forbidden);

    // The whole list, by pages ordered by id.
    let mut listed: Vec<String> = Vec::new();
    let mut after = None;
    loop {
        let page = ok(member
            .request(ClientFrame::Members {
                req: None,
                conversation: conv.clone(),
                after: after.clone(),
                limit: Some(50),
            })
            .await);
        let members = page.members.unwrap();
        after = members.last().map(|m| m.user.clone());
        listed.extend(members.into_iter().map(|m| m.user.as_str().to_string()));
        if !page.more.unwrap() {
            break;
        }
    }
    assert_eq!(listed, ids[..120].to_vec());
    // Outsiders get no page.
    let mut outsider = connect(addr, &token(&ids[150]), Codec::Json).await;
    let refused = outsider
        .request(ClientFrame::Members {
            req: None,
            conversation: conv.clone(),
            after: None,
            limit: None,
        })
        .await;
    assert_eq!(err_code(&refused), chat_protocol::ErrorCode::Forbidden);
}
