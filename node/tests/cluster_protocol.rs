//! The client contract over a real cluster: every protocol check holds
//! with the clients spread over three `chat-node` processes, and a member
//! away while a conversation changes, and its owner killed, catches up with
//! the changes.

mod common;

use std::net::SocketAddr;

use chat_protocol::{ClientFrame, Codec, Message, ServerFrame, Status};
use common::cluster::*;
use common::procs::*;
use common::*;
use serde_json::Value;

/// Every frame, error and guarantee of the client protocol with each user on
/// another node: what a client sees must not depend on the node it reached.
/// (Guarantee 1 across node failures has the kill tests above.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_check_holds_with_clients_spread_over_three_nodes() {
    use chat_protocol::{ConversationKind, ErrorCode, MessageId, Role};
    use common::frames::*;

    let cluster = TestCluster::start(3).await;
    let at = |i: usize| cluster.addr(i % 3);

    // Accounts: registered on one node, logged in on another, refreshed on a
    // third; a rotated refresh token and a logged-out one stop working everywhere.
    let alice_name = unique("alice");
    let alice = register(at(0), &alice_name).await;
    let bob = register(at(1), &unique("bob")).await;
    let carol = register(at(2), &unique("carol")).await;
    let dave = register(at(0), &unique("dave")).await;
    let login = serde_json::json!({"username": alice_name, "password": "correct horse battery"});
    let (status, body) = http(
        at(1),
        "POST",
        "/v1/auth/login",
        None,
        Some(&login.to_string()),
    )
    .await;
    assert_eq!(status, 200, "login elsewhere: {body}");
    let second: Value = serde_json::from_str(&body).unwrap();
    let refresh = serde_json::json!({"refresh_token": second["refresh_token"]}).to_string();
    let (status, body) = http(at(2), "POST", "/v1/auth/refresh", None, Some(&refresh)).await;
    assert_eq!(status, 200, "refresh on a third node: {body}");
    let rotated: Value = serde_json::from_str(&body).unwrap();
    let (status, _) = http(at(0), "POST", "/v1/auth/refresh", None, Some(&refresh)).await;
    assert_eq!(
        status, 401,
        "a rotated refresh token is refused on every node"
    );
    let logout = serde_json::json!({"refresh_token": rotated["refresh_token"]}).to_string();
    let (status, _) = http(at(1), "POST", "/v1/auth/logout", None, Some(&logout)).await;
    assert_eq!(status, 204);
    let (status, _) = http(at(2), "POST", "/v1/auth/refresh", None, Some(&logout)).await;
    assert_eq!(status, 401, "a logged-out refresh token is refused");
    for i in 0..3 {
        assert_eq!(try_connect(at(i), None, Codec::Json).await.err(), Some(401));
        assert_eq!(
            try_connect(at(i), Some("not.a.jwt"), Codec::Json)
                .await
                .err(),
            Some(401)
        );
    }

    // Alice on node 0 (JSON), Bob on node 1 (MessagePack), Carol on node 2.
    let mut a = connect(at(0), &alice.access, Codec::Json).await;
    let mut b = connect(at(1), &bob.access, Codec::MsgPack).await;
    let mut c = connect(at(2), &carol.access, Codec::Json).await;

    // Direct: one per pair, whoever creates it and wherever.
    let direct = ok(a
        .request(create(ConversationKind::Direct, &[&bob.id], None))
        .await)
    .conversation
    .unwrap();
    assert_eq!(direct.kind, ConversationKind::Direct);
    b.event(
        |f| matches!(f, ServerFrame::Conversation { conversation } if conversation.id == direct.id),
    )
    .await;
    let again = ok(b
        .request(create(ConversationKind::Direct, &[&alice.id], None))
        .await);
    assert_eq!(again.conversation.unwrap().id, direct.id);

    // Send, live delivery, and a retry through another node (guarantee 3).
    let first = ok(a.request(send(&direct.id, "d1", "hello bob")).await)
        .message
        .unwrap();
    let live = b.event(|f| message_of(f).is_some()).await;
    assert_eq!(message_of(&live), Some(&first));
    let mut a2 = connect(at(2), &alice.access, Codec::MsgPack).await;
    let retried = ok(a2.request(send(&direct.id, "d1", "hello bob")).await)
        .message
        .unwrap();
    assert_eq!(
        retried, first,
        "a retry on another node returns the first message"
    );
    let (status, body) = http(
        at(1),
        "POST",
        &format!("/v1/conversations/{}/messages", direct.id.as_str()),
        Some(&alice.access),
        Some(r#"{"client_msg_id":"d1","body":"again"}"#),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let over_http: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(over_http["message"]["id"], first.id.0.to_string());
    let probe = ok(a.request(send(&direct.id, "d2", "probe")).await)
        .message
        .unwrap();
    b.event(|f| message_of(f).is_some_and(|m| m.id == probe.id))
        .await;
    assert!(
        !b.events.iter().any(|f| message_of(f).is_some()),
        "a retried send was delivered again"
    );

    // Typing and receipts cross nodes; a receipt moved backwards is a no-op.
    b.send_frame(&ClientFrame::Typing {
        req: None,
        conversation: direct.id.clone(),
        active: true,
    })
    .await;
    a.event(
        |f| matches!(f, ServerFrame::Typing { active: true, user, .. } if user.as_str() == bob.id),
    )
    .await;
    ok(b.request(ClientFrame::Read {
        req: None,
        conversation: direct.id.clone(),
        up_to: probe.id,
    })
    .await);
    a.event(|f| matches!(f, ServerFrame::Receipt { up_to, .. } if *up_to == probe.id))
        .await;
    ok(b.request(ClientFrame::Read {
        req: None,
        conversation: direct.id.clone(),
        up_to: MessageId(1),
    })
    .await);

    // A channel owned on node 2: members read, only owners and admins write.
    let channel = ok(c
        .request(create(
            ConversationKind::Channel,
            &[&alice.id],
            Some("news"),
        ))
        .await)
    .conversation
    .unwrap();
    a.event(|f| matches!(f, ServerFrame::Conversation { conversation } if conversation.id == channel.id))
        .await;
    assert_eq!(
        err_code(&a.request(send(&channel.id, "c1", "may I?")).await),
        ErrorCode::Forbidden
    );
    let news = ok(c.request(send(&channel.id, "c2", "announcement")).await)
        .message
        .unwrap();
    let got = a
        .event(|f| message_of(f).is_some_and(|m| m.conversation == channel.id))
        .await;
    assert_eq!(message_of(&got), Some(&news));

    // A group owned on node 0: invite, kick and leave, with their refusals.
    let g = group(&mut a, &[&bob.id]).await;
    b.event(|f| matches!(f, ServerFrame::Conversation { conversation } if conversation.id == g))
        .await;
    let invite = |who: &str| ClientFrame::Invite {
        req: None,
        conversation: g.clone(),
        users: vec![user(who)],
    };
    assert_eq!(
        err_code(&b.request(invite(&carol.id)).await),
        ErrorCode::Forbidden
    );
    assert_eq!(
        err_code(&a.request(invite("nobody-at-all")).await),
        ErrorCode::NotFound
    );
    let grown = ok(a.request(invite(&carol.id)).await).conversation.unwrap();
    assert_eq!(grown.members.len(), 3);
    c.event(|f| matches!(f, ServerFrame::Conversation { conversation } if conversation.id == g))
        .await;
    let welcome = ok(b.request(send(&g, "g1", "welcome carol")).await)
        .message
        .unwrap();
    for x in [&mut a, &mut c] {
        let got = x
            .event(|f| message_of(f).is_some_and(|m| m.conversation == g))
            .await;
        assert_eq!(message_of(&got), Some(&welcome));
    }
    let mut d = connect(at(1), &dave.access, Codec::Json).await;
    assert_eq!(
        err_code(&d.request(send(&g, "x", "let me in")).await),
        ErrorCode::Forbidden
    );
    assert_eq!(
        err_code(&d.request(history(&g, None, None, None)).await),
        ErrorCode::Forbidden
    );
    assert_eq!(
        err_code(&d.request(send(&conv("g:no-such-thing"), "x", "?")).await),
        ErrorCode::NotFound
    );
    let (status, _) = http(
        at(2),
        "GET",
        &format!("/v1/conversations/{}/messages", g.as_str()),
        Some(&dave.access),
        None,
    )
    .await;
    assert_eq!(status, 403, "a stranger reads nothing over HTTP either");

    // Bad input is answered and the connection stays open.
    let is_error = |f: &ServerFrame| matches!(f, ServerFrame::Error { .. });
    c.send_raw(b"{not json".to_vec()).await;
    assert_eq!(err_code(&c.event(is_error).await), ErrorCode::BadRequest);
    c.send_raw(br#"{"type":"no_such_frame","req":"r1"}"#.to_vec())
        .await;
    assert_eq!(err_code(&c.event(is_error).await), ErrorCode::BadRequest);
    let huge = "x".repeat(16 * 1024 + 1);
    assert_eq!(
        err_code(&c.request(send(&g, "big", &huge)).await),
        ErrorCode::TooLarge
    );
    ok(c.request(ClientFrame::Ping { req: None }).await);

    // History (guarantees 2 and 4): members on three nodes write in turn; every
    // node pages back the same history, and a member that was away catches up
    // with `after` on another node.
    c.ws.close(None).await.unwrap();
    let mut stored = vec![welcome.clone()];
    for i in 0..90 {
        let x = if i % 2 == 0 { &mut a } else { &mut b };
        let m = ok(x
            .request(send(&g, &format!("h{i}"), &format!("turn {i}")))
            .await)
        .message
        .unwrap();
        stored.push(m);
    }
    let mut c = connect(at(0), &carol.access, Codec::MsgPack).await;
    let mut caught_up = Vec::new();
    loop {
        let after = caught_up.last().map_or(welcome.id, |m: &Message| m.id);
        let page = ok(c.request(history(&g, None, Some(after.0), Some(40))).await);
        caught_up.extend(page.messages.unwrap());
        if page.more != Some(true) {
            break;
        }
    }
    assert_eq!(caught_up, stored[1..].to_vec(), "catch-up with after");
    for x in [&mut a, &mut b, &mut c] {
        assert_eq!(
            walk_back(x, &g).await,
            stored,
            "one history whatever the node"
        );
    }
    let page = ok(b.request(history(&g, None, None, Some(10))).await);
    assert_eq!(page.messages.unwrap(), stored[stored.len() - 10..].to_vec());
    assert_eq!(page.more, Some(true));

    // The conversation list: newest activity first, last message, unread.
    let list = conversations(&mut c, None).await;
    let ids: Vec<_> = list.iter().map(|s| s.conversation.id.clone()).collect();
    assert_eq!(
        ids,
        vec![g.clone(), channel.id.clone()],
        "newest activity first"
    );
    assert_eq!(list[0].last_message.as_ref(), stored.last());
    assert_eq!(list[0].unread, stored.len() as u64);
    assert_eq!(list[1].unread, 0, "own messages are not unread");
    ok(c.request(ClientFrame::Read {
        req: None,
        conversation: g.clone(),
        up_to: stored.last().unwrap().id,
    })
    .await);
    let list = conversations(&mut c, Some(1)).await;
    assert_eq!((list.len(), list[0].unread), (1, 0));

    // Kick and leave: the kicked member is told, refused and hears nothing more;
    // when the owner leaves, the remaining member with the most rights owns it.
    ok(a.request(ClientFrame::Kick {
        req: None,
        conversation: g.clone(),
        user: user(&carol.id),
    })
    .await);
    c.event(|f| matches!(f, ServerFrame::Conversation { conversation } if conversation.id == g && conversation.members.len() == 2))
        .await;
    assert_eq!(
        err_code(&c.request(send(&g, "k", "still here?")).await),
        ErrorCode::Forbidden
    );
    ok(a.request(ClientFrame::Leave {
        req: None,
        conversation: g.clone(),
    })
    .await);
    let left = b
        .event(|f| matches!(f, ServerFrame::Conversation { conversation } if conversation.id == g && conversation.members.len() == 1))
        .await;
    let ServerFrame::Conversation { conversation } = left else {
        unreachable!()
    };
    assert_eq!(conversation.members[0].role, Role::Owner);
    let private = ok(b.request(send(&g, "after", "private")).await)
        .message
        .unwrap();
    ok(c.request(ClientFrame::Ping { req: None }).await);
    ok(a.request(ClientFrame::Ping { req: None }).await);
    for x in [&a, &c] {
        assert!(
            !x.events
                .iter()
                .any(|f| message_of(f).is_some_and(|m| m.id == private.id)),
            "a former member received a message"
        );
    }

    // Presence across nodes: watch, offline with last_seen, unwatch.
    let w = ok(a
        .request(ClientFrame::Watch {
            req: None,
            users: vec![user(&bob.id)],
        })
        .await);
    assert_eq!(w.presence.unwrap()[0].status, Status::Online);
    b.ws.close(None).await.unwrap();
    let off = a
        .event(|f| matches!(f, ServerFrame::Presence(p) if p.user.as_str() == bob.id && p.status == Status::Offline))
        .await;
    assert!(matches!(off, ServerFrame::Presence(p) if p.last_seen.is_some()));
    ok(a.request(ClientFrame::Unwatch {
        req: None,
        users: vec![user(&bob.id)],
    })
    .await);
    ok(a.request(ClientFrame::Watch {
        req: None,
        users: vec![user(&carol.id)],
    })
    .await);
    drop(c);
    a.event(|f| matches!(f, ServerFrame::Presence(p) if p.user.as_str() == carol.id && p.status == Status::Offline))
        .await;
    let _b = connect(at(2), &bob.access, Codec::Json).await;
    let _c = connect(at(1), &carol.access, Codec::Json).await;
    a.event(|f| matches!(f, ServerFrame::Presence(p) if p.user.as_str() == carol.id && p.status == Status::Online))
        .await;
    assert!(
        !a.events
            .iter()
            .any(|f| matches!(f, ServerFrame::Presence(p) if p.user.as_str() == bob.id)),
        "an unwatched user's presence arrived"
    );
}

/// Guarantee 6 across a node failure: a member away while others edit,
/// delete and react (and the conversation's owner is killed half-way)
/// rebuilds the current history from `changes` alone, on another node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_away_during_changes_and_an_owner_kill_catches_up_with_changes() {
    use std::collections::BTreeMap;

    let mut cluster = TestCluster::start(3).await;
    let alice = register(cluster.addr(0), &unique("alice")).await;
    let bob = register(cluster.addr(1), &unique("bob")).await;
    let carol = register(cluster.addr(2), &unique("carol")).await;
    let mut a = connect(cluster.addr(0), &alice.access, Codec::Json).await;
    let conv = group(&mut a, &[&bob.id, &carol.id]).await;
    let owner = TestCluster::owner(&conv, &[0, 1, 2]);
    let survivors: Vec<usize> = (0..3).filter(|i| *i != owner).collect();
    let nodes: Vec<SocketAddr> = survivors.iter().map(|i| cluster.addr(*i)).collect();
    let mut a = connect(nodes[0], &alice.access, Codec::Json).await;
    let mut c = connect(nodes[1], &carol.access, Codec::MsgPack).await;
    let mut sent = Vec::new();
    for i in 0..10 {
        let cmid = format!("s{i}");
        sent.push(send_retrying(&mut a, &nodes, &alice.access, &conv, &cmid).await);
    }

    // Bob has seen everything so far, then goes away.
    let mut b = connect(nodes[1], &bob.access, Codec::Json).await;
    let page = ok(b.request(frames::changes(&conv, 0, None)).await);
    let seen = page.messages.unwrap();
    let seen_rev = page.rev.unwrap();
    assert_eq!(seen, sent);
    drop(b);

    // Sixty changes by Alice and Carol; the owner dies after the twentieth.
    // Each acknowledged state is remembered: the last one per message is
    // what the history must show.
    let mut acked: BTreeMap<chat_protocol::MessageId, Message> = BTreeMap::new();
    for i in 0..60usize {
        if i == 20 {
            cluster.nodes[owner].as_mut().unwrap().kill9();
            cluster.nodes[owner] = None;
        }
        let target = sent[i % sent.len()].id;
        let (frame, by_carol) = match i % 4 {
            0 => (frames::edit(&conv, target, &format!("edit {i}")), false),
            1 => (frames::react(&conv, target, "👍", true), true),
            2 => (frames::react(&conv, target, "🎉", i % 8 == 2), true),
            _ => (
                frames::send(&conv, &format!("n{i}"), &body_of(&format!("n{i}"))),
                false,
            ),
        };
        let (client, token) = if by_carol {
            (&mut c, &carol.access)
        } else {
            (&mut a, &alice.access)
        };
        let reply = request_retrying(client, &nodes, token, frame, &format!("change {i}")).await;
        let m = reply.message.expect("a message in the reply");
        let held = acked.entry(m.id).or_insert_with(|| m.clone());
        if m.rev >= held.rev {
            *held = m;
        }
    }

    // Bob comes back on the other survivor and catches up with `changes`.
    let mut b = reconnect(&nodes, &bob.access, 0).await;
    let mut state: BTreeMap<chat_protocol::MessageId, Message> =
        seen.into_iter().map(|m| (m.id, m)).collect();
    let mut after = seen_rev;
    loop {
        let reply = ok(b.request(frames::changes(&conv, after, Some(16))).await);
        let page = reply.messages.unwrap();
        for m in &page {
            assert!(m.rev > after, "changes come in rev order");
            state.insert(m.id, m.clone());
        }
        if reply.more != Some(true) {
            break;
        }
        after = page.last().unwrap().rev;
    }
    let replayed: Vec<Message> = state.into_values().collect();
    for (id, m) in &acked {
        let now = replayed
            .iter()
            .find(|r| r.id == *id)
            .expect("acknowledged and kept");
        assert_eq!(now, m, "the last acknowledged state of {}", id.0);
    }
    let h1 = walk_back(&mut b, &conv).await;
    let h2 = walk_back(&mut a, &conv).await;
    assert_eq!(replayed, h1, "changes rebuild the history");
    assert_eq!(h1, h2, "both survivors show one history");
}
