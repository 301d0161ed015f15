//! Every HTTP route of docs/protocol.md on in-process nodes, over real sockets:
//! auth (register, login, refresh, logout), history and sending over HTTP,
//! health, readiness and metrics. Errors must be JSON `{"code","message"}`
//! with the status of their code.

mod common;

use std::net::SocketAddr;

use chat_protocol::{ClientFrame, ConversationId, ServerFrame};
use common::*;
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery";

/// One request; the body parsed as JSON (`Null` when empty).
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let (status, text) = http(addr, method, path, token, body).await;
    (status, parse_json(method, path, &text))
}

/// Like [`call`], with the response headers.
async fn call_full(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Vec<(String, String)>, Value) {
    let (status, headers, text) = http_full(addr, method, path, token, body).await;
    (status, headers, parse_json(method, path, &text))
}

fn parse_json(method: &str, path: &str, text: &str) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("{method} {path}: body is not JSON ({e}): {text:?}"))
}

/// Asserts an error answer: the status, and a JSON body with a string `code`
/// (equal to `code` when given) and a non-empty `message`.
#[track_caller]
fn assert_error(got: (u16, Value), status: u16, code: Option<&str>, what: &str) {
    let (s, body) = got;
    assert_eq!(s, status, "{what}: status (body {body})");
    let c = body["code"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no string `code` in {body}"));
    if let Some(code) = code {
        assert_eq!(c, code, "{what}: code (body {body})");
    }
    let m = body["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no string `message` in {body}"));
    assert!(!m.is_empty(), "{what}: empty message");
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Checks the shape of a register/login/refresh answer; returns the tokens.
#[track_caller]
fn tokens(body: &Value, user: &str) -> (String, String) {
    assert_eq!(body["user"]["id"], json!(user), "user in {body}");
    assert!(body["user"].get("password_hash").is_none(), "hash leaked");
    let access = body["access_token"].as_str().expect("access_token");
    let refresh = body["refresh_token"].as_str().expect("refresh_token");
    assert!(!access.is_empty() && !refresh.is_empty());
    (access.to_string(), refresh.to_string())
}

fn creds(user: &str, password: &str) -> String {
    json!({"username": user, "password": password}).to_string()
}

fn refresh_body(token: &str) -> String {
    json!({ "refresh_token": token }).to_string()
}

/// A message id in JSON: a decimal string.
#[track_caller]
fn id_of(message: &Value) -> u64 {
    let s = message["id"]
        .as_str()
        .unwrap_or_else(|| panic!("id is not a string in {message}"));
    assert!(
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()),
        "id {s:?} is not decimal"
    );
    s.parse().unwrap()
}

fn messages_path(conv: &str) -> String {
    format!("/v1/conversations/{conv}/messages")
}

/// Alice's group with Bob, both connected over WebSocket.
struct Group {
    alice: TestUser,
    bob: TestUser,
    conv: ConversationId,
    a: Client,
    b: Client,
}

async fn group_of_two(node: &TestNode) -> Group {
    let Pair {
        a: alice,
        b: bob,
        ca: a,
        cb: mut b,
        conv,
    } = pair_in_group(node, "alice", "bob").await;
    b.event(|f| matches!(f, ServerFrame::Conversation { conversation } if conversation.id == conv))
        .await;
    Group {
        alice,
        bob,
        conv,
        a,
        b,
    }
}

/// POSTs a message; returns (status, body).
async fn post_message(
    addr: SocketAddr,
    conv: &str,
    token: &str,
    cmid: &str,
    body: &str,
) -> (u16, Value) {
    let req = json!({ "client_msg_id": cmid, "body": body }).to_string();
    call(addr, "POST", &messages_path(conv), Some(token), Some(&req)).await
}

#[tokio::test]
async fn register_and_login() {
    let node = TestNode::start().await;
    let name = unique("reg");

    let (status, body) = call(
        node.addr,
        "POST",
        "/v1/auth/register",
        None,
        Some(&json!({"username": name, "password": PASSWORD, "display_name": "Reg"}).to_string()),
    )
    .await;
    assert_eq!(status, 201, "register: {body}");
    let (access, _) = tokens(&body, &name);
    assert_eq!(body["user"]["display_name"], json!("Reg"));
    assert!(token_accepted(node.addr, &access).await);

    // The same name again: 409 with a JSON error.
    assert_error(
        call(
            node.addr,
            "POST",
            "/v1/auth/register",
            None,
            Some(&creds(&name, "another password")),
        )
        .await,
        409,
        None,
        "duplicate username",
    );
    // Bad usernames and short passwords: 400.
    for bad in ["has space", "", "slash/name", &"x".repeat(65)] {
        assert_error(
            call(
                node.addr,
                "POST",
                "/v1/auth/register",
                None,
                Some(&creds(bad, PASSWORD)),
            )
            .await,
            400,
            Some("bad_request"),
            &format!("username {bad:?}"),
        );
    }
    assert_error(
        call(
            node.addr,
            "POST",
            "/v1/auth/register",
            None,
            Some(&creds(&unique("shortpw"), "short")),
        )
        .await,
        400,
        Some("bad_request"),
        "short password",
    );
    // Malformed and incomplete bodies: 400 with a JSON error.
    for bad in ["{not json", r#"{"username":"only"}"#, "[]", ""] {
        assert_error(
            call(node.addr, "POST", "/v1/auth/register", None, Some(bad)).await,
            400,
            Some("bad_request"),
            &format!("register body {bad:?}"),
        );
    }

    // Login: 200 with fresh tokens; a wrong password or an unknown user: 401.
    let (status, body) = call(
        node.addr,
        "POST",
        "/v1/auth/login",
        None,
        Some(&creds(&name, PASSWORD)),
    )
    .await;
    assert_eq!(status, 200, "login: {body}");
    let (access2, _) = tokens(&body, &name);
    assert!(token_accepted(node.addr, &access2).await);
    assert_error(
        call(
            node.addr,
            "POST",
            "/v1/auth/login",
            None,
            Some(&creds(&name, "wrong password")),
        )
        .await,
        401,
        Some("unauthorized"),
        "wrong password",
    );
    assert_error(
        call(
            node.addr,
            "POST",
            "/v1/auth/login",
            None,
            Some(&creds(&unique("nobody"), PASSWORD)),
        )
        .await,
        401,
        Some("unauthorized"),
        "unknown user",
    );
    // A wrong password is wrong whatever its length: 401, not the
    // registration policy's 400.
    for wrong in ["short", "", &"p".repeat(5000)] {
        assert_error(
            call(
                node.addr,
                "POST",
                "/v1/auth/login",
                None,
                Some(&creds(&name, wrong)),
            )
            .await,
            401,
            Some("unauthorized"),
            &format!("a wrong password of {} bytes", wrong.len()),
        );
    }
    assert_error(
        call(node.addr, "POST", "/v1/auth/login", None, Some("{")).await,
        400,
        Some("bad_request"),
        "malformed login",
    );
    // A garbage access token is refused.
    assert!(!token_accepted(node.addr, "not.a.jwt").await);
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let node = TestNode::start().await;
    let name = unique("rot");
    let user = node.user(&name).await;
    let refresh = |t: String| {
        let addr = node.addr;
        async move {
            call(
                addr,
                "POST",
                "/v1/auth/refresh",
                None,
                Some(&refresh_body(&t)),
            )
            .await
        }
    };

    // R0 -> R1: new tokens, and the new access token works.
    let (status, body) = refresh(user.refresh.clone()).await;
    assert_eq!(status, 200, "refresh: {body}");
    let (access1, r1) = tokens(&body, &name);
    assert_ne!(r1, user.refresh, "a new refresh token");
    assert!(token_accepted(node.addr, &access1).await);
    // R1 -> R2.
    let (status, body) = refresh(r1.clone()).await;
    assert_eq!(status, 200, "second refresh: {body}");
    let (_, r2) = tokens(&body, &name);

    // Another login is another family, untouched by what follows.
    let (status, body) = call(
        node.addr,
        "POST",
        "/v1/auth/login",
        None,
        Some(&creds(&name, PASSWORD)),
    )
    .await;
    assert_eq!(status, 200);
    let (_, other_family) = tokens(&body, &name);

    // The used R0 is refused, and its reuse revokes the family: R2 fails too.
    assert_error(
        refresh(user.refresh.clone()).await,
        401,
        Some("unauthorized"),
        "reused refresh token",
    );
    assert_error(
        refresh(r2).await,
        401,
        Some("unauthorized"),
        "newest token of a revoked family",
    );
    let (status, body) = refresh(other_family).await;
    assert_eq!(status, 200, "the other login still refreshes: {body}");

    // Malformed tokens and bodies.
    assert_error(
        refresh("garbage".into()).await,
        401,
        Some("unauthorized"),
        "garbage",
    );
    assert_error(
        call(node.addr, "POST", "/v1/auth/refresh", None, Some("{}")).await,
        400,
        Some("bad_request"),
        "no refresh_token",
    );
}

#[tokio::test]
async fn logout_ends_the_login() {
    let node = TestNode::start().await;
    let user = node.user(&unique("out")).await;
    let (status, body) = call(
        node.addr,
        "POST",
        "/v1/auth/logout",
        None,
        Some(&refresh_body(&user.refresh)),
    )
    .await;
    assert_eq!(status, 204, "logout: {body}");
    assert_eq!(body, Value::Null, "204 has no body");
    assert_error(
        call(
            node.addr,
            "POST",
            "/v1/auth/refresh",
            None,
            Some(&refresh_body(&user.refresh)),
        )
        .await,
        401,
        Some("unauthorized"),
        "refresh after logout",
    );
    // Logging out twice is fine.
    let (status, _) = call(
        node.addr,
        "POST",
        "/v1/auth/logout",
        None,
        Some(&refresh_body(&user.refresh)),
    )
    .await;
    assert_eq!(status, 204);
}

#[tokio::test]
async fn history_over_http() {
    let node = TestNode::start().await;
    let mut g = group_of_two(&node).await;
    let path = messages_path(g.conv.as_str());

    // Empty at first.
    let (status, body) = call(node.addr, "GET", &path, Some(&g.alice.access), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["messages"], json!([]));
    assert_eq!(body["more"], json!(false));

    // Seven messages over WebSocket.
    let mut sent = Vec::new();
    for i in 0..7 {
        let m = ok(g
            .a
            .request(frames::send(
                &g.conv,
                &format!("h{i}"),
                &format!("body {i}"),
            ))
            .await)
        .message
        .unwrap();
        sent.push(m.id.0);
    }
    let (status, body) = call(node.addr, "GET", &path, Some(&g.bob.access), None).await;
    assert_eq!(status, 200, "{body}");
    let all: Vec<u64> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(all, sent, "everything, ascending");
    assert_eq!(body["more"], json!(false));
    let first = &body["messages"][0];
    assert_eq!(first["body"], json!("body 0"));
    assert_eq!(first["sender"], json!(g.alice.id));
    assert_eq!(first["conversation"], json!(g.conv.as_str()));
    assert_eq!(first["client_msg_id"], json!("h0"));
    assert_eq!(first["kind"], json!("text"));
    assert!(first["ts"].is_u64());

    // Pages: the newest first, then `before`; `after` from the start.
    let page = |q: String| {
        let (addr, path, token) = (node.addr, path.clone(), g.bob.access.clone());
        async move {
            let (status, body) =
                call(addr, "GET", &format!("{path}?{q}"), Some(&token), None).await;
            assert_eq!(status, 200, "{q}: {body}");
            let ids: Vec<u64> = body["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(id_of)
                .collect();
            (ids, body["more"].as_bool().expect("more is a bool"))
        }
    };
    assert_eq!(page("limit=3".into()).await, (sent[4..].to_vec(), true));
    assert_eq!(
        page(format!("limit=3&before={}", sent[4])).await,
        (sent[1..4].to_vec(), true)
    );
    assert_eq!(
        page(format!("limit=3&before={}", sent[1])).await,
        (sent[..1].to_vec(), false)
    );
    assert_eq!(
        page(format!("limit=4&after={}", sent[0])).await,
        (sent[1..5].to_vec(), true)
    );
    assert_eq!(
        page(format!("limit=4&after={}", sent[4])).await,
        (sent[5..].to_vec(), false)
    );
    assert_eq!(
        page(format!("before={}&after={}", sent[5], sent[1])).await,
        (sent[2..5].to_vec(), false)
    );
    assert_eq!(page("limit=200".into()).await, (sent.clone(), false));
    // The token may also come as a query parameter.
    let (status, _) = call(
        node.addr,
        "GET",
        &format!("{path}?access_token={}", g.bob.access),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);

    // Errors.
    let carol = node.user(&unique("carol")).await;
    assert_error(
        call(node.addr, "GET", &path, Some(&carol.access), None).await,
        403,
        Some("forbidden"),
        "non-member",
    );
    assert_error(
        call(
            node.addr,
            "GET",
            &messages_path("g:unknown"),
            Some(&carol.access),
            None,
        )
        .await,
        404,
        Some("not_found"),
        "unknown conversation",
    );
    let (status, headers, body) = call_full(node.addr, "GET", &path, None, None).await;
    assert_error((status, body), 401, Some("unauthorized"), "no token");
    assert_eq!(header(&headers, "www-authenticate"), Some("Bearer"));
    assert_error(
        call(node.addr, "GET", &path, Some("bad-token"), None).await,
        401,
        Some("unauthorized"),
        "bad token",
    );
    // Bad queries and ids: 400 each, whatever is wrong.
    let queries = [
        "limit=0",
        "limit=201",
        "limit=-1",
        "limit=abc",
        "limit=99999999999",
        "before=abc",
        "after=-5",
    ]
    .map(|q| (format!("{path}?{q}"), q));
    let ids = [
        (messages_path("bad%20id"), "invalid conversation id"),
        (messages_path("%FF"), "conversation id that is not UTF-8"),
    ];
    for (bad, what) in queries.into_iter().chain(ids) {
        assert_error(
            call(node.addr, "GET", &bad, Some(&g.bob.access), None).await,
            400,
            Some("bad_request"),
            what,
        );
    }
}

#[tokio::test]
async fn send_over_http() {
    let node = TestNode::start().await;
    let mut g = group_of_two(&node).await;
    let conv = g.conv.as_str().to_string();
    let path = messages_path(&conv);

    let (status, body) =
        post_message(node.addr, &conv, &g.alice.access, "web-1", "from http").await;
    assert_eq!(status, 201, "send: {body}");
    let m = &body["message"];
    let id = id_of(m);
    assert_eq!(m["body"], json!("from http"));
    assert_eq!(m["sender"], json!(g.alice.id));
    assert_eq!(m["conversation"], json!(conv));
    assert_eq!(m["client_msg_id"], json!("web-1"));
    assert_eq!(m["kind"], json!("text"));

    // Bob, on a WebSocket, receives it live, with the same content.
    let live =
        g.b.event(|f| matches!(f, ServerFrame::Message { .. }))
            .await;
    let ServerFrame::Message { message } = live else {
        unreachable!()
    };
    assert_eq!(message.id.0, id);
    assert_eq!(message.body, "from http");
    assert_eq!(serde_json::to_value(&message).unwrap(), *m, "same message");

    // A retry with the same client_msg_id answers the same message.
    let (status, again) =
        post_message(node.addr, &conv, &g.alice.access, "web-1", "from http").await;
    assert_eq!(status, 201, "retry: {again}");
    assert_eq!(again["message"], *m, "retry returns the first message");
    // Even with another body: the key is the client_msg_id.
    let (_, again2) = post_message(node.addr, &conv, &g.alice.access, "web-1", "changed").await;
    assert_eq!(id_of(&again2["message"]), id);
    assert_eq!(again2["message"]["body"], json!("from http"));

    // A probe after the retries: Bob got the first message exactly once.
    let (status, probe) = post_message(node.addr, &conv, &g.alice.access, "web-2", "probe").await;
    assert_eq!(status, 201);
    let probe_id = id_of(&probe["message"]);
    assert!(probe_id > id, "ids increase");
    g.b.event(|f| matches!(f, ServerFrame::Message { message } if message.id.0 == probe_id))
        .await;
    let copies =
        g.b.events
            .iter()
            .filter(|f| matches!(f, ServerFrame::Message { message } if message.id.0 == id))
            .count();
    assert_eq!(copies, 0, "the retried message was delivered again");
    // History holds it once.
    let (_, h) = call(node.addr, "GET", &path, Some(&g.bob.access), None).await;
    let ids: Vec<u64> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(ids, vec![id, probe_id]);

    // Kind and reply_to (an id as a decimal string).
    let req =
        json!({"client_msg_id": "web-3", "body": "re", "kind": "note", "reply_to": id.to_string()});
    let (status, body) = call(
        node.addr,
        "POST",
        &path,
        Some(&g.bob.access),
        Some(&req.to_string()),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["message"]["kind"], json!("note"));
    assert_eq!(body["message"]["reply_to"], json!(id.to_string()));
    assert_eq!(body["message"]["sender"], json!(g.bob.id));

    // The body limit: max_body_bytes is fine, one more byte is 413.
    let max = node.app.config.limits.max_body_bytes;
    let (status, body) = post_message(
        node.addr,
        &conv,
        &g.alice.access,
        "big-ok",
        &"x".repeat(max),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_error(
        post_message(
            node.addr,
            &conv,
            &g.alice.access,
            "big-no",
            &"x".repeat(max + 1),
        )
        .await,
        413,
        Some("too_large"),
        "body over max_body_bytes",
    );

    // Malformed requests: 400 with a JSON error.
    for bad in [
        "{not json".to_string(),
        "".to_string(),
        json!({"body": "no id"}).to_string(),
        json!({"client_msg_id": "x"}).to_string(),
        json!({"client_msg_id": "", "body": "empty id"}).to_string(),
        json!({"client_msg_id": "y".repeat(65), "body": "long id"}).to_string(),
        json!({"client_msg_id": "z", "body": "bad kind", "kind": "NOT OK"}).to_string(),
        json!({"client_msg_id": "z", "body": 5}).to_string(),
    ] {
        assert_error(
            call(node.addr, "POST", &path, Some(&g.alice.access), Some(&bad)).await,
            400,
            Some("bad_request"),
            &format!("send body {bad:?}"),
        );
    }
    // Who may send where.
    let carol = node.user(&unique("carol")).await;
    assert_error(
        post_message(node.addr, &conv, &carol.access, "c1", "let me in").await,
        403,
        Some("forbidden"),
        "non-member send",
    );
    assert_error(
        post_message(node.addr, "g:unknown", &carol.access, "c1", "?").await,
        404,
        Some("not_found"),
        "unknown conversation",
    );
    assert_error(
        call(
            node.addr,
            "POST",
            &path,
            None,
            Some(&json!({"client_msg_id": "n", "body": "b"}).to_string()),
        )
        .await,
        401,
        Some("unauthorized"),
        "no token",
    );
    // None of the refused sends reached history.
    let (_, h) = call(node.addr, "GET", &path, Some(&g.bob.access), None).await;
    let bodies: Vec<&str> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies.len(), 4, "{bodies:?}");
    // Alice's own connection is still fine.
    ok(g.a
        .request(chat_protocol::ClientFrame::Ping { req: None })
        .await);
}

#[tokio::test]
async fn request_over_the_frame_limit_is_413_json() {
    let node = TestNode::start().await;
    let g = group_of_two(&node).await;
    let conv = g.conv.as_str().to_string();
    // The whole request body over max_frame_bytes: refused before parsing.
    let body = "y".repeat(node.app.config.limits.max_frame_bytes + 1);
    assert_error(
        post_message(node.addr, &conv, &g.alice.access, "huge", &body).await,
        413,
        Some("too_large"),
        "request body over max_frame_bytes",
    );
    assert_error(
        call(
            node.addr,
            "POST",
            "/v1/auth/register",
            None,
            Some(&creds(&unique("huge"), &"p".repeat(70 * 1024))),
        )
        .await,
        413,
        Some("too_large"),
        "register body over max_frame_bytes",
    );
}

#[tokio::test]
async fn rate_limited_send_is_429_with_retry_after() {
    let node = TestNode::start_with(|c| {
        c.limits.send_burst = 2;
        c.limits.sends_per_second = 1;
    })
    .await;
    let g = group_of_two(&node).await;
    let conv = g.conv.as_str().to_string();
    // A burst of 2 and one per second: a few quick sends must hit the limit.
    let mut limited = None;
    for i in 0..6 {
        let req = json!({"client_msg_id": format!("r{i}"), "body": "b"}).to_string();
        let (status, headers, body) = call_full(
            node.addr,
            "POST",
            &messages_path(&conv),
            Some(&g.alice.access),
            Some(&req),
        )
        .await;
        if status == 429 {
            limited = Some((headers, body));
            break;
        }
        assert_eq!(status, 201, "{body}");
    }
    let (headers, body) = limited.expect("a 429 among six quick sends");
    assert_error((429, body.clone()), 429, Some("rate_limited"), "rate limit");
    let retry: u64 = header(&headers, "retry-after")
        .expect("Retry-After header")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert!(body["retry_after_ms"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let node = TestNode::start().await;
    let (status, _) = http(node.addr, "GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
    let (status, body) = call(node.addr, "GET", "/readyz", None, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], json!("ready"));

    let before = metrics(node.addr).await;
    assert_eq!(sample(&before.1, "chat_messages_accepted_total"), Some(0.0));

    // 3 over HTTP, 2 over WebSocket, 1 retry (deduplicated, not accepted).
    let mut g = group_of_two(&node).await;
    let conv = g.conv.as_str().to_string();
    for i in 0..3 {
        let (status, body) =
            post_message(node.addr, &conv, &g.alice.access, &format!("m{i}"), "x").await;
        assert_eq!(status, 201, "{body}");
    }
    for i in 0..2 {
        ok(g.a
            .request(frames::send(&g.conv, &format!("w{i}"), "y"))
            .await);
    }
    let (status, _) = post_message(node.addr, &conv, &g.alice.access, "m0", "x").await;
    assert_eq!(status, 201);

    let (headers, text) = metrics(node.addr).await;
    let ctype = header(&headers, "content-type").expect("content type");
    assert!(
        ctype.starts_with("application/openmetrics-text") || ctype.starts_with("text/plain"),
        "{ctype}"
    );
    assert!(
        text.contains("# TYPE chat_messages_accepted counter"),
        "{text}"
    );
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );
    assert_eq!(sample(&text, "chat_messages_accepted_total"), Some(5.0));
    assert_eq!(sample(&text, "chat_sends_deduplicated_total"), Some(1.0));
    assert_eq!(sample(&text, "chat_connections_open"), Some(2.0));

    // Both users' sessions sleep while they have nothing to do; a presence
    // watch wakes alice's (through the handle of the actor that slept) and
    // keeps it awake until she unwatches.
    let sessions = |text: &str| {
        (
            sample(text, "chat_sessions_active"),
            sample(text, "chat_sessions_asleep"),
        )
    };
    let wait_for = |want: (f64, f64)| async move {
        eventually("sessions asleep", || async {
            let got = sessions(&metrics(node.addr).await.1);
            (got == (Some(want.0), Some(want.1)))
                .then_some(())
                .ok_or(format!("{got:?}"))
        })
        .await
    };
    wait_for((2.0, 2.0)).await;
    let watched = ok(g
        .a
        .request(ClientFrame::Watch {
            req: None,
            users: vec![frames::user(&g.bob.id)],
        })
        .await)
    .presence
    .expect("presence");
    assert_eq!(watched[0].status, chat_protocol::Status::Online);
    assert_eq!(sessions(&metrics(node.addr).await.1).1, Some(1.0));
    ok(g.a
        .request(ClientFrame::Unwatch {
            req: None,
            users: vec![frames::user(&g.bob.id)],
        })
        .await);
    wait_for((2.0, 2.0)).await;
    // Live delivery to sleeping sessions' connections goes on.
    ok(g.a.request(frames::send(&g.conv, "after-sleep", "z")).await);
    g.b.event(|f| matches!(f, ServerFrame::Message { message } if message.client_msg_id.as_str() == "after-sleep"))
        .await;
}

async fn metrics(addr: SocketAddr) -> (Vec<(String, String)>, String) {
    let (status, headers, text) = http_full(addr, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200, "{text}");
    (headers, text)
}
