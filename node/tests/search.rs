//! Search (docs/protocol.md, "search"), end to end on a node with the
//! embedded index: messages found by words and phrases once the outbox has
//! indexed them, filters, paging, highlights; a stranger and a member who
//! left find nothing; an edit is found by its new words and not its old
//! one, a delete is gone, both within 5 seconds.

mod common;

use std::time::Duration;

use chat_protocol::codec::Codec;
use chat_protocol::MessageId;
use common::media::{encode, upload};
use common::*;
use serde_json::Value;

/// The node's answer to a search, as `who`.
async fn search(node: &TestNode, who: &TestUser, query: &str) -> (u16, Value) {
    call_json(
        node.addr,
        "GET",
        &format!("/v1/search?{query}"),
        Some(&who.access),
        None,
    )
    .await
}

fn ids(v: &Value) -> Vec<String> {
    v["results"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|x| x["message"]["id"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until the search `query` finds exactly `want` (ids, newest
/// first), within `within`.
async fn finds(node: &TestNode, who: &TestUser, query: &str, want: &[MessageId], within: Duration) {
    let want: Vec<String> = want.iter().map(|m| m.0.to_string()).collect();
    eventually_within(&format!("search {query}"), within, || {
        let want = want.clone();
        async move {
            let (status, v) = search(node, who, query).await;
            if status != 200 {
                return Err(format!("{status} {v}"));
            }
            let got = ids(&v);
            if got == want {
                Ok(())
            } else {
                Err(format!("found {got:?}, want {want:?}"))
            }
        }
    })
    .await
}

async fn sent(c: &mut Client, conv: &chat_protocol::ConversationId, body: &str) -> MessageId {
    ok(c.request(frames::send(conv, &unique("m"), body)).await)
        .message
        .unwrap()
        .id
}

fn q(text: &str) -> String {
    format!("q={}", encode(text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn words_phrases_filters_and_pages() {
    let node = TestNode::start().await;
    let ann = node.user(&unique("sann")).await;
    let bob = node.user(&unique("sbob")).await;
    let cat = node.user(&unique("scat")).await;
    let mut a = connect(node.addr, &ann.access, Codec::Json).await;
    let mut b = connect(node.addr, &bob.access, Codec::Json).await;
    let conv = group(&mut a, &[&bob.id]).await;
    let m1 = sent(&mut a, &conv, "Lunch at the caf\u{e9} on Friday?").await;
    let m2 = ok(b
        .request(frames::send(
            &conv,
            &unique("m"),
            "Running late for lunch, sorry",
        ))
        .await)
    .message
    .unwrap();
    let (m2, t2) = (m2.id, m2.ts);
    // The time filters below split m2 from m3 by `ts` (milliseconds): the
    // clock must have moved past m2's before m3 is sent (CI once sent both
    // in one millisecond).
    eventually("the clock passes m2's millisecond", || async {
        if chat_protocol::now_ms() > t2 {
            Ok(())
        } else {
            Err(format!("now {} <= {t2}", chat_protocol::now_ms()))
        }
    })
    .await;
    let m3 = sent(
        &mut a,
        &conv,
        "friday lunch works, see https://example.com/menu",
    )
    .await;
    let (_, file) = upload(&node, &bob, "menu.pdf", b"%PDF-1.4 menu".to_vec()).await;
    let m4 = ok(b
        .request(frames::send_files(
            &conv,
            &unique("m"),
            "the menu",
            &[file["id"].as_str().unwrap()],
        ))
        .await)
    .message
    .unwrap()
    .id;
    let wait = Duration::from_secs(10);
    // Words in any case and form, accents folded; newest first.
    finds(&node, &ann, &q("LUNCH"), &[m3, m2, m1], wait).await;
    finds(&node, &bob, &q("runs"), &[m2], wait).await;
    finds(&node, &bob, &q("cafe"), &[m1], wait).await;
    // A phrase, in order.
    finds(&node, &ann, &q("\"friday lunch\""), &[m3], wait).await;
    // Filters, with and without words.
    finds(
        &node,
        &ann,
        &format!("{}&from={}", q("lunch"), ann.id),
        &[m3, m1],
        wait,
    )
    .await;
    finds(&node, &ann, "has=attachment", &[m4], wait).await;
    finds(&node, &ann, "has=link", &[m3], wait).await;
    let ts = |v: &Value| v["results"][0]["message"]["ts"].as_u64().unwrap();
    let (_, v) = search(&node, &ann, &q("works")).await;
    let t3 = ts(&v);
    finds(
        &node,
        &ann,
        &format!("{}&before={t3}", q("lunch")),
        &[m2, m1],
        wait,
    )
    .await;
    finds(
        &node,
        &ann,
        &format!("{}&after={}", q("lunch"), t3 - 1),
        &[m3],
        wait,
    )
    .await;
    finds(
        &node,
        &ann,
        &format!("{}&conversation={conv}", q("menu")),
        &[m4, m3],
        wait,
    )
    .await;
    // Highlights mark the words; the message comes whole, links signed.
    let (_, v) = search(&node, &ann, &q("cafe")).await;
    let h = v["results"][0]["highlights"][0].as_str().unwrap();
    assert!(h.contains("<mark>caf\u{e9}</mark>"), "{h}");
    let (_, v) = search(&node, &ann, "has=attachment").await;
    assert!(
        v["results"][0]["message"]["attachments"][0]["url"].is_string(),
        "{v}"
    );
    // Pages.
    let (_, v) = search(&node, &ann, &format!("{}&limit=2", q("lunch"))).await;
    assert_eq!(ids(&v), [m3.0.to_string(), m2.0.to_string()]);
    let cursor = v["next_cursor"].as_str().expect("more to come").to_owned();
    let (_, v) = search(
        &node,
        &ann,
        &format!("{}&limit=2&cursor={cursor}", q("lunch")),
    )
    .await;
    assert_eq!(ids(&v), [m1.0.to_string()]);
    assert!(v.get("next_cursor").is_none(), "{v}");
    // A stranger finds nothing, not even by naming the conversation.
    let (status, v) = search(&node, &cat, &q("lunch")).await;
    assert_eq!((status, ids(&v).len()), (200, 0), "{v}");
    let (_, v) = search(&node, &cat, &format!("{}&conversation={conv}", q("lunch"))).await;
    assert!(ids(&v).is_empty(), "{v}");
    // Bad requests.
    for bad in [
        "limit=0",
        "limit=101",
        "has=photos",
        "cursor=x",
        "from=bad%20id",
        "nope=1",
    ] {
        let (status, v) = search(&node, &ann, bad).await;
        assert_eq!(status, 400, "{bad}: {v}");
    }
    let long = "a ".repeat(300);
    let (status, _) = search(&node, &ann, &q(&long)).await;
    assert_eq!(status, 400);
    let (status, _) = call_json(node.addr, "GET", "/v1/search?q=x", None, None).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_and_deletes_change_what_is_found_within_five_seconds() {
    let node = TestNode::start().await;
    let ann = node.user(&unique("sedit")).await;
    let bob = node.user(&unique("sedit")).await;
    let mut a = connect(node.addr, &ann.access, Codec::Json).await;
    let conv = group(&mut a, &[&bob.id]).await;
    let m = ok(a
        .request(frames::send(&conv, &unique("m"), "meet at noon"))
        .await)
    .message
    .unwrap()
    .id;
    let gone = ok(a
        .request(frames::send(&conv, &unique("m"), "bring snacks"))
        .await)
    .message
    .unwrap()
    .id;
    finds(&node, &bob, &q("noon"), &[m], Duration::from_secs(10)).await;
    finds(&node, &bob, &q("snacks"), &[gone], Duration::from_secs(10)).await;
    ok(a.request(frames::edit(&conv, m, "meet at dusk")).await);
    ok(a.request(frames::delete(&conv, gone)).await);
    let five = Duration::from_secs(5);
    finds(&node, &bob, &q("dusk"), &[m], five).await;
    finds(&node, &bob, &q("noon"), &[], five).await;
    finds(&node, &bob, &q("snacks"), &[], five).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_who_left_finds_nothing_more() {
    let node = TestNode::start().await;
    let ann = node.user(&unique("sleft")).await;
    let bob = node.user(&unique("sleft")).await;
    let mut a = connect(node.addr, &ann.access, Codec::Json).await;
    let mut b = connect(node.addr, &bob.access, Codec::Json).await;
    let conv = group(&mut a, &[&bob.id]).await;
    let m = ok(a
        .request(frames::send(&conv, &unique("m"), "secret plans"))
        .await)
    .message
    .unwrap()
    .id;
    finds(&node, &bob, &q("plans"), &[m], Duration::from_secs(10)).await;
    ok(b.request(chat_protocol::ClientFrame::Leave {
        req: None,
        conversation: conv.clone(),
    })
    .await);
    let (_, v) = search(&node, &bob, &q("plans")).await;
    assert!(ids(&v).is_empty(), "{v}");
    let (_, v) = search(&node, &ann, &q("plans")).await;
    assert_eq!(ids(&v), [m.0.to_string()]);
}
