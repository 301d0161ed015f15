//! Bad input over real sockets, in both codecs: every malformed or invalid
//! frame gets a clear `bad_request` (with its `req` when it has one) and
//! harms nothing else, bodies and pages past their limits are refused, the
//! largest page comes in parts, and a frame over `max_frame_bytes` closes
//! with 1009. Limits and bounded memory: `abuse_limits.rs`; what both share:
//! `common/abuse.rs`.

mod common;
#[path = "common/abuse.rs"]
mod harness;

use chat_protocol::{ClientFrame, Codec, ErrorCode, Message, ReqId, ServerFrame};
use common::frames::*;
use common::*;
use futures_util::SinkExt;
use harness::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Frames that are well-formed in the encoding but not valid requests; the
/// same list in both codecs.
fn invalid_requests(codec: Codec, conv: &str) -> Vec<Bad> {
    let long = "x".repeat(65);
    let v = |what, value: Value, req| bad(what, raw(codec, &value), req);
    vec![
        v(
            "unknown type",
            json!({"type": "frobnicate", "req": "r-1"}),
            Some(ReqId::Str("r-1".into())),
        ),
        v(
            "missing type",
            json!({"req": 2, "conversation": conv}),
            Some(int(2)),
        ),
        v(
            "send without client_msg_id",
            json!({"type": "send", "req": 3, "conversation": conv, "body": "hi"}),
            Some(int(3)),
        ),
        v(
            "history without conversation",
            json!({"type": "history", "req": 4}),
            Some(int(4)),
        ),
        v(
            "active: \"yes\"",
            json!({"type": "typing", "req": 5, "conversation": conv, "active": "yes"}),
            Some(int(5)),
        ),
        v(
            "limit: \"x\"",
            json!({"type": "history", "req": 6, "conversation": conv, "limit": "x"}),
            Some(int(6)),
        ),
        v(
            "limit: -1",
            json!({"type": "history", "req": 7, "conversation": conv, "limit": -1}),
            Some(int(7)),
        ),
        v(
            "up_to: -1",
            json!({"type": "read", "req": 8, "conversation": conv, "up_to": -1}),
            Some(int(8)),
        ),
        v(
            "up_to: \"-1\"",
            json!({"type": "read", "req": 9, "conversation": conv, "up_to": "-1"}),
            Some(int(9)),
        ),
        v(
            "up_to: \"abc\"",
            json!({"type": "read", "req": 10, "conversation": conv, "up_to": "abc"}),
            Some(int(10)),
        ),
        v(
            "members: a string",
            json!({"type": "create", "req": 11, "kind": "group", "members": "bob"}),
            Some(int(11)),
        ),
        v(
            "unknown conversation kind",
            json!({"type": "create", "req": 12, "kind": "party", "members": []}),
            Some(int(12)),
        ),
        v(
            "conversation id with a space",
            json!({"type": "history", "req": 13, "conversation": "has space"}),
            Some(int(13)),
        ),
        v(
            "conversation id of 65 bytes",
            json!({"type": "history", "req": 14, "conversation": long}),
            Some(int(14)),
        ),
        v(
            "empty conversation id",
            json!({"type": "history", "req": 15, "conversation": ""}),
            Some(int(15)),
        ),
        v(
            "user id with a space",
            json!({"type": "watch", "req": 16, "users": ["fine", "not fine"]}),
            Some(int(16)),
        ),
        v(
            "user id of 65 bytes",
            json!({"type": "kick", "req": 17, "conversation": conv, "user": long}),
            Some(int(17)),
        ),
        v(
            "client_msg_id of 65 bytes",
            json!({"type": "send", "req": 18, "conversation": conv,
                   "client_msg_id": long, "body": "hi"}),
            Some(int(18)),
        ),
        v(
            "body: a number",
            json!({"type": "send", "req": 19, "conversation": conv,
                   "client_msg_id": "m", "body": 5}),
            Some(int(19)),
        ),
        // A `req` that cannot be read is not echoed.
        v(
            "req of 65 bytes",
            json!({"type": "ping", "req": long}),
            None,
        ),
        v(
            "req: an object",
            json!({"type": "ping", "req": {"a": 1}}),
            None,
        ),
        v("req: a float", json!({"type": "ping", "req": 1.5}), None),
        v("an array", json!([{"type": "ping", "req": 20}]), None),
        v("a string", json!("ping"), None),
        v("null", json!(null), None),
    ]
}

async fn bad_frames_get_bad_request_and_harm_nothing(codec: Codec) {
    let panics = PanicWatch::start();
    let node = TestNode::start().await;
    let alice = node.user(&unique("alice")).await;
    let bob = node.user(&unique("bob")).await;
    let mut a = connect(node.addr, &alice.access, codec).await;
    // The bystander: another user, on the same node, in the other codec.
    let other = if codec == Codec::Json {
        Codec::MsgPack
    } else {
        Codec::Json
    };
    let mut b = connect(node.addr, &bob.access, other).await;
    let conv = group(&mut b, &[&alice.id]).await;

    let mut cases = invalid_requests(codec, conv.as_str());
    match codec {
        Codec::Json => cases.extend([
            bad("malformed JSON", b"{not json".to_vec(), None),
            bad(
                "truncated JSON",
                br#"{"type":"ping","req":1"#.to_vec(),
                None,
            ),
            bad("empty text frame", Vec::new(), None),
            bad("a JSON array of numbers", b"[1,2,3]".to_vec(), None),
        ]),
        Codec::MsgPack => cases.extend([
            bad("reserved byte 0xc1", vec![0xc1], None),
            bad(
                "truncated map",
                vec![0x82, 0xa4, b't', b'y', b'p', b'e'],
                None,
            ),
            bad("empty binary frame", Vec::new(), None),
            bad("an array of numbers", vec![0x93, 1, 2, 3], None),
            bad(
                "JSON in a binary frame",
                br#"{"type":"ping"}"#.to_vec(),
                None,
            ),
        ]),
    }
    let rejected_before = node.app.metrics.rejected_total();
    for case in &cases {
        send_bytes(&mut a, case.bytes.clone()).await;
        let (req, code, message, _) = next_error(&mut a).await;
        assert_eq!(code, ErrorCode::BadRequest, "{}: {message}", case.what);
        assert_eq!(req, case.req, "{}: req echoed iff readable", case.what);
        assert!(!message.is_empty(), "{}: the error says why", case.what);
        // The connection stays open and usable.
        assert_alive(&mut a).await;
    }
    // A JSON connection given a binary frame decodes it as JSON too.
    if codec == Codec::Json {
        a.ws.send(WsMessage::Binary(vec![0xff, 0xfe].into()))
            .await
            .unwrap();
        let (req, code, ..) = next_error(&mut a).await;
        assert_eq!((req, code), (None, ErrorCode::BadRequest));
        assert_alive(&mut a).await;
    }
    let extra = u64::from(codec == Codec::Json);
    assert_eq!(
        node.app.metrics.rejected_total() - rejected_before,
        cases.len() as u64 + extra,
        "every bad frame is counted once"
    );
    // Nothing was created or sent by the bad frames.
    let h = ok(a.request(history(&conv, None, None, None)).await);
    assert!(h.messages.unwrap().is_empty());

    // Both users can still send and receive, in both directions.
    ok(b.request(send(&conv, "b1", "still here?")).await);
    receives_body(&mut a, "still here?").await;
    ok(a.request(send(&conv, "a1", "yes")).await);
    receives_body(&mut b, "yes").await;
    assert!(
        !a.events
            .iter()
            .chain(b.events.iter())
            .any(|f| matches!(f, ServerFrame::Error { .. })),
        "no stray errors"
    );
    panics.assert_none();
}

#[tokio::test]
async fn bad_frames_get_bad_request_and_harm_nothing_json() {
    bad_frames_get_bad_request_and_harm_nothing(Codec::Json).await;
}

#[tokio::test]
async fn bad_frames_get_bad_request_and_harm_nothing_msgpack() {
    bad_frames_get_bad_request_and_harm_nothing(Codec::MsgPack).await;
}

/// A frame that is an array has no `req`, so its error must not carry one:
/// a client would take it for the reply to its own request 7 (and then get
/// a second reply to 7).
#[tokio::test]
async fn array_frames_do_not_echo_a_req() {
    let panics = PanicWatch::start();
    let node = TestNode::start().await;
    let alice = node.user(&unique("alice")).await;
    for (codec, bytes) in [
        (Codec::Json, b"[7]".to_vec()),
        (Codec::Json, br#"["abc"]"#.to_vec()),
        (Codec::MsgPack, vec![0x91, 0x07]),
    ] {
        let mut a = connect(node.addr, &alice.access, codec).await;
        send_bytes(&mut a, bytes).await;
        let (req, code, ..) = next_error(&mut a).await;
        assert_eq!((req, code), (None, ErrorCode::BadRequest));
        assert_alive(&mut a).await;
    }
    panics.assert_none();
}

// ------------------------------------------------ 2. body and page limits

async fn too_large_body_and_page_limits(codec: Codec) {
    let panics = PanicWatch::start();
    let node = TestNode::start().await;
    let alice = node.user(&unique("alice")).await;
    let mut a = connect(node.addr, &alice.access, codec).await;
    let conv = group(&mut a, &[]).await;
    let max = node.app.config.limits.max_body_bytes;
    assert_eq!(max, 16 * 1024, "the protocol's default");

    // One byte over: too_large, the req echoed, nothing stored.
    let e = a.request(send(&conv, "big", &"x".repeat(max + 1))).await;
    assert_eq!(err_code(&e), ErrorCode::TooLarge, "{e:?}");
    assert!(matches!(e, ServerFrame::Error { req: Some(_), .. }));
    assert_alive(&mut a).await;
    // Bytes count, not characters: 8193 two-byte characters.
    let e = a
        .request(send(&conv, "wide", &"é".repeat(max / 2 + 1)))
        .await;
    assert_eq!(err_code(&e), ErrorCode::TooLarge, "{e:?}");
    // Exactly the limit is fine.
    let stored = ok(a.request(send(&conv, "fits", &"y".repeat(max))).await)
        .message
        .unwrap();
    assert_eq!(stored.body.len(), max);

    // Page sizes: 1 to 200.
    for limit in [0, 201, u32::MAX] {
        let e = a.request(history(&conv, None, None, Some(limit))).await;
        assert_eq!(err_code(&e), ErrorCode::BadRequest, "limit {limit}: {e:?}");
        let e = a
            .request(ClientFrame::Conversations {
                req: None,
                limit: Some(limit),
                before: None,
            })
            .await;
        assert_eq!(err_code(&e), ErrorCode::BadRequest, "limit {limit}: {e:?}");
    }
    for limit in [1, 200] {
        let h = ok(a.request(history(&conv, None, None, Some(limit))).await);
        // Only the message that fit was stored.
        assert_eq!(h.messages.unwrap(), vec![stored.clone()]);
    }
    assert_alive(&mut a).await;

    // The same limits over HTTP.
    let path = format!("/v1/conversations/{}/messages", conv.as_str());
    let body = json!({"client_msg_id": "http-big", "body": "z".repeat(max + 1)}).to_string();
    let (status, text) = http(node.addr, "POST", &path, Some(&alice.access), Some(&body)).await;
    assert_eq!(status, 413, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["code"], "too_large");
    for limit in [0, 201] {
        let (status, text) = http(
            node.addr,
            "GET",
            &format!("{path}?limit={limit}"),
            Some(&alice.access),
            None,
        )
        .await;
        assert_eq!(status, 400, "limit {limit}: {text}");
    }
    let h = ok(a.request(history(&conv, None, None, None)).await);
    assert_eq!(h.messages.unwrap().len(), 1, "nothing too large was stored");
    panics.assert_none();
}

#[tokio::test]
async fn too_large_body_and_page_limits_json() {
    too_large_body_and_page_limits(Codec::Json).await;
}

#[tokio::test]
async fn too_large_body_and_page_limits_msgpack() {
    too_large_body_and_page_limits(Codec::MsgPack).await;
}

/// Replies may be far larger than a client's frames, but a page stops at
/// about `MAX_PAGE_BYTES` (1 MiB) of messages and says `more`: a page of
/// 200 of the largest messages (3.3 MB) comes in parts, and paging with
/// `before` gets every message, in order.
#[tokio::test]
async fn a_page_of_the_largest_messages_comes_in_parts_of_at_most_a_mebibyte() {
    let panics = PanicWatch::start();
    let node = TestNode::start().await;
    let alice = node.user(&unique("alice")).await;
    let max = node.app.config.limits.max_body_bytes;
    for codec in [Codec::Json, Codec::MsgPack] {
        let mut a = connect(node.addr, &alice.access, codec).await;
        let conv = group(&mut a, &[]).await;
        let frames: Vec<ClientFrame> = (0..200)
            .map(|i| {
                let body = char::from(b'a' + (i % 26) as u8).to_string().repeat(max);
                with_req(send(&conv, &format!("m{i}"), &body), int(i))
            })
            .collect();
        pipeline(&mut a, &frames).await;
        for (_, f) in replies(&mut a, 200).await {
            ok(f);
        }
        // 16 times the client's frame limit in one frame, and no more.
        let mut all: Vec<Message> = Vec::new();
        let mut before = None;
        loop {
            let page = ok(a.request(history(&conv, before, None, Some(200))).await);
            let messages = page.messages.unwrap();
            let bytes: usize = messages.iter().map(|m| m.body.len()).sum();
            assert!(bytes <= chat_protocol::limits::MAX_PAGE_BYTES, "{bytes}");
            if page.more.unwrap() {
                assert!(
                    messages.len() >= 60,
                    "{} messages of 16 KiB",
                    messages.len()
                );
            }
            before = messages.first().map(|m| m.id.0);
            all.splice(0..0, messages);
            if !page.more.unwrap() {
                break;
            }
        }
        assert_eq!(all.len(), 200);
        assert!(all.windows(2).all(|w| w[0].id < w[1].id));
        assert!(all.iter().all(|m| m.body.len() == max));
        let list = ok(a
            .request(ClientFrame::Conversations {
                req: None,
                limit: Some(200),
                before: None,
            })
            .await)
        .conversations
        .unwrap();
        assert!(list.iter().any(|c| c.conversation.id == conv));
        assert_alive(&mut a).await;
    }
    panics.assert_none();
}

// ------------------------------------------------------ 3. oversize frames

async fn frame_over_max_frame_bytes_closes_with_1009(codec: Codec) {
    let panics = PanicWatch::start();
    let node = TestNode::start_with(|c| {
        c.limits.max_frame_bytes = 4096;
        c.limits.max_body_bytes = 1024;
    })
    .await;
    let alice = node.user(&unique("alice")).await;
    let bob = node.user(&unique("bob")).await;
    let mut bystander = connect(node.addr, &bob.access, Codec::Json).await;
    let mut same_user = connect(node.addr, &alice.access, codec).await;
    let conv = group(&mut bystander, &[&alice.id]).await;

    // Under the frame limit but over the body limit: an error, still open.
    let mut a = connect(node.addr, &alice.access, codec).await;
    let e = a.request(send(&conv, "m", &"x".repeat(3000))).await;
    assert_eq!(err_code(&e), ErrorCode::TooLarge);
    assert_alive(&mut a).await;

    // One frame over the limit: closed with 1009.
    a.send_frame(&send(&conv, "m", &"x".repeat(5000))).await;
    assert_eq!(a.closed_with().await, Some(1009));

    // A message over the limit in fragments that are each under it.
    let mut b = connect(node.addr, &alice.access, codec).await;
    let data = if codec.is_binary() {
        Data::Binary
    } else {
        Data::Text
    };
    let chunk = vec![b' '; 2048];
    b.ws.send(WsMessage::Frame(Frame::message(
        chunk.clone(),
        OpCode::Data(data),
        false,
    )))
    .await
    .unwrap();
    for last in [false, true] {
        b.ws.send(WsMessage::Frame(Frame::message(
            chunk.clone(),
            OpCode::Data(Data::Continue),
            last,
        )))
        .await
        .unwrap();
    }
    assert_eq!(b.closed_with().await, Some(1009));

    // The user's other connection and the other user are unaffected.
    assert_alive(&mut same_user).await;
    assert_alive(&mut bystander).await;
    ok(bystander.request(send(&conv, "b1", "after")).await);
    receives_body(&mut same_user, "after").await;
    panics.assert_none();
}

#[tokio::test]
async fn frame_over_max_frame_bytes_closes_with_1009_json() {
    frame_over_max_frame_bytes_closes_with_1009(Codec::Json).await;
}

#[tokio::test]
async fn frame_over_max_frame_bytes_closes_with_1009_msgpack() {
    frame_over_max_frame_bytes_closes_with_1009(Codec::MsgPack).await;
}

// ------------------------------------------------------------ 4. upgrade
