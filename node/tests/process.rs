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
use std::time::{Duration, Instant};

use chat_protocol::{ClientFrame, Codec, ConversationId, ReqId, ServerFrame};
use common::procs::*;
use common::*;

/// The HS256 secret given to nodes through the environment.
const SECRET: &str = "process-test-secret-0123456789abcdef-0123456789";
/// `shutdown.drain_timeout_secs` of the SIGTERM test.
const DRAIN_SECS: u64 = 10;
/// Sends beyond the default rate limit are fine here: the tests flood.
const NO_RATE_LIMIT: [(&str, &str); 2] = [
    ("CHAT__LIMITS__SENDS_PER_SECOND", "1000000"),
    ("CHAT__LIMITS__SEND_BURST", "1000000"),
];

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

/// SIGTERM and a clean exit (status 0, not death by the signal).
async fn stop_cleanly(mut node: NodeProc) {
    node.sigterm();
    let status = node.wait_exit(Duration::from_secs(DRAIN_SECS * 3)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "a clean exit after SIGTERM: {status:?}"
    );
}

/// A SIGTERM sent the moment the node prints its listening line drains it:
/// the handler is installed before that line, not by a task that may not
/// have run yet (then the signal's default action killed the node, and an
/// orchestrator stopping a node just started lost its drain).
#[tokio::test]
async fn sigterm_right_after_the_listening_line_drains() {
    let mut site = Site::new();
    for _ in 0..5 {
        let node = site.start(Some(SECRET), &[]).await;
        stop_cleanly(node).await;
    }
}

/// `chat-node admin grant` and `revoke`, run with the node stopped, give
/// and take the admin role that the node's `/v1/admin/` API checks; a user
/// that does not exist is refused with a clear message.
#[tokio::test]
async fn chat_node_admin_grants_and_revokes_the_admin_role() {
    let mut site = Site::new();
    let mut node = site.start(Some(SECRET), &[]).await;
    let carol = register(node.addr, &unique("carol")).await;
    let nodes_status = |addr| {
        let token = carol.access.clone();
        async move {
            http(addr, "GET", "/v1/admin/nodes", Some(&token), None)
                .await
                .0
        }
    };
    assert_eq!(nodes_status(node.addr).await, 403);
    let data = site.data();
    let admin = |args: &[&str]| {
        std::process::Command::new(node_binary())
            .arg("--data-dir")
            .arg(&data)
            .arg("admin")
            .args(args)
            .envs(storage_env())
            .output()
            .expect("run chat-node admin")
    };
    for (action, expected) in [("grant", 200), ("revoke", 403)] {
        stop_cleanly(node).await;
        let out = admin(&[action, &carol.id]);
        assert!(
            out.status.success(),
            "chat-node admin {action}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        node = site.start(Some(SECRET), &[]).await;
        assert_eq!(nodes_status(node.addr).await, expected, "after {action}");
    }
    stop_cleanly(node).await;
    let out = admin(&["grant", "nobody-by-that-name"]);
    assert!(!out.status.success(), "an unknown user is refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("register it first"), "{err}");
}
