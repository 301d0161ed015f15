//! Profiles (docs/protocol.md, "Profiles"), end to end over real sockets:
//! `GET`/`PATCH /v1/me`, a user by id and by prefix, bad input refused, and
//! the `profile` event reaching those who share a conversation (on one
//! node and across two).

mod common;

use chat_protocol::codec::Codec;
use chat_protocol::people::Profile;
use chat_protocol::{ClientFrame, ServerFrame};
use common::*;
use serde_json::{json, Value};

async fn patch(node: std::net::SocketAddr, who: &TestUser, body: Value) -> (u16, Value) {
    call_json(node, "PATCH", "/v1/me", Some(&who.access), Some(body)).await
}

async fn get(node: std::net::SocketAddr, who: &TestUser, path: &str) -> (u16, Value) {
    call_json(node, "GET", path, Some(&who.access), None).await
}

/// The ids a lookup answers.
async fn lookup(node: std::net::SocketAddr, who: &TestUser, query: &str) -> Vec<String> {
    let (s, body) = get(node, who, &format!("/v1/users?{query}")).await;
    assert_eq!(s, 200, "{query}: {body}");
    body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_profile_is_edited_shown_and_found() {
    let node = TestNode::start().await;
    let addr = node.addr;
    let ann = node.user(&unique("pfann")).await;
    let bob = node.user(&unique("pfbob")).await;

    let (s, me) = get(addr, &ann, "/v1/me").await;
    assert_eq!(s, 200);
    assert_eq!(me["display_name"], json!(ann.id), "the id until set");
    assert_eq!(me["totp_enabled"], json!(false));
    assert!(me.get("status_text").is_none());

    // A name unique to this run, so a kept keyspace's users do not show.
    let name = format!("Zed {}", unique("q"));
    let (s, me) = patch(
        addr,
        &ann,
        json!({"display_name": format!("  {name} "), "status_text": "on a train"}),
    )
    .await;
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["display_name"], json!(name), "trimmed");
    assert_eq!(me["status_text"], json!("on a train"));
    assert_eq!(me["id"], json!(ann.id));
    let (s, seen) = get(addr, &bob, &format!("/v1/users/{}", ann.id)).await;
    assert_eq!(s, 200);
    assert_eq!(
        seen,
        json!({"id": ann.id, "display_name": name, "status_text": "on a train"})
    );
    // Absent fields stay; null clears.
    let (_, me) = patch(addr, &ann, json!({"status_text": null})).await;
    assert!(me.get("status_text").is_none(), "{me}");
    assert_eq!(me["display_name"], json!(name));

    // Found by the start of the display name in any case, and of the id.
    let lower = name.to_lowercase();
    let found = lookup(
        addr,
        &bob,
        &format!("prefix={}", &lower[..6].replace(' ', "%20")),
    )
    .await;
    assert!(found.contains(&ann.id), "{found:?}");
    let found = lookup(addr, &bob, &format!("prefix={}", ann.id.to_uppercase())).await;
    assert_eq!(found, vec![ann.id.clone()]);
    let found = lookup(addr, &bob, "prefix=pf&limit=1").await;
    assert_eq!(found.len(), 1);
    // A changed name is no longer found by the old one.
    let (s, _) = patch(addr, &ann, json!({"display_name": format!("Yam {name}")})).await;
    assert_eq!(s, 200);
    let found = lookup(addr, &bob, &format!("prefix={}", lower.replace(' ', "%20"))).await;
    assert!(!found.contains(&ann.id), "{found:?}");
    // Someone who blocks you is not found.
    let (s, _) = call_json(
        addr,
        "PUT",
        &format!("/v1/me/blocks/{}", bob.id),
        Some(&ann.access),
        None,
    )
    .await;
    assert_eq!(s, 204);
    assert!(lookup(addr, &bob, &format!("prefix={}", ann.id))
        .await
        .is_empty());

    // A sign-in shows the profile's name.
    let (s, body) = call_json(
        addr,
        "POST",
        "/v1/auth/login",
        None,
        Some(json!({"username": ann.id, "password": "correct horse battery"})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(body["user"]["display_name"], json!(format!("Yam {name}")));
}

#[tokio::test]
async fn bad_profile_input_gets_a_clear_error_and_changes_nothing() {
    let node = TestNode::start().await;
    let addr = node.addr;
    let ann = node.user(&unique("pfbad")).await;
    let (_, before) = get(addr, &ann, "/v1/me").await;
    for (body, code, why) in [
        (
            json!({"display_name": "x".repeat(129)}),
            400,
            "longer than 128",
        ),
        (
            json!({"display_name": "a\u{7}b"}),
            400,
            "control characters",
        ),
        (
            json!({"status_text": "é".repeat(141)}),
            400,
            "longer than 140",
        ),
        (
            json!({"status_text": "line\nbreak"}),
            400,
            "control characters",
        ),
        (json!({"avatar": "m123"}), 404, "no such media"),
        (json!({"nickname": "x"}), 400, "unknown field"),
        (json!({"display_name": 7}), 400, "invalid type"),
    ] {
        let (s, answer) = patch(addr, &ann, body.clone()).await;
        assert_eq!(s, code, "{body}: {answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(why), "{body}: {message}");
    }
    // 140 characters of two bytes each are fine.
    let (s, _) = patch(addr, &ann, json!({"status_text": "é".repeat(140)})).await;
    assert_eq!(s, 200);
    let (_, mut after) = get(addr, &ann, "/v1/me").await;
    after.as_object_mut().unwrap().remove("status_text");
    assert_eq!(after, before);

    for (query, why) in [
        ("prefix=a", "at least 2"),
        ("prefix=ab&limit=51", "between 1 and 50"),
        ("prefix=ab&limit=0", "between 1 and 50"),
        ("limit=3", "prefix"),
        ("prefix=a%01", "not a name"),
    ] {
        let (s, answer) = get(addr, &ann, &format!("/v1/users?{query}")).await;
        assert_eq!(s, 400, "{query}: {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(why),
            "{query}: {answer}"
        );
    }
    let (s, _) = get(addr, &ann, "/v1/users/nobody-of-that-name").await;
    assert_eq!(s, 404);
    let (s, _) = get(addr, &ann, "/v1/users/%00").await;
    assert_eq!(s, 400);
    let (s, _) = call_json(addr, "GET", "/v1/users?prefix=ab", None, None).await;
    assert_eq!(s, 401);
}

/// Waits for `c` to get `user`'s profile event showing `name`.
async fn profile_event(c: &mut Client, user: &str, name: &str) -> Profile {
    let f = c
        .event(|f| {
            matches!(f, ServerFrame::Profile { profile }
                if profile.user.as_str() == user && profile.display_name == name)
        })
        .await;
    match f {
        ServerFrame::Profile { profile } => profile,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_profile_change_reaches_those_who_share_a_conversation() {
    let node = TestNode::start().await;
    let addr = node.addr;
    let ann = node.user(&unique("pfevann")).await;
    let bob = node.user(&unique("pfevbob")).await;
    let cat = node.user(&unique("pfevcat")).await;
    let mut a = connect(addr, &ann.access, Codec::Json).await;
    group(&mut a, &[&bob.id]).await;
    let mut b = connect(addr, &bob.access, Codec::MsgPack).await;
    let mut c = connect(addr, &cat.access, Codec::Json).await;
    let (s, _) = patch(
        addr,
        &ann,
        json!({"display_name": "Annie", "status_text": "hi"}),
    )
    .await;
    assert_eq!(s, 200);
    let got = profile_event(&mut b, &ann.id, "Annie").await;
    assert_eq!(got.status_text.as_deref(), Some("hi"));
    profile_event(&mut a, &ann.id, "Annie").await;
    // Cat shares nothing with Ann: by the time a ping is answered, which
    // comes after anything queued before it, nothing of hers came.
    ok(c.request(ClientFrame::Ping { req: None }).await);
    assert!(
        !c.events
            .iter()
            .any(|f| matches!(f, ServerFrame::Profile { .. })),
        "{:?}",
        c.events
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_change_on_one_node_reaches_a_member_on_another() {
    let cluster = common::cluster::TestCluster::start(2).await;
    let ann = register(cluster.addr(0), &unique("pfclann")).await;
    let bob = register(cluster.addr(1), &unique("pfclbob")).await;
    let mut a = connect(cluster.addr(0), &ann.access, Codec::Json).await;
    group(&mut a, &[&bob.id]).await;
    let mut b = connect(cluster.addr(1), &bob.access, Codec::Json).await;
    let (s, _) = patch(cluster.addr(0), &ann, json!({"display_name": "Ann B"})).await;
    assert_eq!(s, 200);
    profile_event(&mut b, &ann.id, "Ann B").await;
    // The other node answers with the same profile.
    let (s, seen) = get(cluster.addr(1), &bob, &format!("/v1/users/{}", ann.id)).await;
    assert_eq!((s, &seen["display_name"]), (200, &json!("Ann B")));
}
