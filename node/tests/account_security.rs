//! Keeping an account one's own (docs/protocol.md, "Account security"),
//! end to end over real sockets: sessions listed and ended, a password
//! changed (the other logins' sockets close with 4001, on every node) or
//! reset from a mail read back from a real SMTP server (Mailpit), and a
//! second factor whose codes come from an independent generator (Python's
//! pyotp), never the node's own.

mod common;

use std::net::SocketAddr;

use chat_protocol::codec::Codec;
use chat_storage::{EmailToken, TokenPurpose};
use common::mailpit::{mail_node, Mail, Mailpit};
use common::push::test_python;
use common::*;
use serde_json::{json, Value};
use tokio::net::TcpStream;

const PASSWORD: &str = "correct horse battery";

/// A JSON request with a `User-Agent`.
async fn call_as(
    addr: SocketAddr,
    agent: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let body = body.to_string();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: {agent}\r\n\
         {auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, _, text) = exchange(TcpStream::connect(addr).await.unwrap(), &req).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Signs `name` in from `agent`: access and refresh token.
async fn login(addr: SocketAddr, agent: &str, name: &str, password: &str) -> (String, String) {
    let body = json!({"username": name, "password": password});
    let (s, v) = call_as(addr, agent, "POST", "/v1/auth/login", None, body).await;
    assert_eq!(s, 200, "{v}");
    (
        v["access_token"].as_str().unwrap().to_owned(),
        v["refresh_token"].as_str().unwrap().to_owned(),
    )
}

async fn refresh(addr: SocketAddr, token: &str) -> u16 {
    let body = json!({"refresh_token": token});
    call_json(addr, "POST", "/v1/auth/refresh", None, Some(body))
        .await
        .0
}

async fn sessions(addr: SocketAddr, access: &str) -> Vec<Value> {
    let (s, v) = call_json(addr, "GET", "/v1/me/sessions", Some(access), None).await;
    assert_eq!(s, 200, "{v}");
    v["sessions"].as_array().unwrap().clone()
}

#[tokio::test]
async fn sessions_are_listed_and_ended_one_by_one() {
    let node = TestNode::start().await;
    let addr = node.addr;
    let ann = node.user(&unique("sesann")).await;
    let (phone, phone_refresh) = login(addr, "Phone/1.0", &ann.id, PASSWORD).await;
    let (laptop, _) = login(addr, "Laptop/2.0", &ann.id, PASSWORD).await;
    let mut on_phone = connect(addr, &phone, Codec::Json).await;

    let listed = sessions(addr, &laptop).await;
    assert_eq!(listed.len(), 3, "sign-up, phone, laptop: {listed:?}");
    let of = |agent: &str| {
        listed
            .iter()
            .find(|s| s["user_agent"] == json!(agent))
            .unwrap_or_else(|| panic!("{agent} in {listed:?}"))
            .clone()
    };
    let (phone_session, laptop_session) = (of("Phone/1.0"), of("Laptop/2.0"));
    assert_eq!(laptop_session["current"], json!(true));
    assert_eq!(phone_session["current"], json!(false));
    assert_eq!(phone_session["address"], json!("127.0.0.1"));
    assert!(phone_session["created_at"].as_u64().unwrap() > 0);

    // Ending the phone's login closes its socket and stops its refresh.
    let path = format!("/v1/me/sessions/{}", phone_session["id"].as_str().unwrap());
    let (s, _) = call_json(addr, "DELETE", &path, Some(&laptop), None).await;
    assert_eq!(s, 204);
    assert_eq!(on_phone.closed_with().await, Some(4001));
    assert_eq!(refresh(addr, &phone_refresh).await, 401);
    assert_eq!(sessions(addr, &laptop).await.len(), 2);
    // Not twice, and nobody else's.
    let (s, _) = call_json(addr, "DELETE", &path, Some(&laptop), None).await;
    assert_eq!(s, 404);
    let bob = node.user(&unique("sesbob")).await;
    let bobs = sessions(addr, &bob.access).await;
    let path = format!("/v1/me/sessions/{}", bobs[0]["id"].as_str().unwrap());
    let (s, _) = call_json(addr, "DELETE", &path, Some(&laptop), None).await;
    assert_eq!(s, 404, "another user's login");
    assert_eq!(sessions(addr, &bob.access).await.len(), 1);
    // A refresh notes the use.
    let before = sessions(addr, &ann.access).await;
    let mine = before.iter().find(|s| s["current"] == json!(true)).unwrap();
    assert_eq!(refresh(addr, &ann.refresh).await, 200);
    let after = sessions(addr, &laptop).await;
    let same = after.iter().find(|s| s["id"] == mine["id"]).unwrap();
    assert!(same["last_used_at"].as_u64() >= mine["last_used_at"].as_u64());
    // Logging out takes a login off the list.
    let (s, _) = call_json(
        addr,
        "POST",
        "/v1/auth/logout",
        None,
        Some(json!({"refresh_token": ann.refresh})),
    )
    .await;
    assert!(s == 204 || s == 200, "{s}");
}

#[tokio::test]
async fn a_password_change_ends_the_other_logins_and_keeps_this_one() {
    let node = TestNode::start().await;
    let addr = node.addr;
    let ann = node.user(&unique("pwann")).await;
    let (other, other_refresh) = login(addr, "Other/1", &ann.id, PASSWORD).await;
    let mut elsewhere = connect(addr, &other, Codec::Json).await;
    let mut here = connect(addr, &ann.access, Codec::Json).await;
    let change = |current: &str, new: &str| json!({"current": current, "new": new});

    let (s, v) = call_json(
        addr,
        "POST",
        "/v1/auth/password",
        Some(&ann.access),
        Some(change("wrong password", "a new password")),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (403, Some("forbidden")), "{v}");
    let (s, v) = call_json(
        addr,
        "POST",
        "/v1/auth/password",
        Some(&ann.access),
        Some(change(PASSWORD, "short")),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let (s, _) = call_json(
        addr,
        "POST",
        "/v1/auth/password",
        Some(&ann.access),
        Some(change(PASSWORD, "a new password")),
    )
    .await;
    assert_eq!(s, 204);
    assert_eq!(elsewhere.closed_with().await, Some(4001));
    assert_eq!(refresh(addr, &other_refresh).await, 401);
    // This login goes on.
    ok(here
        .request(chat_protocol::ClientFrame::Ping { req: None })
        .await);
    assert_eq!(refresh(addr, &ann.refresh).await, 200);
    let (s, _) = call_json(
        addr,
        "POST",
        "/v1/auth/login",
        None,
        Some(json!({"username": ann.id, "password": PASSWORD})),
    )
    .await;
    assert_eq!(s, 401, "the old password");
    login(addr, "Again/1", &ann.id, "a new password").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_closes_the_other_logins_sockets_on_every_node() {
    let cluster = common::cluster::TestCluster::start(2).await;
    let ann = register(cluster.addr(0), &unique("pwcl")).await;
    let (other, _) = login(cluster.addr(1), "Far/1", &ann.id, PASSWORD).await;
    let mut far = connect(cluster.addr(1), &other, Codec::Json).await;
    let (s, _) = call_json(
        cluster.addr(0),
        "POST",
        "/v1/auth/password",
        Some(&ann.access),
        Some(json!({"current": PASSWORD, "new": "another password"})),
    )
    .await;
    assert_eq!(s, 204);
    assert_eq!(far.closed_with().await, Some(4001));
}

/// The token of the link in `mail` that opens `page`.
fn token_in(mail: &Mail, page: &str) -> String {
    let marker = format!("{page}?token=");
    let at = mail.text.find(&marker).expect("a link");
    mail.text[at + marker.len()..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_mail_sets_a_new_password_once_and_ends_every_login() {
    let mail = Mailpit::start().await;
    let (node, _serial) = mail_node(mail.smtp).await;
    let addr = node.addr;
    let ann = node.user(&unique("rsann")).await;
    let address = format!("{}@chat.test", ann.id);
    let (s, _) = call_json(
        addr,
        "PUT",
        "/v1/me/email",
        Some(&ann.access),
        Some(json!({"email": address})),
    )
    .await;
    assert_eq!(s, 202);
    let verify = mail.wait_for(&address, 1).await;
    let token = token_in(&verify[0], "verify-email");
    let (s, _) = call_json(
        addr,
        "POST",
        "/v1/auth/verify-email",
        None,
        Some(json!({"token": token})),
    )
    .await;
    assert_eq!(s, 204);
    let mut socket = connect(addr, &ann.access, Codec::Json).await;

    // The same answer for an address nobody has, and a bad one refused.
    let ask = |email: String| json!({"email": email});
    let nobody = format!("nobody-{}@chat.test", unique("x"));
    let (s, _) = call_json(
        addr,
        "POST",
        "/v1/auth/password-reset",
        None,
        Some(ask(nobody.clone())),
    )
    .await;
    assert_eq!(s, 202);
    let (s, _) = call_json(
        addr,
        "POST",
        "/v1/auth/password-reset",
        None,
        Some(ask("not an address".into())),
    )
    .await;
    assert_eq!(s, 400);
    // Asked in capitals, the mail still comes.
    let (s, _) = call_json(
        addr,
        "POST",
        "/v1/auth/password-reset",
        None,
        Some(ask(address.to_uppercase())),
    )
    .await;
    assert_eq!(s, 202);
    let mails = mail.wait_for(&address, 2).await;
    let reset = mails
        .iter()
        .find(|m| m.subject == "Reset your password")
        .expect("the mail");
    assert!(
        reset
            .text
            .contains("http://chat.test/reset-password?token="),
        "{}",
        reset.text
    );
    let token = token_in(reset, "reset-password");
    // Once the outbox is empty, the unknown address's job ran too, and
    // mailed no one.
    let store = node.app.store.clone();
    chat_testkit::eventually("the outbox empty", || {
        let store = store.clone();
        async move {
            for shard in 0..chat_storage::OUTBOX_SHARDS {
                let due = store
                    .due_jobs(shard, u64::MAX, 1)
                    .await
                    .map_err(|e| e.to_string())?;
                if !due.is_empty() {
                    return Err(format!("shard {shard} holds jobs"));
                }
            }
            Ok(())
        }
    })
    .await;
    assert!(mail.mails_to(&nobody).await.is_empty());

    let confirm = |token: &str, password: &str| json!({"token": token, "password": password});
    let (s, _) = call_json(
        addr,
        "POST",
        "/v1/auth/password-reset/confirm",
        None,
        Some(confirm(&token, "short")),
    )
    .await;
    assert_eq!(s, 400, "the policy first");
    let (s, v) = call_json(
        addr,
        "POST",
        "/v1/auth/password-reset/confirm",
        None,
        Some(confirm(&token, "a brand new password")),
    )
    .await;
    assert_eq!(s, 204, "{v}");
    assert_eq!(socket.closed_with().await, Some(4001));
    assert_eq!(refresh(addr, &ann.refresh).await, 401, "every login ended");
    let (s, _) = call_json(
        addr,
        "POST",
        "/v1/auth/password-reset/confirm",
        None,
        Some(confirm(&token, "yet another password")),
    )
    .await;
    assert_eq!(s, 400, "once");
    login(addr, "After/1", &ann.id, "a brand new password").await;

    // A token past its 30 minutes is refused.
    let (raw, hash) = (
        "ab".repeat(32),
        chat_notify::links::hash_token(&"ab".repeat(32)),
    );
    node.app
        .store
        .put_email_token(&EmailToken {
            hash,
            user: chat_protocol::UserId::new(&ann.id).unwrap(),
            address: address.clone(),
            purpose: TokenPurpose::ResetPassword,
            expires_at: chat_protocol::now_ms() - 1,
        })
        .await
        .unwrap();
    let (s, _) = call_json(
        addr,
        "POST",
        "/v1/auth/password-reset/confirm",
        None,
        Some(confirm(&raw, "expired password")),
    )
    .await;
    assert_eq!(s, 400);
}

/// The TOTP code of `secret` at `offset` seconds from now, from pyotp.
async fn code(python: &str, secret: &str, offset: i64) -> String {
    let out = tokio::process::Command::new(python)
        .arg("-c")
        .arg("import pyotp, sys, time; print(pyotp.TOTP(sys.argv[1]).at(time.time() + int(sys.argv[2])))")
        .arg(secret)
        .arg(offset.to_string())
        .output()
        .await
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Waits until the current 30 s step has at least 8 s left, so that a
/// code made now is judged in the same step.
async fn early_in_a_step() {
    chat_testkit::eventually_within(
        "early in a TOTP step",
        std::time::Duration::from_secs(40),
        || async {
            let secs = chat_protocol::now_ms() / 1000;
            if secs % 30 < 22 {
                Ok(())
            } else {
                Err(format!("{} s into the step", secs % 30))
            }
        },
    )
    .await;
}

async fn totp_login(addr: SocketAddr, name: &str, extra: Value) -> (u16, Value) {
    let mut body = json!({"username": name, "password": PASSWORD});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    call_json(addr, "POST", "/v1/auth/login", None, Some(body)).await
}

#[tokio::test]
async fn a_second_factor_is_enrolled_asked_for_and_each_code_works_once() {
    let python = test_python().await;
    let node = TestNode::start().await;
    let addr = node.addr;
    let ann = node.user(&unique("tfann")).await;
    let (s, v) = call_json(addr, "POST", "/v1/me/totp", Some(&ann.access), None).await;
    assert_eq!(s, 200, "{v}");
    let secret = v["secret"].as_str().unwrap().to_owned();
    let url = v["otpauth_url"].as_str().unwrap();
    assert!(
        url.starts_with("otpauth://totp/") && url.contains(&secret),
        "{url}"
    );
    // Pending: sign-in needs no code yet.
    assert_eq!(totp_login(addr, &ann.id, json!({})).await.0, 200);

    early_in_a_step().await;
    let confirm = |code: String| json!({"code": code});
    let (s, _) = call_json(
        addr,
        "POST",
        "/v1/me/totp/confirm",
        Some(&ann.access),
        Some(confirm("000000".into())),
    )
    .await;
    assert_eq!(s, 401, "a wrong code");
    // The code of the step before confirms it (a code typed as the step
    // turned); the step of now is then still unused.
    let before = code(&python, &secret, -30).await;
    let (s, v) = call_json(
        addr,
        "POST",
        "/v1/me/totp/confirm",
        Some(&ann.access),
        Some(confirm(before.clone())),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let recovery: Vec<String> = serde_json::from_value(v["recovery_codes"].clone()).unwrap();
    assert_eq!(recovery.len(), 10);
    let (s, v) = call_json(addr, "GET", "/v1/me", Some(&ann.access), None).await;
    assert_eq!((s, &v["totp_enabled"]), (200, &json!(true)));

    // From now on the password alone is not enough.
    let (s, v) = totp_login(addr, &ann.id, json!({})).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("totp_required")), "{v}");
    let (s, v) = totp_login(addr, &ann.id, json!({"totp": "123456"})).await;
    assert_eq!((s, v["code"].as_str()), (401, Some("unauthorized")), "{v}");
    let now = code(&python, &secret, 0).await;
    assert_eq!(totp_login(addr, &ann.id, json!({"totp": now})).await.0, 200);
    assert_eq!(
        totp_login(addr, &ann.id, json!({"totp": now})).await.0,
        401,
        "reused"
    );
    assert_eq!(
        totp_login(addr, &ann.id, json!({"totp": before})).await.0,
        401,
        "older than one used"
    );
    let old = code(&python, &secret, -60).await;
    assert_eq!(
        totp_login(addr, &ann.id, json!({"totp": old})).await.0,
        401,
        "too old"
    );
    // A wrong password with a right code is still wrong.
    let (s, _) = call_json(
        addr,
        "POST",
        "/v1/auth/login",
        None,
        Some(json!({"username": ann.id, "password": "not the password", "totp": now})),
    )
    .await;
    assert_eq!(s, 401);

    // A recovery code works once.
    let rc = json!({"recovery_code": recovery[0]});
    assert_eq!(totp_login(addr, &ann.id, rc.clone()).await.0, 200);
    assert_eq!(totp_login(addr, &ann.id, rc).await.0, 401, "once");

    // Turning it off needs a code; then the password is enough again.
    let (s, _) = call_json(
        addr,
        "DELETE",
        "/v1/me/totp",
        Some(&ann.access),
        Some(confirm("000000".into())),
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = call_json(
        addr,
        "DELETE",
        "/v1/me/totp",
        Some(&ann.access),
        Some(confirm(recovery[1].clone())),
    )
    .await;
    assert_eq!(s, 204);
    assert_eq!(totp_login(addr, &ann.id, json!({})).await.0, 200);
}

#[tokio::test]
async fn guessing_codes_is_throttled_like_passwords() {
    let node = TestNode::start().await;
    let addr = node.addr;
    let ann = node.user(&unique("tfthr")).await;
    let (_, v) = call_json(addr, "POST", "/v1/me/totp", Some(&ann.access), None).await;
    let secret = v["secret"].as_str().unwrap().to_owned();
    let python = test_python().await;
    early_in_a_step().await;
    let c = code(&python, &secret, 0).await;
    let (s, _) = call_json(
        addr,
        "POST",
        "/v1/me/totp/confirm",
        Some(&ann.access),
        Some(json!({"code": c})),
    )
    .await;
    assert_eq!(s, 200);
    let mut statuses = Vec::new();
    for i in 0..30 {
        let (s, _) = totp_login(addr, &ann.id, json!({"totp": format!("{:06}", i)})).await;
        statuses.push(s);
        if s == 429 {
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
}
