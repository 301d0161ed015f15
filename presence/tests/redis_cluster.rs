//! The Redis presence backend on a real Redis Cluster (three shards, a
//! replica each, `presence.redis_url = "redis-cluster://..."`): users on
//! every shard, a node that dies, and a shard's primary killed.
//!
//! Every key of a user carries its id as a hash tag, so a user's scripts
//! run on one shard; the node list and the incarnations' user lists are
//! keys of their own, and transitions are published cluster-wide.

mod common;

use std::time::{Duration, Instant};

use chat_presence::redis::{RedisPresence, RedisPresenceConfig};
use chat_presence::PresenceStore;
use chat_protocol::{Presence, Status, UserId};
use chat_testkit::{eventually, RedisCluster, DEADLINE};
use common::{conn, user};
use tokio::sync::broadcast;

async fn node(cluster: &RedisCluster, name: &str, ttl: Duration) -> RedisPresence {
    let config = RedisPresenceConfig::new(cluster.url(), name)
        .with_ttl(ttl)
        .with_key_prefix("test:")
        .with_op_timeout(Duration::from_secs(1));
    let p = RedisPresence::connect(config)
        .await
        .expect("connect to the cluster");
    eventually(&format!("{name} ready"), || async {
        p.ready().await.map_err(|e| e.to_string())
    })
    .await;
    p
}

/// Users spread over every shard: thirty ids land on all three with
/// near certainty, and the test checks that they did.
fn users(cluster: &RedisCluster) -> Vec<String> {
    let names: Vec<String> = (0..30).map(|i| format!("u{i}")).collect();
    let shards: std::collections::HashSet<u16> = names
        .iter()
        .map(|n| cluster.primary_of(&format!("test:p:{{{n}}}")))
        .collect();
    assert_eq!(shards.len(), 3, "the users land on every shard");
    names
}

/// `b` watches every one of `names`; they all connect to `a`, and `b`
/// hears them come online.
async fn all_online_on_a_seen_from_b(
    a: &RedisPresence,
    b: &RedisPresence,
    names: &[String],
) -> (Vec<UserId>, broadcast::Receiver<Presence>) {
    let mut changes = b.changes();
    let ids: Vec<UserId> = names.iter().map(|n| user(n)).collect();
    b.watch(&ids).await.expect("watch");
    for (i, id) in ids.iter().enumerate() {
        a.connected(id, &conn("a", i as u64))
            .await
            .expect("connected");
    }
    until_all(&mut changes, names, Status::Online).await;
    (ids, changes)
}

/// Waits until `p` has announced every one of `names` as `status`.
async fn until_all(rx: &mut broadcast::Receiver<Presence>, names: &[String], status: Status) {
    let mut left: std::collections::HashSet<UserId> = names.iter().map(|n| user(n)).collect();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !left.is_empty() {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(change)) if change.status == status => {
                left.remove(&change.user);
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("change channel: {e}"),
            Err(_) => panic!("never {status:?}: {left:?}"),
        }
    }
}

async fn statuses(p: &RedisPresence, names: &[String]) -> Vec<Status> {
    let ids: Vec<UserId> = names.iter().map(|n| user(n)).collect();
    p.query(&ids)
        .await
        .expect("query")
        .into_iter()
        .map(|p| p.status)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_on_every_shard_come_and_go_and_a_dead_nodes_are_swept() {
    let cluster = RedisCluster::start(3, 1);
    let names = users(&cluster);
    let ttl = Duration::from_secs(1);
    let a = node(&cluster, "a", ttl).await;
    let b = node(&cluster, "b", ttl).await;
    let (ids, mut changes) = all_online_on_a_seen_from_b(&a, &b, &names).await;
    assert!(statuses(&b, &names)
        .await
        .iter()
        .all(|s| *s == Status::Online));

    // Half leave; the other half stay until their node dies.
    let (leaving, staying) = names.split_at(names.len() / 2);
    for (i, id) in ids.iter().enumerate().take(leaving.len()) {
        a.disconnected(id, &conn("a", i as u64))
            .await
            .expect("disconnected");
    }
    until_all(&mut changes, leaving, Status::Offline).await;
    assert!(statuses(&b, staying)
        .await
        .iter()
        .all(|s| *s == Status::Online));

    let started = Instant::now();
    drop(a);
    until_all(&mut changes, staying, Status::Offline).await;
    let took = started.elapsed();
    assert!(
        took < ttl + ttl / 3 + Duration::from_millis(1_500),
        "swept in {took:?}"
    );
    assert!(statuses(&b, &names)
        .await
        .iter()
        .all(|s| *s == Status::Offline));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shards_primary_killed_its_replica_takes_over_and_presence_goes_on() {
    let mut cluster = RedisCluster::start(3, 1);
    let names = users(&cluster);
    // Longer than a failover takes on a busy machine (a node timeout of
    // 1 s, then an election): were the shard holding the heartbeats down
    // for longer, node a's incarnation would be swept and its users shown
    // offline until it added them again (what CI once saw at 2 s).
    let ttl = Duration::from_secs(5);
    let a = node(&cluster, "a", ttl).await;
    let b = node(&cluster, "b", ttl).await;
    let (ids, mut changes) = all_online_on_a_seen_from_b(&a, &b, &names).await;

    // Replicated, then the primary of u0's shard dies.
    cluster.wait_replicated();
    let victim = cluster.primary_of("test:p:{u0}");
    cluster.kill(victim);
    cluster.wait_until_healthy();
    assert_ne!(
        cluster.primary_of("test:p:{u0}"),
        victim,
        "a replica took over"
    );

    // Nothing written before the kill is lost, and both nodes are served
    // again once their clients follow the slots.
    eventually("every user online after the failover", || async {
        let ids: Vec<UserId> = names.iter().map(|n| user(n)).collect();
        let online = b.query(&ids).await.map_err(|e| e.to_string())?;
        if online.iter().all(|p| p.status == Status::Online) {
            Ok(())
        } else {
            Err(format!("{online:?}"))
        }
    })
    .await;
    // Transitions on every shard, the failed-over one included, still
    // reach the watcher.
    for (i, id) in ids.iter().enumerate() {
        eventually("a disconnect after the failover", || async {
            a.disconnected(id, &conn("a", i as u64))
                .await
                .map_err(|e| e.to_string())
        })
        .await;
    }
    until_all(&mut changes, &names, Status::Offline).await;
    assert!(statuses(&a, &names)
        .await
        .iter()
        .all(|s| *s == Status::Offline));
}
