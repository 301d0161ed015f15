//! The search contract on OpenSearch (a real node, scripts/opensearch.sh),
//! in an index of this run's own; and what only a shared index does: two
//! handles (two chat nodes) see each other's writes at once.

use chat_protocol::{ConversationId, MessageId, UserId};
use chat_search::opensearch::OpenSearchIndex;
use chat_search::{conformance, Doc, SearchIndex, SearchQuery, Terms};
use chat_testkit::OpenSearchServer;

fn prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("test{nanos:x}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_keeps_the_contract_and_is_shared() {
    let server = tokio::task::spawn_blocking(OpenSearchServer::start)
        .await
        .unwrap();
    let prefix = prefix();
    let index = OpenSearchIndex::open(&server.url, &prefix).await.unwrap();
    conformance::run_all(&index).await;

    let other = OpenSearchIndex::open(&server.url, &prefix).await.unwrap();
    let c = ConversationId::new(&format!("shared-{prefix}")).unwrap();
    let doc = Doc {
        conversation: c.clone(),
        id: MessageId(u64::MAX - 5),
        sender: UserId::new("ann").unwrap(),
        ts: 1,
        body: "written through one node".into(),
        has_attachment: false,
        has_link: false,
    };
    index.apply(&c, vec![doc], Vec::new(), 3).await.unwrap();
    assert_eq!(other.cursor(&c).await.unwrap(), 3);
    let q = SearchQuery {
        terms: Terms::parse("written"),
        conversations: vec![c.clone()],
        limit: 5,
        ..SearchQuery::default()
    };
    let hits = other.search(&q).await.unwrap().hits;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].id, MessageId(u64::MAX - 5), "ids past i64 survive");
    other.clear().await.unwrap();
    assert_eq!(index.cursor(&c).await.unwrap(), 0);
}
