//! The search contract on the embedded (tantivy) index, and what only it
//! does: it keeps its documents and cursors across a restart.

use chat_protocol::{ConversationId, MessageId, UserId};
use chat_search::embedded::EmbeddedIndex;
use chat_search::{conformance, Doc, SearchIndex, SearchQuery, Terms};

/// Message 7 of `c`, saying `body`.
fn seventh(c: &ConversationId, body: &str) -> Doc {
    Doc {
        conversation: c.clone(),
        id: MessageId(7),
        sender: UserId::new("ann").unwrap(),
        ts: 7,
        body: body.into(),
        has_attachment: false,
        has_link: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_index_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let index = EmbeddedIndex::open(dir.path()).unwrap();
    conformance::run_all(&index).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_keeps_its_documents_and_cursors_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let c = ConversationId::new("kept").unwrap();
    {
        let index = EmbeddedIndex::open(dir.path()).unwrap();
        let doc = seventh(&c, "durable words");
        index.apply(&c, vec![doc], Vec::new(), 9).await.unwrap();
    }
    let index = EmbeddedIndex::open(dir.path()).unwrap();
    assert_eq!(index.cursor(&c).await.unwrap(), 9);
    let q = SearchQuery {
        terms: Terms::parse("durable"),
        conversations: vec![c.clone()],
        limit: 10,
        ..SearchQuery::default()
    };
    assert_eq!(index.search(&q).await.unwrap().hits.len(), 1);

    // An edit after the restart replaces the document it had before (the
    // index reads back which messages it holds; it is not told).
    let edited = seventh(&c, "lasting words");
    index.apply(&c, vec![edited], Vec::new(), 10).await.unwrap();
    assert!(index.search(&q).await.unwrap().hits.is_empty());
    let every = SearchQuery {
        conversations: vec![c.clone()],
        limit: 10,
        ..SearchQuery::default()
    };
    assert_eq!(index.search(&every).await.unwrap().hits.len(), 1);
    assert_eq!(index.cursor(&c).await.unwrap(), 10);
    index.clear().await.unwrap();
    assert_eq!(index.cursor(&c).await.unwrap(), 0);
    assert!(index.search(&q).await.unwrap().hits.is_empty());
}
