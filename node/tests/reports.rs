//! Reports (docs/protocol.md, "Reports"), end to end over real sockets:
//! users report a message or a user, bad reports are refused, admins list
//! the open ones and resolve them by dismissing, deleting the message
//! (every member sees it deleted) or suspending the user, each action in
//! the audit log.

mod common;

use chat_protocol::codec::Codec;
use chat_protocol::{ConversationId, MessageId, ServerFrame, UserId};
use chat_storage::UserFlag;
use common::*;
use serde_json::{json, Value};

async fn report(node: &TestNode, who: &TestUser, body: Value) -> (u16, Value) {
    call_json(
        node.addr,
        "POST",
        "/v1/reports",
        Some(&who.access),
        Some(body),
    )
    .await
}

async fn make_admin(node: &TestNode, name: &str) -> TestUser {
    let admin = node.user(&unique(name)).await;
    let id = UserId::new(&admin.id).unwrap();
    node.app
        .store
        .set_user_flag(&id, UserFlag::Admin, true, chat_protocol::now_ms())
        .await
        .unwrap();
    admin
}

async fn open_reports(node: &TestNode, admin: &TestUser) -> Vec<Value> {
    let (s, v) = call_json(
        node.addr,
        "GET",
        "/v1/admin/reports?status=open",
        Some(&admin.access),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v["reports"].as_array().unwrap().clone()
}

async fn resolve(node: &TestNode, admin: &TestUser, id: &str, action: &str) -> (u16, Value) {
    call_json(
        node.addr,
        "POST",
        &format!("/v1/admin/reports/{id}/resolve"),
        Some(&admin.access),
        Some(json!({"action": action})),
    )
    .await
}

/// A group of Ann and Bob, and a message of Bob's in it.
async fn scene(
    node: &TestNode,
) -> (
    TestUser,
    TestUser,
    Client,
    Client,
    ConversationId,
    MessageId,
) {
    let ann = node.user(&unique("rpann")).await;
    let bob = node.user(&unique("rpbob")).await;
    let mut a = connect(node.addr, &ann.access, Codec::Json).await;
    let mut b = connect(node.addr, &bob.access, Codec::Json).await;
    let conv = group(&mut a, &[&bob.id]).await;
    let m = ok(b
        .request(frames::send(&conv, &unique("m"), "something vile"))
        .await)
    .message
    .unwrap()
    .id;
    (ann, bob, a, b, conv, m)
}

#[tokio::test]
async fn a_reported_message_is_deleted_for_everyone_by_an_admin() {
    let node = TestNode::start().await;
    let boss = make_admin(&node, "rpboss").await;
    let (ann, bob, mut a, mut b, conv, m) = scene(&node).await;
    let body =
        json!({"conversation": conv.as_str(), "message": m.0.to_string(), "reason": "abuse"});
    let (s, v) = report(&node, &ann, body).await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();

    // Admins only.
    let (s, _) = call_json(
        node.addr,
        "GET",
        "/v1/admin/reports",
        Some(&ann.access),
        None,
    )
    .await;
    assert_eq!(s, 403);
    let listed = open_reports(&node, &boss).await;
    let mine = listed
        .iter()
        .find(|r| r["id"] == json!(id))
        .expect("listed");
    assert_eq!(mine["reporter"], json!(ann.id));
    assert_eq!(
        mine["user"],
        json!(bob.id),
        "a message's report names its sender"
    );
    assert_eq!(mine["reason"], json!("abuse"));

    let (s, v) = resolve(&node, &boss, &id, "delete_message").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["report"]["resolution"]["action"], json!("delete_message"));
    for c in [&mut a, &mut b] {
        c.event(|f| matches!(f, ServerFrame::MessageUpdated { message } if message.id == m && message.deleted))
            .await;
    }
    assert!(!open_reports(&node, &boss)
        .await
        .iter()
        .any(|r| r["id"] == json!(id)));
    let (s, _) = resolve(&node, &boss, &id, "dismiss").await;
    assert_eq!(s, 409, "resolved already");
    let (s, audit) = call_json(
        node.addr,
        "GET",
        "/v1/admin/audit",
        Some(&boss.access),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert!(
        audit.to_string().contains("report.delete_message"),
        "{audit}"
    );
}

#[tokio::test]
async fn a_reported_user_is_suspended_or_the_report_dismissed() {
    let node = TestNode::start().await;
    let boss = make_admin(&node, "rpboss").await;
    let (ann, bob, _a, mut b, _conv, _m) = scene(&node).await;
    let (s, v) = report(&node, &ann, json!({"user": bob.id, "reason": "spam"})).await;
    assert_eq!(s, 201, "{v}");
    let spam = v["id"].as_str().unwrap().to_owned();
    let (_, v) = report(
        &node,
        &bob,
        json!({"user": ann.id, "reason": "she reported me"}),
    )
    .await;
    let petty = v["id"].as_str().unwrap().to_owned();

    let (s, _) = resolve(&node, &boss, &petty, "dismiss").await;
    assert_eq!(s, 200);
    let (s, v) = resolve(&node, &boss, &spam, "delete_message").await;
    assert_eq!(s, 400, "a user's report names no message: {v}");
    let (s, _) = resolve(&node, &boss, &spam, "suspend_user").await;
    assert_eq!(s, 200);
    assert_eq!(b.closed_with().await, Some(4005));
    let (s, _) = call_json(
        node.addr,
        "POST",
        "/v1/auth/login",
        None,
        Some(json!({"username": bob.id, "password": "correct horse battery"})),
    )
    .await;
    assert_eq!(s, 403, "suspended");
    // Ann's account goes on.
    let (s, _) = call_json(node.addr, "GET", "/v1/me", Some(&ann.access), None).await;
    assert_eq!(s, 200);
    let (s, _) = resolve(&node, &boss, "0000000000000000-00000000", "dismiss").await;
    assert_eq!(s, 404);
    let (s, _) = resolve(&node, &boss, &spam, "ban").await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn bad_reports_get_a_clear_error_and_floods_are_limited() {
    let node = TestNode::start().await;
    let (ann, bob, _a, _b, conv, m) = scene(&node).await;
    let cat = node.user(&unique("rpcat")).await;
    let on_message =
        json!({"conversation": conv.as_str(), "message": m.0.to_string(), "reason": "x"});
    for (who, body, status, why) in [
        (&cat, on_message.clone(), 404, "no such message"),
        (
            &ann,
            json!({"user": ann.id, "reason": "me"}),
            400,
            "yourself",
        ),
        (&ann, json!({"user": bob.id}), 400, "reason"),
        (
            &ann,
            json!({"user": bob.id, "reason": "   "}),
            400,
            "reason must be",
        ),
        (
            &ann,
            json!({"user": bob.id, "reason": "é".repeat(501)}),
            400,
            "reason must be",
        ),
        (
            &ann,
            json!({"user": bob.id, "reason": "a\u{7}"}),
            400,
            "control",
        ),
        (
            &ann,
            json!({"user": "nobody-at-all", "reason": "x"}),
            404,
            "no such user",
        ),
        (
            &ann,
            json!({"user": bob.id, "conversation": conv.as_str(), "message": "1", "reason": "x"}),
            400,
            "report a user",
        ),
        (
            &ann,
            json!({"conversation": conv.as_str(), "reason": "x"}),
            400,
            "report a user",
        ),
        (
            &ann,
            json!({"conversation": conv.as_str(), "message": "x1", "reason": "x"}),
            400,
            "not a message id",
        ),
        (
            &ann,
            json!({"conversation": conv.as_str(), "message": "999999", "reason": "x"}),
            404,
            "no such message",
        ),
    ] {
        let (s, v) = report(&node, who, body.clone()).await;
        assert_eq!(s, status, "{body}: {v}");
        assert!(
            v["message"].as_str().unwrap_or_default().contains(why),
            "{body}: {v}"
        );
    }
    let (s, _) = call_json(
        node.addr,
        "POST",
        "/v1/reports",
        None,
        Some(on_message.clone()),
    )
    .await;
    assert_eq!(s, 401);
    // 500 characters are fine; then a flood is cut short.
    let fine = json!({"user": bob.id, "reason": "é".repeat(500)});
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let (s, _) = report(&node, &ann, fine.clone()).await;
        statuses.push(s);
        if s == 429 {
            break;
        }
    }
    assert_eq!(statuses[0], 201);
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
}
