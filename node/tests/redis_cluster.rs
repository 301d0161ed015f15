//! Three `chat-node` processes whose presence is a real Redis Cluster
//! (three shards, a replica each): presence crosses nodes as on one Redis,
//! and when the primary holding a user's presence is killed, chat goes on,
//! the replica takes over and presence is right again within seconds.

mod common;

use chat_protocol::{Codec, ConversationId, ServerFrame, Status};
use chat_testkit::RedisCluster;
use common::cluster::*;
use common::procs::*;
use common::*;

async fn send_and_see(a: &mut Client, b: &mut Client, conv: &ConversationId, tag: &str) {
    let sent = ok(a.request(frames::send(conv, tag, &body_of(tag))).await)
        .message
        .expect("the stored message");
    let f = b.event(|f| message_of(f).is_some()).await;
    assert_eq!(message_of(&f), Some(&sent), "delivered across nodes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_on_a_redis_cluster_survives_a_primary_killed() {
    let mut redis = RedisCluster::start(3, 1);
    let url = redis.url();
    let cluster = TestCluster::start_env(3, &[("CHAT__PRESENCE__REDIS_URL", &url)]).await;
    for i in 0..3 {
        eventually_within("every node ready on the cluster", FORM_DEADLINE, || async {
            match ready(cluster.addr(i)).await {
                (200, _) => Ok(()),
                (s, body) => Err(format!("node {i}: {s} {body}")),
            }
        })
        .await;
    }
    let alice = register(cluster.addr(0), &unique("alice")).await;
    let bob = register(cluster.addr(1), &unique("bob")).await;
    let mut a = connect(cluster.addr(0), &alice.access, Codec::Json).await;
    let mut b = connect(cluster.addr(2), &bob.access, Codec::Json).await;
    let conv = group(&mut a, &[&bob.id]).await;
    b.event(|f| matches!(f, ServerFrame::Conversation { .. }))
        .await;
    assert_eq!(watch_status(&mut b, &alice.id).await, Ok(Status::Online));
    send_and_see(&mut a, &mut b, &conv, "before").await;

    // The shard holding Alice's presence loses its primary.
    redis.wait_replicated();
    let victim = redis.primary_of(&format!("chat:p:{{{}}}", alice.id));
    redis.kill(victim);
    // Chat does not wait for presence.
    send_and_see(&mut a, &mut b, &conv, "during").await;
    redis.wait_until_healthy();
    send_and_see(&mut a, &mut b, &conv, "after").await;

    // Presence is right again: still online, then offline when she leaves
    // (the watcher is told), online when she is back.
    let b = tokio::sync::Mutex::new(b);
    eventually_within("alice online after the failover", FORM_DEADLINE, || async {
        match watch_status(&mut *b.lock().await, &alice.id).await {
            Ok(Status::Online) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let mut b = b.into_inner();
    drop(a);
    b.event(|f| matches!(f, ServerFrame::Presence(p) if p.user.as_str() == alice.id && p.status == Status::Offline))
        .await;
    let _a = connect(cluster.addr(1), &alice.access, Codec::Json).await;
    b.event(|f| matches!(f, ServerFrame::Presence(p) if p.user.as_str() == alice.id && p.status == Status::Online))
        .await;
    for i in 0..3 {
        eventually_within("every node ready again", FORM_DEADLINE, || async {
            match ready(cluster.addr(i)).await {
                (200, _) => Ok(()),
                (s, body) => Err(format!("node {i}: {s} {body}")),
            }
        })
        .await;
    }
}
