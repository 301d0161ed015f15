//! The replicated store: the conformance suite with and without peers, and
//! convergence: catch-up of a node that was down, a healed partition, ops
//! delivered twice and out of order, restarts, malformed ops.
//!
//! The nodes are in-process: each has its own embedded store in a temporary
//! directory, and a test link applies a node's ops on the others.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chat_protocol::{ClientMsgId, ConversationId, Message, MessageId, Role, UserId};
use chat_storage::replicated::ReplicatedOp;
use chat_storage::{
    conformance, AccountStore, ConversationStore, HistoryStore, PageQuery, Rotation, StoreError,
    UserRecord,
};

#[path = "replicated/harness.rs"]
mod harness;
#[path = "replicated/notify.rs"]
mod notify;

use harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_without_a_link() {
    let a = node("a");
    conformance::run_all(a.store.as_ref()).await;
    // Every write was logged, under seqs 1, 2, 3, ... of this node.
    let log = full_log(&a.store).await;
    assert!(log.len() >= 30, "only {} ops logged", log.len());
    assert!(log.iter().all(|op| op.origin == "a"));
    assert_eq!(
        log.iter().map(|op| op.seq).collect::<Vec<_>>(),
        (1..=log.len() as u64).collect::<Vec<_>>()
    );
    assert_eq!(
        a.store.vector(),
        BTreeMap::from([("a".into(), log.len() as u64)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_with_two_peers_leaves_them_equal() {
    let (a, b, c) = (node("a"), node("b"), node("c"));
    a.store.set_link(TestLink::new(&[&b, &c]));
    let seen = Arc::new(Mutex::new(Seen::default()));
    conformance::run_all(&Recorder::new(&a.store, &seen)).await;
    let vector = a.store.vector();
    assert_eq!(b.store.vector(), vector);
    assert_eq!(c.store.vector(), vector);
    let log = full_log(&a.store).await;
    assert_eq!(full_log(&b.store).await, log);
    assert_eq!(full_log(&c.store).await, log);
    assert_same(&[&a, &b, &c], &seen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_was_down_catches_up_in_chunks() {
    let (a, b, c) = (node("a"), node("b"), node("c"));
    let link = TestLink::new(&[&b, &c]);
    a.store.set_link(link.clone());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let on_a = Recorder::new(&a.store, &seen);
    write_some(&on_a, "before", 1).await;
    // c goes down: it misses the whole suite and more.
    link.down.lock().expect("lock").insert(1);
    conformance::run_all(&on_a).await;
    write_some(&on_a, "during", 1).await;
    assert_ne!(c.store.vector(), a.store.vector());
    assert!(c.store.vector()["a"] > 0, "c saw the first writes");

    // Back up: it pulls from b (not the origin) in small chunks.
    pull(&b.store, &c.store, 5, 4096).await;
    assert_eq!(c.store.vector(), a.store.vector());
    assert_eq!(full_log(&c.store).await, full_log(&a.store).await);
    // Nothing more to pull from anyone.
    assert!(a
        .store
        .ops_after(&c.store.vector(), 10, 10_000)
        .await
        .expect("ops_after")
        .is_empty());
    assert_same(&[&a, &b, &c], &seen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healed_partition_converges() {
    let (a, b) = (node("a"), node("b"));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (on_a, on_b) = (
        Recorder::new(&a.store, &seen),
        Recorder::new(&b.store, &seen),
    );
    let room = conv("room");
    let (alice, bob) = (user("alice"), user("bob"));

    // Before the partition, in sync.
    on_a.apply_conversation(&change(
        &room,
        "start",
        vec![
            member("alice", Role::Owner),
            member("bob", Role::Member),
            member("carol", Role::Member),
        ],
        &[],
    ))
    .await
    .expect("create");
    on_a.put_refresh(&token("t1", "f1")).await.expect("put");
    on_a.put_refresh(&token("u1", "f2")).await.expect("put");
    pull(&a.store, &b.store, 100, 1 << 20).await;

    // The partition: both sides write.
    for (store, node_id) in [(&on_a, 1), (&on_b, 2)] {
        let messages: Vec<Message> = (0..5)
            .map(|n| {
                message(
                    &room,
                    &alice,
                    mid(n * 10 + node_id, node_id, 0),
                    &format!("a{node_id}-{n}"),
                )
            })
            .collect();
        store.append(&messages).await.expect("append");
    }
    // The same retried send accepted on both sides; b's id is the lower.
    let dup_a = message(&room, &bob, mid(100, 1, 0), "retried");
    let dup_b = message(&room, &bob, mid(90, 2, 0), "retried");
    on_a.append(std::slice::from_ref(&dup_a))
        .await
        .expect("append");
    on_b.append(std::slice::from_ref(&dup_b))
        .await
        .expect("append");
    // Read markers moved differently on each side.
    on_a.set_read_marker(&room, &bob, mid(10, 1, 0))
        .await
        .expect("marker");
    on_b.set_read_marker(&room, &bob, mid(20, 2, 0))
        .await
        .expect("marker");
    on_a.set_read_marker(&room, &alice, mid(30, 1, 0))
        .await
        .expect("marker");
    on_b.set_read_marker(&room, &alice, mid(5, 2, 0))
        .await
        .expect("marker");
    // Membership: a renames, adds dave, makes bob admin; b renames, removes
    // carol, adds erin, makes bob a member again (one register, two writers).
    on_a.apply_conversation(&change(
        &room,
        "title a",
        vec![member("dave", Role::Member), member("bob", Role::Admin)],
        &[],
    ))
    .await
    .expect("change");
    on_b.apply_conversation(&change(
        &room,
        "title b",
        vec![member("erin", Role::Member), member("bob", Role::Member)],
        &["carol"],
    ))
    .await
    .expect("change");
    // One user id signed up on both sides.
    let zed = |created_at, hash: &str| UserRecord {
        id: user("zed"),
        password_hash: Some(hash.into()),
        display_name: None,
        created_at,
    };
    on_a.create_user(&zed(100, "from-a")).await.expect("create");
    on_b.create_user(&zed(50, "from-b")).await.expect("create");
    // The same token rotated on both sides; a family revoked on one side
    // while the other rotates in it.
    assert!(matches!(
        on_a.rotate_refresh("t1", &token("t2a", "x"), 1).await,
        Ok(Rotation::Rotated { .. })
    ));
    assert!(matches!(
        on_b.rotate_refresh("t1", &token("t2b", "x"), 1).await,
        Ok(Rotation::Rotated { .. })
    ));
    assert!(matches!(
        on_a.rotate_refresh("u1", &token("u2", "x"), 1).await,
        Ok(Rotation::Rotated { .. })
    ));
    assert_eq!(
        on_b.revoke_refresh_family("u1").await.expect("revoke"),
        Some(alice.clone())
    );

    // Heal: anti-entropy both ways.
    pull(&a.store, &b.store, 3, 2048).await;
    pull(&b.store, &a.store, 3, 2048).await;
    assert_eq!(a.store.vector(), b.store.vector());
    assert_eq!(
        a.store.vector().keys().cloned().collect::<Vec<_>>(),
        ["a", "b"]
    );

    // What the rules promise, on both nodes.
    for store in [&a.store, &b.store] {
        let found = store
            .find_by_client_msg_id(&room, &bob, &ClientMsgId::new("retried").expect("valid"))
            .await
            .expect("find");
        assert_eq!(found, Some(dup_b.clone()), "the lower id keeps the key");
        let history = store
            .page(&room, PageQuery::new(None, None, 100))
            .await
            .expect("page");
        assert_eq!(
            history.messages.len(),
            12,
            "both sides' messages, both retries"
        );
        assert!(history.messages.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(
            store.read_marker(&room, &bob).await.expect("m"),
            Some(mid(20, 2, 0))
        );
        assert_eq!(
            store.read_marker(&room, &alice).await.expect("m"),
            Some(mid(30, 1, 0))
        );
        let record = store
            .conversation(&room)
            .await
            .expect("read")
            .expect("exists");
        let members: BTreeMap<UserId, Role> = record
            .members
            .iter()
            .map(|m| (m.user.clone(), m.role))
            .collect();
        let names: Vec<&str> = members.keys().map(|u| u.as_str()).collect();
        assert_eq!(
            names,
            ["alice", "bob", "dave", "erin"],
            "both sides' adds, b's removal"
        );
        assert_eq!(
            store
                .user_conversations(&user("carol"))
                .await
                .expect("index"),
            Vec::<ConversationId>::new()
        );
        assert_eq!(
            store
                .user_conversations(&user("dave"))
                .await
                .expect("index"),
            vec![room.clone()]
        );
        assert_eq!(
            store.user(&user("zed")).await.expect("user"),
            Some(zed(50, "from-b"))
        );
    }
    assert_same(&[&a, &b], &seen).await;

    // Tokens can only be read by rotating them, which writes: check a copy
    // made by anti-entropy (the probes above wrote to a's and b's embedded
    // stores only, not to their logs).
    let copy = node("copy");
    pull(&b.store, &copy.store, 50, 1 << 20).await;
    assert_eq!(copy.store.vector(), b.store.vector());
    let rotate = |old: &'static str| {
        let store = copy.store.clone();
        async move {
            store
                .rotate_refresh(old, &token(&format!("{old}-next"), "x"), 2)
                .await
                .expect("rotate")
        }
    };
    let rotated = Rotation::Rotated {
        user: alice.clone(),
    };
    assert_eq!(rotate("t2a").await, rotated, "a's rotation stands");
    assert_eq!(rotate("t2b").await, rotated, "so does b's");
    assert_eq!(
        rotate("u2").await,
        Rotation::Invalid,
        "b revoked its family"
    );
    assert_eq!(
        rotate("t1").await,
        Rotation::Reused,
        "t1 was used up on both sides"
    );
}

/// Ops of two origins that both changed one conversation, applied in many
/// orders (per origin out of order too): every order gives the same state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_changes_converge_in_any_order() {
    let (a, b) = (node("a"), node("b"));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (on_a, on_b) = (
        Recorder::new(&a.store, &seen),
        Recorder::new(&b.store, &seen),
    );
    let room = conv("room");
    let others = ["u1", "u2", "u3", "u4"];
    // Interleaved changes on both sides, each touching some members and the title.
    for round in 0..6usize {
        for (side, store) in [(0usize, &on_a), (1, &on_b)] {
            let pick = |k: usize| others[(round + side + k) % others.len()];
            let role = if (round + side) % 2 == 0 {
                Role::Admin
            } else {
                Role::Member
            };
            store
                .apply_conversation(&change(
                    &room,
                    &format!("title {round} from {side}"),
                    vec![member(pick(0), role), member("owner", Role::Owner)],
                    &[pick(1)],
                ))
                .await
                .expect("change");
        }
    }
    let ops: Vec<ReplicatedOp> = [full_log(&a.store).await, full_log(&b.store).await].concat();
    assert_eq!(ops.len(), 12);

    // Reference: heal a and b by anti-entropy.
    pull(&a.store, &b.store, 4, 1 << 20).await;
    pull(&b.store, &a.store, 4, 1 << 20).await;
    let reference = state(a.store.as_ref(), &seen).await;
    assert_eq!(reference, state(b.store.as_ref(), &seen).await);

    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut orders: Vec<Vec<ReplicatedOp>> = vec![ops.iter().rev().cloned().collect()];
    for _ in 0..4 {
        let mut order = ops.clone();
        // Fisher-Yates with xorshift: reproducible orders.
        for i in (1..order.len()).rev() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            order.swap(i, (rng % (i as u64 + 1)) as usize);
        }
        orders.push(order);
    }
    for (i, order) in orders.into_iter().enumerate() {
        let fresh = node(&format!("fresh{i}"));
        for op in order {
            fresh.store.apply_remote(op).await.expect("apply");
        }
        assert_eq!(fresh.store.vector(), a.store.vector());
        assert_eq!(
            state(fresh.store.as_ref(), &seen).await,
            reference,
            "order {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_and_out_of_order_delivery() {
    let (a, b) = (node("a"), node("b"));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let on_a = Recorder::new(&a.store, &seen);
    write_some(&on_a, "x", 1).await;
    let ops = full_log(&a.store).await;
    assert!(ops.len() >= 6, "{} ops", ops.len());
    let op = |seq: u64| ops[seq as usize - 1].clone();
    let at = |v: u64| BTreeMap::from([("a".to_owned(), v)]);

    assert_eq!(b.store.vector(), BTreeMap::new());
    b.store.apply_remote(op(2)).await.expect("apply");
    assert_eq!(b.store.vector(), BTreeMap::new(), "2 without 1 is a gap");
    for seq in [1, 4, 4, 1, 2] {
        b.store.apply_remote(op(seq)).await.expect("apply");
    }
    assert_eq!(b.store.vector(), at(2), "1, 2 and 4 held");
    // Only what lies below the gap is offered onwards.
    let offered = b
        .store
        .ops_after(&BTreeMap::new(), 100, 1 << 20)
        .await
        .expect("ops_after");
    assert_eq!(offered, vec![op(1), op(2)]);
    b.store.apply_remote(op(3)).await.expect("apply");
    assert_eq!(b.store.vector(), at(4), "3 closes the gap up to 4");
    for op in ops.iter().rev() {
        b.store.apply_remote(op.clone()).await.expect("apply");
    }
    for op in &ops {
        b.store.apply_remote(op.clone()).await.expect("apply");
    }
    assert_eq!(b.store.vector(), a.store.vector());
    assert_eq!(full_log(&b.store).await, ops);
    // max_ops 0 still gives one op.
    let one = a.store.ops_after(&at(2), 0, 0).await.expect("ops_after");
    assert_eq!(one, vec![op(3)]);
    assert_same(&[&a, &b], &seen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_ops_are_refused_and_change_nothing() {
    let (a, b) = (node("a"), node("b"));
    let seen = Arc::new(Mutex::new(Seen::default()));
    write_some(&Recorder::new(&a.store, &seen), "m", 1).await;
    let ops = full_log(&a.store).await;
    b.store.apply_remote(ops[0].clone()).await.expect("apply");
    let vector = b.store.vector();
    let log = full_log(&b.store).await;

    // write_some's first op is the conversation, whose first "alice" is a
    // member's user id: same length, but `!` is not allowed in one.
    let mut bad_id = ops[0].clone();
    assert!(bad_id.bytes.windows(6).any(|w| w == b"upsert"));
    let at = bad_id
        .bytes
        .windows(5)
        .position(|w| w == b"alice")
        .expect("alice in the op");
    bad_id.bytes[at + 1] = b'!';
    bad_id.seq = 2;
    let mut truncated = ops[1].clone();
    truncated.bytes.truncate(truncated.bytes.len() / 2);
    let garbage = ReplicatedOp {
        origin: "a".into(),
        seq: 2,
        bytes: vec![0xc1, 0xff, 0x00],
    };
    let seq_zero = ReplicatedOp {
        seq: 0,
        ..ops[1].clone()
    };
    let no_origin = ReplicatedOp {
        origin: String::new(),
        ..ops[1].clone()
    };
    let long_origin = ReplicatedOp {
        origin: "n".repeat(300),
        ..ops[1].clone()
    };
    // Seq 1 of a is held with other content.
    let clash = ReplicatedOp {
        seq: 1,
        ..ops[1].clone()
    };
    for (what, op) in [
        ("a bad user id", bad_id),
        ("a truncated op", truncated),
        ("garbage", garbage),
        ("seq 0", seq_zero),
        ("an empty origin", no_origin),
        ("a long origin", long_origin),
        ("a clash with a held op", clash),
    ] {
        let result = b.store.apply_remote(op).await;
        assert!(
            matches!(result, Err(StoreError::Corrupt(_))),
            "{what}: {result:?}"
        );
        assert_eq!(b.store.vector(), vector, "{what} changed the vector");
        assert_eq!(full_log(&b.store).await, log, "{what} changed the log");
    }
    // The store still works: the real ops apply.
    for op in &ops {
        b.store.apply_remote(op.clone()).await.expect("apply");
    }
    assert_eq!(b.store.vector(), a.store.vector());
    assert_same(&[&a, &b], &seen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_log_the_vector_and_the_seq() {
    let a = node("a");
    let x = node("x");
    write_some(x.store.as_ref(), "x", 2).await;
    let from_x = full_log(&x.store).await;
    write_some(a.store.as_ref(), "a", 1).await;
    let own = a.store.vector()["a"];
    // Hold x's ops 1, 2 and 4: a gap at 3.
    for seq in [1, 2, 4] {
        a.store
            .apply_remote(from_x[seq - 1].clone())
            .await
            .expect("apply");
    }
    let vector = a.store.vector();
    assert_eq!(vector, BTreeMap::from([("a".into(), own), ("x".into(), 2)]));
    let log = full_log(&a.store).await;

    let a = restart(a).await;
    assert_eq!(a.store.vector(), vector, "the vector after a restart");
    assert_eq!(full_log(&a.store).await, log, "the log after a restart");
    // The next local write continues the seq.
    let link = Arc::new(CaptureLink::default());
    a.store.set_link(link.clone());
    a.store
        .set_read_marker(&conv("room-a"), &user("alice"), mid(11, 1, 0))
        .await
        .expect("marker");
    let sent = link.ops.lock().expect("lock").clone();
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].origin.as_str(), sent[0].seq), ("a", own + 1));
    // The op above the gap survived too: 3 closes the gap up to 4.
    a.store
        .apply_remote(from_x[2].clone())
        .await
        .expect("apply");
    assert_eq!(a.store.vector()["x"], 4);
    assert_eq!(
        a.store
            .ops_after(&BTreeMap::from([("a".into(), own + 1)]), 100, 1 << 20)
            .await
            .expect("ops_after"),
        from_x[..4].to_vec()
    );
}

/// A write the link cannot promise returns the link's error, but it is
/// stored and logged here and reaches the peer by anti-entropy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_replication_is_caught_up_later() {
    let (a, b) = (node("a"), node("b"));
    a.store.set_link(Arc::new(CaptureLink {
        fail: true,
        ..CaptureLink::default()
    }));
    let m = message(&conv("room"), &user("alice"), mid(1, 1, 0), "k");
    let result = a.store.append(std::slice::from_ref(&m)).await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
    assert_eq!(a.store.vector()["a"], 1);
    assert_eq!(
        a.store.last_message(&conv("room")).await.expect("last"),
        Some(m.clone())
    );
    pull(&a.store, &b.store, 10, 1 << 20).await;
    assert_eq!(
        b.store.last_message(&conv("room")).await.expect("last"),
        Some(m)
    );
}

/// Writes that change nothing log nothing: a marker that would move back,
/// a failed rotation, a taken user id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ops_for_writes_that_change_nothing() {
    let a = node("a");
    let (c, bob) = (conv("room"), user("bob"));
    a.store
        .set_read_marker(&c, &bob, mid(5, 1, 0))
        .await
        .expect("marker");
    let record = UserRecord {
        id: bob.clone(),
        password_hash: None,
        display_name: None,
        created_at: 1,
    };
    a.store.create_user(&record).await.expect("create");
    let logged = a.store.vector()["a"];
    a.store
        .set_read_marker(&c, &bob, mid(4, 1, 0))
        .await
        .expect("marker");
    a.store
        .set_read_marker(&c, &bob, mid(5, 1, 0))
        .await
        .expect("marker");
    assert!(matches!(
        a.store.create_user(&record).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        a.store
            .rotate_refresh("unknown", &token("n", "f"), 1)
            .await
            .expect("rotate"),
        Rotation::Invalid
    );
    assert_eq!(
        a.store
            .revoke_refresh_family("unknown")
            .await
            .expect("revoke"),
        None
    );
    assert_eq!(a.store.vector()["a"], logged);
    assert_eq!(
        a.store.read_marker(&c, &bob).await.expect("m"),
        Some(mid(5, 1, 0))
    );
}

/// Refresh-token ops carry effects, not calls: in any order, on any node,
/// a rotation leaves the old token used and the new one valid, and a
/// revocation sticks even if it arrives before the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_effects_apply_in_any_order() {
    let a = node("a");
    a.store.put_refresh(&token("t1", "f1")).await.expect("put");
    assert_eq!(
        a.store
            .rotate_refresh("t1", &token("t2", "x"), 1)
            .await
            .expect("rotate"),
        Rotation::Rotated {
            user: user("alice")
        }
    );
    a.store.put_refresh(&token("u1", "f2")).await.expect("put");
    assert_eq!(
        a.store.revoke_refresh_family("u1").await.expect("revoke"),
        Some(user("alice"))
    );
    let ops = full_log(&a.store).await;
    assert_eq!(ops.len(), 4);
    for (i, order) in [[0, 1, 2, 3], [1, 0, 3, 2], [3, 1, 2, 0]]
        .iter()
        .enumerate()
    {
        let n = node(&format!("n{i}"));
        for &k in order {
            n.store.apply_remote(ops[k].clone()).await.expect("apply");
        }
        // Probed on the embedded store: these rotations are not logged.
        let rotate = |old: &'static str| {
            let store = n.local.clone();
            async move {
                store
                    .rotate_refresh(old, &token(&format!("{old}-next"), "x"), 2)
                    .await
                    .expect("rotate")
            }
        };
        assert_eq!(
            rotate("u1").await,
            Rotation::Invalid,
            "order {order:?}: revoked family"
        );
        assert_eq!(
            rotate("t2").await,
            Rotation::Rotated {
                user: user("alice")
            },
            "order {order:?}: the rotated-to token works"
        );
        assert_eq!(
            rotate("t1").await,
            Rotation::Reused,
            "order {order:?}: the old token stays used"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applied_op_names_the_conversations_whose_state_it_changed() {
    // A conversation actor on the receiving node holds these in memory, and
    // must reload when another node's write changed them.
    let (a, b) = (node("a"), node("b"));
    let (g, h) = (conv("g:named"), conv("g:other"));
    let ann = user("ann");
    let record = UserRecord {
        id: ann.clone(),
        password_hash: None,
        display_name: None,
        created_at: 1,
    };
    a.store.create_user(&record).await.expect("user");
    let messages = [
        message(&g, &ann, MessageId(10), "k1"),
        message(&h, &ann, MessageId(11), "k2"),
        message(&g, &ann, MessageId(12), "k3"),
    ];
    a.store.append(&messages).await.expect("append");
    let ops = full_log(&a.store).await;
    assert_eq!(ops.len(), 2, "the user, then the append");
    let user_op = b.store.apply_remote(ops[0].clone()).await.expect("apply");
    assert!(user_op.is_empty(), "an account is no conversation's state");
    let appended = b.store.apply_remote(ops[1].clone()).await.expect("apply");
    assert_eq!(appended, vec![g, h], "each conversation once");
    let again = b.store.apply_remote(ops[1].clone()).await.expect("apply");
    assert!(again.is_empty(), "an op held already changes nothing");
}
