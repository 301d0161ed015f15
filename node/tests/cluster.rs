//! A real cluster: three `chat-node` processes that find each other through
//! their seeds over ractor_cluster, and a real `redis-server` for presence,
//! all on loopback ports chosen at run time. Clients are real WebSocket
//! clients connected to different nodes.
//!
//! What is checked: members on three nodes get every message once and in id
//! order, with typing, receipts and presence crossing nodes; killing the
//! owner of a busy conversation loses no acknowledged message and repeats no
//! id; a node that leaves with SIGTERM loses nothing, and when it comes back
//! it catches up and owns conversations again; a conversation's messages go
//! only to the nodes where a member is connected, and that follows members
//! connecting, leaving and being invited, and the owner moving away and back.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chat_protocol::{ClientFrame, Codec, ConversationId, Message, ServerFrame, Status};
use common::cluster::*;
use common::procs::*;
use common::*;
use serde_json::Value;

/// Alice, Bob and Carol, each registered on one node and connected to the
/// next (Bob with MessagePack), in a group Alice created that the others
/// have heard of.
async fn three_in_a_group(cluster: &TestCluster) -> (Vec<TestUser>, Vec<Client>, ConversationId) {
    let names = [unique("alice"), unique("bob"), unique("carol")];
    let mut users = Vec::new();
    let mut clients = Vec::new();
    for (i, name) in names.iter().enumerate() {
        // Registered on its own node; tokens and accounts work everywhere.
        let u = register(cluster.addr(i), name).await;
        let codec = if i == 1 { Codec::MsgPack } else { Codec::Json };
        clients.push(connect(cluster.addr((i + 1) % 3), &u.access, codec).await);
        users.push(u);
    }
    let conv = group(&mut clients[0], &[&users[1].id, &users[2].id]).await;
    for c in clients.iter_mut().skip(1) {
        c.event(
            |f| matches!(f, ServerFrame::Conversation { conversation } if conversation.id == conv),
        )
        .await;
    }
    (users, clients, conv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_on_three_nodes_chat_in_a_group() {
    let cluster = TestCluster::start(3).await;
    let (users, mut clients, conv) = three_in_a_group(&cluster).await;

    // Everyone sends; each reply is awaited, events are kept meanwhile.
    const EACH: usize = 30;
    let mut sent: Vec<Vec<Message>> = vec![Vec::new(); 3];
    for round in 0..EACH {
        for (i, c) in clients.iter_mut().enumerate() {
            let cmid = format!("m{i}-{round}");
            let reply = ok(c.request(frames::send(&conv, &cmid, &body_of(&cmid))).await);
            sent[i].push(reply.message.expect("message"));
        }
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let mut got = Vec::new();
        for _ in 0..2 * EACH {
            let f = c.event(|f| message_of(f).is_some()).await;
            got.push(message_of(&f).cloned().unwrap());
        }
        for w in got.windows(2) {
            assert!(w[0].id < w[1].id, "client {i}: events out of id order");
        }
        let mut expected: Vec<Message> = sent
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .flat_map(|(_, m)| m.clone())
            .collect();
        expected.sort_by_key(|m| m.id);
        assert_eq!(
            got, expected,
            "client {i} got other members' messages once each"
        );
        // Nothing more is queued for it: a ping's answer comes after any
        // duplicate already on its way from the same node.
        ok(c.request(ClientFrame::Ping { req: None }).await);
        assert!(
            !c.events.iter().any(|f| message_of(f).is_some()),
            "client {i} got a message twice"
        );
    }

    // History is the same whichever node it is read from.
    let mut all: Vec<Message> = sent.concat();
    all.sort_by_key(|m| m.id);
    for c in clients.iter_mut() {
        let history = walk_back(c, &conv).await;
        check_history(&history, &all);
        assert_eq!(history, all);
    }

    // Typing from node 1's client reaches the others.
    let carol_id = frames::user(&users[2].id);
    clients[2]
        .send_frame(&ClientFrame::Typing {
            req: None,
            conversation: conv.clone(),
            active: true,
        })
        .await;
    for c in clients.iter_mut().take(2) {
        c.event(
            |f| matches!(f, ServerFrame::Typing { user, active: true, .. } if *user == carol_id),
        )
        .await;
    }

    // A read receipt from Bob reaches Alice and Carol.
    let last = all.last().unwrap().id;
    let bob_id = frames::user(&users[1].id);
    ok(clients[1]
        .request(ClientFrame::Read {
            req: None,
            conversation: conv.clone(),
            up_to: last,
        })
        .await);
    for i in [0, 2] {
        clients[i]
            .event(|f| matches!(f, ServerFrame::Receipt { user, up_to, .. } if *user == bob_id && *up_to == last))
            .await;
    }

    // Presence: Alice watches Carol, who is online elsewhere, then leaves.
    let reply = ok(clients[0]
        .request(ClientFrame::Watch {
            req: None,
            users: vec![carol_id.clone()],
        })
        .await);
    let p = reply.presence.expect("presence");
    assert_eq!(p[0].status, Status::Online, "{p:?}");
    let carol = clients.pop().unwrap();
    drop(carol);
    clients[0]
        .event(|f| matches!(f, ServerFrame::Presence(p) if p.user == carol_id && p.status == Status::Offline))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_owner_of_a_busy_conversation_loses_nothing_acknowledged() {
    let mut cluster = TestCluster::start(3).await;
    let alice = register(cluster.addr(0), &unique("alice")).await;
    let bob = register(cluster.addr(0), &unique("bob")).await;
    let mut a = connect(cluster.addr(0), &alice.access, Codec::Json).await;
    let conv = group(&mut a, &[&bob.id]).await;
    let owner = TestCluster::owner(&conv, &[0, 1, 2]);
    let others: Vec<usize> = (0..3).filter(|i| *i != owner).collect();
    // Alice sends from a node that survives; Bob reads on the doomed owner.
    let survivors: Vec<SocketAddr> = others.iter().map(|i| cluster.addr(*i)).collect();
    let mut a = connect(survivors[0], &alice.access, Codec::Json).await;
    let mut b = connect(cluster.addr(owner), &bob.access, Codec::MsgPack).await;

    let mut acked = Vec::new();
    for i in 0..200 {
        if i == 60 {
            cluster.nodes[owner].as_mut().unwrap().kill9();
            cluster.nodes[owner] = None;
        }
        let cmid = format!("k-{i}");
        acked.push(send_retrying(&mut a, &survivors, &alice.access, &conv, &cmid).await);
    }
    for w in acked.windows(2) {
        assert!(w[0].id < w[1].id, "ids increase across the failover");
    }

    // Bob's connection died with its node; he reconnects elsewhere and
    // catches up with `history after` the last message he saw.
    let mut seen = Vec::new();
    while let Some(f) = b.recv().await {
        if let Some(m) = message_of(&f) {
            seen.push(m.clone());
        }
    }
    let mut b = reconnect(&survivors, &bob.access, 1).await;
    let mut after = seen.last().map(|m| m.id.0).unwrap_or(0);
    loop {
        let reply = ok(b
            .request(frames::history(&conv, None, Some(after), Some(100)))
            .await);
        let page = reply.messages.unwrap();
        if let Some(m) = page.last() {
            after = m.id.0;
        }
        seen.extend(page);
        if !reply.more.unwrap() {
            break;
        }
    }
    assert_eq!(
        seen, acked,
        "Bob, live then caught up, has every message once"
    );

    // Both survivors hold every acknowledged message, the same history.
    let h1 = full_history(cluster.node(others[0]), &mut a, &conv, &alice.access).await;
    let h2 = full_history(cluster.node(others[1]), &mut b, &conv, &bob.access).await;
    check_history(&h1, &acked);
    assert_eq!(h1, h2, "survivors' histories are identical");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_leaves_loses_nothing_and_takes_its_share_back_when_it_returns() {
    let mut cluster = TestCluster::start(3).await;
    let leaving = 2;
    let alice = register(cluster.addr(0), &unique("alice")).await;
    let bob = register(cluster.addr(1), &unique("bob")).await;
    let mut a = connect(cluster.addr(leaving), &alice.access, Codec::Json).await;
    // A conversation the leaving node owns.
    let mut conv = group(&mut a, &[&bob.id]).await;
    for _ in 0..100 {
        if TestCluster::owner(&conv, &[0, 1, 2]) == leaving {
            break;
        }
        conv = group(&mut a, &[&bob.id]).await;
    }
    assert_eq!(TestCluster::owner(&conv, &[0, 1, 2]), leaving);
    let others: Vec<SocketAddr> = vec![cluster.addr(0), cluster.addr(1)];

    let mut acked = Vec::new();
    for i in 0..30 {
        let cmid = format!("before-{i}");
        acked.push(send_retrying(&mut a, &others, &alice.access, &conv, &cmid).await);
    }

    // SIGTERM: clients are told to move (1001), the process exits 0.
    let node = cluster.nodes[leaving].as_mut().unwrap();
    node.sigterm();
    assert_eq!(a.closed_with().await, Some(1001));
    let status = node.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "drained node exits 0: {status:?}");
    cluster.nodes[leaving] = None;
    cluster.wait_formed(2).await;

    let mut a = reconnect(&others, &alice.access, 0).await;
    for i in 0..30 {
        let cmid = format!("during-{i}");
        acked.push(send_retrying(&mut a, &others, &alice.access, &conv, &cmid).await);
    }

    // It comes back on its data, catches up, and owns its conversations again.
    cluster.restart(leaving).await;
    cluster.wait_formed(3).await;
    for i in 0..30 {
        let cmid = format!("after-{i}");
        acked.push(send_retrying(&mut a, &others, &alice.access, &conv, &cmid).await);
    }
    let status = cluster.status(leaving).await;
    assert!(
        status["conversations"].as_u64().unwrap_or(0) >= 1,
        "the returned node serves the conversation it owns: {status}"
    );
    let mut on_returned = connect(cluster.addr(leaving), &alice.access, Codec::Json).await;
    let h_returned = full_history(
        cluster.node(leaving),
        &mut on_returned,
        &conv,
        &alice.access,
    )
    .await;
    check_history(&h_returned, &acked);
    assert_eq!(h_returned, acked, "nothing more, nothing less");
    let h_other = full_history(cluster.node(0), &mut a, &conv, &alice.access).await;
    assert_eq!(h_returned, h_other);
}

/// The presence Bob's connection reports for `user` (watching it).
/// Alice on node 1 and Bob on node 2, connected, in a group Bob has heard of.
async fn pair_across_nodes(
    cluster: &TestCluster,
) -> (TestUser, TestUser, Client, Client, ConversationId) {
    let alice = register(cluster.addr(0), &unique("alice")).await;
    let bob = register(cluster.addr(1), &unique("bob")).await;
    let mut a = connect(cluster.addr(0), &alice.access, Codec::Json).await;
    let mut b = connect(cluster.addr(1), &bob.access, Codec::Json).await;
    let conv = group(&mut a, &[&bob.id]).await;
    b.event(|f| matches!(f, ServerFrame::Conversation { .. }))
        .await;
    (alice, bob, a, b, conv)
}

async fn ready(addr: SocketAddr) -> (u16, String) {
    http(addr, "GET", "/readyz", None, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_keeps_flowing_while_redis_is_down_and_presence_recovers() {
    let mut cluster = TestCluster::start(2).await;
    let (alice, _bob, mut a, mut b, conv) = pair_across_nodes(&cluster).await;
    assert_eq!(watch_status(&mut b, &alice.id).await, Ok(Status::Online));

    cluster.redis.kill();
    let mut sent = Vec::new();
    for i in 0..20 {
        let cmid = format!("r-{i}");
        sent.push(
            ok(a.request(frames::send(&conv, &cmid, &body_of(&cmid))).await)
                .message
                .unwrap(),
        );
    }
    for m in &sent {
        let f = b.event(|f| message_of(f).is_some()).await;
        assert_eq!(
            message_of(&f),
            Some(m),
            "delivered across nodes with Redis down"
        );
    }
    // Presence says plainly that it cannot answer, and readiness says why.
    assert_eq!(
        watch_status(&mut b, &alice.id).await,
        Err(chat_protocol::ErrorCode::Unavailable)
    );
    let (status, body) = ready(cluster.addr(0)).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("presence"), "{body}");

    // Redis comes back empty: the nodes re-register their users.
    cluster.redis.restart();
    let b = tokio::sync::Mutex::new(b);
    eventually_within("presence recovers", FORM_DEADLINE, || async {
        let r0 = ready(cluster.addr(0)).await.0;
        let r1 = ready(cluster.addr(1)).await.0;
        let seen = watch_status(&mut *b.lock().await, &alice.id).await;
        if r0 == 200 && r1 == 200 && seen == Ok(Status::Online) {
            Ok(())
        } else {
            Err(format!("readyz {r0} {r1}, alice {seen:?}"))
        }
    })
    .await;
    let mut b = b.into_inner();
    let history = walk_back(&mut b, &conv).await;
    assert_eq!(history, sent);
}

/// Runs a node expected to refuse to start; returns its exit status and log.
async fn refused_start(
    env: Vec<(String, String)>,
    data: &std::path::Path,
) -> (std::process::ExitStatus, String) {
    let log = data.with_extension("log");
    let mut cmd = std::process::Command::new(node_binary());
    cmd.args(["--http", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .env("CHAT__AUTH__JWT_SECRET", SECRET)
        .envs(env);
    let mut child = cmd.spawn().expect("spawn chat-node");
    // Killed on drop, should the wait fail.
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
        }
    }
    let child = std::sync::Mutex::new(Kill(&mut child));
    let status = eventually_within("the duplicate node exits", FORM_DEADLINE, || async {
        let exited = child.lock().unwrap().0.try_wait().unwrap();
        exited.ok_or_else(|| std::fs::read_to_string(&log).unwrap())
    })
    .await;
    (status, std::fs::read_to_string(&log).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_name_or_id_is_taken_refuses_to_start() {
    let cluster = TestCluster::start(2).await;
    let extra_port = free_port();
    let with = |key: &str, value: String| {
        let mut env = cluster.env(1);
        env.retain(|(k, _)| k != key && k != "CHAT__CLUSTER__LISTEN");
        env.push((key.to_string(), value));
        env.push((
            "CHAT__CLUSTER__LISTEN".into(),
            format!("127.0.0.1:{extra_port}"),
        ));
        env
    };
    // Same name as node-2, on another port.
    let (status, log) = refused_start(
        with("CHAT__NODE__ID", "7".into()),
        &cluster.root.path().join("dup-name"),
    )
    .await;
    assert!(!status.success(), "{log}");
    assert!(log.contains("chat:{node-claims}:name:node-2"), "{log}");
    cluster.wait_formed(2).await;
    // Another name, node-2's id.
    let (status, log) = refused_start(
        with("CHAT__NODE__NAME", "node-9".into()),
        &cluster.root.path().join("dup-id"),
    )
    .await;
    assert!(!status.success(), "{log}");
    assert!(log.contains("chat:{node-claims}:id:2"), "{log}");
    // The cluster is unharmed.
    cluster.wait_formed(2).await;
}

/// Waits until node `i` sees exactly `serving` serving nodes.
async fn wait_view(cluster: &TestCluster, i: usize, serving: usize) {
    let what = format!("node {i} sees {serving} serving");
    eventually_within(&what, FORM_DEADLINE, || async {
        let v = cluster.status(i).await;
        let n = v["serving_nodes"].as_array().map(Vec::len);
        (n == Some(serving)).then_some(()).ok_or(v.to_string())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_heals_with_every_history_identical_and_nothing_lost() {
    // On the embedded store each side of a partition accepts writes and the
    // replicas merge after it heals; on ScyllaDB only the holder of the
    // conversation's lease writes, and the side without it answers
    // `unavailable` until it heals.
    let on_scylla = std::env::var("CHAT_TEST_STORAGE").as_deref() == Ok("scylla");
    let mut cluster = TestCluster::start_cuttable(3).await;
    let mut users = Vec::new();
    for n in ["alice", "bob", "carol"] {
        users.push(register(cluster.addr(0), &unique(n)).await);
    }
    let mut clients = Vec::new();
    for (i, u) in users.iter().enumerate() {
        clients.push(connect(cluster.addr(i), &u.access, Codec::Json).await);
    }
    // Owned by a node of the majority, so that it holds the lease when the
    // cut comes.
    let mut conv = group(&mut clients[0], &[&users[1].id, &users[2].id]).await;
    while TestCluster::owner(&conv, &[0, 1, 2]) == 2 {
        conv = group(&mut clients[0], &[&users[1].id, &users[2].id]).await;
    }
    let mut acked = Vec::new();
    for i in 0..10 {
        let cmid = format!("before-{i}");
        acked.push(
            ok(clients[0]
                .request(frames::send(&conv, &cmid, &body_of(&cmid)))
                .await)
            .message
            .unwrap(),
        );
    }

    // Cut node 3 (index 2) off from the other two.
    for l in &cluster.links[2] {
        l.cut();
    }
    wait_view(&cluster, 2, 1).await;
    wait_view(&cluster, 0, 2).await;
    wait_view(&cluster, 1, 2).await;

    let near = [cluster.addr(0), cluster.addr(1)];
    let far = [cluster.addr(2)];
    let mut refused = Vec::new();
    for i in 0..20 {
        let cmid = format!("majority-{i}");
        acked.push(send_retrying(&mut clients[0], &near, &users[0].access, &conv, &cmid).await);
        let cmid = format!("minority-{i}");
        if !on_scylla {
            // Both sides accept writes to the same conversation.
            acked.push(send_retrying(&mut clients[2], &far, &users[2].access, &conv, &cmid).await);
        } else if i % 7 == 0 {
            // One writer: the cut-off node cannot take the lease the
            // majority holds (each refusal waits for it a while: a few).
            let answer = clients[2]
                .request(frames::send(&conv, &cmid, &body_of(&cmid)))
                .await;
            assert_eq!(
                err_code(&answer),
                chat_protocol::ErrorCode::Unavailable,
                "the minority acknowledged nothing: {answer:?}"
            );
            refused.push(cmid);
        }
    }

    for l in &cluster.links[2] {
        l.heal();
    }
    cluster.wait_formed(3).await;
    // What was refused is sent again, and stored once.
    for cmid in &refused {
        acked.push(send_retrying(&mut clients[2], &far, &users[2].access, &conv, cmid).await);
    }
    for i in 0..10 {
        let cmid = format!("after-{i}");
        acked.push(send_retrying(&mut clients[1], &near, &users[1].access, &conv, &cmid).await);
    }

    // Catching up from before the cut (served from a conversation actor's
    // recent tail when it can) brings everything written since, both sides.
    let mut caught_up = Vec::new();
    let mut after = acked[9].id.0;
    loop {
        let reply = ok(clients[0]
            .request(frames::history(&conv, None, Some(after), Some(200)))
            .await);
        let page = reply.messages.unwrap();
        if let Some(m) = page.last() {
            after = m.id.0;
        }
        caught_up.extend(page);
        if !reply.more.unwrap() {
            break;
        }
    }
    assert_eq!(caught_up.len(), acked.len() - 10, "catch-up after the heal");

    // Every reader, on every node, sees the same history with everything.
    let mut histories = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        let h = full_history(cluster.node(i), c, &conv, &users[i].access).await;
        check_history(&h, &acked);
        assert_eq!(
            h.len(),
            acked.len(),
            "node {i}: nothing more than was acknowledged"
        );
        histories.push(h);
    }
    assert_eq!(histories[0], histories[1]);
    assert_eq!(histories[0], histories[2]);
    let _ = &mut cluster;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_talk_over_mutual_tls_and_refuse_a_node_of_another_ca() {
    let mut cluster = TestCluster::start_tls(2).await;
    let (_alice, _bob, mut a, mut b, conv) = pair_across_nodes(&cluster).await;
    let m = ok(a.request(frames::send(&conv, "tls-1", "over tls")).await)
        .message
        .unwrap();
    let f = b.event(|f| message_of(f).is_some()).await;
    assert_eq!(message_of(&f), Some(&m));

    // A third node whose certificate another CA signed is never let in.
    let rogue = make_certs(&cluster.root.path().join("rogue-pki"), "rogue-ca");
    cluster.tls = Some(rogue);
    cluster.cluster_ports.push(free_port());
    cluster.nodes.push(None);
    cluster.restart(2).await;
    let status = cluster.status(2).await;
    assert_eq!(
        status["peers"].as_array().map(Vec::len),
        Some(0),
        "{status}"
    );
    for i in 0..2 {
        let v = cluster.status(i).await;
        assert_eq!(v["serving_nodes"].as_array().map(Vec::len), Some(2), "{v}");
    }
}

/// Waits until `name` on `addr` reaches `at_least`.
async fn wait_metric(addr: SocketAddr, name: &str, at_least: f64) {
    let what = format!("{name} reaches {at_least}");
    eventually_within(&what, FORM_DEADLINE, || async {
        let v = metric(addr, name).await;
        (v >= at_least).then_some(()).ok_or(format!("{v}"))
    })
    .await;
}

/// Waits until node `i` holds that `peer`'s sessions listen to `n` of the
/// conversations `i` owns.
async fn wait_listening(cluster: &TestCluster, i: usize, peer: usize, n: u64) {
    let name = TestCluster::name(peer);
    let what = format!("node {i} holds {name} listening to {n}");
    eventually_within(&what, FORM_DEADLINE, || async {
        let v = cluster.status(i).await;
        let p = v["peers"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name.as_str()).cloned());
        let held = p.is_some_and(|p| p["interest_synced"] == true && p["listening"] == n);
        held.then_some(()).ok_or(v.to_string())
    })
    .await;
}

const RECEIVED: &str = "chat_peer_deliveries_received_total";
const SKIPPED: &str = "chat_peer_deliveries_skipped_total";

/// `a` sends `n` messages, one at a time; `b` gets each.
async fn send_and_see(a: &mut Client, b: &mut Client, conv: &ConversationId, tag: &str, n: usize) {
    for k in 0..n {
        let cmid = format!("{tag}-{k}");
        let m = ok(a.request(frames::send(conv, &cmid, &body_of(&cmid))).await)
            .message
            .expect("message");
        b.event(|f| message_of(f).is_some_and(|x| x.id == m.id))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_goes_only_to_nodes_where_a_member_listens() {
    let mut cluster = TestCluster::start(3).await;
    let alice = register(cluster.addr(0), &unique("alice")).await;
    let bob = register(cluster.addr(1), &unique("bob")).await;
    let carol = register(cluster.addr(2), &unique("carol")).await;
    let mut a = connect(cluster.addr(0), &alice.access, Codec::Json).await;
    let mut b = connect(cluster.addr(1), &bob.access, Codec::Json).await;
    let before = [
        metric(cluster.addr(1), RECEIVED).await,
        metric(cluster.addr(2), RECEIVED).await,
    ];
    // A group node 1 owns; Carol, whose node is node 3, is offline.
    let mut owners = Vec::new();
    let conv = loop {
        let conv = group(&mut a, &[&bob.id, &carol.id]).await;
        owners.push(TestCluster::owner(&conv, &[0, 1, 2]));
        if owners.last() == Some(&0) || owners.len() == 100 {
            break conv;
        }
    };
    assert_eq!(owners.last(), Some(&0));
    b.event(|f| matches!(f, ServerFrame::Conversation { conversation } if conversation.id == conv))
        .await;
    // A new group's event goes to every other node (a member may have just
    // connected there), from its owner, and those from different owners
    // arrive in any order: count them all in before measuring.
    let created_elsewhere = |i: usize| owners.iter().filter(|o| **o != i).count() as f64;
    let received_2 = before[0] + created_elsewhere(1);
    let received_3 = before[1] + created_elsewhere(2);
    wait_metric(cluster.addr(1), RECEIVED, received_2).await;
    wait_metric(cluster.addr(2), RECEIVED, received_3).await;

    // Node 3 hears nothing of it; node 2 hears each message once.
    let skipped = metric(cluster.addr(0), SKIPPED).await;
    send_and_see(&mut a, &mut b, &conv, "quiet", 20).await;
    wait_metric(cluster.addr(0), SKIPPED, skipped + 20.0).await;
    assert_eq!(metric(cluster.addr(1), RECEIVED).await, received_2 + 20.0);
    assert_eq!(
        metric(cluster.addr(2), RECEIVED).await,
        received_3,
        "a node without a member online gets nothing"
    );

    // Carol connects on node 3: the next message reaches her live, with no
    // wait in between (her session's interest is acknowledged first).
    let mut c = connect(cluster.addr(2), &carol.access, Codec::MsgPack).await;
    send_and_see(&mut a, &mut c, &conv, "hello-carol", 1).await;

    // She leaves: node 1 learns it, and node 3 hears nothing again.
    drop(c);
    wait_listening(&cluster, 0, 2, 0).await;
    let received_3 = metric(cluster.addr(2), RECEIVED).await;
    let skipped = metric(cluster.addr(0), SKIPPED).await;
    send_and_see(&mut a, &mut b, &conv, "after-carol", 10).await;
    wait_metric(cluster.addr(0), SKIPPED, skipped + 10.0).await;
    assert_eq!(metric(cluster.addr(2), RECEIVED).await, received_3);

    // Dave, online on node 3 but not a member, is invited: the owner sends
    // to node 3 from that moment, without waiting to hear that he listens.
    let dave = register(cluster.addr(2), &unique("dave")).await;
    let mut d = connect(cluster.addr(2), &dave.access, Codec::Json).await;
    ok(a.request(ClientFrame::Invite {
        req: None,
        conversation: conv.clone(),
        users: vec![frames::user(&dave.id)],
    })
    .await);
    send_and_see(&mut a, &mut d, &conv, "hello-dave", 1).await;
    drop(d);
    wait_listening(&cluster, 0, 2, 0).await;

    // The owner leaves and comes back: the conversation moves away and
    // back, and Bob's node re-registers with each owner in turn.
    let node = cluster.nodes[0].as_mut().unwrap();
    node.sigterm();
    assert_eq!(a.closed_with().await, Some(1001));
    assert!(node.wait_exit(Duration::from_secs(30)).await.success());
    cluster.nodes[0] = None;
    cluster.wait_formed(2).await;
    let mut a = connect(cluster.addr(2), &alice.access, Codec::Json).await;
    send_and_see(&mut a, &mut b, &conv, "moved", 5).await;
    cluster.restart(0).await;
    cluster.wait_formed(3).await;
    // Node 1 owns it again, with no session of its own: it learnt that
    // Bob listens on node 2 and Alice on node 3.
    wait_listening(&cluster, 0, 1, 1).await;
    wait_listening(&cluster, 0, 2, 1).await;
    send_and_see(&mut a, &mut b, &conv, "back", 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_out_on_one_node_closes_that_login_on_every_node() {
    let cluster = TestCluster::start(2).await;
    cluster.wait_formed(2).await;
    let u = register(cluster.addr(0), &unique("roamer")).await;
    let mut here = connect(cluster.addr(0), &u.access, Codec::Json).await;
    let mut there = connect(cluster.addr(1), &u.access, Codec::MsgPack).await;
    let body = serde_json::json!({ "refresh_token": u.refresh }).to_string();
    let started = Instant::now();
    let (status, text) = http(
        cluster.addr(0),
        "POST",
        "/v1/auth/logout",
        None,
        Some(&body),
    )
    .await;
    assert_eq!(status, 204, "{text}");
    assert_eq!(here.closed_with().await, Some(4001));
    assert_eq!(
        there.closed_with().await,
        Some(4001),
        "closed on the other node too"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The revoked login is refused on both nodes from now on.
    for i in 0..2 {
        let refused = try_connect(cluster.addr(i), Some(&u.access), Codec::Json).await;
        assert_eq!(refused.err(), Some(401), "node {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_joining_and_draining_under_traffic_lose_and_duplicate_nothing() {
    // Four nodes configured, three started: the fourth joins mid-traffic,
    // then the second drains (SIGTERM) mid-traffic.
    let mut cluster = TestCluster::start_some(4, 3).await;
    let alice = register(cluster.addr(0), &unique("alice")).await;
    let bob = register(cluster.addr(0), &unique("bob")).await;
    let mut a = connect(cluster.addr(0), &alice.access, Codec::Json).await;
    let joining = 3;
    // Twelve conversations, at least one of them the joining node's (ids
    // are random: twelve alone miss it 3 % of the time).
    let mut convs = Vec::new();
    for _ in 0..200 {
        let conv = group(&mut a, &[&bob.id]).await;
        let its = TestCluster::owner(&conv, &[0, 1, 2, 3]) == joining;
        let have = convs
            .iter()
            .any(|c| TestCluster::owner(c, &[0, 1, 2, 3]) == joining);
        if convs.len() < 12 || (its && !have) {
            convs.push(conv);
        }
        if convs.len() >= 12
            && convs
                .iter()
                .any(|c| TestCluster::owner(c, &[0, 1, 2, 3]) == joining)
        {
            break;
        }
    }
    assert!(
        convs
            .iter()
            .any(|c| TestCluster::owner(c, &[0, 1, 2, 3]) == joining),
        "some conversations belong to the joining node"
    );
    let entry = [cluster.addr(0)];
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    // Sends acknowledged so far, read when the changes are done.
    let progress = std::sync::atomic::AtomicUsize::new(0);
    let traffic = async {
        let mut acked: Vec<Message> = Vec::new();
        let mut n = 0usize;
        // Past the changes too, until two dozen sends are in: a slow CQL
        // cluster (RF 3, a dozen tests at once) may finish the changes
        // after fewer.
        while !*stop.borrow() || acked.len() < 24 {
            let conv = &convs[n % convs.len()];
            let cmid = format!("load-{n}");
            acked.push(send_retrying(&mut a, &entry, &alice.access, conv, &cmid).await);
            progress.store(acked.len(), std::sync::atomic::Ordering::Relaxed);
            n += 1;
        }
        acked
    };
    let changes = async {
        // Join: the new node takes its share of conversations over (each
        // handed over by its lease on ScyllaDB, by the hash on the embedded
        // store) while sends go on.
        cluster.restart(joining).await;
        cluster.wait_formed(4).await;
        eventually_within(
            "the joined node serves its share",
            FORM_DEADLINE,
            || async {
                let v = cluster.status(joining).await;
                let serving = v["conversations"].as_u64().unwrap_or(0);
                (serving >= 1).then_some(()).ok_or(v.to_string())
            },
        )
        .await;
        // Drain: node 2 (index 1) hands its conversations over and exits 0.
        let node = cluster.nodes[1].as_mut().unwrap();
        node.sigterm();
        let status = node.wait_exit(Duration::from_secs(30)).await;
        assert!(status.success(), "the drained node exits 0: {status:?}");
        cluster.nodes[1] = None;
        cluster.wait_formed(3).await;
        stop_tx.send_replace(true);
        progress.load(std::sync::atomic::Ordering::Relaxed)
    };
    let (acked, during) = tokio::join!(traffic, changes);
    assert!(
        during >= 6,
        "traffic went on while nodes joined and drained: {during} sends"
    );

    let mut reader = connect(cluster.addr(joining), &bob.access, Codec::Json).await;
    for conv in &convs {
        let mine: Vec<Message> = acked
            .iter()
            .filter(|m| &m.conversation == conv)
            .cloned()
            .collect();
        let h = full_history(cluster.node(joining), &mut reader, conv, &bob.access).await;
        assert_eq!(
            h, mine,
            "{conv}: every acknowledged send once, in id order, nothing else"
        );
    }
}

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

/// A real Prometheus, on a free port, killed when dropped.
struct Prometheus {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `targets` every second as job `chat`, with the shipped rules.
    fn start(targets: &[SocketAddr], rules: &std::path::Path) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let targets: Vec<String> = targets.iter().map(|a| format!("\"{a}\"")).collect();
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [\"{}\"]\n\
             scrape_configs:\n  - job_name: chat\n    static_configs:\n      - targets: [{}]\n",
            rules.display(),
            targets.join(", ")
        );
        let path = dir.path().join("prometheus.yml");
        std::fs::write(&path, config).unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus (Debian's package; scripts/test.sh installs it)");
        Prometheus {
            child,
            addr,
            _dir: dir,
        }
    }

    /// The result of an instant query (`data.result`), or why not.
    async fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let (status, body) = http(self.addr, "GET", &path, None, None).await;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{status}: {e}: {body}"))?;
        if v["status"] != "success" {
            return Err(body);
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn promtool(args: &[&str]) {
    let out = std::process::Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool (with Debian's prometheus package)");
    assert!(
        out.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The shipped Prometheus rules pass promtool's checks and unit tests, and a
/// real Prometheus scraping a 3-node cluster under traffic has data for every
/// panel of the shipped Grafana dashboard and for every alert expression
/// (the part before its threshold).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_cluster_and_every_panel_and_alert_has_data() {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let rules = deploy.join("prometheus/alerts.yml");
    promtool(&["check", "rules", rules.to_str().unwrap()]);
    promtool(&[
        "test",
        "rules",
        deploy.join("prometheus/alerts_test.yml").to_str().unwrap(),
    ]);
    promtool(&[
        "check",
        "config",
        deploy.join("prometheus/prometheus.yml").to_str().unwrap(),
    ]);

    let cluster = TestCluster::start(3).await;
    let prom = Prometheus::start(&[cluster.addr(0), cluster.addr(1), cluster.addr(2)], &rules);

    // Traffic that touches every metric a panel shows: sends across nodes,
    // an edit, a history read, an error answered.
    let (_, mut clients, conv) = three_in_a_group(&cluster).await;
    let mut last = None;
    for round in 0..5 {
        for (i, c) in clients.iter_mut().enumerate() {
            let cmid = format!("p{i}-{round}");
            last = ok(c.request(frames::send(&conv, &cmid, &body_of(&cmid))).await).message;
        }
    }
    let last = last.expect("a message");
    ok(clients[2]
        .request(frames::edit(&conv, last.id, "edited"))
        .await);
    ok(clients[1]
        .request(frames::history(&conv, None, None, None))
        .await);
    clients[0].send_raw(b"{not json".to_vec()).await;
    clients[0]
        .event(|f| matches!(f, ServerFrame::Error { .. }))
        .await;

    eventually_within(
        "Prometheus scrapes the three nodes",
        FORM_DEADLINE,
        || async {
            let up = prom.query("up{job=\"chat\"} == 1").await?;
            (up.len() == 3)
                .then_some(())
                .ok_or(format!("{} of 3 up", up.len()))
        },
    )
    .await;

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy.join("grafana/chat-cluster.json")).unwrap(),
    )
    .unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m");
            queries.push((panel["title"].as_str().unwrap().to_string(), expr));
        }
    }
    assert!(queries.len() >= 20, "the dashboard has its panels");
    for line in std::fs::read_to_string(&rules).unwrap().lines() {
        let Some(expr) = line.trim().strip_prefix("expr: ") else {
            continue;
        };
        let cut = [" > ", " < ", " == "]
            .iter()
            .filter_map(|op| expr.rfind(op))
            .max()
            .expect("an alert compares with a threshold");
        queries.push(("alert".into(), expr[..cut].to_string()));
    }
    for (title, expr) in &queries {
        eventually_within(
            &format!("{title}: {expr}"),
            Duration::from_secs(30),
            || async {
                let result = prom.query(expr).await?;
                (!result.is_empty())
                    .then_some(())
                    .ok_or("no data".to_string())
            },
        )
        .await;
    }
}

/// A real OpenTelemetry Collector (deploy/otelcol, built from the Go module
/// proxy by scripts/otelcol.sh) receiving OTLP/HTTP and writing what it
/// gets to a JSON-lines file.
struct Collector {
    child: std::process::Child,
    http: SocketAddr,
    file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// One span as the collector wrote it.
#[derive(Debug, Clone)]
struct SpanRecord {
    node: String,
    trace: String,
    id: String,
    parent: Option<String>,
    name: String,
}

impl Collector {
    fn start() -> Collector {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let built = std::process::Command::new("bash")
            .arg(root.join("scripts/otelcol.sh"))
            .arg("build")
            .output()
            .expect("scripts/otelcol.sh");
        assert!(
            built.status.success(),
            "building the collector: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        let stdout = String::from_utf8(built.stdout).unwrap();
        let bin = stdout.lines().last().expect("the binary's path").trim();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("traces.jsonl");
        let http: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let grpc: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let child = std::process::Command::new(bin)
            .arg("--config")
            .arg(root.join("deploy/otelcol/config.yaml"))
            .env("OTELCOL_HTTP_ENDPOINT", http.to_string())
            .env("OTELCOL_GRPC_ENDPOINT", grpc.to_string())
            .env("OTELCOL_TRACES_FILE", &file)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("collector.log")).unwrap())
            .spawn()
            .expect("the collector");
        Collector {
            child,
            http,
            file,
            _dir: dir,
        }
    }

    /// Every span in the file so far (complete lines only: the exporter
    /// flushes on a timer, possibly mid-line).
    fn spans(&self) -> Vec<SpanRecord> {
        let text = std::fs::read_to_string(&self.file).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        let mut spans = Vec::new();
        for line in complete.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).expect("a JSON line");
            for rs in v["resourceSpans"].as_array().into_iter().flatten() {
                let node = rs["resource"]["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["key"] == "chat.node")
                    .and_then(|a| a["value"]["stringValue"].as_str())
                    .unwrap_or("")
                    .to_string();
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    for s in ss["spans"].as_array().into_iter().flatten() {
                        spans.push(SpanRecord {
                            node: node.clone(),
                            trace: s["traceId"].as_str().unwrap_or("").into(),
                            id: s["spanId"].as_str().unwrap_or("").into(),
                            parent: s["parentSpanId"]
                                .as_str()
                                .filter(|p| !p.is_empty())
                                .map(String::from),
                            name: s["name"].as_str().unwrap_or("").into(),
                        });
                    }
                }
            }
        }
        spans
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A send from a client on one node to a conversation owned by a second,
/// heard by a member on a third, is one trace: the receiving node's root,
/// the owner's conversation span with the store write inside, and the
/// fan-out on the third node, all linked through the node-to-node
/// messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_is_one_trace_from_the_socket_through_the_owner_and_its_store_to_another_node() {
    let collector = Collector::start();
    let endpoint = format!("http://{}", collector.http);
    let cluster = TestCluster::start_env(
        3,
        &[
            ("CHAT__TELEMETRY__OTLP_ENDPOINT", endpoint.as_str()),
            ("CHAT__TELEMETRY__SAMPLING_RATIO", "1.0"),
        ],
    )
    .await;
    // Client i is on node (i + 1) % 3: one member per node.
    let (_, mut clients, conv) = three_in_a_group(&cluster).await;
    let owner = TestCluster::owner(&conv, &[0, 1, 2]);
    let node_of = |client: usize| (client + 1) % 3;
    let sender = (0..3).find(|c| node_of(*c) != owner).unwrap();
    let listener = (0..3)
        .find(|c| node_of(*c) != owner && *c != sender)
        .unwrap();
    let sent = ok(clients[sender]
        .request(frames::send(&conv, "traced-1", "follow me"))
        .await)
    .message
    .expect("the message");
    clients[listener]
        .event(|f| matches!(f, ServerFrame::Message { message } if message.id == sent.id))
        .await;

    let (sender_node, owner_node, listener_node) = (
        TestCluster::name(node_of(sender)),
        TestCluster::name(owner),
        TestCluster::name(node_of(listener)),
    );
    let trace = eventually_within("the trace reaches the collector", FORM_DEADLINE, || async {
        let spans = collector.spans();
        let find = |name: &str, node: &str, parent: Option<&SpanRecord>| {
            spans
                .iter()
                .find(|s| {
                    s.name == name
                        && s.node == node
                        && parent.is_none_or(|p| {
                            s.trace == p.trace && s.parent.as_deref() == Some(p.id.as_str())
                        })
                })
                .cloned()
        };
        let missing = || format!("{} spans so far: {spans:?}", spans.len());
        let root = find("chat.send", &sender_node, None).ok_or_else(missing)?;
        let conv_span = find("conversation.send", &owner_node, Some(&root)).ok_or_else(missing)?;
        let store = find("store.append", &owner_node, Some(&conv_span)).ok_or_else(missing)?;
        let fanout =
            find("fanout.deliver", &listener_node, Some(&conv_span)).ok_or_else(missing)?;
        Ok::<_, String>([root, conv_span, store, fanout])
    })
    .await;
    assert!(trace[0].parent.is_none(), "the socket's span is the root");
    assert!(
        trace.iter().all(|s| s.trace == trace[0].trace),
        "one trace: {trace:?}"
    );
}

/// The admin API on a cluster: the listed admin's account made by the
/// operator on one node's store is an admin on every node; 401 without a
/// token and 403 for a user who is not an admin; suspending a user closes
/// their connections on every node with 4005, refuses their login, refresh
/// and new connections on every node until lifted, and ends their logins
/// (after it, only a new sign-in works); a disconnect closes with 4004 and
/// lets them back; a node drained from another node's API exits; every
/// action is in the audit log on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_suspends_disconnects_and_drains_across_nodes() {
    let root_name = unique("root");
    let listed = vec![("CHAT__ADMIN__USERS".into(), format!("[\"{root_name}\"]"))];
    // Configured, none running: registration refuses a listed admin's name,
    // so the operator makes the account, here on node 1's store, which the
    // others copy when they join.
    let mut cluster = TestCluster::start_inner_env(3, 0, false, false, listed).await;
    let mut cli = std::process::Command::new(node_binary());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("CHAT__")) {
        cli.env_remove(k);
    }
    let mut cli = cli
        .arg("--data-dir")
        .arg(cluster.root.path().join(TestCluster::name(0)))
        .args(["admin", "create-user", &root_name])
        .envs(cluster.env(0))
        .envs(storage_env())
        .env("CHAT__AUTH__JWT_SECRET", SECRET)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run chat-node admin create-user");
    std::io::Write::write_all(&mut cli.stdin.take().unwrap(), b"correct horse battery\n").unwrap();
    let made = cli.wait_with_output().unwrap();
    assert!(
        made.status.success(),
        "create-user: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let starts: Vec<_> = (0..3).map(|i| cluster.spawn(i)).collect();
    for (i, node) in futures_util::future::join_all(starts)
        .await
        .into_iter()
        .enumerate()
    {
        cluster.nodes[i] = Some(node);
    }
    cluster.wait_formed(3).await;
    async fn sign_in(addr: SocketAddr, name: &str) -> TestUser {
        let body = serde_json::json!({"username": name, "password": "correct horse battery"});
        let (status, body) = http(
            addr,
            "POST",
            "/v1/auth/login",
            None,
            Some(&body.to_string()),
        )
        .await;
        assert_eq!(status, 200, "login {name} at {addr}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        TestUser {
            id: v["user"]["id"].as_str().unwrap().to_string(),
            access: v["access_token"].as_str().unwrap().to_string(),
            refresh: v["refresh_token"].as_str().unwrap().to_string(),
        }
    }
    let admin = sign_in(cluster.addr(0), &root_name).await;
    let admin_id = admin.id.clone();
    let bob = register(cluster.addr(1), &unique("bob")).await;
    let path = |p: &str| format!("/v1/admin{p}");

    let (status, body) = http(cluster.addr(0), "GET", &path("/nodes"), None, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = http(
        cluster.addr(0),
        "GET",
        &path("/nodes"),
        Some(&bob.access),
        None,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("\"forbidden\""), "{body}");

    // Every node listed, with its load from its heartbeats.
    let nodes = eventually_within("the nodes' stats", FORM_DEADLINE, || async {
        let (status, body) = http(
            cluster.addr(2),
            "GET",
            &path("/nodes"),
            Some(&admin.access),
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
        let ready = nodes.len() == 3
            && nodes
                .iter()
                .all(|n| n["up"] == true && n["store_up"] == true && n["version"].is_string());
        ready.then_some(nodes).ok_or(body)
    })
    .await;
    let names: Vec<&str> = nodes.iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["node-1", "node-2", "node-3"]);

    // Suspend bob, connected on two nodes, through the third.
    let mut on1 = connect(cluster.addr(1), &bob.access, Codec::Json).await;
    let mut on2 = connect(cluster.addr(2), &bob.access, Codec::Json).await;
    let bob_path = path(&format!("/users/{}", bob.id));
    let (status, body) = http(
        cluster.addr(0),
        "POST",
        &format!("{bob_path}/suspend"),
        Some(&admin.access),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"suspended\":true"), "{body}");
    assert_eq!(on1.closed_with().await, Some(4005));
    assert_eq!(on2.closed_with().await, Some(4005));
    for i in 0..3 {
        let login = serde_json::json!({"username": bob.id, "password": "correct horse battery"});
        let (status, body) = http(
            cluster.addr(i),
            "POST",
            "/v1/auth/login",
            None,
            Some(&login.to_string()),
        )
        .await;
        assert_eq!(status, 403, "login on node {i}: {body}");
        assert!(body.contains("suspended"), "{body}");
        assert_eq!(
            try_connect(cluster.addr(i), Some(&bob.access), Codec::Json)
                .await
                .err(),
            Some(403),
            "a new connection on node {i}"
        );
    }
    let refresh = serde_json::json!({ "refresh_token": bob.refresh });
    let (status, _) = http(
        cluster.addr(2),
        "POST",
        "/v1/auth/refresh",
        None,
        Some(&refresh.to_string()),
    )
    .await;
    assert_eq!(status, 403);

    // Lifted: the tokens from before stay dead on every node; a new
    // sign-in works.
    let (status, body) = http(
        cluster.addr(1),
        "POST",
        &format!("{bob_path}/unsuspend"),
        Some(&admin.access),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for i in 0..3 {
        assert!(
            !token_accepted(cluster.addr(i), &bob.access).await,
            "bob's old token on node {i}"
        );
    }
    let (status, _) = http(
        cluster.addr(0),
        "POST",
        "/v1/auth/refresh",
        None,
        Some(&refresh.to_string()),
    )
    .await;
    assert_eq!(status, 401, "bob's old refresh token");
    let bob = sign_in(cluster.addr(1), &bob.id).await;
    let mut on0 = connect(cluster.addr(0), &bob.access, Codec::Json).await;
    let mut on2 = connect(cluster.addr(2), &bob.access, Codec::Json).await;

    // A disconnect closes with 4004 everywhere and lets them back.
    let (status, body) = http(
        cluster.addr(1),
        "POST",
        &format!("{bob_path}/disconnect"),
        Some(&admin.access),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(on0.closed_with().await, Some(4004));
    assert_eq!(on2.closed_with().await, Some(4004));
    connect(cluster.addr(0), &bob.access, Codec::Json).await;

    // Drain node 3 from node 1's API: it exits by itself.
    let (status, body) = http(
        cluster.addr(0),
        "POST",
        &path("/nodes/node-3/drain"),
        Some(&admin.access),
        None,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let (status, _) = http(
        cluster.addr(0),
        "POST",
        &path("/nodes/node-9/drain"),
        Some(&admin.access),
        None,
    )
    .await;
    assert_eq!(status, 404, "an unknown node");
    let mut drained = cluster.nodes[2].take().expect("node 3");
    let exit = drained.wait_exit(FORM_DEADLINE).await;
    assert!(exit.success(), "a drained node exits cleanly: {exit:?}");

    // Each action, newest first, as every node sees it.
    for i in 0..2 {
        let log = eventually_within("the audit log", FORM_DEADLINE, || async {
            let (status, body) = http(
                cluster.addr(i),
                "GET",
                &path("/audit?limit=10"),
                Some(&admin.access),
                None,
            )
            .await;
            assert_eq!(status, 200, "{body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            let actions: Vec<String> = v["entries"]
                .as_array()
                .into_iter()
                .flatten()
                // This run's admin: a CQL keyspace keeps earlier runs' log.
                .filter(|e| e["admin"] == admin_id.as_str())
                .map(|e| e["action"].as_str().unwrap().to_string())
                .collect();
            (actions.len() == 4).then_some(actions).ok_or(body)
        })
        .await;
        assert_eq!(
            log,
            ["drain", "disconnect", "unsuspend", "suspend"],
            "node {i}"
        );
    }
}
