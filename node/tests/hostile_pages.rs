//! Replies that can be large, against a real `chat-node` process over real
//! sockets: every request that returns messages (`history`, `changes` over
//! WebSocket and HTTP, the `conversations` list, the echo of an edit or a
//! reaction) answers pages cut at about `MAX_PAGE_BYTES` as the client's
//! codec encodes them, with `more`, and reserves their bytes before they
//! are built, so clients that pipeline them without reading stay within the
//! node's memory bound, and a JSON client catching up through bodies that
//! escaping makes six times longer gets every message without being cut off.

mod common;

use chat_protocol::limits::MAX_PAGE_BYTES;
use chat_protocol::{ClientFrame, Codec, ConversationId, Message, ServerFrame};
use common::frames::*;
use common::target::{pipeline_unread, Target};
use common::*;
use serde_json::Value;

const SECRET: &str = "hostile-pages-secret-hostile-pages!!";

/// The largest body the node takes, all control characters: 6 times longer
/// as JSON.
fn escaped_body() -> String {
    "\u{1}".repeat(16 * 1024)
}

/// `n` messages of `body` in a new group of `user`'s, sent over MessagePack
/// (a JSON frame could not carry such a body under the frame limit).
async fn filled_group(t: &Target, user: &TestUser, n: usize, body: &str) -> ConversationId {
    let mut c = connect(t.addr(), &user.access, Codec::MsgPack).await;
    let conv = group(&mut c, &[]).await;
    for i in 0..n {
        ok(c.request(send(&conv, &format!("m{i}"), body)).await);
    }
    conv
}

/// The size of a reply as the node wrote it in `codec`.
fn encoded_len(frame: &ServerFrame, codec: Codec) -> usize {
    codec.encode(frame).expect("encodable").len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_changes_to_readers_that_never_read_are_bounded() {
    let t = Target::start(SECRET, &[]).await;
    let user = register(t.addr(), &unique("reader")).await;
    // 200 messages whose page of 200 changes is 19 MB as JSON.
    let conv = filled_group(&t, &user, 200, &escaped_body()).await;
    let frame = serde_json::to_string(&changes(&conv, 0, Some(200))).unwrap();
    let before = t.mark();
    let mut readers = Vec::new();
    for _ in 0..6 {
        let c = connect(t.addr(), &user.access, Codec::Json).await;
        readers.push(pipeline_unread(c, frame.clone()));
    }
    let sent: Vec<usize> = futures_util::future::join_all(readers).await;
    t.assert_bounded(&format!("changes pipelined {sent:?} times"), before)
        .await;
}

/// Reads every change from revision 0 on, `limit` 200 a page, as
/// docs/protocol.md tells a client to catch up; checks each page's size.
async fn catch_up_with_changes(c: &mut Client, conv: &ConversationId) -> Vec<Message> {
    let mut all: Vec<Message> = Vec::new();
    let mut after = 0;
    loop {
        let reply = c.request(changes(conv, after, Some(200))).await;
        let size = encoded_len(&reply, c.codec);
        assert!(size <= MAX_PAGE_BYTES, "a page of changes of {size} bytes");
        let page = ok(reply);
        let messages = page.messages.unwrap();
        assert!(!messages.is_empty(), "a page with more is never empty");
        after = messages.last().unwrap().rev;
        all.extend(messages);
        if !page.more.unwrap() {
            return all;
        }
    }
}

/// Reads all history from the oldest on with `after`, 200 a page.
async fn catch_up_with_history(c: &mut Client, conv: &ConversationId) -> Vec<Message> {
    let mut all: Vec<Message> = Vec::new();
    let mut after = Some(0);
    loop {
        let reply = c.request(history(conv, None, after, Some(200))).await;
        let size = encoded_len(&reply, c.codec);
        assert!(size <= MAX_PAGE_BYTES, "a page of history of {size} bytes");
        let page = ok(reply);
        let messages = page.messages.unwrap();
        after = messages.last().map(|m| m.id.0);
        all.extend(messages);
        if !page.more.unwrap() {
            return all;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_client_catches_up_through_bodies_that_escaping_makes_six_times_longer() {
    let t = Target::start(SECRET, &[]).await;
    let user = register(t.addr(), &unique("catcher")).await;
    let body = escaped_body();
    let conv = filled_group(&t, &user, 200, &body).await;
    for codec in [Codec::Json, Codec::MsgPack] {
        let mut c = connect(t.addr(), &user.access, codec).await;
        let got = catch_up_with_changes(&mut c, &conv).await;
        assert_eq!(got.len(), 200, "{codec:?}: every change once");
        assert!(got.windows(2).all(|w| w[0].rev < w[1].rev));
        assert!(got.iter().all(|m| m.body == body));
        let got = catch_up_with_history(&mut c, &conv).await;
        assert_eq!(got.len(), 200, "{codec:?}: every message once");
        assert!(got.windows(2).all(|w| w[0].id < w[1].id));
        // Still open and answering.
        ok(c.request(ClientFrame::Ping { req: None }).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_over_http_come_in_pages_of_at_most_a_mebibyte() {
    let t = Target::start(SECRET, &[]).await;
    let user = register(t.addr(), &unique("http")).await;
    let conv = filled_group(&t, &user, 200, &escaped_body()).await;
    let mut after = 0u64;
    let mut seen = 0;
    loop {
        let path = format!("/v1/conversations/{conv}/changes?after_rev={after}&limit=200");
        let (status, _, text) = http_full(t.addr(), "GET", &path, Some(&user.access), None).await;
        assert_eq!(status, 200, "{text:.200}");
        assert!(text.len() <= MAX_PAGE_BYTES, "{} bytes", text.len());
        let v: Value = serde_json::from_str(&text).unwrap();
        let messages = v["messages"].as_array().unwrap();
        assert!(!messages.is_empty());
        seen += messages.len();
        after = messages.last().unwrap()["rev"].as_u64().unwrap();
        if !v["more"].as_bool().unwrap() {
            break;
        }
    }
    assert_eq!(seen, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conversations_list_is_cut_at_a_page_and_pages_on() {
    let t = Target::start(SECRET, &[]).await;
    let user = register(t.addr(), &unique("lister")).await;
    let mut c = connect(t.addr(), &user.access, Codec::MsgPack).await;
    // 120 groups whose last message is 96 KiB as JSON: 11 MiB in one list.
    let body = escaped_body();
    let mut made = Vec::new();
    for i in 0..120 {
        let conv = group(&mut c, &[]).await;
        ok(c.request(send(&conv, &format!("m{i}"), &body)).await);
        made.push(conv);
    }
    let mut j = connect(t.addr(), &user.access, Codec::Json).await;
    let mut listed: Vec<ConversationId> = Vec::new();
    let mut before = None;
    loop {
        let reply = j
            .request(ClientFrame::Conversations {
                req: None,
                limit: Some(200),
                before,
            })
            .await;
        let size = encoded_len(&reply, Codec::Json);
        assert!(size <= MAX_PAGE_BYTES, "a list of {size} bytes");
        let page = ok(reply);
        let items = page.conversations.unwrap();
        before = items
            .last()
            .and_then(|s| s.last_message.as_ref())
            .map(|m| m.id);
        listed.extend(items.into_iter().map(|s| s.conversation.id));
        if !page.more.unwrap() {
            break;
        }
    }
    listed.sort();
    made.sort();
    assert_eq!(listed, made, "every conversation once");
}
