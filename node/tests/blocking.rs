//! Contacts, blocks and privacy (docs/protocol.md, "Blocking"), end to end
//! on an in-process node over real sockets: the routes, and the rules where
//! they are enforced (the conversation actor, the notification worker).

mod common;

use chat_protocol::codec::Codec;
use chat_protocol::{ClientFrame, ConversationKind, ErrorCode, ServerFrame, Status, UserId};
use common::push::{outbox_node, PushService};
use common::*;
use serde_json::{json, Value};

async fn put(node: &TestNode, who: &TestUser, path: &str, body: Option<Value>) -> (u16, Value) {
    call_json(node.addr, "PUT", path, Some(&who.access), body).await
}

async fn create(
    c: &mut Client,
    kind: ConversationKind,
    members: &[&str],
) -> chat_protocol::ServerFrame {
    c.request(frames::create(kind, members, Some("t"))).await
}

#[tokio::test]
async fn the_routes_keep_each_users_lists_and_refuse_bad_input() {
    let node = TestNode::start().await;
    let ann = node.user(&unique("ann")).await;
    let bob = node.user(&unique("bob")).await;
    let (s, _) = put(&node, &ann, &format!("/v1/me/blocks/{}", bob.id), None).await;
    assert_eq!(s, 204);
    let (s, _) = put(&node, &ann, &format!("/v1/me/contacts/{}", bob.id), None).await;
    assert_eq!(s, 204);
    let (s, body) = call_json(node.addr, "GET", "/v1/me/blocks", Some(&ann.access), None).await;
    assert_eq!((s, body), (200, json!({"blocks": [bob.id]})));
    let (_, body) = call_json(node.addr, "GET", "/v1/me/blocks", Some(&bob.access), None).await;
    assert_eq!(body, json!({"blocks": []}), "lists are their owner's");
    let (s, _) = put(&node, &ann, "/v1/me/blocks/nobody-of-that-name", None).await;
    assert_eq!(s, 404);
    let (s, _) = put(&node, &ann, &format!("/v1/me/blocks/{}", ann.id), None).await;
    assert_eq!(s, 400, "not oneself");
    let (s, _) = put(&node, &ann, "/v1/me/blocks/%00bad", None).await;
    assert_eq!(s, 400);
    let (s, _) = call_json(
        node.addr,
        "DELETE",
        &format!("/v1/me/contacts/{}", bob.id),
        Some(&ann.access),
        None,
    )
    .await;
    assert_eq!(s, 204);
    let (_, body) = call_json(node.addr, "GET", "/v1/me/contacts", Some(&ann.access), None).await;
    assert_eq!(body, json!({"contacts": []}));
    let (s, _) = put(
        &node,
        &ann,
        "/v1/me/privacy",
        Some(json!({"direct_messages": "friends", "presence": "nobody"})),
    )
    .await;
    assert_eq!(s, 400);
    let (s, body) = put(
        &node,
        &ann,
        "/v1/me/privacy",
        Some(json!({"direct_messages": "contacts", "presence": "nobody"})),
    )
    .await;
    assert_eq!(
        (s, body),
        (
            200,
            json!({"direct_messages": "contacts", "presence": "nobody"})
        )
    );
    let (_, body) = call_json(node.addr, "GET", "/v1/me/privacy", Some(&ann.access), None).await;
    assert_eq!(body["presence"], "nobody");
}

#[tokio::test]
async fn a_blocked_user_cannot_start_invite_or_write_directly_but_groups_go_on() {
    let node = TestNode::start().await;
    let ann = node.user(&unique("ann")).await;
    let bob = node.user(&unique("bob")).await;
    let cat = node.user(&unique("cat")).await;
    let mut a = connect(node.addr, &ann.access, Codec::Json).await;
    let mut b = connect(node.addr, &bob.access, Codec::Json).await;
    // A direct conversation from before the block, and a group of all three.
    let direct = ok(create(&mut b, ConversationKind::Direct, &[&ann.id]).await)
        .conversation
        .unwrap()
        .id;
    ok(b.request(frames::send(&direct, "d0", "hi ann")).await);
    let shared = group(&mut a, &[&bob.id, &cat.id]).await;
    let (s, _) = put(&node, &ann, &format!("/v1/me/blocks/{}", bob.id), None).await;
    assert_eq!(s, 204);

    // Bob cannot write in their direct conversation (within the actor's
    // two seconds of trust in what it read).
    let addr = node.addr;
    let access = bob.access.clone();
    let d = direct.clone();
    chat_testkit::eventually("bob's direct sends refused", || {
        let (access, d) = (access.clone(), d.clone());
        async move {
            let mut b = connect(addr, &access, Codec::Json).await;
            let reply = b
                .request(frames::send(&d, &unique("d"), "still there?"))
                .await;
            match reply {
                chat_protocol::ServerFrame::Error {
                    code: ErrorCode::Forbidden,
                    ..
                } => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    // Nor start one with Ann (the existing one is the same id: a new pair
    // here), nor put her in a new group, nor invite her into one.
    let dan = node.user(&unique("dan")).await;
    let (s, _) = put(&node, &dan, &format!("/v1/me/blocks/{}", bob.id), None).await;
    assert_eq!(s, 204);
    let refused = create(&mut b, ConversationKind::Direct, &[&dan.id]).await;
    assert_eq!(err_code(&refused), ErrorCode::Forbidden);
    let refused = create(&mut b, ConversationKind::Group, &[&cat.id, &ann.id]).await;
    assert_eq!(err_code(&refused), ErrorCode::Forbidden);
    let own = group(&mut b, &[&cat.id]).await;
    let refused = b
        .request(ClientFrame::Invite {
            req: None,
            conversation: own.clone(),
            users: vec![UserId::new(&ann.id).unwrap()],
        })
        .await;
    assert_eq!(err_code(&refused), ErrorCode::Forbidden);
    // Ann may still write to Bob, and the group goes on for both.
    ok(a.request(frames::send(&direct, "a1", "I can")).await);
    ok(b.request(frames::send(&shared, "g1", "to everyone")).await);
    // Unblocked, Bob may write again.
    let (s, _) = call_json(
        node.addr,
        "DELETE",
        &format!("/v1/me/blocks/{}", bob.id),
        Some(&ann.access),
        None,
    )
    .await;
    assert_eq!(s, 204);
    let access = bob.access.clone();
    chat_testkit::eventually("bob's direct sends taken again", || {
        let (access, d) = (access.clone(), direct.clone());
        async move {
            let mut b = connect(addr, &access, Codec::Json).await;
            match b.request(frames::send(&d, &unique("d"), "friends?")).await {
                chat_protocol::ServerFrame::Ok(_) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
}

#[tokio::test]
async fn direct_messages_from_contacts_only_or_from_nobody() {
    let node = TestNode::start().await;
    let ann = node.user(&unique("ann")).await;
    let cat = node.user(&unique("cat")).await;
    let mut c = connect(node.addr, &cat.access, Codec::Json).await;
    let contacts = json!({"direct_messages": "contacts", "presence": "everyone"});
    assert_eq!(
        put(&node, &ann, "/v1/me/privacy", Some(contacts)).await.0,
        200
    );
    let refused = create(&mut c, ConversationKind::Direct, &[&ann.id]).await;
    assert_eq!(err_code(&refused), ErrorCode::Forbidden);
    let (s, _) = put(&node, &ann, &format!("/v1/me/contacts/{}", cat.id), None).await;
    assert_eq!(s, 204);
    ok(create(&mut c, ConversationKind::Direct, &[&ann.id]).await);
    let nobody = json!({"direct_messages": "nobody", "presence": "everyone"});
    assert_eq!(
        put(&node, &ann, "/v1/me/privacy", Some(nobody)).await.0,
        200
    );
    let dan = node.user(&unique("dan")).await;
    let mut d = connect(node.addr, &dan.access, Codec::Json).await;
    let refused = create(&mut d, ConversationKind::Direct, &[&ann.id]).await;
    assert_eq!(err_code(&refused), ErrorCode::Forbidden);
}

#[tokio::test]
async fn a_blocked_senders_messages_notify_no_one_who_blocked_them() {
    let (node, _serial) = outbox_node(|c| {
        c.notifications.push.allow_loopback_http = true;
        c.notifications.poll_ms = 20;
    })
    .await;
    let push = PushService::start().await;
    let ann = node.user(&unique("ann")).await;
    let bob = node.user(&unique("bob")).await;
    let cat = node.user(&unique("cat")).await;
    let mut b = connect(node.addr, &bob.access, Codec::Json).await;
    let mut c = connect(node.addr, &cat.access, Codec::Json).await;
    let g = group(&mut c, &[&ann.id, &bob.id]).await;
    let browser = push.browser().await;
    let (s, body) = call_json(
        node.addr,
        "POST",
        "/v1/me/push-subscriptions",
        Some(&ann.access),
        Some(browser.subscription.clone()),
    )
    .await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(
        put(&node, &ann, &format!("/v1/me/blocks/{}", bob.id), None)
            .await
            .0,
        204
    );
    // Bob's message first, then Cat's: the conversation's outbox is worked
    // in order, so once Cat's push is in, Bob's would have been too.
    ok(b.request(frames::send(&g, "b1", "from bob")).await);
    let from_cat = ok(c.request(frames::send(&g, "c1", "from cat")).await)
        .message
        .unwrap();
    let got = push.wait_for(&browser, 1).await;
    let ids: Vec<&str> = got
        .iter()
        .map(|p| p["payload"]["message"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![from_cat.id.to_string().as_str()]);
}

/// The status `c`'s new watch of `user` reports.
async fn watch_status(c: &mut Client, user: &str) -> Status {
    let reply = ok(c
        .request(ClientFrame::Watch {
            req: None,
            users: vec![UserId::new(user).unwrap()],
        })
        .await);
    reply.presence.expect("presence")[0].status
}

/// Waits for `c` to be told that `user` is offline with no `last_seen`:
/// what a watch of hidden presence says (a real going offline has one).
async fn told_hidden(c: &mut Client, user: &str) {
    c.event(|f| {
        matches!(f, ServerFrame::Presence(p)
            if p.user.as_str() == user && p.status == Status::Offline && p.last_seen.is_none())
    })
    .await;
}

#[tokio::test]
async fn blocks_and_privacy_hide_presence_from_watches_made_before_and_after() {
    let node = TestNode::start().await;
    let ann = node.user(&unique("ann")).await;
    let bob = node.user(&unique("bob")).await;
    let cat = node.user(&unique("cat")).await;
    let mut a = connect(node.addr, &ann.access, Codec::Json).await;
    group(&mut a, &[&bob.id, &cat.id]).await;
    let mut b = connect(node.addr, &bob.access, Codec::Json).await;
    let mut c = connect(node.addr, &cat.access, Codec::Json).await;
    assert_eq!(watch_status(&mut b, &ann.id).await, Status::Online);
    assert_eq!(watch_status(&mut c, &ann.id).await, Status::Online);

    // Ann blocks Bob: his watch ends with an "offline", and a new one
    // shows her offline while she is online; Cat still sees her.
    let (s, _) = put(&node, &ann, &format!("/v1/me/blocks/{}", bob.id), None).await;
    assert_eq!(s, 204);
    told_hidden(&mut b, &ann.id).await;
    assert_eq!(watch_status(&mut b, &ann.id).await, Status::Offline);
    assert_eq!(watch_status(&mut c, &ann.id).await, Status::Online);
    // Her going offline and back reaches Cat, and not Bob.
    drop(a);
    c.event(|f| matches!(f, ServerFrame::Presence(p) if p.user.as_str() == ann.id && p.status == Status::Offline))
        .await;
    let a = connect(node.addr, &ann.access, Codec::Json).await;
    c.event(|f| matches!(f, ServerFrame::Presence(p) if p.user.as_str() == ann.id && p.status == Status::Online))
        .await;
    // Bob's connection was told the same changes after Cat's, if at all:
    // a ping's answer comes after anything queued before it.
    ok(b.request(ClientFrame::Ping { req: None }).await);
    assert!(
        !b.events.iter().any(
            |f| matches!(f, ServerFrame::Presence(p) if p.user.as_str() == ann.id && p.status == Status::Online)
        ),
        "bob saw ann online after the block: {:?}",
        b.events
    );

    // Presence for contacts only: Cat, no contact, is told she is gone;
    // once a contact, Cat sees her again.
    let privacy = json!({"direct_messages": "everyone", "presence": "contacts"});
    let (s, _) = put(&node, &ann, "/v1/me/privacy", Some(privacy)).await;
    assert_eq!(s, 200);
    told_hidden(&mut c, &ann.id).await;
    assert_eq!(watch_status(&mut c, &ann.id).await, Status::Offline);
    let (s, _) = put(&node, &ann, &format!("/v1/me/contacts/{}", cat.id), None).await;
    assert_eq!(s, 204);
    assert_eq!(watch_status(&mut c, &ann.id).await, Status::Online);
    // A contact removed is told too.
    let (s, _) = call_json(
        node.addr,
        "DELETE",
        &format!("/v1/me/contacts/{}", cat.id),
        Some(&ann.access),
        None,
    )
    .await;
    assert_eq!(s, 204);
    told_hidden(&mut c, &ann.id).await;
    // Nobody: not even a contact; her own watch of herself is no secret.
    let (s, _) = put(&node, &ann, &format!("/v1/me/contacts/{}", cat.id), None).await;
    assert_eq!(s, 204);
    let privacy = json!({"direct_messages": "everyone", "presence": "nobody"});
    let (s, _) = put(&node, &ann, "/v1/me/privacy", Some(privacy)).await;
    assert_eq!(s, 200);
    assert_eq!(watch_status(&mut c, &ann.id).await, Status::Offline);
    let mut a = a;
    assert_eq!(watch_status(&mut a, &ann.id).await, Status::Online);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_on_one_node_hides_presence_from_a_watch_on_another() {
    let cluster = common::cluster::TestCluster::start(2).await;
    let ann = register(cluster.addr(0), &unique("ann")).await;
    let bob = register(cluster.addr(1), &unique("bob")).await;
    let mut a = connect(cluster.addr(0), &ann.access, Codec::Json).await;
    group(&mut a, &[&bob.id]).await;
    let mut b = connect(cluster.addr(1), &bob.access, Codec::Json).await;
    assert_eq!(watch_status(&mut b, &ann.id).await, Status::Online);
    let (s, _) = call_json(
        cluster.addr(0),
        "PUT",
        &format!("/v1/me/blocks/{}", bob.id),
        Some(&ann.access),
        None,
    )
    .await;
    assert_eq!(s, 204);
    told_hidden(&mut b, &ann.id).await;
    assert_eq!(watch_status(&mut b, &ann.id).await, Status::Offline);
}
