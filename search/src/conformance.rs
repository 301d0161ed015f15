//! The contract of [`SearchIndex`] as executable checks: a backend is
//! correct when [`run_all`] returns without panicking. Each check makes up
//! its own conversation ids, so the suite runs again and again against an
//! index that keeps its data (an OpenSearch cluster).

use std::sync::atomic::{AtomicU64, Ordering};

use chat_protocol::{ConversationId, MessageId, UserId};

use crate::{Doc, Has, SearchIndex, SearchQuery, Terms};

fn unique(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{tag}-{nanos:x}-{}", N.fetch_add(1, Ordering::Relaxed))
}

fn conv(tag: &str) -> ConversationId {
    ConversationId::new(&unique(tag)).unwrap()
}

fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

fn doc(c: &ConversationId, id: u64, sender: &str, body: &str) -> Doc {
    Doc {
        conversation: c.clone(),
        id: MessageId(id),
        sender: user(sender),
        ts: id,
        body: body.into(),
        has_attachment: false,
        has_link: crate::has_link(body),
    }
}

fn query(q: &str, conversations: &[&ConversationId]) -> SearchQuery {
    SearchQuery {
        terms: Terms::parse(q),
        conversations: conversations.iter().map(|c| (*c).clone()).collect(),
        limit: 50,
        ..SearchQuery::default()
    }
}

async fn ids(index: &dyn SearchIndex, q: &SearchQuery) -> Vec<u64> {
    index
        .search(q)
        .await
        .expect("search")
        .hits
        .iter()
        .map(|h| h.id.0)
        .collect()
}

/// Words in any case and form, accents folded, phrases in order, newest
/// first; only the conversations asked.
pub async fn check_words_and_phrases(index: &dyn SearchIndex) {
    let a = conv("sa");
    let b = conv("sb");
    index
        .apply(
            &a,
            vec![
                doc(&a, 10, "ann", "Lunch on Friday at the caf\u{e9}?"),
                doc(&a, 11, "bob", "I was running late, sorry"),
                doc(&a, 12, "ann", "friday lunch works"),
                doc(&a, 13, "bob", "see https://example.com for the menu"),
            ],
            Vec::new(),
            4,
        )
        .await
        .expect("apply");
    index
        .apply(
            &b,
            vec![doc(&b, 20, "cat", "lunch elsewhere")],
            Vec::new(),
            1,
        )
        .await
        .expect("apply");
    // Any case; newest first.
    assert_eq!(ids(index, &query("LUNCH", &[&a])).await, [12, 10]);
    // Stemming: "runs" finds "running".
    assert_eq!(ids(index, &query("runs", &[&a])).await, [11]);
    // Accents folded, both ways.
    assert_eq!(ids(index, &query("cafe", &[&a])).await, [10]);
    assert_eq!(ids(index, &query("caf\u{e9}", &[&a])).await, [10]);
    // Every word must match.
    assert_eq!(ids(index, &query("lunch works", &[&a])).await, [12]);
    // A phrase matches in order only.
    assert_eq!(ids(index, &query("\"friday lunch\"", &[&a])).await, [12]);
    assert_eq!(
        ids(index, &query("\"lunch friday\"", &[&a])).await,
        Vec::<u64>::new()
    );
    // Only the conversations asked.
    assert_eq!(ids(index, &query("lunch", &[&a, &b])).await, [20, 12, 10]);
    assert_eq!(ids(index, &query("lunch", &[&b])).await, [20]);
    assert_eq!(ids(index, &query("lunch", &[])).await, Vec::<u64>::new());
    // Syntax is not syntax.
    assert_eq!(
        ids(index, &query("c++ a:b -x", &[&a])).await,
        Vec::<u64>::new()
    );
    // Highlights mark the words, and escape the rest.
    let hits = index.search(&query("cafe", &[&a])).await.unwrap().hits;
    let h = &hits[0].highlights[0];
    assert!(h.contains("<mark>caf\u{e9}</mark>"), "{h}");
    assert_eq!(hits[0].conversation, a);
    let c = conv("sc");
    index
        .apply(
            &c,
            vec![doc(&c, 30, "ann", "<b>bold</b> claim")],
            Vec::new(),
            1,
        )
        .await
        .unwrap();
    let h = &index.search(&query("claim", &[&c])).await.unwrap().hits[0].highlights[0];
    assert!(
        h.contains("&lt;b&gt;") && h.contains("<mark>claim</mark>"),
        "{h}"
    );
}

/// Filters alone select; they narrow words too.
pub async fn check_filters(index: &dyn SearchIndex) {
    let a = conv("sf");
    let mut with_file = doc(&a, 103, "bob", "the plan, attached");
    with_file.has_attachment = true;
    index
        .apply(
            &a,
            vec![
                doc(&a, 100, "ann", "plan one"),
                doc(&a, 101, "bob", "plan two"),
                doc(&a, 102, "ann", "plan at www.example.com"),
                with_file,
            ],
            Vec::new(),
            4,
        )
        .await
        .unwrap();
    let mut q = query("", &[&a]);
    assert_eq!(
        ids(index, &q).await,
        [103, 102, 101, 100],
        "no words: filters alone"
    );
    q.from = Some(user("ann"));
    assert_eq!(ids(index, &q).await, [102, 100]);
    q.from = None;
    q.after = Some(100);
    q.before = Some(103);
    assert_eq!(ids(index, &q).await, [102, 101], "bounds are exclusive");
    q.after = None;
    q.before = None;
    q.has = Some(Has::Link);
    assert_eq!(ids(index, &q).await, [102]);
    q.has = Some(Has::Attachment);
    assert_eq!(ids(index, &q).await, [103]);
    let mut q = query("plan", &[&a]);
    q.from = Some(user("bob"));
    assert_eq!(ids(index, &q).await, [103, 101]);
}

/// Pages of `limit`, each below the last.
pub async fn check_paging(index: &dyn SearchIndex) {
    let a = conv("sp");
    let docs = (1..=25)
        .map(|n| doc(&a, 1000 + n, "ann", &format!("note {n}")))
        .collect();
    index.apply(&a, docs, Vec::new(), 25).await.unwrap();
    let mut q = query("note", &[&a]);
    q.limit = 10;
    let mut seen = Vec::new();
    loop {
        let page = index.search(&q).await.unwrap();
        assert!(page.hits.len() <= 10);
        seen.extend(page.hits.iter().map(|h| h.id.0));
        if !page.more {
            break;
        }
        q.below = page.hits.last().map(|h| h.id);
    }
    let want: Vec<u64> = (1001..=1025).rev().collect();
    assert_eq!(seen, want);
}

/// An edit is found by its new words and not its old; a delete is gone;
/// the cursor moves with them.
pub async fn check_edits_deletes_and_cursor(index: &dyn SearchIndex) {
    let a = conv("se");
    assert_eq!(index.cursor(&a).await.unwrap(), 0);
    index
        .apply(
            &a,
            vec![
                doc(&a, 1, "ann", "meet at noon"),
                doc(&a, 2, "ann", "bring snacks"),
            ],
            Vec::new(),
            2,
        )
        .await
        .unwrap();
    assert_eq!(index.cursor(&a).await.unwrap(), 2);
    index
        .apply(
            &a,
            vec![doc(&a, 1, "ann", "meet at dusk")],
            vec![MessageId(2)],
            4,
        )
        .await
        .unwrap();
    assert_eq!(index.cursor(&a).await.unwrap(), 4);
    assert_eq!(ids(index, &query("dusk", &[&a])).await, [1]);
    assert_eq!(ids(index, &query("noon", &[&a])).await, Vec::<u64>::new());
    assert_eq!(ids(index, &query("snacks", &[&a])).await, Vec::<u64>::new());
    assert_eq!(
        ids(index, &query("", &[&a])).await,
        [1],
        "one document per message"
    );

    // A job repeated (a node died before it was marked done) applies the
    // same batch again, here with an edit and new messages together.
    let batch = || {
        vec![
            doc(&a, 1, "ann", "meet at dawn"),
            doc(&a, 5, "bob", "fresh rolls"),
            doc(&a, 6, "bob", "and coffee"),
        ]
    };
    index.apply(&a, batch(), Vec::new(), 7).await.unwrap();
    index.apply(&a, batch(), Vec::new(), 7).await.unwrap();
    assert_eq!(ids(index, &query("", &[&a])).await, [6, 5, 1]);
    assert_eq!(ids(index, &query("dawn", &[&a])).await, [1]);
    assert_eq!(ids(index, &query("dusk", &[&a])).await, Vec::<u64>::new());
}

/// Everything.
pub async fn run_all(index: &dyn SearchIndex) {
    check_words_and_phrases(index).await;
    check_filters(index).await;
    check_paging(index).await;
    check_edits_deletes_and_cursor(index).await;
}
