//! The index in OpenSearch, for clusters: nodes keep nothing of it, and
//! every node's searches see every node's indexing.
//!
//! One index (`<prefix>-messages`) holds a document per live message
//! (`_id` `m <conversation> <id>`) and one per conversation holding its
//! cursor (`_id` `c <conversation>`). A batch is written with `_bulk`, its
//! messages first and the cursor after them only once every message item
//! succeeded, with `refresh=wait_for`: a cursor never runs ahead of the
//! documents, and a search after `apply` sees them. Waiting for the next
//! scheduled refresh (every second; set on the index, which also keeps
//! OpenSearch from pausing refreshes on an index nobody searched lately)
//! lets concurrent batches share one, where forcing a refresh per batch
//! cost most of the indexing time. The analyzer is the
//! embedded index's (standard words, lower case, ASCII folding, Porter
//! stemming), so both backends match alike; highlights come HTML-encoded
//! with `<mark>` around the matched words. Plain HTTP through reqwest: the
//! few calls chat search needs do not justify a client crate.

use std::time::Duration;

use async_trait::async_trait;
use chat_protocol::{ConversationId, MessageId};
use serde_json::{json, Value};

use crate::{Doc, Has, Hit, Hits, SearchError, SearchIndex, SearchQuery};

/// Characters of a highlight fragment.
const FRAGMENT_CHARS: usize = 160;

fn unavailable(e: impl std::fmt::Display) -> SearchError {
    SearchError::Unavailable(e.to_string())
}

/// An OpenSearch index.
pub struct OpenSearchIndex {
    http: reqwest::Client,
    /// `http://host:9200/<index>`.
    base: String,
}

impl OpenSearchIndex {
    /// The index `<prefix>-messages` at `url`, made (with its analyzer and
    /// mapping) when missing.
    pub async fn open(url: &str, prefix: &str) -> Result<OpenSearchIndex, SearchError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(unavailable)?;
        let index = OpenSearchIndex {
            http,
            base: format!("{}/{prefix}-messages", url.trim_end_matches('/')),
        };
        index.create().await?;
        Ok(index)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(u16, Value), SearchError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            let ndjson = path.starts_with("/_bulk");
            req = req
                .header(
                    "content-type",
                    if ndjson {
                        "application/x-ndjson"
                    } else {
                        "application/json"
                    },
                )
                .body(body);
        }
        let res = req.send().await.map_err(unavailable)?;
        let status = res.status().as_u16();
        let bytes = res.bytes().await.map_err(unavailable)?;
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value))
    }

    async fn create(&self) -> Result<(), SearchError> {
        let (status, _) = self.call(reqwest::Method::HEAD, "", None).await?;
        if status == 200 {
            return Ok(());
        }
        let body = json!({
            "settings": {
                "index": {"refresh_interval": "1s"},
                "analysis": {"analyzer": {"chat_en": {
                    "type": "custom",
                    "tokenizer": "standard",
                    "filter": ["lowercase", "asciifolding", "porter_stem"],
                }}},
            },
            "mappings": {"properties": {
                "kind": {"type": "keyword"},
                "conversation": {"type": "keyword"},
                "id": {"type": "unsigned_long"},
                "sender": {"type": "keyword"},
                "ts": {"type": "unsigned_long"},
                "has": {"type": "keyword"},
                "body": {"type": "text", "analyzer": "chat_en"},
                "cursor": {"type": "unsigned_long", "index": false},
            }},
        });
        let (status, v) = self
            .call(reqwest::Method::PUT, "", Some(body.to_string()))
            .await?;
        // Another node made it first: as good.
        let raced = v["error"]["type"] == "resource_already_exists_exception";
        if (200..300).contains(&status) || raced {
            Ok(())
        } else {
            Err(unavailable(format!("creating the index: {status} {v}")))
        }
    }

    /// Writes `lines`; with `visible`, returns once a refresh shows them
    /// (and everything written before them).
    async fn bulk(&self, lines: &[Value], visible: bool) -> Result<(), SearchError> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut body = String::new();
        for l in lines {
            body.push_str(&l.to_string());
            body.push('\n');
        }
        let path = if visible {
            "/_bulk?refresh=wait_for"
        } else {
            "/_bulk"
        };
        let (status, v) = self.call(reqwest::Method::POST, path, Some(body)).await?;
        if !(200..300).contains(&status) {
            return Err(unavailable(format!("bulk: {status} {v}")));
        }
        if v["errors"] == true {
            // A delete of a document never indexed is not a failure.
            let failed = v["items"].as_array().into_iter().flatten().find(|i| {
                let (op, r) = i.as_object().and_then(|o| o.iter().next()).unzip();
                let s = r.and_then(|r| r["status"].as_u64()).unwrap_or(500);
                s >= 300 && !(op.map(String::as_str) == Some("delete") && s == 404)
            });
            if let Some(item) = failed {
                return Err(unavailable(format!("bulk item: {item}")));
            }
        }
        Ok(())
    }

    fn query(q: &SearchQuery) -> Value {
        let mut must = Vec::new();
        if !q.terms.words.is_empty() {
            must.push(
                json!({"match": {"body": {"query": q.terms.words.join(" "), "operator": "and"}}}),
            );
        }
        for p in &q.terms.phrases {
            must.push(json!({"match_phrase": {"body": p}}));
        }
        let mut filter = vec![
            json!({"term": {"kind": "m"}}),
            json!({"terms": {"conversation": q.conversations.iter().map(|c| c.as_str()).collect::<Vec<_>>()}}),
        ];
        if let Some(from) = &q.from {
            filter.push(json!({"term": {"sender": from.as_str()}}));
        }
        if let Some(has) = q.has {
            let v = match has {
                Has::Attachment => "attachment",
                Has::Link => "link",
            };
            filter.push(json!({"term": {"has": v}}));
        }
        let mut ts = serde_json::Map::new();
        if let Some(a) = q.after {
            ts.insert("gt".into(), json!(a));
        }
        if let Some(b) = q.before {
            ts.insert("lt".into(), json!(b));
        }
        if !ts.is_empty() {
            filter.push(json!({"range": {"ts": ts}}));
        }
        if let Some(below) = q.below {
            filter.push(json!({"range": {"id": {"lt": below.0}}}));
        }
        json!({
            "size": q.limit + 1,
            "query": {"bool": {"must": must, "filter": filter}},
            "sort": [{"id": "desc"}],
            "_source": ["conversation", "id"],
            "highlight": {
                "pre_tags": ["<mark>"],
                "post_tags": ["</mark>"],
                "encoder": "html",
                "fields": {"body": {"number_of_fragments": 1, "fragment_size": FRAGMENT_CHARS}},
            },
        })
    }
}

fn message_id(conversation: &ConversationId, id: MessageId) -> String {
    format!("m {conversation} {}", id.0)
}

fn cursor_id(conversation: &ConversationId) -> String {
    format!("c {conversation}")
}

/// `_id`s go in a path: spaces and the rest percent-encoded.
fn path_id(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, UNRESERVED).to_string()
}

/// Everything but RFC 3986's unreserved characters is escaped.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[async_trait]
impl SearchIndex for OpenSearchIndex {
    async fn apply(
        &self,
        conversation: &ConversationId,
        upserts: Vec<Doc>,
        deletes: Vec<MessageId>,
        cursor: u64,
    ) -> Result<(), SearchError> {
        let mut lines = Vec::with_capacity(upserts.len() * 2 + deletes.len());
        for id in deletes {
            lines.push(json!({"delete": {"_id": message_id(conversation, id)}}));
        }
        for d in upserts {
            let mut has = Vec::new();
            if d.has_attachment {
                has.push("attachment");
            }
            if d.has_link {
                has.push("link");
            }
            lines.push(json!({"index": {"_id": message_id(&d.conversation, d.id)}}));
            lines.push(json!({
                "kind": "m",
                "conversation": d.conversation.as_str(),
                "id": d.id.0,
                "sender": d.sender.as_str(),
                "ts": d.ts,
                "has": has,
                "body": d.body,
            }));
        }
        // The messages need not be visible on their own: the cursor's
        // write waits for a refresh, which shows them too.
        self.bulk(&lines, false).await?;
        // Only once the messages are in.
        self.bulk(
            &[
                json!({"index": {"_id": cursor_id(conversation)}}),
                json!({"kind": "c", "conversation": conversation.as_str(), "cursor": cursor}),
            ],
            true,
        )
        .await
    }

    async fn cursor(&self, conversation: &ConversationId) -> Result<u64, SearchError> {
        let path = format!("/_doc/{}", path_id(&cursor_id(conversation)));
        let (status, v) = self.call(reqwest::Method::GET, &path, None).await?;
        match status {
            404 => Ok(0),
            200 => Ok(v["_source"]["cursor"].as_u64().unwrap_or(0)),
            _ => Err(unavailable(format!("cursor: {status} {v}"))),
        }
    }

    async fn search(&self, q: &SearchQuery) -> Result<Hits, SearchError> {
        if q.conversations.is_empty() || q.limit == 0 {
            return Ok(Hits::default());
        }
        let body = Self::query(q).to_string();
        let (status, v) = self
            .call(reqwest::Method::POST, "/_search", Some(body))
            .await?;
        if status != 200 {
            return Err(unavailable(format!("search: {status} {v}")));
        }
        let found = v["hits"]["hits"].as_array().cloned().unwrap_or_default();
        let more = found.len() > q.limit;
        let mut hits = Vec::with_capacity(found.len().min(q.limit));
        for h in found.into_iter().take(q.limit) {
            let conversation = h["_source"]["conversation"]
                .as_str()
                .and_then(|c| ConversationId::new(c).ok());
            let id = h["_source"]["id"].as_u64();
            let (Some(conversation), Some(id)) = (conversation, id) else {
                continue;
            };
            let highlights = h["highlight"]["body"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            hits.push(Hit {
                conversation,
                id: MessageId(id),
                highlights,
            });
        }
        Ok(Hits { hits, more })
    }

    async fn clear(&self) -> Result<(), SearchError> {
        let (status, v) = self.call(reqwest::Method::DELETE, "", None).await?;
        if !(200..300).contains(&status) && status != 404 {
            return Err(unavailable(format!("deleting the index: {status} {v}")));
        }
        self.create().await
    }
}
