//! Hostile clients against the accounts of a real `chat-node` process,
//! over real sockets: squatting an admin's name, borrowing another user's
//! login, outliving a suspension, telling a right password from a wrong one
//! while suspended, locking an owner out from afar, and error messages that
//! would show the server's internals.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::Output;

use chat_protocol::Codec;
use common::procs::{NodeProc, Site};
use common::target::Target;
use common::*;
use serde_json::{json, Value};
use tokio::net::TcpSocket;

const SECRET: &str = "hostile-auth-secret-hostile-auth-secret!";
const PASSWORD: &str = "correct horse battery";

async fn post(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let (status, text) = http(addr, "POST", path, None, Some(&body.to_string())).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A POST whose socket comes from `source` (any loopback address reaches
/// a node listening on 127.0.0.1): a second client machine, as the node
/// sees it.
async fn post_from(source: IpAddr, addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let s = socket.connect(addr).await.unwrap();
    let body = body.to_string();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, _, text) = exchange(s, &req).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn login_body(name: &str, password: &str) -> Value {
    json!({"username": name, "password": password})
}

async fn login(addr: SocketAddr, name: &str) -> TestUser {
    let (status, v) = post(addr, "/v1/auth/login", &login_body(name, PASSWORD)).await;
    assert_eq!(status, 200, "login {name}: {v}");
    TestUser {
        id: v["user"]["id"].as_str().unwrap().to_string(),
        access: v["access_token"].as_str().unwrap().to_string(),
        refresh: v["refresh_token"].as_str().unwrap().to_string(),
    }
}

fn mint(claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// The claims of a token this node issued.
fn claims_of(token: &str) -> Value {
    let validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()),
        &validation,
    )
    .unwrap()
    .claims
}

/// The status an access token gets on HTTP and on the WebSocket upgrade,
/// which must agree.
async fn token_status(addr: SocketAddr, token: &str) -> u16 {
    let (http_status, body) = http(
        addr,
        "GET",
        "/v1/conversations/g:not-there/messages",
        Some(token),
        None,
    )
    .await;
    let ws_status = match try_connect(addr, Some(token), Codec::Json).await {
        Ok(_) => 404,
        Err(status) => status,
    };
    assert_eq!(http_status, ws_status, "HTTP ({body}) and WebSocket differ");
    http_status
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn admin_post(addr: SocketAddr, admin_token: &str, path: &str) {
    let (status, body) = http(addr, "POST", path, Some(admin_token), None).await;
    assert_eq!(status, 200, "{path}: {body}");
}

// ------------------------------------------------------------ admins

/// A name in `[admin] users` is not for the first comer: public
/// registration refuses it in any case, as it refuses a taken name; the
/// node warns at start while no such account exists; the operator makes
/// it with `chat-node admin create-user` (the password on stdin), and that
/// account, and only it, is an admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_name_is_reserved_for_the_account_the_operator_makes() {
    let name = unique("root");
    let listed = format!("[\"{}\"]", name.to_ascii_uppercase());
    let env = [("CHAT__ADMIN__USERS", listed.as_str())];
    let mut site = Site::new();
    let node = site.start(Some(SECRET), &env).await;
    let addr = node.addr;

    let taken = register(addr, &unique("taken")).await;
    let (taken_status, taken_answer) =
        post(addr, "/v1/auth/register", &login_body(&taken.id, PASSWORD)).await;
    assert_eq!(taken_status, 409, "{taken_answer}");
    for spelling in [
        name.clone(),
        name.to_ascii_uppercase(),
        format!("{}{}", &name[..1].to_ascii_uppercase(), &name[1..]),
    ] {
        let (status, v) = post(addr, "/v1/auth/register", &login_body(&spelling, PASSWORD)).await;
        assert_eq!(status, taken_status, "{spelling}: {v}");
        assert_eq!(v, taken_answer, "{spelling}: answered as a taken name");
    }
    let log = std::fs::read_to_string(&node.log).unwrap();
    let warned = |log: &str| {
        log.lines()
            .any(|l| l.contains("WARN") && l.contains(&name) && l.contains("admin"))
    };
    assert!(warned(&log), "no warning about {name} in:\n{log}");
    site.stop(node).await;

    let made = site.admin(&["create-user", &name], &env, &format!("{PASSWORD}\n"));
    assert!(made.status.success(), "create-user: {}", stderr(&made));
    let again = site.admin(&["create-user", &name], &env, &format!("{PASSWORD}\n"));
    assert!(!again.status.success(), "made twice");
    assert!(stderr(&again).contains("exists"), "{}", stderr(&again));

    let node = site.start(Some(SECRET), &env).await;
    let log = std::fs::read_to_string(&node.log).unwrap();
    assert!(!warned(&log), "warned though {name} exists:\n{log}");
    let root = login(node.addr, &name).await;
    let (status, body) = http(
        node.addr,
        "GET",
        "/v1/admin/nodes",
        Some(&root.access),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = http(
        node.addr,
        "GET",
        "/v1/admin/nodes",
        Some(&taken.access),
        None,
    )
    .await;
    assert_eq!(status, 403, "anyone else is not an admin");
    let (status, v) = post(node.addr, "/v1/auth/register", &login_body(&name, PASSWORD)).await;
    assert_eq!(status, 409, "{v}");
}

// ------------------------------------------------------------ logins

/// A token's `sid` must be a login of its `sub`: a token with one user's
/// id and another user's live login is refused, on HTTP and on the
/// upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_naming_another_users_login_is_refused() {
    let t = Target::start(SECRET, &[]).await;
    let addr = t.addr();
    let ann = register(addr, &unique("ann")).await;
    let bob = register(addr, &unique("bob")).await;
    let bobs_login = claims_of(&bob.access)["sid"].clone();
    assert!(bobs_login.is_string(), "{bobs_login}");
    let now = chat_protocol::now_ms() / 1000;
    let token =
        |sub: &str| mint(&json!({"sub": sub, "sid": bobs_login, "iat": now, "exp": now + 600}));
    assert_eq!(token_status(addr, &token(&bob.id)).await, 404, "bob's own");
    assert_eq!(
        token_status(addr, &token(&ann.id)).await,
        401,
        "ann with bob's login"
    );
}

/// Suspending an account ends every one of its logins: after the
/// suspension is lifted, no token from before it (access or refresh, of
/// any login) works again; a new sign-in does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspension_ends_every_login_for_good() {
    let mut site = Site::new();
    let (node, boss) = with_admin(&mut site, &[]).await;
    let addr = node.addr;
    let boss = login(addr, &boss).await;
    let name = unique("bob");
    let first = register(addr, &name).await;
    let second = login(addr, &name).await;
    let mut socket = connect(addr, &first.access, Codec::Json).await;
    let user = format!("/v1/admin/users/{}", first.id);

    admin_post(addr, &boss.access, &format!("{user}/suspend")).await;
    assert_eq!(socket.closed_with().await, Some(4005));
    admin_post(addr, &boss.access, &format!("{user}/unsuspend")).await;

    for (what, old) in [("first", &first), ("second", &second)] {
        assert_eq!(
            token_status(addr, &old.access).await,
            401,
            "{what} login's access token"
        );
        let (status, v) = post(
            addr,
            "/v1/auth/refresh",
            &json!({"refresh_token": old.refresh}),
        )
        .await;
        assert_eq!(status, 401, "{what} login's refresh token: {v}");
    }
    let fresh = login(addr, &name).await;
    assert_eq!(token_status(addr, &fresh.access).await, 404, "a new login");
    let (status, v) = post(
        addr,
        "/v1/auth/refresh",
        &json!({"refresh_token": fresh.refresh}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
}

/// While an account is suspended, its right password and a wrong one get
/// the same answer: the suspension does not tell a guesser they guessed
/// right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_suspended_the_right_and_a_wrong_password_answer_alike() {
    let mut site = Site::new();
    let env = [("CHAT__AUTH__THROTTLE__FREE_FAILURES", "2")];
    let (node, boss) = with_admin(&mut site, &env).await;
    let addr = node.addr;
    let boss = login(addr, &boss).await;
    let name = unique("bob");
    let bob = register(addr, &name).await;
    admin_post(
        addr,
        &boss.access,
        &format!("/v1/admin/users/{}/suspend", bob.id),
    )
    .await;

    let right = post(addr, "/v1/auth/login", &login_body(&name, PASSWORD)).await;
    assert_eq!(right.0, 403, "{}", right.1);
    // More wrong guesses than lock an account: were they counted and the
    // right one not, the lock would tell them apart.
    for guess in [
        "wrong password 1",
        "wrong password 2",
        PASSWORD,
        "wrong password 3",
    ] {
        let answer = post(addr, "/v1/auth/login", &login_body(&name, guess)).await;
        assert_eq!(answer, right, "{guess:?} answered otherwise");
    }
}

/// Wrong passwords lock an account per source address: a stranger's
/// guesses lock the stranger out, not the owner signing in from elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_guesses_do_not_lock_the_owner_out_from_another_address() {
    let t = Target::start(
        SECRET,
        &[
            ("CHAT__AUTH__THROTTLE__FREE_FAILURES", "3"),
            ("CHAT__AUTH__THROTTLE__LOCKOUT_SECS", "60"),
        ],
    )
    .await;
    let addr = t.addr();
    let name = unique("owner");
    register(addr, &name).await;
    let owner: IpAddr = [127, 0, 0, 1].into();
    let stranger: IpAddr = [127, 0, 0, 2].into();
    let wrong = login_body(&name, "not the password");
    let right = login_body(&name, PASSWORD);
    for _ in 0..3 {
        let (status, v) = post_from(stranger, addr, "/v1/auth/login", &wrong).await;
        assert_eq!(status, 401, "{v}");
    }
    let (status, v) = post_from(stranger, addr, "/v1/auth/login", &right).await;
    assert_eq!(status, 429, "the stranger's address is locked: {v}");
    assert_eq!(v["code"], "rate_limited");
    let (status, v) = post_from(owner, addr, "/v1/auth/login", &right).await;
    assert_eq!(status, 200, "the owner, from elsewhere: {v}");
}

/// Past a much higher count of wrong passwords from all addresses
/// together (since the last right one), an account locks for everyone:
/// many addresses do not buy many more guesses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_addresses_together_lock_an_account_for_everyone() {
    let t = Target::start(
        SECRET,
        &[
            ("CHAT__AUTH__THROTTLE__FREE_FAILURES", "3"),
            ("CHAT__AUTH__THROTTLE__LOCKOUT_SECS", "60"),
            ("CHAT__AUTH__THROTTLE__ACCOUNT_FREE_FAILURES", "7"),
        ],
    )
    .await;
    let addr = t.addr();
    let name = unique("owner");
    register(addr, &name).await;
    let owner: IpAddr = [127, 0, 0, 1].into();
    let wrong = login_body(&name, "not the password");
    let right = login_body(&name, PASSWORD);
    // 3 from each of two addresses, then 1 from the owner's: 7 in all,
    // and none of those addresses locked but the strangers'.
    for stranger in [[127, 0, 0, 2], [127, 0, 0, 3]] {
        for _ in 0..3 {
            let (status, v) = post_from(stranger.into(), addr, "/v1/auth/login", &wrong).await;
            assert_eq!(status, 401, "{v}");
        }
    }
    let (status, v) = post_from(owner, addr, "/v1/auth/login", &wrong).await;
    assert_eq!(status, 401, "{v}");
    let (status, v) = post_from(owner, addr, "/v1/auth/login", &right).await;
    assert_eq!(
        status, 429,
        "the account's ceiling locks it for everyone: {v}"
    );
    assert_eq!(v["code"], "rate_limited");
}

// ------------------------------------------------------------ errors

/// What a client is told names no server internals: no Rust type, no
/// serde or axum wording, no parser position.
fn assert_plain(what: &str, message: &str) {
    for internal in [
        "untagged",
        "enum",
        "ReqId",
        "duplicate field",
        "Failed to deserialize",
        "u32",
        "u64",
        " at line ",
        "column",
        "struct",
    ] {
        assert!(
            !message.contains(internal),
            "{what}: {message:?} shows {internal:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_frame_is_told_what_is_wrong_without_internals() {
    let t = Target::start(SECRET, &[]).await;
    let user = register(t.addr(), &unique("framer")).await;
    let mut c = connect(t.addr(), &user.access, Codec::Json).await;
    let cases = [
        (r#"{"type":"ping","req":true}"#, "req"),
        (r#"{"type":"ping","req":[1]}"#, "req"),
        (r#"{"type":"ping","type":"ping","req":2}"#, "type"),
        (
            r#"{"type":"send","req":3,"conversation":"c","conversation":"d","client_msg_id":"m","body":"b"}"#,
            "conversation",
        ),
        (
            r#"{"type":"history","req":4,"conversation":"c","limit":"x"}"#,
            "integer",
        ),
        (r#"{"type":"nope","req":5}"#, "nope"),
        ("[1,2]", "object"),
    ];
    for (frame, names) in cases {
        c.send_raw(frame.as_bytes().to_vec()).await;
        match c.recv().await {
            Some(chat_protocol::ServerFrame::Error { code, message, .. }) => {
                assert_eq!(code, chat_protocol::ErrorCode::BadRequest, "{frame}");
                assert_plain(frame, &message);
                assert!(message.contains(names), "{frame}: {message:?}");
            }
            other => panic!("{frame}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_and_body_errors_name_no_internals() {
    let t = Target::start(SECRET, &[]).await;
    let addr = t.addr();
    let user = register(addr, &unique("asker")).await;
    for path in [
        "/v1/conversations/c/messages?limit=abc",
        "/v1/conversations/c/messages?limit=1&limit=2",
        "/v1/conversations/c/changes?after_rev=x",
        "/v1/conversations/c/changes?after_rev=1&after_rev=2",
        "/v1/admin/audit?limit=1&limit=2",
    ] {
        let (status, body) = http(addr, "GET", path, Some(&user.access), None).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(v["code"], "bad_request", "{path}");
        assert_plain(path, v["message"].as_str().unwrap());
    }
    let duplicate = r#"{"username":"a","username":"b","password":"correct horse battery"}"#;
    let (status, body) = http(addr, "POST", "/v1/auth/login", None, Some(duplicate)).await;
    assert_eq!(status, 400, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_plain(
        "a body naming a field twice",
        v["message"].as_str().unwrap(),
    );
}

/// A route that does not take the method is answered 405 with a code of
/// its own, not one whose status is another (`bad_request` is 400).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_a_route_does_not_take_is_method_not_allowed() {
    let t = Target::start(SECRET, &[]).await;
    let (status, headers, body) = http_full(t.addr(), "DELETE", "/v1/auth/login", None, None).await;
    assert_eq!(status, 405, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["code"], "method_not_allowed", "{body}");
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "allow" && v.contains("POST")),
        "{headers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_logins_socket_is_told_it_was_revoked() {
    let t = Target::start(SECRET, &[]).await;
    let addr = t.addr();
    let user = register(addr, &unique("leaver")).await;
    let mut c = connect(addr, &user.access, Codec::Json).await;
    let (status, v) = post(
        addr,
        "/v1/auth/logout",
        &json!({"refresh_token": user.refresh}),
    )
    .await;
    assert_eq!(status, 204, "{v}");
    assert_eq!(c.closed_with().await, Some(4001));
    let reason = c.closed.clone().flatten().map(|f| f.reason.to_string());
    let reason = reason.unwrap_or_default();
    assert!(reason.contains("revoked"), "{reason:?}");
    assert!(!reason.contains("expired"), "{reason:?}");
}

/// A node with `boss` made an admin by `chat-node admin grant` (the
/// node stopped meanwhile, as the embedded store is one process's).
async fn with_admin(site: &mut Site, env: &[(&str, &str)]) -> (NodeProc, String) {
    let node = site.start(Some(SECRET), env).await;
    let boss = register(node.addr, &unique("boss")).await.id;
    site.stop(node).await;
    let out = site.admin(&["grant", &boss], &[], "");
    assert!(out.status.success(), "grant: {}", stderr(&out));
    (site.start(Some(SECRET), env).await, boss)
}
