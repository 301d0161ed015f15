//! The message lifecycle (protocol 1.1) on one node over real WebSockets and
//! HTTP: edits, deletes, reactions, mentions, replies, `changes`, with every
//! refusal the protocol names, and guarantees 6 and 7.

mod common;

use std::collections::BTreeMap;

use chat_protocol::{
    ClientFrame, Codec, ConversationId, ConversationKind, ErrorCode, Message, MessageId,
    ServerFrame,
};
use common::frames::*;
use common::*;
use serde_json::{json, Value};

fn updated(f: &ServerFrame) -> Option<&Message> {
    match f {
        ServerFrame::MessageUpdated { message } => Some(message),
        _ => None,
    }
}

fn sent_message(f: ServerFrame) -> Message {
    ok(f).message.expect("a message in the reply")
}

/// Every change after `after_rev`, paged as a client does: on from the last
/// `rev` of a page while `more`, then the `rev` of the last page.
async fn catch_up(
    c: &mut Client,
    conv: &chat_protocol::ConversationId,
    after_rev: u64,
    limit: u32,
) -> (Vec<Message>, u64) {
    let mut out: Vec<Message> = Vec::new();
    let mut after = after_rev;
    loop {
        let reply = ok(c.request(changes(conv, after, Some(limit))).await);
        let page = reply.messages.expect("messages");
        let rev = reply.rev.expect("rev");
        assert!(page.len() <= limit as usize);
        for w in page.windows(2) {
            assert!(w[0].rev < w[1].rev, "a page of changes is in rev order");
        }
        assert!(page.iter().all(|m| m.rev > after && m.rev <= rev));
        out.extend(page.iter().cloned());
        if reply.more != Some(true) {
            return (out, rev);
        }
        after = page.last().expect("a page with more is not empty").rev;
    }
}

/// Twenty distinct emoji.
const EMOJI: [&str; 20] = [
    "😀", "😂", "😍", "🤔", "😢", "😮", "😡", "🙏", "🎉", "🔥", "💯", "✅", "❌", "🚀", "🍕", "☕",
    "🌟", "🐶", "🎵", "🙈",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_deletes_and_reactions_reach_every_member_with_their_errors() {
    let node = TestNode::start().await;
    let alice = node.user(&unique("alice")).await;
    let bob = node.user(&unique("bob")).await;
    let stranger = node.user(&unique("stranger")).await;
    let mut a = connect(node.addr, &alice.access, Codec::Json).await;
    let mut b = connect(node.addr, &bob.access, Codec::MsgPack).await;
    let g = group(&mut a, &[&bob.id]).await;
    b.event(|f| matches!(f, ServerFrame::Conversation { .. }))
        .await;

    // A send parses mentions of members (not of strangers, not in an address).
    let body = format!("hi @{}, and @{} and x@{}", bob.id, stranger.id, bob.id);
    let m = sent_message(a.request(send(&g, "m1", &body)).await);
    assert_eq!(m.mentions, vec![user(&bob.id)]);
    assert!(m.rev > 0 && !m.deleted && m.reactions.is_empty());
    let live = b.event(|f| matches!(f, ServerFrame::Message { .. })).await;
    assert!(matches!(live, ServerFrame::Message { message } if message == m));

    // Edit: the sender only; every member sees the new state at a new rev.
    let e = b.request(edit(&g, m.id, "not mine")).await;
    assert_eq!(err_code(&e), ErrorCode::Forbidden);
    let edited = sent_message(a.request(edit(&g, m.id, "hello everyone")).await);
    assert_eq!((edited.id, edited.body.as_str()), (m.id, "hello everyone"));
    assert!(edited.rev > m.rev && edited.edited_at.is_some());
    assert!(edited.mentions.is_empty(), "the edit took the mention away");
    let seen = b.event(|f| updated(f).is_some()).await;
    assert_eq!(updated(&seen), Some(&edited));

    // Reactions: idempotent per user and emoji; bad emoji refused.
    let r1 = sent_message(b.request(react(&g, m.id, "👍", true)).await);
    assert_eq!(r1.reactions.len(), 1);
    assert_eq!(
        (r1.reactions[0].count, r1.reactions[0].users.clone()),
        (1, vec![user(&bob.id)])
    );
    let again = sent_message(b.request(react(&g, m.id, "👍", true)).await);
    assert_eq!(again, r1, "a repeated reaction changes nothing");
    // Members get the reaction alone, not the whole message again.
    let seen = a.event(|f| matches!(f, ServerFrame::Reaction { .. })).await;
    assert_eq!(
        seen,
        ServerFrame::Reaction {
            conversation: g.clone(),
            message: m.id,
            rev: r1.rev,
            user: user(&bob.id),
            on: true,
            reaction: r1.reactions[0].clone(),
        }
    );
    assert_eq!(
        err_code(&b.request(react(&g, m.id, &"x".repeat(33), true)).await),
        ErrorCode::BadRequest
    );
    for emoji in EMOJI.iter().take(19) {
        sent_message(a.request(react(&g, m.id, emoji, true)).await);
    }
    let e = a.request(react(&g, m.id, EMOJI[19], true)).await;
    assert_eq!(err_code(&e), ErrorCode::BadRequest, "a 21st distinct emoji");
    let off = sent_message(b.request(react(&g, m.id, "👍", false)).await);
    assert_eq!(off.reactions.len(), 19);

    // Replies must name a message of the same conversation.
    let other = group(&mut a, &[&bob.id]).await;
    let elsewhere = sent_message(a.request(send(&other, "o1", "elsewhere")).await);
    let reply_to = |target: MessageId, key: &str| ClientFrame::Send {
        attachments: Vec::new(),
        req: None,
        conversation: g.clone(),
        client_msg_id: chat_protocol::ClientMsgId::new(key).unwrap(),
        body: "re".into(),
        kind: Default::default(),
        reply_to: Some(target),
    };
    assert_eq!(
        err_code(&a.request(reply_to(elsewhere.id, "r1")).await),
        ErrorCode::BadRequest
    );
    let reply = sent_message(a.request(reply_to(m.id, "r2")).await);
    assert_eq!(reply.reply_to, Some(m.id));

    // Delete: by an owner of someone else's message; twice is a no-op; a
    // deleted message takes no edit and no reaction.
    let bobs = sent_message(b.request(send(&g, "b1", "oops")).await);
    let gone = sent_message(a.request(delete(&g, bobs.id)).await);
    assert!(gone.deleted && gone.body.is_empty());
    assert_eq!(
        (gone.id, gone.sender.clone()),
        (bobs.id, bobs.sender.clone())
    );
    let twice = sent_message(a.request(delete(&g, bobs.id)).await);
    assert_eq!(twice, gone);
    assert_eq!(
        err_code(&b.request(edit(&g, bobs.id, "back")).await),
        ErrorCode::BadRequest
    );
    assert_eq!(
        err_code(&a.request(react(&g, bobs.id, "🎉", true)).await),
        ErrorCode::BadRequest
    );
    let e = b.request(delete(&g, m.id)).await;
    assert_eq!(
        err_code(&e),
        ErrorCode::Forbidden,
        "a member deletes only their own"
    );
    assert_eq!(
        err_code(&a.request(edit(&g, MessageId(m.id.0 + 1), "?")).await),
        ErrorCode::NotFound
    );

    // Guarantee 7: history shows current states.
    let h = ok(b.request(history(&g, None, None, None)).await)
        .messages
        .unwrap();
    let by_id: BTreeMap<MessageId, &Message> = h.iter().map(|m| (m.id, m)).collect();
    assert_eq!(by_id[&m.id].body, "hello everyone");
    assert_eq!(by_id[&m.id].reactions.len(), 19);
    assert!(by_id[&bobs.id].deleted && by_id[&bobs.id].body.is_empty());

    // `changes`: refused to strangers and for a future revision.
    let mut s = connect(node.addr, &stranger.access, Codec::Json).await;
    assert_eq!(
        err_code(&s.request(changes(&g, 0, None)).await),
        ErrorCode::Forbidden
    );
    let now = ok(a.request(changes(&g, 0, None)).await).rev.unwrap();
    assert_eq!(
        err_code(&a.request(changes(&g, now + 1000, None)).await),
        ErrorCode::BadRequest
    );
    let (all, rev) = catch_up(&mut b, &g, 0, 7).await;
    assert_eq!(rev, now);
    let mut current: Vec<Message> = h.clone();
    current.sort_by_key(|m| m.rev);
    assert_eq!(all, current, "every message once, at its last change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_offline_during_100_changes_catches_up_with_changes() {
    let node = TestNode::start().await;
    let alice = node.user(&unique("alice")).await;
    let bob = node.user(&unique("bob")).await;
    let carol = node.user(&unique("carol")).await;
    let mut a = connect(node.addr, &alice.access, Codec::Json).await;
    let mut c = connect(node.addr, &carol.access, Codec::MsgPack).await;
    let g = group(&mut a, &[&bob.id, &carol.id]).await;
    let mut msgs = Vec::new();
    for i in 0..10 {
        msgs.push(sent_message(
            a.request(send(&g, &format!("s{i}"), &format!("hi @{}", bob.id)))
                .await,
        ));
    }
    // Bob saw everything up to here, then goes away.
    let mut b = connect(node.addr, &bob.access, Codec::Json).await;
    let (seen, seen_rev) = catch_up(&mut b, &g, 0, 50).await;
    assert_eq!(seen, msgs);
    drop(b);

    // 100 changes while he is away: edits, deletes, reactions and sends.
    for i in 0..100usize {
        let target = msgs[i % msgs.len()].id;
        let frame = match i % 5 {
            0 => edit(&g, target, &format!("edit {i}")),
            1 => react(&g, target, &format!("r{}", i % 3), true),
            2 => react(&g, target, &format!("r{}", i % 3), false),
            3 if i % 10 == 3 => delete(&g, target),
            _ => send(&g, &format!("n{i}"), &format!("new {i} @{}", bob.id)),
        };
        let by_carol = matches!(frame, ClientFrame::React { .. });
        let client = if by_carol { &mut c } else { &mut a };
        let reply = client.request(frame).await;
        match reply {
            ServerFrame::Ok(_) => {}
            // Edits of a message deleted earlier in the loop.
            ServerFrame::Error {
                code: ErrorCode::BadRequest,
                ..
            } => {}
            other => panic!("change {i}: {other:?}"),
        }
    }

    let mut b = connect(node.addr, &bob.access, Codec::MsgPack).await;
    let (missed, rev) = catch_up(&mut b, &g, seen_rev, 9).await;
    // What he knew, with every change applied by id, is the history now.
    let mut state: BTreeMap<MessageId, Message> = seen.into_iter().map(|m| (m.id, m)).collect();
    for m in &missed {
        let held = state.entry(m.id).or_insert_with(|| m.clone());
        assert!(held.rev <= m.rev, "changes come in rev order");
        *held = m.clone();
    }
    let history = walk_history(&mut b, &g).await;
    let replayed: Vec<Message> = state.into_values().collect();
    assert_eq!(
        replayed, history,
        "catching up with changes rebuilds the history"
    );
    assert_eq!(history.iter().map(|m| m.rev).max(), Some(rev));
    assert!(
        missed.len() > 10 && missed.len() < 100,
        "each changed message once"
    );

    // Mentions: bob's unread count, and those that mention him.
    let entry = summary(&mut b, &g).await;
    let mentioning = history
        .iter()
        .filter(|m| m.mentions.iter().any(|u| u.as_str() == bob.id))
        .count() as u64;
    assert!(mentioning > 0);
    assert_eq!(entry.mentions, mentioning);
    assert_eq!(entry.unread, history.len() as u64);
    assert_eq!(entry.conversation.rev, rev);
    ok(b.request(ClientFrame::Read {
        req: None,
        conversation: g.clone(),
        up_to: history.last().unwrap().id,
    })
    .await);
    let entry = summary(&mut b, &g).await;
    assert_eq!((entry.unread, entry.mentions), (0, 0));
}

async fn walk_history(c: &mut Client, conv: &chat_protocol::ConversationId) -> Vec<Message> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let reply = ok(c.request(history(conv, None, after, Some(200))).await);
        let page = reply.messages.unwrap();
        after = page.last().map(|m| m.id.0);
        out.extend(page);
        if reply.more != Some(true) {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_see_ten_reactors_and_the_count() {
    let node = TestNode::start().await;
    let owner = node.user(&unique("owner")).await;
    let mut o = connect(node.addr, &owner.access, Codec::Json).await;
    let mut users = Vec::new();
    for i in 0..12 {
        users.push(node.user(&unique(&format!("fan{i}"))).await);
    }
    let ids: Vec<&str> = users.iter().map(|u| u.id.as_str()).collect();
    let ch = ok(o
        .request(create(ConversationKind::Channel, &ids, None))
        .await)
    .conversation
    .unwrap()
    .id;
    let m = sent_message(o.request(send(&ch, "post", "big news")).await);
    let mut last = None;
    for u in &users {
        let mut c = connect(node.addr, &u.access, Codec::Json).await;
        last = Some(sent_message(c.request(react(&ch, m.id, "🎉", true)).await));
    }
    let last = last.unwrap();
    assert_eq!(last.reactions[0].count, 12);
    assert_eq!(
        last.reactions[0].users.len(),
        10,
        "clients see the first ten"
    );
    assert_eq!(last.reactions[0].users[0].as_str(), users[0].id);
    let h = ok(o.request(history(&ch, None, None, None)).await)
        .messages
        .unwrap();
    assert_eq!(h[0].reactions, last.reactions);
    let mut first = connect(node.addr, &users[0].access, Codec::Json).await;
    let r = sent_message(first.request(react(&ch, m.id, "🎉", false)).await);
    assert_eq!(r.reactions[0].count, 11);
    assert_eq!(r.reactions[0].users.len(), 10);
    assert_eq!(
        r.reactions[0].users[9].as_str(),
        users[10].id,
        "the eleventh moves up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifecycle_over_http() {
    let node = TestNode::start().await;
    let Pair {
        a, b, mut cb, conv, ..
    } = pair_in_group(&node, "a", "b").await;
    let path = format!("/v1/conversations/{}/messages", conv.as_str());
    let (status, body) = http(
        node.addr,
        "POST",
        &path,
        Some(&a.access),
        Some(r#"{"client_msg_id":"h1","body":"v1"}"#),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let m: Value = serde_json::from_str(&body).unwrap();
    let id = m["message"]["id"].as_str().unwrap().to_string();
    let one = format!("{path}/{id}");

    let (status, body) = http(
        node.addr,
        "PATCH",
        &one,
        Some(&a.access),
        Some(r#"{"body":"v2"}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["message"]["body"].clone(), v["message"]["id"].clone()),
        (json!("v2"), json!(id))
    );
    cb.event(|f| updated(f).is_some_and(|m| m.body == "v2"))
        .await;
    let (status, _) = http(
        node.addr,
        "PATCH",
        &one,
        Some(&b.access),
        Some(r#"{"body":"v3"}"#),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = http(
        node.addr,
        "PATCH",
        &format!("{path}/not-a-number"),
        Some(&a.access),
        Some(r#"{"body":"v3"}"#),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = http(
        node.addr,
        "PATCH",
        &one,
        Some(&a.access),
        Some(r#"{"text":"v3"}"#),
    )
    .await;
    assert_eq!(status, 400, "a body without `body`");

    // An emoji in the path, percent-encoded.
    let thumbs = format!("{one}/reactions/%F0%9F%91%8D");
    let (status, body) = http(node.addr, "PUT", &thumbs, Some(&b.access), None).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["message"]["reactions"],
        json!([{"emoji": "👍", "count": 1, "users": [b.id]}])
    );
    let long = format!("{one}/reactions/{}", "x".repeat(33));
    let (status, _) = http(node.addr, "PUT", &long, Some(&b.access), None).await;
    assert_eq!(status, 400);
    let (status, body) = http(node.addr, "DELETE", &thumbs, Some(&b.access), None).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["message"]["reactions"], json!([]));

    let (status, _) = http(node.addr, "DELETE", &one, Some(&b.access), None).await;
    assert_eq!(status, 403);
    let (status, body) = http(node.addr, "DELETE", &one, Some(&a.access), None).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            v["message"]["deleted"].clone(),
            v["message"]["body"].clone()
        ),
        (json!(true), json!(""))
    );

    let changes_path = format!(
        "/v1/conversations/{}/changes?after_rev=0&limit=10",
        conv.as_str()
    );
    let (status, body) = http(node.addr, "GET", &changes_path, Some(&b.access), None).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["messages"].as_array().unwrap().len(), 1);
    assert_eq!(v["messages"][0]["deleted"], json!(true));
    assert_eq!(v["rev"], v["messages"][0]["rev"]);
    let future = format!(
        "/v1/conversations/{}/changes?after_rev=999999",
        conv.as_str()
    );
    let (status, _) = http(node.addr, "GET", &future, Some(&b.access), None).await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_count_against_the_send_rate_and_reactions_against_their_own() {
    let node = TestNode::start_with(|c| {
        c.limits.sends_per_second = 1;
        c.limits.send_burst = 3;
        c.limits.reactions_per_second = 1;
        c.limits.reaction_burst = 2;
    })
    .await;
    let Pair { mut ca, conv, .. } = pair_in_group(&node, "a", "b").await;
    let m = sent_message(ca.request(send(&conv, "k", "x")).await);
    sent_message(ca.request(edit(&conv, m.id, "y")).await);
    // Reactions take nothing from the sends' bucket...
    sent_message(ca.request(react(&conv, m.id, "👍", true)).await);
    sent_message(ca.request(react(&conv, m.id, "🎉", true)).await);
    let e = ca.request(react(&conv, m.id, "😂", true)).await;
    assert_eq!(err_code(&e), ErrorCode::RateLimited, "their own is empty");
    // ...so the third send still goes, and the fourth does not.
    sent_message(ca.request(edit(&conv, m.id, "z")).await);
    let e = ca.request(send(&conv, "k2", "x")).await;
    assert_eq!(err_code(&e), ErrorCode::RateLimited);
    let held = ok(ca.request(history(&conv, None, None, None)).await)
        .messages
        .unwrap();
    assert_eq!(
        held[0].reactions.len(),
        2,
        "the refused reaction changed nothing"
    );
}

/// A reaction toggle sends members what changed (a few hundred bytes), not
/// the message with its body, and requests that change nothing (a reaction
/// already there, an edit to the same body, a forbidden or unknown edit)
/// take no revision: members see no gap to catch up on for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactions_send_what_changed_and_nothing_changed_takes_no_revision() {
    let node = TestNode::start().await;
    let Pair {
        mut ca,
        mut cb,
        conv,
        ..
    } = pair_in_group(&node, "a", "b").await;
    let m = sent_message(ca.request(send(&conv, "big", &"x".repeat(16 * 1024))).await);
    cb.event(|f| matches!(f, ServerFrame::Message { .. })).await;
    let start = current_rev(&mut ca, &conv).await;
    for on in [true, false, true, false] {
        sent_message(ca.request(react(&conv, m.id, "👍", on)).await);
        let f = cb
            .event(|f| {
                matches!(
                    f,
                    ServerFrame::Reaction { .. } | ServerFrame::MessageUpdated { .. }
                )
            })
            .await;
        let ServerFrame::Reaction { rev, reaction, .. } = &f else {
            panic!("a whole message for a reaction: {f:?}");
        };
        assert_eq!(reaction.count, u32::from(on));
        let size = Codec::Json.encode(&f).unwrap().len();
        assert!(size < 512, "a reaction event of {size} bytes");
        assert!(*rev > start);
    }
    let after_toggles = current_rev(&mut ca, &conv).await;
    assert_eq!(after_toggles, start + 4, "one revision per toggle");

    // Nothing changes, no revision moves.
    sent_message(ca.request(react(&conv, m.id, "🎉", true)).await);
    let before = current_rev(&mut ca, &conv).await;
    sent_message(ca.request(react(&conv, m.id, "🎉", true)).await);
    sent_message(ca.request(react(&conv, m.id, "🔥", false)).await);
    sent_message(ca.request(edit(&conv, m.id, &"x".repeat(16 * 1024))).await);
    let e = cb.request(edit(&conv, m.id, "not mine")).await;
    assert_eq!(err_code(&e), ErrorCode::Forbidden);
    let e = ca
        .request(edit(&conv, MessageId(m.id.0 + 1), "nothing there"))
        .await;
    assert_eq!(err_code(&e), ErrorCode::NotFound);
    assert_eq!(
        current_rev(&mut ca, &conv).await,
        before,
        "no revision for no change"
    );
    // The next change takes the very next revision.
    let edited = sent_message(ca.request(edit(&conv, m.id, "short now")).await);
    assert_eq!(edited.rev, before + 1);
}

/// The conversation's revision now.
async fn current_rev(c: &mut Client, conv: &ConversationId) -> u64 {
    ok(c.request(changes(conv, 0, Some(1))).await).rev.unwrap()
}
