//! Limits over real sockets, with the protocol's error and close codes:
//! tokens (401 before the upgrade, 4001 when one expires), connections per
//! user (4002), pings (idle clients closed, quiet ones kept), slow consumers
//! (4003, with the process's memory bounded, measured alone in a fresh
//! process), send rates (rate_limited, HTTP 429), watch limits, and
//! pipelined requests that stall instead of buffering.

mod common;
#[path = "common/abuse.rs"]
mod harness;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chat_protocol::{ClientFrame, Codec, ErrorCode, MessageId, ServerFrame};
use common::frames::*;
use common::*;
use futures_util::StreamExt;
use harness::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[tokio::test]
async fn upgrade_without_a_valid_token_is_refused_with_401() {
    let panics = PanicWatch::start();
    // Tokens minted here name no login: accepted only with this off.
    let node = TestNode::start_with(|c| c.auth.require_session = false).await;
    let alice = node.user(&unique("alice")).await;
    let future = now_secs() + 600;
    // Leeway is 5 s by default: an hour ago is expired for sure.
    let expired = token(SECRET, &alice.id, now_secs() - 3600);
    let foreign = token("another-secret-another-secret-another!", &alice.id, future);
    let cases: [(&str, Option<&str>); 6] = [
        ("no token", None),
        ("garbage", Some("garbage")),
        ("three garbage parts", Some("a.b.c")),
        ("empty", Some("")),
        ("signed with another secret", Some(&foreign)),
        ("expired", Some(&expired)),
    ];
    for codec in [Codec::Json, Codec::MsgPack] {
        for (what, t) in cases {
            let r = try_connect(node.addr, t, codec).await;
            assert_eq!(r.err(), Some(401), "{what}");
        }
    }
    for (what, t) in [
        ("garbage", "garbage"),
        ("expired", &*expired),
        ("foreign", &*foreign),
    ] {
        let r = try_connect_query(node.addr, t, Codec::Json).await;
        assert_eq!(r.err(), Some(401), "{what} in the query");
        let (status, body) = http(
            node.addr,
            "GET",
            "/v1/conversations/c/messages",
            Some(t),
            None,
        )
        .await;
        assert_eq!(status, 401, "{what} over HTTP: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["code"], "unauthorized");
    }

    // Control: a token made the same way with the node's secret and a
    // future expiry works, so the refusals above are about the token.
    let good = token(SECRET, &alice.id, future);
    let mut c = connect(node.addr, &good, Codec::Json).await;
    assert_alive(&mut c).await;
    // The token in the query string works, in both codecs.
    for codec in [Codec::Json, Codec::MsgPack] {
        let mut q = try_connect_query(node.addr, &alice.access, codec)
            .await
            .expect("access_token in the query upgrades");
        assert_alive(&mut q).await;
    }
    panics.assert_none();
}

// ------------------------------------------------------ 5. token expiry

#[tokio::test]
async fn token_expiry_while_connected_closes_with_4001() {
    let panics = PanicWatch::start();
    let node = TestNode::start_with(|c| {
        c.auth.access_ttl_secs = 2;
        c.auth.leeway_secs = 1;
    })
    .await;
    let alice = node.user(&unique("alice")).await;
    let bob = node.user(&unique("bob")).await;
    let issued = Instant::now();
    let mut a = connect(node.addr, &alice.access, Codec::Json).await;
    let mut b = connect(node.addr, &bob.access, Codec::MsgPack).await;
    // No reads or writes: the node closes on its own when the token expires
    // (at most 2 s after it was issued, as `exp` has whole seconds), plus
    // the 1 s of clock-skew leeway the upgrade also allows.
    assert_eq!(a.closed_with().await, Some(4001));
    assert_eq!(b.closed_with().await, Some(4001));
    assert!(
        issued.elapsed() < Duration::from_secs(3) + WAIT / 2,
        "closed at expiry, not by some later timeout: {:?}",
        issued.elapsed()
    );
    panics.assert_none();
}

// ---------------------------------------------- 6. too many connections

#[tokio::test]
async fn third_connection_of_a_user_is_closed_with_4002() {
    let panics = PanicWatch::start();
    let node = TestNode::start_with(|c| c.limits.connections_per_user = 2).await;
    let alice = node.user(&unique("alice")).await;
    let bob = node.user(&unique("bob")).await;
    let mut bc = connect(node.addr, &bob.access, Codec::Json).await;
    let mut first = connect(node.addr, &alice.access, Codec::Json).await;
    let mut second = connect(node.addr, &alice.access, Codec::MsgPack).await;
    let conv = group(&mut bc, &[&alice.id]).await;

    let mut third = connect(node.addr, &alice.access, Codec::Json).await;
    assert_eq!(third.closed_with().await, Some(4002));

    // The first two keep working: requests, and live delivery to both.
    assert_alive(&mut first).await;
    assert_alive(&mut second).await;
    ok(bc.request(send(&conv, "m1", "to both")).await);
    receives_body(&mut first, "to both").await;
    receives_body(&mut second, "to both").await;
    // Another user is not counted against alice.
    let mut bob2 = connect(node.addr, &bob.access, Codec::Json).await;
    assert_alive(&mut bob2).await;

    // A closed connection frees its slot.
    let open = || node.app.metrics.connections_open.get();
    let before = open();
    first
        .ws
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }))
        .await
        .unwrap();
    assert_eq!(first.closed_with().await, Some(1000));
    until("the closed connection to be released", || open() < before).await;
    let mut again = connect(node.addr, &alice.access, Codec::Json).await;
    assert_alive(&mut again).await;
    assert_alive(&mut second).await;
    panics.assert_none();
}

// ------------------------------------------------------ 6b. dead clients

/// A client that stops answering pings is closed once the idle timeout
/// passes, and its slot is freed; one that keeps answering them (and sends
/// nothing else) stays, however long it is quiet.
#[tokio::test]
async fn a_client_that_stops_answering_pings_is_closed_and_a_quiet_one_is_kept() {
    let panics = PanicWatch::start();
    let node = TestNode::start_with(|c| c.limits.idle_timeout_secs = 2).await;
    let alice = node.user(&unique("alice")).await;
    let bob = node.user(&unique("bob")).await;
    // Before the connects: the node's idle clock starts after them.
    let opened = Instant::now();
    let mut quiet = connect(node.addr, &alice.access, Codec::Json).await;
    let mut dead = connect(node.addr, &bob.access, Codec::Json).await;
    let open = || node.app.metrics.connections_open.get();
    until("both connections to be open", || open() == 2).await;

    // `quiet` reads (so its client answers the pings) and sends nothing;
    // `dead` reads nothing until the node has given up on it.
    let reading = async {
        loop {
            match quiet.ws.next().await {
                Some(Ok(WsMessage::Ping(_))) => {}
                other => panic!("the quiet client got {other:?}"),
            }
        }
    };
    tokio::select! {
        _ = reading => unreachable!(),
        _ = until("the dead client to be dropped", || open() == 1) => {}
    }
    assert!(
        opened.elapsed() >= Duration::from_secs(2),
        "closed after {:?}, before the idle timeout",
        opened.elapsed()
    );
    assert_eq!(dead.closed_with().await, Some(1000));
    assert_eq!(
        dead.closed.clone().flatten().map(|f| f.reason.to_string()),
        Some("idle timeout".to_string())
    );

    // Past its own idle deadline, the quiet one still works.
    assert_alive(&mut quiet).await;
    assert_eq!(open(), 1);
    panics.assert_none();
}

// ------------------------------------------------------- 7. slow consumer

/// A member that never reads is cut with 4003 while the node's memory stays
/// bounded, and the sender is unaffected.
#[test]
fn slow_consumer_is_closed_with_4003_and_memory_stays_bounded() {
    alone(
        "slow_consumer_is_closed_with_4003_and_memory_stays_bounded",
        slow_consumer,
    );
}

async fn slow_consumer() {
    const MESSAGES: usize = 10_000;
    const BODY: usize = 4096;
    const WINDOW: usize = 200;
    let node = TestNode::start_with(|c| {
        c.limits.outbound_queue = 64;
        c.limits.sends_per_second = 1_000_000;
        c.limits.send_burst = 1_000_000;
        // A client cut with 4003 gets as long as an idle client to read its
        // backlog and the close frame; the flood may outlast the default
        // 60 s on a busy machine, and the slow reader reads only after it.
        c.limits.idle_timeout_secs = 600;
        // The bound below is the store's and the slow member's queue; the
        // search index's writer has a fixed budget of its own (16 MiB) and
        // would be measured here as the flood's 40 MiB of text is indexed.
        c.search.backend = chat_search::SearchBackend::Off;
    })
    .await;
    let Pair {
        b: slow,
        ca: mut s,
        cb: mut l,
        conv,
        ..
    } = pair_in_group(&node, "sender", "slow").await;
    // The slow member's session knows the conversation; from now on it
    // never reads.
    l.event(|f| matches!(f, ServerFrame::Conversation { .. }))
        .await;

    let body = "x".repeat(BODY);
    let rss_before = rss_bytes();
    let started = Instant::now();
    let mut last = None;
    for start in (0..MESSAGES).step_by(WINDOW) {
        let frames: Vec<ClientFrame> = (start..start + WINDOW)
            .map(|i| with_req(send(&conv, &format!("m{i}"), &body), int(i as i64)))
            .collect();
        pipeline(&mut s, &frames).await;
        let got = replies(&mut s, WINDOW).await;
        for (req, f) in got {
            let m = ok(f).message.expect("message in reply");
            if req == int((MESSAGES - 1) as i64) {
                last = Some(m.id);
            }
        }
    }
    let growth = rss_bytes().saturating_sub(rss_before);
    eprintln!(
        "sent {MESSAGES} x {BODY} B in {:?}; RSS {} MiB -> growth {} MiB",
        started.elapsed(),
        rss_before >> 20,
        growth >> 20
    );
    // The bound, measured on this machine in a fresh process (this test
    // runs alone in one): storing 10k x 4 KiB (40 MiB, under the store's
    // 64 MiB memtable, so no flush makes it vary) grows the RSS by ~50 MiB
    // with or without the slow member, i.e. the slow member costs about
    // nothing: its queue holds 64 frames (256 KiB) and its socket buffers
    // are the kernel's. With a queue that never overflows (outbound_queue
    // = 1_000_000) the same run grows by ~90 MiB: the encoded messages
    // (~42 MiB) pile up for the reader. 64 MiB sits between the two.
    assert!(
        growth < 64 << 20,
        "RSS grew by {} MiB while flooding a reader that never reads",
        growth >> 20
    );
    assert_eq!(node.app.metrics.slow_consumers.get(), 1);

    // The slow reader got a prefix of the messages, then 4003.
    let mut seen = 0usize;
    let mut previous: Option<MessageId> = None;
    while let Some(f) = l.recv().await {
        if let ServerFrame::Message { message } = f {
            assert!(previous < Some(message.id), "in order, no duplicates");
            previous = Some(message.id);
            seen += 1;
        }
    }
    assert_eq!(
        l.closed.clone().flatten().map(|f| u16::from(f.code)),
        Some(4003)
    );
    assert!(seen < MESSAGES, "cut before the end: saw {seen}");
    eprintln!("the slow reader got {seen} messages before 4003");

    // The sender still works, and the slow member catches up with history.
    assert_alive(&mut s).await;
    ok(s.request(send(&conv, "after", "after the cut")).await);
    let mut back = connect(node.addr, &slow.access, Codec::Json).await;
    let page = ok(back
        .request(history(&conv, None, previous.map(|m| m.0), Some(200)))
        .await);
    let missed = page.messages.unwrap();
    assert_eq!(missed.len(), 200);
    assert!(missed[0].id > previous.unwrap_or_default());
    let newest = ok(back.request(history(&conv, None, None, Some(2))).await)
        .messages
        .unwrap();
    assert_eq!(Some(newest[0].id), last);
    assert_eq!(newest[1].body, "after the cut");
}

// ---------------------------------------------------------- 8. rate limit

#[tokio::test]
async fn sends_over_the_rate_get_rate_limited() {
    let panics = PanicWatch::start();
    let node = TestNode::start_with(|c| {
        c.limits.sends_per_second = 5;
        c.limits.send_burst = 5;
    })
    .await;
    for codec in [Codec::Json, Codec::MsgPack] {
        let user = node.user(&unique("rate")).await;
        let mut c = connect(node.addr, &user.access, codec).await;
        let conv = group(&mut c, &[]).await;
        // Six sends at once: the burst is five.
        let frames: Vec<ClientFrame> = (1..=6)
            .map(|i| with_req(send(&conv, &format!("m{i}"), "hi"), int(100 + i)))
            .collect();
        pipeline(&mut c, &frames).await;
        let got = replies(&mut c, 6).await;
        for i in 1..=5 {
            ok(got[&int(100 + i)].clone());
        }
        let retry = match &got[&int(106)] {
            ServerFrame::Error {
                code: ErrorCode::RateLimited,
                retry_after_ms: Some(ms),
                ..
            } => *ms,
            other => panic!("expected rate_limited with retry_after_ms, got {other:?}"),
        };
        assert!(retry > 0 && retry <= 200, "one token per 200 ms: {retry}");
        assert_alive(&mut c).await;
        // The protocol says when to come back; then a send is accepted.
        tokio::time::sleep(Duration::from_millis(retry)).await;
        ok(c.request(send(&conv, "m6", "hi")).await);
        let h = ok(c.request(history(&conv, None, None, None)).await);
        assert_eq!(
            h.messages.unwrap().len(),
            6,
            "the refused send was not stored"
        );
    }

    panics.assert_none();
}

/// HTTP sends over the rate get 429 with `Retry-After`, and share the
/// user's bucket with WebSocket sends. One token a second (the slowest
/// allowed) leaves a whole second for the checks that follow the burst.
#[tokio::test]
async fn http_sends_over_the_rate_get_429_with_retry_after() {
    let panics = PanicWatch::start();
    let node = TestNode::start_with(|c| {
        c.limits.sends_per_second = 1;
        c.limits.send_burst = 5;
    })
    .await;
    let user = node.user(&unique("rate")).await;
    let mut c = connect(node.addr, &user.access, Codec::Json).await;
    let conv = group(&mut c, &[]).await;
    let path = format!("/v1/conversations/{}/messages", conv.as_str());
    let posts = (0..10).map(|i| {
        let body = json!({"client_msg_id": format!("h{i}"), "body": "hi"}).to_string();
        let (addr, path, access) = (node.addr, path.clone(), user.access.clone());
        async move { http_full(addr, "POST", &path, Some(&access), Some(&body)).await }
    });
    let answers = futures_util::future::join_all(posts).await;
    let created = answers.iter().filter(|(s, ..)| *s == 201).count();
    let limited: Vec<_> = answers.iter().filter(|(s, ..)| *s == 429).collect();
    assert_eq!(created + limited.len(), 10, "{answers:?}");
    assert!(created >= 5, "the burst is honoured: {answers:?}");
    assert!(!limited.is_empty(), "ten at once exceed a burst of five");
    for (_, headers, body) in limited {
        let retry_after: u64 = headers
            .iter()
            .find(|(k, _)| k == "retry-after")
            .and_then(|(_, v)| v.parse().ok())
            .expect("a numeric Retry-After header");
        assert!(retry_after >= 1);
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], "rate_limited");
        assert!(v["retry_after_ms"].as_u64().unwrap() > 0);
    }
    // WebSocket sends of that user are limited too (one bucket).
    let e = c.request(send(&conv, "ws", "hi")).await;
    assert_eq!(err_code(&e), ErrorCode::RateLimited);
    panics.assert_none();
}

// ----------------------------------------- 9. watch limit, membership

#[tokio::test]
async fn watch_limit_membership_and_missing_conversations() {
    let panics = PanicWatch::start();
    // The watch limit counts watches held; presence of strangers is shown
    // (and held) only where the node shows everyone's.
    let node = TestNode::start_with(|c| {
        c.presence.visible_to = chat_node::config::VisibleTo::Everyone;
    })
    .await;
    let alice = node.user(&unique("alice")).await;
    let bob = node.user(&unique("bob")).await;
    let eve = node.user(&unique("eve")).await;
    for codec in [Codec::Json, Codec::MsgPack] {
        let mut e = connect(node.addr, &eve.access, codec).await;
        let watch = |users: Vec<String>| ClientFrame::Watch {
            req: None,
            users: users.iter().map(|u| user(u)).collect(),
        };
        let names = |from: usize, to: usize| -> Vec<String> {
            (from..to).map(|i| format!("w{i}")).collect()
        };
        // 1001 at once: over the per-request and per-connection limit.
        let r = e.request(watch(names(0, 1001))).await;
        assert_eq!(err_code(&r), ErrorCode::BadRequest, "{r:?}");
        // 1000 in two requests is fine; watching them again adds none.
        ok(e.request(watch(names(0, 600))).await);
        ok(e.request(watch(names(600, 1000))).await);
        ok(e.request(watch(names(0, 1000))).await);
        // One more is over the total.
        let r = e.request(watch(vec!["w1000".into()])).await;
        assert_eq!(err_code(&r), ErrorCode::BadRequest, "{r:?}");
        // Unwatching makes room.
        ok(e.request(ClientFrame::Unwatch {
            req: None,
            users: vec![user("w0")],
        })
        .await);
        ok(e.request(watch(vec!["w1000".into()])).await);
        // The limit is per connection: a second one starts from zero.
        let mut e2 = connect(node.addr, &eve.access, codec).await;
        ok(e2.request(watch(names(2000, 3000))).await);
        assert_alive(&mut e).await;
    }

    let mut a = connect(node.addr, &alice.access, Codec::Json).await;
    let mut b = connect(node.addr, &bob.access, Codec::MsgPack).await;
    let private = group(&mut a, &[&bob.id]).await;
    ok(a.request(send(&private, "m1", "private")).await);
    receives_body(&mut b, "private").await;
    for codec in [Codec::Json, Codec::MsgPack] {
        let mut e = connect(node.addr, &eve.access, codec).await;
        // Not a member: forbidden, and nothing leaks or is stored.
        let r = e.request(history(&private, None, None, None)).await;
        assert_eq!(err_code(&r), ErrorCode::Forbidden, "{r:?}");
        let r = e.request(send(&private, "x", "let me in")).await;
        assert_eq!(err_code(&r), ErrorCode::Forbidden, "{r:?}");
        let r = e
            .request(ClientFrame::Read {
                req: None,
                conversation: private.clone(),
                up_to: MessageId(u64::MAX),
            })
            .await;
        assert_eq!(err_code(&r), ErrorCode::Forbidden, "{r:?}");
        let r = e
            .request(ClientFrame::Invite {
                req: None,
                conversation: private.clone(),
                users: vec![user(&eve.id)],
            })
            .await;
        assert_eq!(err_code(&r), ErrorCode::Forbidden, "{r:?}");
        // No such conversation: not_found.
        for missing in [format!("g:{}", unique("none")), unique("nothing")] {
            let missing = conv(&missing);
            let r = e.request(history(&missing, None, None, None)).await;
            assert_eq!(err_code(&r), ErrorCode::NotFound, "{r:?}");
            let r = e.request(send(&missing, "x", "anyone?")).await;
            assert_eq!(err_code(&r), ErrorCode::NotFound, "{r:?}");
        }
        assert_alive(&mut e).await;
    }
    // Over HTTP too.
    let path = format!("/v1/conversations/{}/messages", private.as_str());
    let (status, _) = http(node.addr, "GET", &path, Some(&eve.access), None).await;
    assert_eq!(status, 403);
    let (status, _) = http(
        node.addr,
        "GET",
        &format!("/v1/conversations/{}/messages", unique("none")),
        Some(&eve.access),
        None,
    )
    .await;
    assert_eq!(status, 404);
    // The members saw nothing of it.
    let h = ok(b.request(history(&private, None, None, None)).await);
    assert_eq!(h.messages.unwrap().len(), 1);
    assert!(!b
        .events
        .iter()
        .any(|f| matches!(f, ServerFrame::Message { .. })));
    panics.assert_none();
}

// ---------------------------------------------------------- 10. pipelining

/// 1000 requests sent without reading: with the default limits (an
/// outbound queue of 1024) every reply fits, so the client gets each
/// exactly once when it finally reads.
#[tokio::test]
async fn pipelined_requests_within_the_queue_all_get_replies() {
    let panics = PanicWatch::start();
    let node = TestNode::start().await;
    let alice = node.user(&unique("alice")).await;
    for codec in [Codec::Json, Codec::MsgPack] {
        let mut a = connect(node.addr, &alice.access, codec).await;
        let conv = group(&mut a, &[]).await;
        ok(a.request(send(&conv, "m", "hello")).await);
        let frames: Vec<ClientFrame> = (0..1000)
            .map(|i| {
                let f = if i % 2 == 0 {
                    ping()
                } else {
                    history(&conv, None, None, Some(5))
                };
                with_req(f, int(10_000 + i))
            })
            .collect();
        pipeline(&mut a, &frames).await;
        let got = replies(&mut a, 1000).await;
        for i in 0..1000 {
            let r = ok(got[&int(10_000 + i)].clone());
            if i % 2 == 1 {
                assert_eq!(r.messages.unwrap().len(), 1);
            }
        }
        assert_alive(&mut a).await;
    }
    panics.assert_none();
}

/// 1000 requests with large replies (~240 KB each, ~240 MB in all) sent
/// without reading, with a small queue: the node stops reading the client
/// while replies are unwritten instead of buffering them, so its memory
/// stays flat, and the client gets every reply once it reads. (Before, the
/// replies overflowed the queue and the client was cut with 4003.)
#[test]
fn pipelined_requests_with_large_replies_stall_instead_of_buffering() {
    alone(
        "pipelined_requests_with_large_replies_stall_instead_of_buffering",
        pipelined_large_replies,
    );
}

async fn pipelined_large_replies() {
    let node = TestNode::start_with(|c| {
        c.limits.outbound_queue = 64;
        // The bound below is the replies'; indexing the 200 messages runs
        // after their sends, into the measured window, and its writer's
        // fixed budget (16 MiB) would be counted with them.
        c.search.backend = chat_search::SearchBackend::Off;
    })
    .await;
    let alice = node.user(&unique("alice")).await;
    let mut a = connect(node.addr, &alice.access, Codec::Json).await;
    let conv = group(&mut a, &[]).await;
    let body = "p".repeat(1024);
    let frames: Vec<ClientFrame> = (0..200)
        .map(|i| with_req(send(&conv, &format!("m{i}"), &body), int(i)))
        .collect();
    pipeline(&mut a, &frames).await;
    for (_, f) in replies(&mut a, 200).await {
        ok(f);
    }

    let before = reset_peak_rss();
    let frames: Vec<ClientFrame> = (0..1000)
        .map(|i| with_req(history(&conv, None, None, Some(200)), int(1000 + i)))
        .collect();
    pipeline(&mut a, &frames).await;
    // Read them one by one, keeping nothing but their ids.
    let mut seen = HashSet::new();
    while seen.len() < 1000 {
        match a.recv().await.expect("open while replies are due") {
            ServerFrame::Ok(r) => {
                assert_eq!(r.messages.as_ref().map(Vec::len), Some(200));
                assert!(seen.insert(r.req.unwrap()), "one reply per request");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let peak = peak_rss().saturating_sub(before);
    eprintln!("peak RSS growth {} MiB", peak >> 20);
    // Buffering the replies would take ~240 MB (more with their encodings);
    // the node holds at most half its queue (32) of them.
    assert!(
        peak < 64 << 20,
        "peak RSS grew by {} MiB for a client pipelining without reading",
        peak >> 20
    );
    assert_eq!(node.app.metrics.slow_consumers.get(), 0);
    assert_alive(&mut a).await;
}

/// A whole node's clients reconnecting at once fit in the listen queue
/// (`listen.backlog`): with tokio's default of 1024, a thousand clients
/// coming back together overflowed it, and those whose SYNs were dropped
/// came back a second later. The kernel reports a listening socket's
/// backlog as its send queue.
#[tokio::test]
async fn the_listen_queue_holds_a_node_worth_of_reconnects() {
    // A node process, which binds as an operator's does.
    let dir = tempfile::tempdir().unwrap();
    let node = common::procs::NodeProc::start(
        &dir.path().join("data"),
        &dir.path().join("node.log"),
        None,
        &[],
    )
    .await;
    let filter = format!("sport = :{}", node.addr.port());
    let out = std::process::Command::new("ss")
        .args(["-ltnH", &filter])
        .output()
        .expect("ss (iproute2) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let backlog: u32 = text
        .split_whitespace()
        .nth(2)
        .and_then(|q| q.parse().ok())
        .unwrap_or_else(|| panic!("a listening socket in {text:?}"));
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("somaxconn")
        .trim()
        .parse()
        .expect("a number");
    assert_eq!(backlog, somaxconn.min(4096), "{text}");
    assert!(backlog > 1024, "the kernel caps the backlog at {somaxconn}");
}

/// The node's connection cap (`listen.max_connections`), which bounds its
/// memory when a reconnect storm lands on it: past the cap an upgrade gets
/// 503 `unavailable` with `Retry-After` (the client tries another node),
/// the connections held go on working, and a place freed is taken again.
#[tokio::test]
async fn past_the_nodes_connection_cap_upgrades_get_503_with_retry_after() {
    let node = TestNode::start_with(|c| c.listen.max_connections = 3).await;
    let mut users = Vec::new();
    for name in ["ann", "bob", "cid", "dee"] {
        users.push(node.user(&unique(name)).await);
    }
    let mut held = Vec::new();
    for u in &users[..3] {
        held.push(connect(node.addr, &u.access, Codec::Json).await);
    }

    let refused = raw_upgrade(node.addr, &users[3].access).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(
        refused
            .to_ascii_lowercase()
            .contains("\r\nretry-after: 1\r\n"),
        "{refused}"
    );
    assert!(refused.contains("\"code\":\"unavailable\""), "{refused}");
    let again = try_connect(node.addr, Some(&users[3].access), Codec::MsgPack).await;
    assert_eq!(again.err(), Some(503));
    assert!(metric(node.addr, "chat_connections_refused_total").await >= 2.0);

    // Those held go on: a group of the first two, a message from one to
    // the other.
    let conv = group(&mut held[0], &[&users[1].id]).await;
    let sent = ok(held[0].request(send(&conv, "k1", "still here")).await)
        .message
        .unwrap();
    let got = held[1]
        .event(|f| matches!(f, ServerFrame::Message { message, .. } if message.id == sent.id))
        .await;
    assert!(matches!(got, ServerFrame::Message { .. }));

    // One leaves: its place is taken again.
    let mut leaving = held.pop().unwrap();
    futures_util::SinkExt::close(&mut leaving.ws).await.unwrap();
    let back = eventually("a freed place taken", || async {
        try_connect(node.addr, Some(&users[3].access), Codec::Json)
            .await
            .map_err(|status| format!("{status}"))
    })
    .await;
    drop(back);
}

/// A WebSocket upgrade request by hand, and the response as text (head and
/// body): what a refused client reads, headers included.
async fn raw_upgrade(addr: std::net::SocketAddr, token: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /v1/ws?access_token={token} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Until the head and the body its Content-Length announces are in.
    loop {
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return text;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert!(n > 0, "closed before a whole answer: {text}");
        got.extend_from_slice(&buf[..n]);
    }
}
