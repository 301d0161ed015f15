//! A peer that stops reading (SIGSTOP) while a busy conversation's events
//! are sent to it, on ScyllaDB (needs `SCYLLA_NODES`, as scripts/test.sh
//! sets): what waits for it in the sender's memory stays within
//! `cluster.peer_queue_bytes`, the sender drops it when the bound is reached
//! (before its heartbeats are missed), and once it runs again it rejoins and
//! its client catches up with everything acknowledged meanwhile.

mod common;

use chat_protocol::{Codec, ReqId, ServerFrame};
use common::cluster::*;
use common::procs::*;
use common::*;

/// The bound under test: the smallest allowed (4 MiB).
const BOUND: u64 = 4 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_peer_costs_bounded_memory_is_dropped_and_catches_up() {
    // On ScyllaDB: on the embedded store every write waits for each peer's
    // replication ack, so a stuck peer stops the writes themselves (and is
    // dropped after 5 s) before any backlog can grow.
    let scylla = std::env::var("SCYLLA_NODES").expect("SCYLLA_NODES (scripts/cql.sh start)");
    let mut extra = scylla_env(&scylla, "chat_e2e", 20_000);
    extra.push(("CHAT__CLUSTER__PEER_QUEUE_BYTES".into(), BOUND.to_string()));
    let cluster = TestCluster::start_release(3, 3, false, false, extra, Release::this()).await;
    let alice = register(cluster.addr(0), &unique("alice")).await;
    let bob = register(cluster.addr(0), &unique("bob")).await;
    let mut a = connect(cluster.addr(0), &alice.access, Codec::MsgPack).await;
    // A group owned by one node, Bob listening on another: the one to stop.
    let mut conv = group(&mut a, &[&bob.id]).await;
    while TestCluster::owner(&conv, &[0, 1, 2]) == 2 {
        conv = group(&mut a, &[&bob.id]).await;
    }
    let owner = TestCluster::owner(&conv, &[0, 1, 2]);
    let (stuck, peer) = (2, TestCluster::name(2));
    let mut a = connect(cluster.addr(owner), &alice.access, Codec::MsgPack).await;
    let mut b = connect(cluster.addr(stuck), &bob.access, Codec::Json).await;
    let first = ok(a.request(frames::send(&conv, "first", "hello")).await)
        .message
        .unwrap();
    b.event(|f| matches!(f, ServerFrame::Message { message } if message.id == first.id))
        .await;

    cluster.node(stuck).signal("STOP");
    let backlog = format!("chat_peer_backlog_bytes{{peer=\"{peer}\"}}");
    let body = "x".repeat(16 * 1024);
    let mut acked = vec![first];
    let mut most = 0.0f64;
    // 12 MiB of events in batches of 32 pipelined sends: three bounds'
    // worth, well within the 5 s after which a silent peer is dropped.
    for batch in 0..24 {
        for i in 0..32 {
            let cmid = format!("m-{batch}-{i}");
            let frame = with_req(frames::send(&conv, &cmid, &body), ReqId::Int(i + 1));
            a.send_frame(&frame).await;
        }
        let mut answered = 0;
        while answered < 32 {
            match a.recv().await.expect("open") {
                ServerFrame::Ok(ok) => {
                    acked.push(ok.message.expect("a message"));
                    answered += 1;
                }
                ServerFrame::Error { code, message, .. } => panic!("{code:?}: {message}"),
                _ => {}
            }
        }
        most = most.max(metric(cluster.addr(owner), &backlog).await);
    }
    wait_metric(cluster.addr(owner), "chat_peers_overloaded_total", 1.0).await;
    // Dropped for its backlog, before it could be for its silence (5 s).
    assert_eq!(
        metric(cluster.addr(owner), "chat_peers_dropped_total").await,
        0.0,
        "the stuck peer was dropped for silence before its backlog passed the bound"
    );
    assert!(
        most <= BOUND as f64,
        "{most} bytes waited for the stuck peer, over the bound {BOUND}"
    );

    // It runs again: it rejoins, and Bob catches up with everything.
    cluster.node(stuck).signal("CONT");
    cluster.wait_formed(3).await;
    let mut b = connect(cluster.addr(stuck), &bob.access, Codec::Json).await;
    let history = full_history(cluster.node(stuck), &mut b, &conv, &bob.access).await;
    acked.sort_by_key(|m| m.id);
    check_history(&history, &acked);
    assert_eq!(history.len(), acked.len());
    // And live delivery to it works again.
    let last = ok(a.request(frames::send(&conv, "last", "again")).await)
        .message
        .unwrap();
    b.event(|f| matches!(f, ServerFrame::Message { message } if message.id == last.id))
        .await;
}
