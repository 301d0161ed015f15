//! Both codecs: round trips, the wire shape of ids, and rejection of bad input.

use chat_protocol::*;
use proptest::prelude::*;

fn msg(id: u64) -> Message {
    Message {
        attachments: Vec::new(),
        rev: 0,
        edited_at: None,
        deleted: false,
        reactions: Vec::new(),
        mentions: Vec::new(),
        id: MessageId(id),
        conversation: ConversationId::new("g:room-1").unwrap(),
        sender: UserId::new("alice").unwrap(),
        body: "hello ✓".into(),
        kind: MessageKind::default(),
        ts: 1_700_000_000_123,
        client_msg_id: ClientMsgId::new("c-1").unwrap(),
        reply_to: Some(MessageId(7)),
    }
}

#[test]
fn json_message_ids_are_strings() {
    let frame = ServerFrame::Message {
        message: msg(u64::MAX),
    };
    let v: serde_json::Value =
        serde_json::from_slice(&Codec::Json.encode(&frame).unwrap()).unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["message"]["id"], "18446744073709551615");
    assert_eq!(v["message"]["reply_to"], "7");
    assert_eq!(v["message"]["kind"], "text");
}

#[test]
fn msgpack_message_ids_are_integers_in_named_maps() {
    let frame = ServerFrame::Ok(OkReply {
        req: Some(ReqId::Int(4)),
        message: Some(msg(u64::MAX)),
        ..OkReply::default()
    });
    let bytes = Codec::MsgPack.encode(&frame).unwrap();
    let v: rmpv::Value = rmpv::decode::read_value(&mut &bytes[..]).unwrap();
    let map = v.as_map().expect("a map");
    let get = |m: &Vec<(rmpv::Value, rmpv::Value)>, k: &str| {
        m.iter()
            .find(|(key, _)| key.as_str() == Some(k))
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no field {k}"))
    };
    assert_eq!(get(map, "type").as_str(), Some("ok"));
    let message = get(map, "message");
    let id = get(message.as_map().unwrap(), "id");
    assert_eq!(id.as_u64(), Some(u64::MAX));
    assert_eq!(Codec::MsgPack.decode::<ServerFrame>(&bytes).unwrap(), frame);
}

#[test]
fn client_frames_decode_from_both_codecs() {
    let json = br#"{"type":"send","req":"a1","conversation":"c1","client_msg_id":"m1","body":"hi","extra":[1,2]}"#;
    let f = Codec::Json.decode_client(json).unwrap();
    match &f {
        ClientFrame::Send {
            req, body, kind, ..
        } => {
            assert_eq!(req, &Some(ReqId::Str("a1".into())));
            assert_eq!(body, "hi");
            assert_eq!(kind.as_str(), "text");
        }
        other => panic!("decoded {other:?}"),
    }
    let packed = Codec::MsgPack.encode(&f).unwrap();
    assert_eq!(Codec::MsgPack.decode_client(&packed).unwrap(), f);

    let read = br#"{"type":"read","conversation":"c1","up_to":"123"}"#;
    assert!(matches!(
        Codec::Json.decode_client(read).unwrap(),
        ClientFrame::Read {
            up_to: MessageId(123),
            ..
        }
    ));
}

#[test]
fn malformed_input_is_rejected_with_req_when_readable() {
    let cases: &[&[u8]] = &[
        b"{",
        b"[]",
        b"null",
        br#"{"type":"nope"}"#,
        br#"{"type":"send","conversation":"c1"}"#,
        br#"{"type":"typing","conversation":"c1","active":"yes"}"#,
        br#"{"type":"send","conversation":"bad id!","client_msg_id":"m","body":"x"}"#,
        br#"{"type":"read","conversation":"c1","up_to":"-1"}"#,
        br#"{"type":"read","conversation":"c1","up_to":"99999999999999999999"}"#,
    ];
    for c in cases {
        assert!(
            Codec::Json.decode_client(c).is_err(),
            "accepted {}",
            String::from_utf8_lossy(c)
        );
    }
    let err = Codec::Json
        .decode_client(br#"{"type":"nope","req":17}"#)
        .unwrap_err();
    assert_eq!(err.req, Some(ReqId::Int(17)));
    assert!(Codec::MsgPack.decode_client(&[0xc1, 0x00]).is_err());
    let too_long_req = format!(r#"{{"type":"ping","req":"{}"}}"#, "x".repeat(65));
    assert!(Codec::Json.decode_client(too_long_req.as_bytes()).is_err());
}

#[test]
fn validation_enforces_limits() {
    let limits = Limits::default();
    let send = |body: String| ClientFrame::Send {
        attachments: Vec::new(),
        req: None,
        conversation: ConversationId::new("c").unwrap(),
        client_msg_id: ClientMsgId::new("m").unwrap(),
        body,
        kind: MessageKind::default(),
        reply_to: None,
    };
    assert!(send("x".repeat(limits.max_body_bytes))
        .validate(&limits)
        .is_ok());
    let err = send("x".repeat(limits.max_body_bytes + 1))
        .validate(&limits)
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::TooLarge);
    let history = |limit| ClientFrame::History {
        req: None,
        conversation: ConversationId::new("c").unwrap(),
        before: None,
        after: None,
        limit: Some(limit),
    };
    assert!(history(200).validate(&limits).is_ok());
    assert_eq!(
        history(0).validate(&limits).unwrap_err().code,
        ErrorCode::BadRequest
    );
    assert_eq!(
        history(201).validate(&limits).unwrap_err().code,
        ErrorCode::BadRequest
    );
    let direct = ClientFrame::Create {
        req: None,
        kind: ConversationKind::Direct,
        members: vec![],
        title: None,
    };
    assert_eq!(
        direct.validate(&limits).unwrap_err().code,
        ErrorCode::BadRequest
    );
}

/// Version 1.1: the lifecycle frames as a client writes them, the message's
/// new fields as it reads them, and the limits on them.
#[test]
fn lifecycle_frames_and_fields() {
    let frames: [&str; 4] = [
        r#"{"type":"edit","req":1,"conversation":"c1","message":"42","body":"fixed"}"#,
        r#"{"type":"delete","req":2,"conversation":"c1","message":42}"#,
        r#"{"type":"react","req":3,"conversation":"c1","message":"42","emoji":"❤️","on":true}"#,
        r#"{"type":"changes","req":4,"conversation":"c1","after_rev":17,"limit":20}"#,
    ];
    for json in frames {
        let f = Codec::Json.decode_client(json.as_bytes()).expect("decodes");
        f.validate(&Limits::default()).expect("valid");
        let packed = Codec::MsgPack.encode(&f).unwrap();
        assert_eq!(Codec::MsgPack.decode_client(&packed).unwrap(), f);
        assert!(f.req().is_some());
    }
    let react = |emoji: &str| ClientFrame::React {
        req: None,
        conversation: ConversationId::new("c1").unwrap(),
        message: MessageId(1),
        emoji: emoji.into(),
        on: true,
    };
    let code = |f: ClientFrame| f.validate(&Limits::default()).unwrap_err().code;
    // Emoji, with skin tones, flags, joined sequences and the text-style
    // heart; not words, markup, zero-width characters or direction
    // overrides.
    for emoji in ["👍", "👍🏽", "👨‍👩‍👧", "🇫🇷", "❤️", "❤", "🎉", "😂"]
    {
        react(emoji).validate(&Limits::default()).unwrap();
    }
    for bad in [
        "",
        "x",
        &"x".repeat(32),
        "<b>hi</b>",
        "\u{200b}",
        "👍\u{200b}",
        "\u{202e}👍",
        "👍👍",
        &"👍".repeat(9),
    ] {
        assert_eq!(code(react(bad)), ErrorCode::BadRequest, "{bad:?}");
    }
    let edit = ClientFrame::Edit {
        req: None,
        conversation: ConversationId::new("c1").unwrap(),
        message: MessageId(1),
        body: "x".repeat(Limits::default().max_body_bytes + 1),
    };
    assert_eq!(code(edit), ErrorCode::TooLarge);

    let mut m = msg(42);
    m.rev = 9;
    m.edited_at = Some(1_700_000_000_999);
    m.mentions = vec![UserId::new("bob").unwrap()];
    m.react(&UserId::new("bob").unwrap(), "👍", true).unwrap();
    let frame = ServerFrame::MessageUpdated { message: m.clone() };
    let v: serde_json::Value =
        serde_json::from_slice(&Codec::Json.encode(&frame).unwrap()).unwrap();
    assert_eq!(v["type"], "message_updated");
    assert_eq!(v["message"]["rev"], 9);
    assert_eq!(v["message"]["deleted"], false);
    assert_eq!(v["message"]["mentions"], serde_json::json!(["bob"]));
    assert_eq!(
        v["message"]["reactions"],
        serde_json::json!([{"emoji": "👍", "count": 1, "users": ["bob"]}])
    );
    for codec in [Codec::Json, Codec::MsgPack] {
        let bytes = codec.encode(&frame).unwrap();
        assert_eq!(codec.decode::<ServerFrame>(&bytes).unwrap(), frame);
    }
    // A version 1 message (no lifecycle fields) still decodes.
    let old =
        br#"{"id":"5","conversation":"c","sender":"a","body":"b","ts":1,"client_msg_id":"k"}"#;
    let old: Message = serde_json::from_slice(old).unwrap();
    assert_eq!((old.rev, old.deleted, old.reactions.len()), (0, false, 0));
}

#[test]
fn shared_frame_encodes_once_per_codec() {
    let shared = SharedFrame::new(ServerFrame::Message { message: msg(1) });
    let a = shared.encoded(Codec::Json).unwrap();
    let b = shared.encoded(Codec::Json).unwrap();
    assert_eq!(a.as_ptr(), b.as_ptr(), "second call reuses the encoding");
    let m = shared.encoded(Codec::MsgPack).unwrap();
    assert_ne!(a, m);
}

fn id_strategy() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.:-]{1,64}"
}

prop_compose! {
    fn arb_send()(req in proptest::option::of(any::<i64>()), conv in id_strategy(), cmid in id_strategy(),
                  body in ".{0,200}", reply in proptest::option::of(any::<u64>())) -> ClientFrame {
        ClientFrame::Send {
            attachments: Vec::new(),
            req: req.map(ReqId::Int),
            conversation: ConversationId::new(&conv).unwrap(),
            client_msg_id: ClientMsgId::new(&cmid).unwrap(),
            body,
            kind: MessageKind::default(),
            reply_to: reply.map(MessageId),
        }
    }
}

proptest! {
    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Codec::Json.decode_client(&bytes);
        let _ = Codec::MsgPack.decode_client(&bytes);
    }

    #[test]
    fn send_frames_round_trip_in_both_codecs(frame in arb_send()) {
        for codec in [Codec::Json, Codec::MsgPack] {
            let bytes = codec.encode(&frame).unwrap();
            prop_assert_eq!(codec.decode_client(&bytes).unwrap(), frame.clone());
        }
    }

    #[test]
    fn message_ids_round_trip(id in any::<u64>()) {
        let frame = ServerFrame::Message { message: msg(id) };
        for codec in [Codec::Json, Codec::MsgPack] {
            let bytes = codec.encode(&frame).unwrap();
            prop_assert_eq!(codec.decode::<ServerFrame>(&bytes).unwrap(), frame.clone());
        }
    }

    #[test]
    fn mutated_valid_frames_never_panic(frame in arb_send(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        for codec in [Codec::Json, Codec::MsgPack] {
            let mut bytes = codec.encode(&frame).unwrap();
            for (i, b) in &flips {
                let at = i.index(bytes.len());
                bytes[at] = *b;
            }
            let _ = codec.decode_client(&bytes);
        }
    }
}
