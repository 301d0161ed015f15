//! The guarantees of docs/protocol.md on one node: ordering of a pipelined burst,
//! at-most-once delivery of retried sends, and history paging that walks
//! exactly what was stored.

mod common;

use std::collections::HashSet;

use chat_protocol::{ClientFrame, Codec, Message, MessageId, ReqId, ServerFrame};
use common::frames::*;
use common::*;

/// Reads `n` message events for `conv` from `c`, in arrival order.
async fn messages(c: &mut Client, conv: &chat_protocol::ConversationId, n: usize) -> Vec<Message> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        if let ServerFrame::Message { message } = c
            .event(
                |f| matches!(f, ServerFrame::Message { message } if &message.conversation == conv),
            )
            .await
        {
            out.push(message);
        }
    }
    out
}

#[tokio::test]
async fn pipelined_burst_arrives_complete_and_in_id_order_at_every_member() {
    const N: usize = 1000;
    let node = TestNode::start().await;
    let a = node.user(&unique("sender")).await;
    let b = node.user(&unique("json")).await;
    let c = node.user(&unique("pack")).await;
    let mut ca = connect(node.addr, &a.access, Codec::Json).await;
    let mut ca2 = connect(node.addr, &a.access, Codec::MsgPack).await;
    let mut cb = connect(node.addr, &b.access, Codec::Json).await;
    let mut cc = connect(node.addr, &c.access, Codec::MsgPack).await;
    let g = group(&mut ca, &[&b.id, &c.id]).await;

    for i in 0..N {
        let f = with_req(
            send(&g, &format!("m{i}"), &format!("body {i}")),
            ReqId::Int(i as i64 + 1_000_000),
        );
        ca.send_frame(&f).await;
    }
    let mut acked = Vec::with_capacity(N);
    for i in 0..N {
        let reply = ok(ca.reply_to(&ReqId::Int(i as i64 + 1_000_000)).await);
        acked.push(reply.message.unwrap());
    }
    // Acceptance order is send order, so ids increase with it.
    for w in acked.windows(2) {
        assert!(
            w[0].id < w[1].id,
            "ids out of order: {:?} then {:?}",
            w[0].id,
            w[1].id
        );
    }
    for (i, m) in acked.iter().enumerate() {
        assert_eq!(m.body, format!("body {i}"));
    }
    // Every member's connection, and the sender's other device, sees exactly
    // the acknowledged messages in id order; the sending connection gets none.
    for client in [&mut cb, &mut cc, &mut ca2] {
        let got = messages(client, &g, N).await;
        assert_eq!(got, acked);
    }
    ok(ca.request(ClientFrame::Ping { req: None }).await);
    assert!(
        !ca.events
            .iter()
            .any(|f| matches!(f, ServerFrame::Message { .. })),
        "the sending connection must not get its own message as an event"
    );
}

#[tokio::test]
async fn a_retried_send_is_stored_and_delivered_once() {
    let node = TestNode::start().await;
    let Pair {
        a,
        mut ca,
        mut cb,
        conv: g,
        ..
    } = pair_in_group(&node, "a", "b").await;

    // Retries pipelined behind the first (still in flight), and later ones
    // from another connection of the same user.
    for r in 1..=3 {
        ca.send_frame(&with_req(send(&g, "same", "once"), ReqId::Int(r)))
            .await;
    }
    let mut ids = HashSet::new();
    for r in 1..=3 {
        ids.insert(ok(ca.reply_to(&ReqId::Int(r)).await).message.unwrap().id);
    }
    let mut ca2 = connect(node.addr, &a.access, Codec::MsgPack).await;
    ids.insert(
        ok(ca2
            .request(send(&g, "same", "changed body is ignored"))
            .await)
        .message
        .unwrap()
        .id,
    );
    assert_eq!(ids.len(), 1, "every retry returns the first message");
    let first = *ids.iter().next().unwrap();

    // Another sender may use the same client_msg_id: it is theirs.
    let theirs = ok(cb.request(send(&g, "same", "b's own")).await)
        .message
        .unwrap();
    assert_ne!(theirs.id, first);

    let h = ok(cb.request(history(&g, None, None, None)).await)
        .messages
        .unwrap();
    assert_eq!(h.iter().filter(|m| m.id == first).count(), 1);
    assert_eq!(h.len(), 2);
    let got = messages(&mut cb, &g, 1).await;
    assert_eq!(got[0].id, first);
    ok(cb.request(ClientFrame::Ping { req: None }).await);
    let dupes = cb
        .events
        .iter()
        .filter(|f| matches!(f, ServerFrame::Message { message } if message.id == first))
        .count();
    assert_eq!(dupes, 0, "delivered more than once");
}

#[tokio::test]
async fn a_retry_older_than_the_tail_returns_the_first_message() {
    // The actor remembers keys of its last 4 messages only; older retries
    // are caught by the store in the batch that would have written them.
    let node = TestNode::start_with(|c| c.actors.tail = 4).await;
    let Pair {
        mut ca,
        mut cb,
        conv: g,
        ..
    } = pair_in_group(&node, "a", "b").await;
    let mut sent = Vec::new();
    for i in 0..12 {
        let cmid = format!("m{i}");
        sent.push(
            ok(ca.request(send(&g, &cmid, &cmid)).await)
                .message
                .unwrap(),
        );
    }
    messages(&mut cb, &g, sent.len()).await;
    // Retries of the oldest, twice in one batch's reach, and a new message.
    for r in 1..=2 {
        ca.send_frame(&with_req(send(&g, "m0", "again"), ReqId::Int(r)))
            .await;
    }
    for r in 1..=2 {
        let m = ok(ca.reply_to(&ReqId::Int(r)).await).message.unwrap();
        assert_eq!(m, sent[0], "a retry gets the first message back");
    }
    let fresh = ok(ca.request(send(&g, "m12", "m12")).await)
        .message
        .unwrap();
    let got = messages(&mut cb, &g, 1).await;
    assert_eq!(got[0].id, fresh.id, "the retries were not delivered");
    sent.push(fresh);
    let h = ok(cb.request(history(&g, None, None, None)).await)
        .messages
        .unwrap();
    assert_eq!(h, sent, "nothing stored twice");
}

/// Pages walk exactly what was stored, in both codecs, whether they come
/// from the store, from the conversation's tail (which holds its newest
/// messages, encoded once), or from both.
#[tokio::test]
async fn history_paging_walks_exactly_the_stored_messages() {
    // A tail of 16 (most pages from the store), and one holding the whole
    // conversation (every page from memory).
    for (codec, tail) in [
        (Codec::MsgPack, 16),
        (Codec::Json, 16),
        (Codec::Json, 1024),
        (Codec::MsgPack, 1024),
    ] {
        walk_exactly(codec, tail).await;
    }
}

async fn walk_exactly(codec: Codec, tail: usize) {
    const N: usize = 237;
    let node = TestNode::start_with(|c| c.actors.tail = tail).await;
    let a = node.user(&unique("a")).await;
    let mut ca = connect(node.addr, &a.access, codec).await;
    let b = node.user(&unique("b")).await;
    let g = group(&mut ca, &[&b.id]).await;
    let mut stored = Vec::new();
    for i in 0..N {
        stored.push(send_stored(&mut ca, &g, &format!("p{i}"), &i.to_string()).await);
    }

    // Backwards from the newest with `before`.
    let mut back: Vec<Message> = Vec::new();
    let mut before: Option<MessageId> = None;
    loop {
        let page = ok(ca
            .request(history(&g, before.map(|b| b.0), None, Some(50)))
            .await);
        let msgs = page.messages.unwrap();
        assert!(msgs.windows(2).all(|w| w[0].id < w[1].id), "page ascending");
        if let Some(first) = msgs.first() {
            before = Some(first.id);
        }
        let more = page.more.unwrap();
        let mut msgs = msgs;
        msgs.extend(back);
        back = msgs;
        if !more {
            break;
        }
    }
    assert_eq!(back, stored);

    // Forwards from the start with `after` (catching up), across the tail.
    let mut fwd: Vec<Message> = Vec::new();
    let mut after = 0u64;
    loop {
        let page = ok(ca.request(history(&g, None, Some(after), Some(40))).await);
        let msgs = page.messages.unwrap();
        if let Some(last) = msgs.last() {
            after = last.id.0;
        }
        fwd.extend(msgs);
        if !page.more.unwrap() {
            break;
        }
    }
    assert_eq!(fwd, stored);

    // A window with both bounds.
    let (lo, hi) = (stored[10].id.0, stored[20].id.0);
    let page = ok(ca.request(history(&g, Some(hi), Some(lo), Some(200))).await);
    assert_eq!(page.messages.unwrap(), stored[11..20].to_vec());
    assert_eq!(page.more, Some(false));

    // Default limit is 50.
    let page = ok(ca.request(history(&g, None, None, None)).await);
    assert_eq!(page.messages.unwrap(), stored[N - 50..].to_vec());
    assert_eq!(page.more, Some(true));
}

#[tokio::test]
async fn a_member_that_reconnects_catches_up_with_history_after() {
    let node = TestNode::start().await;
    let a = node.user(&unique("a")).await;
    let b = node.user(&unique("b")).await;
    let mut ca = connect(node.addr, &a.access, Codec::Json).await;
    let g = group(&mut ca, &[&b.id]).await;
    let mut cb = connect(node.addr, &b.access, Codec::Json).await;
    let seen = ok(ca.request(send(&g, "before", "seen live")).await)
        .message
        .unwrap();
    messages(&mut cb, &g, 1).await;
    cb.ws.close(None).await.unwrap();
    let mut missed = Vec::new();
    for i in 0..5 {
        missed.push(
            ok(ca.request(send(&g, &format!("gap{i}"), "missed")).await)
                .message
                .unwrap(),
        );
    }
    let mut cb = connect(node.addr, &b.access, Codec::MsgPack).await;
    let page = ok(cb.request(history(&g, None, Some(seen.id.0), None)).await);
    assert_eq!(page.messages.unwrap(), missed);
    // And live delivery resumes on the new connection.
    let live = ok(ca.request(send(&g, "after", "live again")).await)
        .message
        .unwrap();
    assert_eq!(messages(&mut cb, &g, 1).await, vec![live]);
}

#[tokio::test]
async fn unread_counts_and_conversation_order() {
    let node = TestNode::start().await;
    let Pair {
        b,
        mut ca,
        mut cb,
        conv: g1,
        ..
    } = pair_in_group(&node, "a", "b").await;
    let g2 = group(&mut ca, &[&b.id]).await;
    let mut last = None;
    for i in 0..3 {
        last = Some(
            ok(ca.request(send(&g1, &format!("x{i}"), "x")).await)
                .message
                .unwrap(),
        );
    }
    ok(ca.request(send(&g2, "y", "y")).await);
    let list = ok(cb
        .request(ClientFrame::Conversations {
            req: None,
            limit: None,
            before: None,
        })
        .await)
    .conversations
    .unwrap();
    let ids: Vec<_> = list.iter().map(|s| s.conversation.id.clone()).collect();
    assert_eq!(ids, vec![g2.clone(), g1.clone()], "newest activity first");
    assert_eq!(list[0].unread, 1);
    assert_eq!(list[1].unread, 3);
    ok(cb
        .request(ClientFrame::Read {
            req: None,
            conversation: g1.clone(),
            up_to: last.unwrap().id,
        })
        .await);
    let list = ok(cb
        .request(ClientFrame::Conversations {
            req: None,
            limit: Some(1),
            before: None,
        })
        .await)
    .conversations
    .unwrap();
    assert_eq!(list.len(), 1, "limit applies");
    let list = ok(cb
        .request(ClientFrame::Conversations {
            req: None,
            limit: None,
            before: None,
        })
        .await)
    .conversations
    .unwrap();
    assert_eq!(list[1].unread, 0);
}
