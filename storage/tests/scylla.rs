//! The ScyllaDB backend against a real CQL server (ScyllaDB, or Apache
//! Cassandra started by `scripts/cql.sh`), named by `SCYLLA_NODES`
//! (`host:port[,host:port...]`): the whole conformance suite, then what only
//! a shared, distributed store needs: bucket edges, racing writers on two
//! store handles, concurrent migrations.
//!
//! Without `SCYLLA_NODES` these tests fail when `CHAT_REQUIRE_SCYLLA` is set
//! (as `scripts/test.sh` and CI set it), and otherwise skip with a line
//! saying so (a developer running `cargo test` by hand).

use std::sync::Arc;

use chat_protocol::{ClientMsgId, ConversationId, Message, MessageId, MessageKind, UserId};
use chat_storage::scylladb::{migrate, ScyllaConfig, ScyllaStore, SCHEMA_VERSION};
use chat_storage::{
    conformance_tests, AccountStore, HistoryStore, LeaseStore, PageQuery, RefreshRecord, Rotation,
};

/// Where the CQL server is, or `None` when these tests may skip.
fn nodes() -> Option<Vec<String>> {
    match std::env::var("SCYLLA_NODES") {
        Ok(v) if !v.trim().is_empty() => Some(v.split(',').map(|s| s.trim().to_owned()).collect()),
        _ => {
            if std::env::var_os("CHAT_REQUIRE_SCYLLA").is_some() {
                panic!("CHAT_REQUIRE_SCYLLA is set but SCYLLA_NODES is not: start scripts/cql.sh");
            }
            eprintln!("skipped: SCYLLA_NODES is not set (scripts/test.sh starts a CQL server and sets it)");
            None
        }
    }
}

fn config(keyspace: &str, bucket_days: u32) -> Option<ScyllaConfig> {
    Some(ScyllaConfig {
        nodes: nodes()?,
        keyspace: keyspace.to_owned(),
        bucket_days,
        // A test server on a busy two-core machine: schema changes are slow.
        request_timeout_ms: 30_000,
        ..ScyllaConfig::default()
    })
}

async fn open(keyspace: &str, bucket_days: u32) -> Option<Arc<ScyllaStore>> {
    let config = config(keyspace, bucket_days)?;
    Some(Arc::new(
        ScyllaStore::open(&config)
            .await
            .expect("open the ScyllaDB store"),
    ))
}

conformance_tests!(scylla, open("chat_conformance", 10).await);

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{tag}-{nanos:x}")
}

const DAY_MS: u64 = 24 * 3600 * 1000;

fn message_at(conversation: &ConversationId, sender: &UserId, ms: u64, n: u64) -> Message {
    let id = MessageId(MessageId::floor_at(ms).0 + n);
    Message {
        attachments: Vec::new(),
        rev: 0,
        edited_at: None,
        deleted: false,
        reactions: Vec::new(),
        mentions: Vec::new(),
        id,
        conversation: conversation.clone(),
        sender: sender.clone(),
        body: format!("m{n}"),
        kind: MessageKind::default(),
        ts: id.timestamp_ms(),
        client_msg_id: ClientMsgId::new(&format!("c{n}")).expect("valid"),
        reply_to: None,
    }
}

/// With one-day buckets, history in days 0-2, 20 and 45 (empty buckets
/// between): pages in both directions cross the edges, skip the gaps, and
/// meet every message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_across_bucket_edges_and_empty_buckets_scylla() {
    let Some(store) = open("chat_conformance_day_buckets", 1).await else {
        return;
    };
    let conversation = ConversationId::new(&unique("edges")).expect("valid");
    let alice = UserId::new("alice").expect("valid");
    let start = 1_760_000_000_000 - 1_760_000_000_000 % DAY_MS;
    let mut all = Vec::new();
    let mut n = 0;
    for day in [0u64, 1, 2, 20, 45] {
        for k in 0..5 {
            // The last minutes of one day and the first of the next.
            let ms = start + day * DAY_MS + DAY_MS - 300_000 + k * 120_000;
            n += 1;
            all.push(message_at(&conversation, &alice, ms, n));
        }
    }
    all.sort_by_key(|m| m.id);
    let buckets: std::collections::BTreeSet<i32> = all.iter().map(|m| store.bucket(m.id)).collect();
    assert!(
        buckets.len() >= 8,
        "the history spans bucket edges: {buckets:?}"
    );
    store.append(&all).await.expect("append");
    let ids: Vec<MessageId> = all.iter().map(|m| m.id).collect();

    // Backwards from the newest, 4 at a time.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .page(&conversation, PageQuery::new(before, None, 4))
            .await
            .expect("page");
        let mut got: Vec<MessageId> = page.messages.iter().map(|m| m.id).collect();
        assert!(
            !got.is_empty(),
            "a page before the oldest is empty only at the end"
        );
        before = Some(got[0]);
        got.extend(seen);
        seen = got;
        if !page.more {
            break;
        }
    }
    assert_eq!(seen, ids, "backwards, every message once, in order");

    // Forwards from before the oldest, 3 at a time.
    let mut seen = Vec::new();
    let mut after = Some(MessageId(ids[0].0 - 1));
    loop {
        let page = store
            .page(&conversation, PageQuery::new(None, after, 3))
            .await
            .expect("page");
        seen.extend(page.messages.iter().map(|m| m.id));
        after = seen.last().copied();
        if !page.more {
            break;
        }
    }
    assert_eq!(seen, ids, "forwards, every message once, in order");

    // A window inside the gap between day 2 and day 20 is empty.
    let gap = store
        .page(
            &conversation,
            PageQuery::new(Some(ids[15]), Some(ids[14]), 10),
        )
        .await
        .expect("page");
    assert!(gap.messages.is_empty() && !gap.more);
    assert_eq!(
        store
            .last_message(&conversation)
            .await
            .expect("last")
            .map(|m| m.id),
        ids.last().copied()
    );
    let unread = store
        .count_unread(
            &conversation,
            &UserId::new("bob").expect("valid"),
            ids[2],
            100,
        )
        .await
        .expect("count");
    assert_eq!(
        unread,
        (ids.len() - 3) as u64,
        "counted across every bucket"
    );
}

/// Two store handles (two nodes) append the same send (one sender, one
/// `client_msg_id`) under different ids at once: one id wins, both calls
/// answer with it, and history holds it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_racing_on_one_client_msg_id_scylla() {
    let Some(a) = open("chat_conformance", 10).await else {
        return;
    };
    let Some(b) = open("chat_conformance", 10).await else {
        return;
    };
    let alice = UserId::new("alice").expect("valid");
    for round in 0..20u64 {
        let conversation = ConversationId::new(&unique(&format!("race{round}"))).expect("valid");
        let now = 1_760_000_000_000 + round;
        let first = message_at(&conversation, &alice, now, 1);
        let mut second = message_at(&conversation, &alice, now, 2);
        second.client_msg_id = first.client_msg_id.clone();
        let (x, y) = tokio::join!(
            a.append_new(std::slice::from_ref(&first)),
            b.append_new(std::slice::from_ref(&second))
        );
        let (x, y) = (x.expect("a"), y.expect("b"));
        let winner = match (&x[0], &y[0]) {
            (None, Some(m)) => {
                assert_eq!(m.id, first.id, "b answers with a's message");
                first.clone()
            }
            (Some(m), None) => {
                assert_eq!(m.id, second.id, "a answers with b's message");
                second.clone()
            }
            other => panic!("exactly one writer wins, got {other:?}"),
        };
        let history = a
            .page(&conversation, PageQuery::new(None, None, 10))
            .await
            .expect("page");
        let ids: Vec<MessageId> = history.messages.iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![winner.id], "stored once");
        let found = b
            .find_by_client_msg_id(&conversation, &alice, &first.client_msg_id)
            .await
            .expect("find");
        assert_eq!(found.map(|m| m.id), Some(winner.id));
    }
}

/// A claim whose message row was never written (its writer died between
/// the two): a retry of the send stores the message under the claimed id,
/// once, and answers with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_completes_a_send_interrupted_after_its_claim_scylla() {
    let Some(config) = config("chat_conformance", 10) else {
        return;
    };
    let store = ScyllaStore::open(&config).await.expect("open");
    let conversation = ConversationId::new(&unique("interrupted")).expect("valid");
    let alice = UserId::new("alice").expect("valid");
    let first = message_at(&conversation, &alice, 1_760_000_000_000, 1);
    // All the first writer did: the claim.
    let raw = ::scylla::client::session_builder::SessionBuilder::new()
        .known_nodes(&config.nodes)
        .build()
        .await
        .expect("connect");
    raw.query_unpaged(
        "INSERT INTO chat_conformance.client_msg_ids (conversation_id, sender, client_msg_id, id) \
         VALUES (?, ?, ?, ?)",
        (
            conversation.as_str(),
            alice.as_str(),
            first.client_msg_id.as_str(),
            first.id.0 as i64,
        ),
    )
    .await
    .expect("claim");
    let mut retry = message_at(&conversation, &alice, 1_760_000_000_500, 2);
    retry.client_msg_id = first.client_msg_id.clone();
    let held = store
        .append_new(std::slice::from_ref(&retry))
        .await
        .expect("retry");
    let stored = held[0].clone().expect("the claimed id answers");
    assert_eq!(stored.id, first.id, "under the claimed id");
    assert_eq!(stored.body, retry.body);
    let again = store
        .append_new(std::slice::from_ref(&retry))
        .await
        .expect("retry again");
    assert_eq!(again, vec![Some(stored.clone())], "the same answer again");
    let history = store
        .page(&conversation, PageQuery::new(None, None, 10))
        .await
        .expect("page");
    assert_eq!(history.messages, vec![stored], "stored once");
}

/// Two nodes present one refresh token at once: one rotates, the other is
/// a reuse, and the family is revoked either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_token_race_between_two_store_handles_scylla() {
    let Some(a) = open("chat_conformance", 10).await else {
        return;
    };
    let Some(b) = open("chat_conformance", 10).await else {
        return;
    };
    let user = UserId::new("alice").expect("valid");
    for round in 0..10 {
        let family = unique(&format!("family{round}"));
        let old = RefreshRecord {
            token_hash: unique("old"),
            user: user.clone(),
            family: family.clone(),
            expires_at: u64::MAX / 4,
        };
        a.put_refresh(&old).await.expect("put");
        let next = |tag: &str| RefreshRecord {
            token_hash: unique(tag),
            ..old.clone()
        };
        let (next_a, next_b) = (next("a"), next("b"));
        let (x, y) = tokio::join!(
            a.rotate_refresh(&old.token_hash, &next_a, 1),
            b.rotate_refresh(&old.token_hash, &next_b, 1)
        );
        let outcomes = [x.expect("a"), y.expect("b")];
        let rotated = outcomes
            .iter()
            .filter(|r| matches!(r, Rotation::Rotated { .. }))
            .count();
        assert!(
            rotated <= 1,
            "never two rotations of one token: {outcomes:?}"
        );
        assert!(
            outcomes.contains(&Rotation::Reused),
            "the loser is a reuse: {outcomes:?}"
        );
        assert_eq!(
            a.login_state(&family).await.expect("state"),
            Some(chat_storage::LoginState::Revoked),
            "a reuse revokes the family"
        );
    }
}

/// Migrations on a fresh keyspace, from three handles at once and then
/// again: applied exactly once, and the schema works afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_twice_and_concurrently_scylla() {
    let keyspace = format!("chat_migrate_{}", std::process::id());
    let Some(config) = config(&keyspace, 10) else {
        return;
    };
    let (x, y, z) = tokio::join!(migrate(&config), migrate(&config), migrate(&config));
    let mut applied: Vec<i32> = [x, y, z]
        .into_iter()
        .flat_map(|r| r.expect("migrate"))
        .collect();
    applied.sort_unstable();
    let expected: Vec<i32> = (1..=SCHEMA_VERSION).collect();
    assert_eq!(
        applied, expected,
        "each migration applied by exactly one caller"
    );
    assert_eq!(migrate(&config).await.expect("again"), Vec::<i32>::new());
    let store = ScyllaStore::open(&config).await.expect("open");
    chat_storage::conformance::check_append_new(&store).await;
    // A store with another bucket width would not find this history.
    let other = ScyllaConfig {
        bucket_days: 7,
        ..config
    };
    let err = ScyllaStore::open(&other)
        .await
        .expect_err("another bucket width");
    assert!(err.to_string().contains("bucket_days = 10"), "{err}");
}

/// Two nodes' store handles and one conversation's lease: one holds it at a
/// time; the holder renews and releases it; the other takes it over once it
/// is released, or once it ran out and the grace for late writes passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_lease_has_one_holder_at_a_time_scylla() {
    use chat_storage::LeaseGrant;
    // Short leases and timeouts: the takeover after expiry is waited for.
    let Some(mut config) = config("chat_conformance", 10) else {
        return;
    };
    config.lease_ms = 3_000;
    config.request_timeout_ms = 2_000;
    let a = ScyllaStore::open(&config).await.expect("open a");
    let b = ScyllaStore::open(&config).await.expect("open b");
    let conversation = ConversationId::new(&unique("leased")).expect("valid");
    let LeaseGrant::Granted(first) = a.acquire_lease(&conversation, "node-a").await.expect("a")
    else {
        panic!("a free lease is granted");
    };
    match b.acquire_lease(&conversation, "node-b").await.expect("b") {
        LeaseGrant::Held { owner, .. } => assert_eq!(owner, "node-a"),
        other => panic!("a held lease is not granted again: {other:?}"),
    }
    assert!(
        a.renew_lease(&first).await.expect("renew"),
        "the holder renews"
    );
    // The same owner takes it again (a node restarted) with a new epoch.
    let LeaseGrant::Granted(again) = a.acquire_lease(&conversation, "node-a").await.expect("a")
    else {
        panic!("its holder gets it again");
    };
    assert!(again.epoch > first.epoch);
    assert!(
        !a.renew_lease(&first).await.expect("renew"),
        "an old epoch renews nothing"
    );
    a.release_lease(&again).await.expect("release");
    let LeaseGrant::Granted(taken) = b.acquire_lease(&conversation, "node-b").await.expect("b")
    else {
        panic!("a released lease is taken at once");
    };
    assert!(taken.epoch > again.epoch);
    assert!(
        !a.renew_lease(&again).await.expect("renew"),
        "the old holder lost it"
    );
    // b stops renewing (it died): a gets it only after the lease and the
    // grace for b's last writes (request timeout and clock margin).
    let held_until = match a.acquire_lease(&conversation, "node-a").await.expect("a") {
        LeaseGrant::Held { until_ms, .. } => until_ms,
        other => panic!("b's lease still runs: {other:?}"),
    };
    let taken_over = chat_testkit::eventually_within(
        "the lease runs out",
        std::time::Duration::from_secs(15),
        || async {
            match a.acquire_lease(&conversation, "node-a").await.expect("a") {
                LeaseGrant::Granted(l) => Ok(l),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(now >= held_until, "not before the grace ran out");
    assert!(taken_over.epoch > taken.epoch);
}

/// The lease holder keeps its conversations' bucket lists in memory (a page
/// is one read): its own writes to a new bucket show at once, and a list
/// is read again when the lease comes back after another holder wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_holder_pages_across_new_buckets_of_every_holder_scylla() {
    use chat_storage::LeaseGrant;
    let Some(a) = open("chat_conformance_day_buckets", 1).await else {
        return;
    };
    let Some(b) = open("chat_conformance_day_buckets", 1).await else {
        return;
    };
    let conversation = ConversationId::new(&unique("cached")).expect("valid");
    let alice = UserId::new("alice").expect("valid");
    let day0 = 1_760_000_000_000 - 1_760_000_000_000 % DAY_MS;
    let at = |day: u64, n: u64| message_at(&conversation, &alice, day0 + day * DAY_MS + 1_000, n);
    let take = |store: Arc<ScyllaStore>, owner: &'static str| {
        let conversation = conversation.clone();
        async move {
            match store
                .acquire_lease(&conversation, owner)
                .await
                .expect("lease")
            {
                LeaseGrant::Granted(l) => l,
                other => panic!("{owner} gets the lease: {other:?}"),
            }
        }
    };
    let ids = |p: chat_storage::Page| p.messages.iter().map(|m| m.id).collect::<Vec<_>>();
    let newest = PageQuery::new(None, None, 10);

    let lease_a = take(a.clone(), "node-a").await;
    let m1 = at(0, 1);
    a.append_new_leased(&lease_a, std::slice::from_ref(&m1))
        .await
        .expect("m1");
    assert_eq!(
        ids(a.page(&conversation, newest).await.expect("page")),
        vec![m1.id]
    );
    let m2 = at(3, 2);
    a.append_new_leased(&lease_a, std::slice::from_ref(&m2))
        .await
        .expect("m2");
    assert_eq!(
        ids(a.page(&conversation, newest).await.expect("page")),
        vec![m1.id, m2.id],
        "its own new bucket shows at once"
    );
    a.release_lease(&lease_a).await.expect("release");

    let lease_b = take(b.clone(), "node-b").await;
    let m3 = at(7, 3);
    b.append_new_leased(&lease_b, std::slice::from_ref(&m3))
        .await
        .expect("m3");
    b.release_lease(&lease_b).await.expect("release");

    let _lease_a = take(a.clone(), "node-a").await;
    assert_eq!(
        ids(a.page(&conversation, newest).await.expect("page")),
        vec![m1.id, m2.id, m3.id],
        "the other holder's new bucket shows once the lease is back"
    );
    assert_eq!(
        ids(a
            .page(&conversation, PageQuery::new(Some(m3.id), None, 1))
            .await
            .expect("page")),
        vec![m2.id],
        "older pages walk the kept list"
    );
}

/// Node leases and the claims that live by them, on two store handles (two
/// nodes): a claim costs one transaction when taken and none while its
/// node renews; it is free at once when released or when its node lease is
/// given up; a dead node's claims are free only after its node lease ran out
/// and the grace for its last writes passed, and the node lease is fenced
/// then, so a renewal arriving late finds it lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_live_by_their_node_lease_scylla() {
    use chat_storage::{LeaseGrant, NodeLeaseGrant};
    use std::time::Duration;
    let Some(mut config) = config("chat_conformance", 10) else {
        return;
    };
    config.lease_ms = 1_000;
    config.write_timeout_ms = 500;
    config.request_timeout_ms = 5_000;
    let a = ScyllaStore::open(&config).await.expect("open a");
    let b = ScyllaStore::open(&config).await.expect("open b");
    let (name_a, name_b) = (unique("node-a"), unique("node-b"));
    let node = |grant| match grant {
        NodeLeaseGrant::Granted(l) => l,
        other => panic!("a free node lease is granted: {other:?}"),
    };
    let node_a = node(a.acquire_node_lease(&name_a, None).await.expect("a"));
    let node_b = node(b.acquire_node_lease(&name_b, None).await.expect("b"));
    let conversation = ConversationId::new(&unique("claimed")).expect("valid");

    let LeaseGrant::Granted(claim) = a.claim(&conversation, &node_a).await.expect("claim") else {
        panic!("a free conversation is claimed");
    };
    assert_eq!(claim.incarnation, Some(node_a.incarnation));
    match b.claim(&conversation, &node_b).await.expect("b") {
        LeaseGrant::Held { owner, .. } => assert_eq!(owner, name_a),
        other => panic!("a claim under a live node lease holds: {other:?}"),
    }
    // Renewing the node lease renews every claim: one transaction for all.
    let before = a.lease_transactions();
    for _ in 0..3 {
        assert!(a.renew_node_lease(&node_a).await.expect("renew"));
    }
    assert_eq!(
        a.lease_transactions() - before,
        3,
        "three renewals, nothing else"
    );
    // The same process claims it again (a new actor) with a new epoch: a
    // late release of the old claim frees nothing.
    let LeaseGrant::Granted(again) = a.claim(&conversation, &node_a).await.expect("again") else {
        panic!("its own claim");
    };
    assert!(again.epoch > claim.epoch, "a new epoch");
    a.release_lease(&claim).await.expect("a stale release");
    match b.claim(&conversation, &node_b).await.expect("b") {
        LeaseGrant::Held { owner, .. } => assert_eq!(owner, name_a),
        other => panic!("a stale release freed the claim: {other:?}"),
    }
    let claim = again;

    // Released: b takes it at once; a's later claim is held by b.
    a.release_lease(&claim).await.expect("release");
    let LeaseGrant::Granted(by_b) = b.claim(&conversation, &node_b).await.expect("b") else {
        panic!("a released claim is taken at once");
    };
    assert!(by_b.epoch > claim.epoch);

    // b gives its node lease up (a node stopping): its claims are free once
    // the grace for its last writes has passed.
    b.release_node_lease(&node_b).await.expect("release node");
    let by_a = chat_testkit::eventually_within(
        "b's released node lease frees its claims",
        Duration::from_secs(10),
        || async {
            match a.claim(&conversation, &node_a).await.expect("a") {
                LeaseGrant::Granted(l) => Ok(l),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert!(by_a.epoch > by_b.epoch);

    // b starts again (a new incarnation) and a dies (stops renewing): b
    // waits for a's node lease to run out and the grace to pass.
    let node_b = node(
        b.acquire_node_lease(&name_b, Some(&node_b))
            .await
            .expect("b again"),
    );
    let held_until = match b.claim(&conversation, &node_b).await.expect("b") {
        LeaseGrant::Held { until_ms, .. } => until_ms,
        other => panic!("a's node lease still runs: {other:?}"),
    };
    let taken = chat_testkit::eventually_within(
        "a's node lease runs out",
        Duration::from_secs(10),
        || async {
            match b.claim(&conversation, &node_b).await.expect("b") {
                LeaseGrant::Granted(l) => Ok(l),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert!(
        chat_protocol::now_ms() >= held_until,
        "not before the grace ran out"
    );
    assert!(taken.epoch > by_a.epoch);
    assert!(
        !a.renew_node_lease(&node_a).await.expect("late renewal"),
        "a renewal after the fence finds the node lease lost"
    );

    // b lives on (renews); a second process with b's lease key waits
    // for it, and a process that lost its own lease takes it anew at once.
    assert!(b.renew_node_lease(&node_b).await.expect("b renews"));
    match a
        .acquire_node_lease(&name_b, None)
        .await
        .expect("same name")
    {
        NodeLeaseGrant::Held { .. } => {}
        other => panic!("a live node lease of the same name holds: {other:?}"),
    }
    let node_a2 = node(
        a.acquire_node_lease(&name_a, Some(&node_a))
            .await
            .expect("anew"),
    );
    assert!(node_a2.incarnation > node_a.incarnation);
    match a.claim(&conversation, &node_a2).await.expect("a") {
        LeaseGrant::Held { owner, .. } => assert_eq!(owner, name_b),
        other => panic!("b holds it now: {other:?}"),
    }
}
