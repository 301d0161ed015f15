//! Notifications for people who are away (docs/protocol.md, "Notifications"),
//! end to end on in-process nodes over real sockets: the settings routes,
//! and Web Push through a real HTTP push-service stand-in
//! (scripts/push-service.py) that checks every push's VAPID signature and
//! decrypts its payload with code that is not the node's.
//!
//! Absence is never waited for: each test makes a push that must come
//! after the one that must not (the same conversation's outbox is worked in
//! order), and checks once that has arrived.

mod common;

use chat_protocol::codec::Codec;
use chat_protocol::{ConversationId, ConversationKind, Message};
use common::push::{outbox_node, Browser, PushService, Serial};
use common::*;
use serde_json::{json, Value};

/// A node whose push endpoints may be the stand-in on loopback, polling
/// its outbox often.
async fn node() -> (TestNode, Serial) {
    outbox_node(|c| {
        c.notifications.push.allow_loopback_http = true;
        c.notifications.poll_ms = 20;
    })
    .await
}

/// Subscribes `user` with a new browser of `push`.
async fn subscribe(node: &TestNode, push: &PushService, user: &TestUser) -> Browser {
    let browser = push.browser().await;
    let (status, body) = call_json(
        node.addr,
        "POST",
        "/v1/me/push-subscriptions",
        Some(&user.access),
        Some(browser.subscription.clone()),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    browser
}

async fn send(c: &mut Client, conv: &ConversationId, key: &str, body: &str) -> Message {
    ok(c.request(frames::send(conv, key, body)).await)
        .message
        .expect("the stored message")
}

/// The payload of each push, in order.
fn payloads(pushes: &[Value]) -> Vec<&Value> {
    pushes.iter().map(|p| &p["payload"]).collect()
}

fn message_ids(pushes: &[Value]) -> Vec<String> {
    pushes
        .iter()
        .map(|p| p["payload"]["message"]["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn an_away_member_gets_one_push_per_message_and_an_online_one_none() {
    let (node, _serial) = node().await;
    let push = PushService::start().await;
    let ann = node.user(&unique("ann")).await;
    let bob = node.user(&unique("bob")).await;
    let cat = node.user(&unique("cat")).await;
    let mut a = connect(node.addr, &ann.access, Codec::Json).await;
    let conv = group(&mut a, &[&bob.id, &cat.id]).await;
    let bob_browser = subscribe(&node, &push, &bob).await;
    let cat_browser = subscribe(&node, &push, &cat).await;
    // Cat is online; Bob never connected.
    let _c = connect(node.addr, &cat.access, Codec::Json).await;

    let long = "x".repeat(1000);
    let sent = vec![
        send(&mut a, &conv, "m1", "hello bob").await,
        send(&mut a, &conv, "m2", &long).await,
        send(&mut a, &conv, "m3", &format!("ping @{}", bob.id)).await,
    ];
    let pushes = push.wait_for(&bob_browser, 3).await;
    let ids: Vec<String> = sent.iter().map(|m| m.id.to_string()).collect();
    assert_eq!(message_ids(&pushes), ids, "one push per message, in order");
    for (p, m) in payloads(&pushes).into_iter().zip(&sent) {
        assert_eq!(p["type"], "message");
        assert_eq!(p["conversation"], conv.as_str());
        assert_eq!(p["message"]["sender"], ann.id.as_str());
        let body: String = m.body.chars().take(200).collect();
        assert_eq!(p["message"]["body"], body.as_str(), "the body cut to 200");
        let unread = p["unread"].as_u64().expect("unread");
        assert!((1..=3).contains(&unread), "unread {unread}");
    }
    assert_eq!(pushes[0]["urgency"], "normal");
    assert_eq!(pushes[2]["urgency"], "high", "a mention is urgent");
    assert_eq!(
        pushes[0]["topic"], pushes[1]["topic"],
        "one topic per conversation"
    );
    assert!(pushes.iter().all(|p| p["size"].as_u64().unwrap() <= 4096));
    let ttl: u64 = pushes[0]["ttl"].as_str().unwrap().parse().unwrap();
    assert!(
        (86_300..=86_400).contains(&ttl),
        "TTL counts down from a day: {ttl}"
    );

    // One more, so that duplicates of the first three would have come by
    // the time it does.
    let fourth = send(&mut a, &conv, "m4", "still there?").await;
    let pushes = push.wait_for(&bob_browser, 4).await;
    assert_eq!(pushes.len(), 4, "{pushes:?}");
    assert_eq!(message_ids(&pushes)[3], fourth.id.to_string());
    assert!(
        push.received(&cat_browser).await.is_empty(),
        "an online member gets no push"
    );
    assert!(push.errors().await.is_empty(), "{:?}", push.errors().await);
    // Counted once the worker has the push service's answer, which may be
    // a moment after the service has the push.
    wait_metric(
        node.addr,
        "chat_notifications_sent_total{channel=\"push\"}",
        4.0,
    )
    .await;
}

#[tokio::test]
async fn levels_mutes_and_quiet_hours_suppress_what_they_should() {
    let (node, _serial) = node().await;
    let push = PushService::start().await;
    let ann = node.user(&unique("ann")).await;
    let bob = node.user(&unique("bob")).await;
    // Dave keeps every default: his push is the marker that the outbox got
    // past each message Bob must not hear of.
    let dave = node.user(&unique("dave")).await;
    let mut a = connect(node.addr, &ann.access, Codec::Json).await;
    let conv = group(&mut a, &[&bob.id, &dave.id]).await;
    let bob_b = subscribe(&node, &push, &bob).await;
    let dave_b = subscribe(&node, &push, &dave).await;
    let set_level = |level: &'static str, muted_until: Option<u64>| {
        let conv = conv.clone();
        let bob = bob.clone();
        let addr = node.addr;
        async move {
            let (status, body) = call_json(
                addr,
                "PUT",
                &format!("/v1/conversations/{conv}/notifications"),
                Some(&bob.access),
                Some(json!({"level": level, "muted_until": muted_until})),
            )
            .await;
            assert_eq!(status, 200, "{body}");
            body
        }
    };

    // Mentions only: the plain message is skipped, the mention comes.
    let body = set_level("mentions", None).await;
    assert_eq!(body, json!({"level": "mentions"}));
    send(&mut a, &conv, "p1", "plain").await;
    let mention = send(&mut a, &conv, "p2", &format!("hey @{}", bob.id)).await;
    let got = push.wait_for(&bob_b, 1).await;
    assert_eq!(message_ids(&got), vec![mention.id.to_string()]);
    let mut dave_seen = 2;
    push.wait_for(&dave_b, dave_seen).await;

    // None, then muted for an hour, then quiet hours around now: Dave hears
    // of each, Bob of none.
    let in_an_hour = chat_protocol::now_ms() + 3_600_000;
    for (i, step) in ["none", "muted", "quiet"].into_iter().enumerate() {
        match step {
            "none" => {
                set_level("none", None).await;
            }
            "muted" => {
                let body = set_level("all", Some(in_an_hour)).await;
                assert_eq!(body["muted_until"], in_an_hour);
            }
            _ => {
                set_level("all", None).await;
                let (status, body) = call_json(
                    node.addr,
                    "PUT",
                    "/v1/me/notifications",
                    Some(&bob.access),
                    Some(json!({"dnd": quiet_now()})),
                )
                .await;
                assert_eq!(status, 200, "{body}");
            }
        }
        send(
            &mut a,
            &conv,
            &format!("s{i}"),
            &format!("hey @{} ({step})", bob.id),
        )
        .await;
        dave_seen += 1;
        push.wait_for(&dave_b, dave_seen).await;
        assert_eq!(
            push.received(&bob_b).await.len(),
            1,
            "{step} let a push through"
        );
    }

    // Quiet hours over: pushes again.
    let (status, _) = call_json(
        node.addr,
        "PUT",
        "/v1/me/notifications",
        Some(&bob.access),
        Some(json!({"dnd": null})),
    )
    .await;
    assert_eq!(status, 200);
    let again = send(&mut a, &conv, "back", "welcome back").await;
    let got = push.wait_for(&bob_b, 2).await;
    assert_eq!(message_ids(&got)[1], again.id.to_string());

    // A direct conversation notifies at `mentions` too: every message in
    // it is for the other.
    let direct = ok(a
        .request(frames::create(ConversationKind::Direct, &[&bob.id], None))
        .await)
    .conversation
    .unwrap()
    .id;
    let (status, _) = call_json(
        node.addr,
        "PUT",
        &format!("/v1/conversations/{direct}/notifications"),
        Some(&bob.access),
        Some(json!({"level": "mentions"})),
    )
    .await;
    assert_eq!(status, 200);
    let dm = send(&mut a, &direct, "dm", "just you").await;
    let got = push.wait_for(&bob_b, 3).await;
    assert_eq!(message_ids(&got)[2], dm.id.to_string());
    assert_eq!(got[2]["urgency"], "high");
    assert!(push.errors().await.is_empty(), "{:?}", push.errors().await);
}

/// Quiet hours from an hour ago to an hour ahead, in UTC.
fn quiet_now() -> Value {
    let minute = (chat_protocol::now_ms() / 60_000) % (24 * 60);
    let hhmm = |m: u64| format!("{:02}:{:02}", (m / 60) % 24, m % 60);
    json!({
        "start": hhmm((minute + 24 * 60 - 60) % (24 * 60)),
        "end": hhmm((minute + 60) % (24 * 60)),
        "tz": "UTC",
    })
}

#[tokio::test]
async fn a_gone_subscription_is_deleted_and_a_busy_service_retried() {
    let (node, _serial) = node().await;
    let push = PushService::start().await;
    let ann = node.user(&unique("ann")).await;
    let bob = node.user(&unique("bob")).await;
    let mut a = connect(node.addr, &ann.access, Codec::Json).await;
    let conv = group(&mut a, &[&bob.id]).await;
    let busy = subscribe(&node, &push, &bob).await;
    let gone = subscribe(&node, &push, &bob).await;
    push.fail(&busy, 429, 1).await;
    push.fail(&gone, 410, 1).await;
    let m = send(&mut a, &conv, "r1", "are you there").await;
    // The busy one: refused once, then taken on the retry.
    let got = push.wait_for(&busy, 2).await;
    assert_eq!(got[0]["status"], 429);
    assert_eq!(got[1]["status"], 201);
    assert_eq!(message_ids(&got), vec![m.id.to_string(), m.id.to_string()]);
    // The gone one: deleted from the user's list.
    let access = bob.access.clone();
    let addr = node.addr;
    let gone_endpoint = gone.subscription["endpoint"].clone();
    chat_testkit::eventually("the gone subscription deleted", || {
        let access = access.clone();
        let gone_endpoint = gone_endpoint.clone();
        async move {
            let (_, body) = call_json(
                addr,
                "GET",
                "/v1/me/push-subscriptions",
                Some(&access),
                None,
            )
            .await;
            let subs = body["subscriptions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if subs.iter().any(|s| s["endpoint"] == gone_endpoint) {
                Err(format!("still listed: {subs:?}"))
            } else {
                Ok(subs)
            }
        }
    })
    .await;
    assert_eq!(
        push.received(&gone).await.len(),
        1,
        "never pushed again after 410"
    );
    assert!(
        metric(
            node.addr,
            "chat_notifications_failed_total{channel=\"push\"}"
        )
        .await
            >= 1.0
    );
}

#[tokio::test]
async fn a_message_read_before_its_push_goes_out_is_not_pushed() {
    let (node, _serial) = node().await;
    let push = PushService::start().await;
    let ann = node.user(&unique("ann")).await;
    let bob = node.user(&unique("bob")).await;
    let mut a = connect(node.addr, &ann.access, Codec::Json).await;
    let conv = group(&mut a, &[&bob.id]).await;
    let browser = subscribe(&node, &push, &bob).await;
    // The service is down for the first attempts: the push waits 1, 2,
    // then 4 s for its retries, and Bob reads the message on another device
    // meanwhile.
    push.fail(&browser, 503, 4).await;
    let m = send(&mut a, &conv, "r1", "read me first").await;
    push.wait_for(&browser, 1).await;
    let mut b = connect(node.addr, &bob.access, Codec::Json).await;
    ok(b.request(chat_protocol::ClientFrame::Read {
        req: None,
        conversation: conv.clone(),
        up_to: m.id,
    })
    .await);
    wait_metric(
        node.addr,
        "chat_notifications_cancelled_total{channel=\"push\"}",
        1.0,
    )
    .await;
    let got = push.received(&browser).await;
    assert!(
        got.iter().all(|p| p["status"] == 503),
        "only refused attempts: {got:?}"
    );
}

#[tokio::test]
async fn settings_routes_validate_and_the_list_shows_each_conversations_level() {
    let (node, _serial) = node().await;
    let ann = node.user(&unique("ann")).await;
    let bob = node.user(&unique("bob")).await;
    let token = Some(ann.access.as_str());
    let (status, body) = call_json(node.addr, "GET", "/v1/me/notifications", token, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"email": {"enabled": true, "delay_secs": 900}, "push": {"enabled": true}})
    );
    let (status, body) = call_json(
        node.addr,
        "PUT",
        "/v1/me/notifications",
        token,
        Some(json!({"email": {"delay_secs": 60}, "dnd": {"start": "22:00", "end": "07:00", "tz": "Europe/Paris"}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["email"], json!({"enabled": true, "delay_secs": 60}));
    assert_eq!(body["dnd"]["tz"], "Europe/Paris");
    for bad in [
        json!({"dnd": {"start": "25:00", "end": "07:00", "tz": "UTC"}}),
        json!({"dnd": {"start": "22:00", "end": "07:00", "tz": "Mars/Base"}}),
        json!({"email": {"delay_secs": 99_999_999}}),
        json!({"push": {"enabled": "yes"}}),
        json!({"colour": "red"}),
    ] {
        let (status, body) = call_json(
            node.addr,
            "PUT",
            "/v1/me/notifications",
            token,
            Some(bad.clone()),
        )
        .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["code"], "bad_request");
    }
    let (status, _) = call_json(node.addr, "GET", "/v1/me/notifications", None, None).await;
    assert_eq!(status, 401);

    // The VAPID key needs no token, and is an uncompressed P-256 point.
    let (status, body) = call_json(node.addr, "GET", "/v1/push/vapid-public-key", None, None).await;
    assert_eq!(status, 200);
    let key = body["public_key"].as_str().unwrap();
    assert_eq!(key.len(), 87, "65 bytes in base64url: {key}");

    // Subscriptions: bad endpoints and keys refused, listed, deleted.
    let keys = json!({"p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM", "auth": "tBHItJI5svbpez7KI4CCXg"});
    for (endpoint, keys) in [
        ("http://push.example.com/x", keys.clone()),
        ("javascript:alert(1)", keys.clone()),
        (
            "https://push.example.com/x",
            json!({"p256dh": "AAAA", "auth": "tBHItJI5svbpez7KI4CCXg"}),
        ),
    ] {
        let (status, body) = call_json(
            node.addr,
            "POST",
            "/v1/me/push-subscriptions",
            token,
            Some(json!({"endpoint": endpoint, "keys": keys})),
        )
        .await;
        assert_eq!(status, 400, "{endpoint}: {body}");
    }
    let sub = json!({"endpoint": "https://push.example.com/x", "keys": keys});
    let (status, body) = call_json(
        node.addr,
        "POST",
        "/v1/me/push-subscriptions",
        token,
        Some(sub.clone()),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let (_, again) = call_json(
        node.addr,
        "POST",
        "/v1/me/push-subscriptions",
        token,
        Some(sub),
    )
    .await;
    assert_eq!(again["id"], id.as_str(), "the same endpoint keeps its id");
    let (_, list) = call_json(node.addr, "GET", "/v1/me/push-subscriptions", token, None).await;
    assert_eq!(list["subscriptions"].as_array().unwrap().len(), 1);
    assert!(list["subscriptions"][0].get("keys").is_none());
    let path = format!("/v1/me/push-subscriptions/{id}");
    let (status, _) = call_json(node.addr, "DELETE", &path, Some(&bob.access), None).await;
    assert_eq!(status, 404, "another user's subscription");
    let (status, _) = call_json(node.addr, "DELETE", &path, token, None).await;
    assert_eq!(status, 204);
    let (status, _) = call_json(node.addr, "DELETE", &path, token, None).await;
    assert_eq!(status, 404);

    // Per conversation: members only; shown in the list, with each kind's
    // default.
    let mut a = connect(node.addr, &ann.access, Codec::Json).await;
    let g = group(&mut a, &[&bob.id]).await;
    let channel = ok(a
        .request(frames::create(
            ConversationKind::Channel,
            &[&bob.id],
            Some("news"),
        ))
        .await)
    .conversation
    .unwrap()
    .id;
    let stranger = node.user(&unique("eve")).await;
    let path = format!("/v1/conversations/{g}/notifications");
    let (status, _) = call_json(
        node.addr,
        "PUT",
        &path,
        Some(&stranger.access),
        Some(json!({"level": "none"})),
    )
    .await;
    assert_eq!(status, 404, "not a member");
    let (status, _) = call_json(
        node.addr,
        "PUT",
        &path,
        token,
        Some(json!({"level": "loud"})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = call_json(
        node.addr,
        "PUT",
        &path,
        token,
        Some(json!({"level": "none"})),
    )
    .await;
    assert_eq!(status, 200);
    let list = conversations(&mut a, None).await;
    let level = |id: &ConversationId| {
        list.iter()
            .find(|s| &s.conversation.id == id)
            .and_then(|s| s.notify)
            .map(|n| n.level)
    };
    use chat_protocol::notify::NotifyLevel;
    assert_eq!(level(&g), Some(NotifyLevel::None));
    assert_eq!(level(&channel), Some(NotifyLevel::Mentions));
}

#[tokio::test]
async fn a_members_pushes_past_their_limit_are_dropped_and_counted() {
    let (node, _serial) = outbox_node(|c| {
        c.notifications.push.allow_loopback_http = true;
        c.notifications.poll_ms = 20;
        c.notifications.user_queue_limit = 2;
        c.notifications.retry_base_ms = 50;
    })
    .await;
    let push = PushService::start().await;
    let ann = node.user(&unique("ann")).await;
    let bob = node.user(&unique("bob")).await;
    let mut a = connect(node.addr, &ann.access, Codec::Json).await;
    let conv = group(&mut a, &[&bob.id]).await;
    let browser = subscribe(&node, &push, &bob).await;
    // Bob's push service is down: his pushes wait, retried.
    push.fail(&browser, 500, 1_000_000).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(send(&mut a, &conv, &format!("l{i}"), "hello?").await.id);
    }
    let dropped = "chat_notifications_dropped_total{channel=\"push\"}";
    wait_metric(node.addr, dropped, 3.0).await;
    // It is back: the two that were queued go out, and only they.
    push.fail(&browser, 500, 0).await;
    let delivered = chat_testkit::eventually("the queued pushes delivered", || {
        let push = &push;
        let browser = &browser;
        async move {
            let got = push.received(browser).await;
            let ok: Vec<Value> = got.into_iter().filter(|p| p["status"] == 201).collect();
            if ok.len() >= 2 {
                Ok(ok)
            } else {
                Err(format!("{} delivered so far", ok.len()))
            }
        }
    })
    .await;
    // Each retried on its own schedule: in either order, each once.
    let first_two: std::collections::BTreeSet<String> =
        sent[..2].iter().map(|id| id.to_string()).collect();
    let mut ids = message_ids(&delivered);
    ids.sort();
    assert_eq!(ids, first_two.iter().cloned().collect::<Vec<_>>());
    let tried: std::collections::BTreeSet<String> = message_ids(&push.received(&browser).await)
        .into_iter()
        .collect();
    assert_eq!(tried, first_two, "pushes past the limit were never queued");
    assert_eq!(metric(node.addr, dropped).await, 3.0);
}

/// The worker's threads run at nice 19: live chat always comes first.
#[tokio::test]
async fn the_worker_runs_at_the_lowest_cpu_priority() {
    let (_node, _serial) = node().await;
    let niced = chat_testkit::eventually("the notification threads niced", || async {
        let mut found = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if !comm.starts_with("notify") {
                continue;
            }
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // Fields after the parenthesised name: state is field 3, nice 19.
            let after = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
            let nice: i32 = after
                .split_whitespace()
                .nth(16)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            found.push((comm.trim().to_owned(), nice));
        }
        if !found.is_empty() && found.iter().all(|(_, nice)| *nice == 19) {
            Ok(found)
        } else {
            Err(format!("{found:?}"))
        }
    })
    .await;
    assert!(niced.iter().any(|(name, _)| name == "notify-main"));
}
