//! A real cluster: three `chat-node` processes that find each other through
//! their seeds over ractor_cluster, and a real `redis-server` for presence,
//! all on loopback ports chosen at run time. Clients are real WebSocket
//! clients connected to different nodes.
//!
//! What is checked: members on three nodes get every message once and in id
//! order, with typing, receipts and presence crossing nodes (failing over:
//! cluster_failover.rs); a node that leaves with SIGTERM loses nothing, and when it comes back
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
    let claim = format!("chat:{{node-claims}}:id:{}", cluster.id(1));
    assert!(log.contains(&claim), "{log}");
    // The cluster is unharmed.
    cluster.wait_formed(2).await;
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
        let m = send_stored(a, conv, &cmid, &body_of(&cmid)).await;
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
        // The joined node and the two that stayed hold the same state.
        let state = cluster.converged(conv, &[0, 2, joining]).await;
        let last = mine.last().map(|m| m.id.0);
        assert_eq!(state["last_message_id"].as_u64(), last, "{conv}: {state}");
    }
}
