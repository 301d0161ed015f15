//! Operators' webhooks (docs/protocol.md, "Webhooks"), end to end on an
//! in-process node: deliveries signed with HMAC-SHA256 that a receiver
//! outside the node checks (scripts/push-service.py, Python's `hmac`), a
//! failing receiver retried with backoff, then the delivery kept as a dead
//! letter, listed and replayed through the admin API with its delivery id;
//! conversation and membership events.

mod common;

use chat_protocol::codec::Codec;
use chat_protocol::{now_ms, UserId};
use chat_storage::UserFlag;
use common::push::{outbox_node, PushService};
use common::*;
use serde_json::Value;

const SECRET: &str = "a webhook secret of some length";

#[tokio::test]
async fn deliveries_are_signed_retried_then_dead_lettered_and_replayed() {
    let receiver = PushService::start().await;
    let url = receiver.hook("ops", SECRET).await;
    let (node, _serial) = outbox_node(|c| {
        c.notifications.poll_ms = 20;
        // Retries 10 ms apart, doubling: eight attempts within seconds.
        c.notifications.retry_base_ms = 10;
        c.notifications.webhooks = vec![chat_notify::webhooks::WebhookConfig {
            name: Some("ops".into()),
            url,
            secret: SECRET.into(),
            events: vec!["message.created".into(), "message.updated".into()],
        }];
    })
    .await;
    let ann = node.user(&unique("ann")).await;
    let bob = node.user(&unique("bob")).await;
    let mut a = connect(node.addr, &ann.access, Codec::Json).await;
    let conv = group(&mut a, &[&bob.id]).await;

    let m = ok(a.request(frames::send(&conv, "w1", "hello hooks")).await)
        .message
        .unwrap();
    let got = receiver.wait_deliveries("ops", 1).await;
    assert_eq!(got[0]["event"], "message.created");
    assert_eq!(got[0]["signature_ok"], true, "{got:?}");
    assert_eq!(got[0]["body"]["event"], "message.created");
    assert_eq!(got[0]["body"]["data"]["message"]["id"], m.id.to_string());
    assert_eq!(got[0]["body"]["delivery"], got[0]["delivery"]);
    ok(a.request(frames::edit(&conv, m.id, "hello, hooks")).await);
    let got = receiver.wait_deliveries("ops", 2).await;
    assert_eq!(got[1]["event"], "message.updated");
    assert_eq!(got[1]["body"]["data"]["message"]["body"], "hello, hooks");
    assert_ne!(got[0]["delivery"], got[1]["delivery"]);

    // A receiver that keeps failing: eight attempts, then a dead letter.
    receiver.fail_hook("ops", 500, 1000).await;
    ok(a.request(frames::send(&conv, "w2", "into the void")).await);
    wait_metric(
        node.addr,
        "chat_notifications_dead_total{channel=\"webhook\"}",
        1.0,
    )
    .await;
    // Eight attempts per dead letter by the worker's count. On ScyllaDB,
    // where other tests' nodes share the outbox's shards, a mark whose
    // shard changed hands mid-way may be expanded twice (delivery is at
    // least once): each copy makes its eight, then dies.
    let node_addr = node.addr;
    let dead_letters = eventually("eight attempts per dead letter", || async move {
        let failed = metric(
            node_addr,
            "chat_notifications_failed_total{channel=\"webhook\"}",
        )
        .await;
        let dead = metric(
            node_addr,
            "chat_notifications_dead_total{channel=\"webhook\"}",
        )
        .await;
        match dead >= 1.0 && failed == 8.0 * dead {
            true => Ok(dead as usize),
            false => Err(format!("{failed} attempts failed, {dead} dead")),
        }
    })
    .await;
    // The receiver notes those that reached it: under load one may fail on
    // the way (a connection error is a failed attempt too), so it may have
    // fewer, never more.
    let tries: Vec<Value> = receiver
        .deliveries("ops")
        .await
        .into_iter()
        .skip(2)
        .collect();
    assert!(
        (1..=8 * dead_letters).contains(&tries.len()),
        "eight attempts at most per dead letter: {tries:?}"
    );
    assert!(tries.iter().all(|t| t["delivery"] == tries[0]["delivery"]));

    // Listed to admins only; replayed with the same delivery id.
    let path = "/v1/admin/webhooks/dead";
    let (status, _) = call_json(node.addr, "GET", path, Some(&ann.access), None).await;
    assert_eq!(status, 403);
    let admin = UserId::new(&ann.id).unwrap();
    node.app
        .store
        .set_user_flag(&admin, UserFlag::Admin, true, now_ms())
        .await
        .unwrap();
    let (status, body) = call_json(node.addr, "GET", path, Some(&ann.access), None).await;
    assert_eq!(status, 200, "{body}");
    let dead = body["dead"].as_array().unwrap();
    let letter = dead
        .iter()
        .find(|d| d["delivery"] == tries[0]["delivery"])
        .unwrap_or_else(|| panic!("the dead letter listed: {body}"));
    assert_eq!(letter["hook"], "ops");
    assert_eq!(letter["attempts"], 8);
    receiver.fail_hook("ops", 500, 0).await;
    let replay = format!(
        "/v1/admin/webhooks/dead/{}/replay",
        letter["id"].as_str().unwrap()
    );
    let (status, body) = call_json(node.addr, "POST", &replay, Some(&ann.access), None).await;
    assert_eq!(status, 202, "{body}");
    let got = receiver.wait_deliveries("ops", 11).await;
    assert_eq!(got[10]["delivery"], tries[0]["delivery"]);
    assert_eq!(got[10]["status"], 200);
    assert_eq!(got[10]["signature_ok"], true);
    let (status, _) = call_json(node.addr, "POST", &replay, Some(&ann.access), None).await;
    assert_eq!(status, 404, "a dead letter is replayed once");
    let (_, body) = call_json(node.addr, "GET", path, Some(&ann.access), None).await;
    assert!(!body["dead"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["delivery"] == tries[0]["delivery"]));
}

#[tokio::test]
async fn conversation_and_membership_events_reach_their_hook() {
    let receiver = PushService::start().await;
    let url = receiver.hook("people", SECRET).await;
    let (node, _serial) = outbox_node(|c| {
        c.notifications.poll_ms = 20;
        c.notifications.webhooks = vec![chat_notify::webhooks::WebhookConfig {
            name: Some("people".into()),
            url,
            secret: SECRET.into(),
            events: Vec::new(),
        }];
    })
    .await;
    let ann = node.user(&unique("ann")).await;
    let bob = node.user(&unique("bob")).await;
    let cat = node.user(&unique("cat")).await;
    let mut a = connect(node.addr, &ann.access, Codec::Json).await;
    let conv = group(&mut a, &[&bob.id]).await;
    let first = receiver.wait_deliveries("people", 1).await;
    assert_eq!(first[0]["event"], "conversation.created");
    assert_eq!(
        first[0]["body"]["data"]["conversation"]["id"],
        conv.as_str()
    );
    ok(a.request(chat_protocol::ClientFrame::Invite {
        req: None,
        conversation: conv.clone(),
        users: vec![UserId::new(&cat.id).unwrap()],
    })
    .await);
    ok(a.request(chat_protocol::ClientFrame::Kick {
        req: None,
        conversation: conv.clone(),
        user: UserId::new(&bob.id).unwrap(),
    })
    .await);
    let got = receiver.wait_deliveries("people", 3).await;
    let events: Vec<(&Value, &Value)> = got[1..]
        .iter()
        .map(|d| (&d["event"], &d["body"]["data"]["user"]))
        .collect();
    assert!(
        events.contains(&(&Value::from("member.joined"), &Value::from(cat.id.as_str()))),
        "{got:?}"
    );
    assert!(
        events.contains(&(&Value::from("member.left"), &Value::from(bob.id.as_str()))),
        "{got:?}"
    );
    assert!(got.iter().all(|d| d["signature_ok"] == true));
}
