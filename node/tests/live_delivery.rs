//! Live delivery that never silently misses, on a real three-node cluster
//! (real `chat-node` processes, real Redis, real sockets): whenever a node
//! cannot vouch that a connected member got every change of a conversation
//! live, it tells the member's connections `catch_up`, and `changes` then
//! brings what was missed. The windows in which that happens are widened
//! with the nodes' `[faults]` delays so that every run goes through them:
//!
//! - an owner that confirms a connecting member's interest after the node
//!   let the client in (a slow owner);
//! - an owner killed after acknowledging a message and before handing it to
//!   the other nodes.
//!
//! Both run on the embedded store and, in `scripts/test.sh`, again on
//! ScyllaDB.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use chat_protocol::{Codec, ConversationId, ErrorCode, Message, ServerFrame};
use common::cluster::*;
use common::procs::send_retrying;
use common::*;

/// A group of `alice`'s with `bob`, owned by node `owner`.
async fn group_owned_by(a: &mut Client, bob: &TestUser, owner: usize) -> ConversationId {
    for _ in 0..200 {
        let conv = group(a, &[&bob.id]).await;
        if TestCluster::owner(&conv, &[0, 1, 2]) == owner {
            return conv;
        }
    }
    panic!("no group landed on node {owner} in 200 tries");
}

/// Waits for a `catch_up` naming `conv`; prints the nodes' logs if none
/// comes.
async fn catch_up_for(cluster: &TestCluster, c: &mut Client, conv: &ConversationId) {
    let wanted = |f: &ServerFrame| matches!(f, ServerFrame::CatchUp { conversations } if conversations.contains(conv));
    if let Some(at) = c.events.iter().position(wanted) {
        c.events.remove(at);
        return;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.recv_within(left).await {
            Ok(Some(f)) if wanted(&f) => return,
            Ok(Some(f)) => c.events.push_back(f),
            other => {
                cluster.print_logs();
                panic!("no catch_up for {conv} ({other:?}); events: {:?}", c.events);
            }
        }
    }
}

/// Every change after `after_rev`, asked again while the conversation's new
/// owner is not ready (`unavailable` while it takes over).
async fn changes_since(c: &mut Client, conv: &ConversationId, after_rev: u64) -> Vec<Message> {
    let mut out = Vec::new();
    let mut after = after_rev;
    loop {
        let mut page = None;
        for _ in 0..60 {
            let reply = c.request(frames::changes(conv, after, Some(200))).await;
            match reply {
                ServerFrame::Ok(ok) => {
                    page = Some(ok);
                    break;
                }
                ServerFrame::Error {
                    code: ErrorCode::Unavailable,
                    ..
                } => {
                    // The owner is taking over: wait for the store's answer.
                    let _ = c.recv_within(Duration::from_millis(500)).await;
                }
                other => panic!("changes: {other:?}"),
            }
        }
        let page = page.expect("changes answered within 30 s");
        let messages = page.messages.unwrap();
        if let Some(m) = messages.last() {
            after = m.rev;
        }
        out.extend(messages);
        if !page.more.unwrap() {
            return out;
        }
    }
}

/// The `rev` of the newest change a client has seen of `conv`.
async fn current_rev(c: &mut Client, conv: &ConversationId) -> u64 {
    ok(c.request(frames::changes(conv, 0, Some(1))).await)
        .rev
        .expect("a rev")
}

fn addrs(cluster: &TestCluster, nodes: &[usize]) -> Vec<SocketAddr> {
    nodes.iter().map(|i| cluster.addr(*i)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_let_in_before_a_slow_owner_confirms_is_told_to_catch_up() {
    // Owners apply interest reports 4 s late; a node lets its clients in
    // after 300 ms without them.
    let cluster = TestCluster::start_env(
        3,
        &[
            ("CHAT__FAULTS__INTEREST_ACK_DELAY_MS", "4000"),
            ("CHAT__ACTORS__INTEREST_ACK_MS", "300"),
        ],
    )
    .await;
    let (owner, bobs, alices) = (0, 1, 2);
    let alice = register(cluster.addr(alices), &unique("alice")).await;
    let bob = register(cluster.addr(bobs), &unique("bob")).await;
    let mut a = connect(cluster.addr(alices), &alice.access, Codec::Json).await;
    let conv = group_owned_by(&mut a, &bob, owner).await;

    // Bob comes in while the owner has not yet heard that he listens on
    // his node; what Alice sends then reaches him neither live nor in a
    // catch-up he makes at once.
    let mut b = connect(cluster.addr(bobs), &bob.access, Codec::MsgPack).await;
    let start_rev = current_rev(&mut b, &conv).await;
    let missed = ok(a
        .request(frames::send(&conv, "while-unconfirmed", "hello?"))
        .await)
    .message
    .unwrap();

    // Once the owner confirms, Bob's node tells him to catch up, and the
    // message is there.
    catch_up_for(&cluster, &mut b, &conv).await;
    let got = changes_since(&mut b, &conv, start_rev).await;
    assert!(
        got.iter().any(|m| m.id == missed.id),
        "the message sent before the owner confirmed: {got:?}"
    );
    // From then on, live.
    let live = ok(a.request(frames::send(&conv, "after", "there?")).await)
        .message
        .unwrap();
    let seen = b
        .event(|f| matches!(f, ServerFrame::Message { message } if message.client_msg_id.as_str() == "after"))
        .await;
    let ServerFrame::Message { message } = seen else {
        unreachable!()
    };
    assert_eq!(message.id, live.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_on_surviving_nodes_get_what_an_owner_acknowledged_before_it_died() {
    // Owners hand batches to the other nodes 3 s after acknowledging them.
    let mut cluster =
        TestCluster::start_env(3, &[("CHAT__FAULTS__PEER_FANOUT_DELAY_MS", "3000")]).await;
    let (owner, alices, bobs) = (0, 1, 2);
    let alice = register(cluster.addr(alices), &unique("alice")).await;
    let bob = register(cluster.addr(bobs), &unique("bob")).await;
    let mut a = connect(cluster.addr(alices), &alice.access, Codec::Json).await;
    let conv = group_owned_by(&mut a, &bob, owner).await;
    let mut b = connect(cluster.addr(bobs), &bob.access, Codec::Json).await;
    let start_rev = current_rev(&mut b, &conv).await;

    // Acknowledged to Alice, then its owner dies before Bob's node has it.
    let acked = ok(a.request(frames::send(&conv, "last-words", "bye")).await)
        .message
        .unwrap();
    cluster.nodes[owner].as_mut().unwrap().kill9();
    cluster.nodes[owner] = None;

    // Bob, still connected to a node that survives, is told to catch up,
    // and gets it from the conversation's new owner.
    catch_up_for(&cluster, &mut b, &conv).await;
    let got = changes_since(&mut b, &conv, start_rev).await;
    assert!(
        got.iter().any(|m| m.id == acked.id),
        "the acknowledged message: {got:?}"
    );
    // The conversation goes on, live, on the two nodes left.
    let survivors = addrs(&cluster, &[alices, bobs]);
    let next = send_retrying(&mut a, &survivors, &alice.access, &conv, "next").await;
    let seen = b
        .event(|f| matches!(f, ServerFrame::Message { message } if message.client_msg_id.as_str() == "next"))
        .await;
    let ServerFrame::Message { message } = seen else {
        unreachable!()
    };
    assert_eq!(message.id, next.id);
}
