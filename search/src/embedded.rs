//! The embedded index: tantivy, in a directory beside the node's data.
//!
//! One document per live message, and one per conversation holding its
//! cursor: both are written in one commit, so the index never claims to
//! have read changes it has not applied. Message ids sort by time across
//! the cluster, so "newest first" is the id's order (a fast field), and a
//! page's cursor is the last id shown. Text is cut into words, lower-cased,
//! folded to ASCII and stemmed (English), for the index and for queries
//! alike; positions are kept, for phrases.
//!
//! Writes go through the one writer tantivy allows, on the blocking pool,
//! and share commits (`commits`); searches read the last commit. The
//! writer's own threads run at the lowest priority (`priority`).
//!
//! Most documents are new messages, and a new message has no document to
//! replace: the writer remembers each conversation's highest message id
//! added, and only an upsert at or below it deletes first (a delete is
//! applied at commit against every segment's terms). Cursors as committed
//! are remembered too, so an index job does not search for its own.

mod commits;
mod priority;

use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chat_protocol::{ConversationId, MessageId};
use tantivy::collector::TopDocs;
use tantivy::query::{
    BooleanQuery, Occur, PhraseQuery, Query, RangeQuery, TermQuery, TermSetQuery,
};
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions, Value,
    STORED, STRING,
};
use tantivy::snippet::SnippetGenerator;
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    TextAnalyzer,
};
use tantivy::{doc, Index, IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument, Term};

use crate::{Has, Hit, Hits, SearchError, SearchIndex, SearchQuery};

/// The analyzer's name in the index.
const ANALYZER: &str = "chat_en";
/// Memory the writer may buffer before it flushes a segment (tantivy's
/// least is 15 MB): commits come often, so batches stay far below it.
const WRITER_BYTES: usize = 16 * 1024 * 1024;
/// Characters of a highlight fragment.
const FRAGMENT_CHARS: usize = 160;
/// Conversations whose highest id, and whose cursor, are remembered: past
/// this the memory is emptied (about 100 bytes each) and read back from the
/// index as needed.
const REMEMBERED: usize = 65_536;

fn unavailable(e: impl std::fmt::Display) -> SearchError {
    SearchError::Unavailable(e.to_string())
}

fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(64))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(Stemmer::new(Language::English))
        .build()
}

#[derive(Clone, Copy)]
struct Fields {
    /// `m` for a message, `c` for a cursor.
    kind: Field,
    /// `<conversation> <id>` of a message, `<conversation>` of a cursor:
    /// what a replacement deletes by.
    key: Field,
    conversation: Field,
    id: Field,
    sender: Field,
    ts: Field,
    has: Field,
    body: Field,
    cursor: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(ANALYZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
        .set_stored();
    let number = NumericOptions::default()
        .set_indexed()
        .set_fast()
        .set_stored();
    let fields = Fields {
        kind: b.add_text_field("kind", STRING),
        key: b.add_text_field("key", STRING),
        conversation: b.add_text_field("conversation", STRING | STORED),
        id: b.add_u64_field("id", number.clone()),
        sender: b.add_text_field("sender", STRING),
        ts: b.add_u64_field("ts", number.clone()),
        has: b.add_text_field("has", STRING),
        body: b.add_text_field("body", text),
        cursor: b.add_u64_field("cursor", NumericOptions::default().set_stored()),
    };
    (b.build(), fields)
}

/// The writer, and what it knows of the documents added through it.
struct Writer {
    w: IndexWriter<TantivyDocument>,
    /// Per conversation, the highest message id added, committed or in the
    /// commit to come. Emptied only with nothing pending (after a commit,
    /// with the reader reloaded before the lock goes; or a rollback), so
    /// that a conversation missing here is read back from the index exactly.
    tops: HashMap<ConversationId, u64>,
}

/// The embedded index.
pub struct EmbeddedIndex {
    reader: IndexReader,
    writer: Arc<Mutex<Writer>>,
    commits: Arc<commits::Commits>,
    /// Cursors as last committed (never ahead of the index: a job that
    /// read a cursor behind repeats changes, which replace themselves).
    cursors: Arc<Mutex<HashMap<ConversationId, u64>>>,
    f: Fields,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Remembers `cursor` for `conversation`, never lowering one known.
fn remember(cursors: &Mutex<HashMap<ConversationId, u64>>, c: &ConversationId, cursor: u64) {
    let mut known = locked(cursors);
    if known.len() >= REMEMBERED && !known.contains_key(c) {
        known.clear();
    }
    let at = known.entry(c.clone()).or_insert(cursor);
    *at = (*at).max(cursor);
}

/// Documents whose `field` holds exactly `value`.
fn exactly(field: Field, value: &str) -> Box<dyn Query> {
    Box::new(TermQuery::new(
        Term::from_field_text(field, value),
        IndexRecordOption::Basic,
    ))
}

/// The highest message id of `conversation` in the last commit (0: none).
fn committed_top(reader: &IndexReader, f: Fields, c: &ConversationId) -> Result<u64, SearchError> {
    let q = BooleanQuery::new(vec![
        (Occur::Must, exactly(f.kind, "m")),
        (Occur::Must, exactly(f.conversation, c.as_str())),
    ]);
    let found = reader
        .searcher()
        .search(
            &q,
            &TopDocs::with_limit(1).order_by_u64_field("id", Order::Desc),
        )
        .map_err(unavailable)?;
    Ok(found.first().and_then(|(id, _)| *id).unwrap_or(0))
}

fn message_key(conversation: &ConversationId, id: MessageId) -> String {
    format!("{conversation} {}", id.0)
}

impl EmbeddedIndex {
    /// The index in `dir` (made when missing).
    pub fn open(dir: &Path) -> Result<EmbeddedIndex, SearchError> {
        std::fs::create_dir_all(dir).map_err(unavailable)?;
        let (schema, f) = schema();
        let directory = tantivy::directory::MmapDirectory::open(dir).map_err(unavailable)?;
        let index = Index::open_or_create(directory, schema).map_err(unavailable)?;
        index.tokenizers().register(ANALYZER, analyzer());
        let writer =
            priority::made_at_low_priority(|| index.writer_with_num_threads(1, WRITER_BYTES))
                .map_err(unavailable)?
                .map_err(unavailable)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(unavailable)?;
        Ok(EmbeddedIndex {
            reader,
            writer: Arc::new(Mutex::new(Writer {
                w: writer,
                tops: HashMap::new(),
            })),
            commits: Arc::default(),
            cursors: Arc::default(),
            f,
        })
    }

    /// The analyzed tokens of `text`, as the index holds its words.
    fn tokens(&self, text: &str) -> Vec<String> {
        let mut analyzer = analyzer();
        let mut stream = analyzer.token_stream(text);
        let mut out = Vec::new();
        while let Some(t) = stream.next() {
            out.push(t.text.clone());
        }
        out
    }

    /// The query of `terms` on the body: every word, every phrase.
    fn text_query(&self, q: &SearchQuery) -> Vec<Box<dyn Query>> {
        let f = self.f;
        let mut parts: Vec<Box<dyn Query>> = Vec::new();
        let term = |t: &str| Term::from_field_text(f.body, t);
        let mut add = |tokens: Vec<String>| match tokens.len() {
            0 => {}
            1 => parts.push(Box::new(TermQuery::new(
                term(&tokens[0]),
                IndexRecordOption::WithFreqsAndPositions,
            ))),
            _ => parts.push(Box::new(PhraseQuery::new(
                tokens.iter().map(|t| term(t)).collect(),
            ))),
        };
        for w in &q.terms.words {
            add(self.tokens(w));
        }
        for p in &q.terms.phrases {
            add(self.tokens(p));
        }
        parts
    }

    fn query(&self, q: &SearchQuery) -> BooleanQuery {
        let f = self.f;
        let mut must: Vec<(Occur, Box<dyn Query>)> = vec![
            (Occur::Must, exactly(f.kind, "m")),
            (
                Occur::Must,
                Box::new(TermSetQuery::new(
                    q.conversations
                        .iter()
                        .map(|c| Term::from_field_text(f.conversation, c.as_str())),
                )),
            ),
        ];
        for part in self.text_query(q) {
            must.push((Occur::Must, part));
        }
        if let Some(from) = &q.from {
            must.push((Occur::Must, exactly(f.sender, from.as_str())));
        }
        if let Some(has) = q.has {
            let v = match has {
                Has::Attachment => "attachment",
                Has::Link => "link",
            };
            must.push((Occur::Must, exactly(f.has, v)));
        }
        let u64_range = |field, lower: Bound<u64>, upper: Bound<u64>| -> Box<dyn Query> {
            let t = |v| Term::from_field_u64(field, v);
            Box::new(RangeQuery::new(lower.map(t), upper.map(t)))
        };
        if q.after.is_some() || q.before.is_some() {
            must.push((
                Occur::Must,
                u64_range(
                    f.ts,
                    q.after.map_or(Bound::Unbounded, Bound::Excluded),
                    q.before.map_or(Bound::Unbounded, Bound::Excluded),
                ),
            ));
        }
        if let Some(below) = q.below {
            must.push((
                Occur::Must,
                u64_range(f.id, Bound::Unbounded, Bound::Excluded(below.0)),
            ));
        }
        BooleanQuery::new(must)
    }
}

#[async_trait]
impl SearchIndex for EmbeddedIndex {
    async fn apply(
        &self,
        conversation: &ConversationId,
        upserts: Vec<crate::Doc>,
        deletes: Vec<MessageId>,
        cursor: u64,
    ) -> Result<(), SearchError> {
        let f = self.f;
        let (writer, reader) = (self.writer.clone(), self.reader.clone());
        let commits = self.commits.clone();
        let c = conversation.clone();
        let n = tokio::task::spawn_blocking(move || {
            let mut guard = locked(&writer);
            let Writer { w, tops } = &mut *guard;
            let top = match tops.get(&c) {
                Some(top) => *top,
                None => committed_top(&reader, f, &c)?,
            };
            for id in &deletes {
                w.delete_term(Term::from_field_text(f.key, &message_key(&c, *id)));
            }
            let mut added_top = top;
            let mut added = Ok(());
            for d in upserts {
                let key = message_key(&d.conversation, d.id);
                if d.id.0 <= top {
                    // It may have a document (an edit, a reaction, a job
                    // repeated): this one replaces it.
                    w.delete_term(Term::from_field_text(f.key, &key));
                }
                added_top = added_top.max(d.id.0);
                let mut doc = doc!(
                    f.kind => "m",
                    f.key => key,
                    f.conversation => d.conversation.as_str(),
                    f.id => d.id.0,
                    f.sender => d.sender.as_str(),
                    f.ts => d.ts,
                    f.body => d.body,
                );
                if d.has_attachment {
                    doc.add_text(f.has, "attachment");
                }
                if d.has_link {
                    doc.add_text(f.has, "link");
                }
                if let Err(e) = w.add_document(doc) {
                    added = Err(unavailable(e));
                    break;
                }
            }
            // Also when an add failed: those before it are in the writer,
            // and a retry must replace them.
            tops.insert(c.clone(), added_top);
            added?;
            w.delete_term(Term::from_field_text(f.key, c.as_str()));
            w.add_document(doc!(
                f.kind => "c",
                f.key => c.as_str(),
                f.cursor => cursor,
            ))
            .map_err(unavailable)?;
            Ok::<_, SearchError>(commits.added())
        })
        .await
        .map_err(unavailable)??;
        let (writer, reader) = (self.writer.clone(), self.reader.clone());
        self.commits
            .wait(n, move |commits| {
                let mut guard = locked(&writer);
                let to = commits.count();
                if let Err(e) = guard.w.commit() {
                    // Nothing of these applies stays for a later commit,
                    // nor what was remembered of them.
                    let _ = guard.w.rollback();
                    guard.tops.clear();
                    return Err((to, unavailable(e)));
                }
                // Reloaded with the writer held: a top read back from the
                // index by the next apply includes this commit.
                reader.reload().map_err(|e| (to, unavailable(e)))?;
                if guard.tops.len() > REMEMBERED {
                    guard.tops.clear();
                }
                Ok(to)
            })
            .await?;
        remember(&self.cursors, conversation, cursor);
        Ok(())
    }

    async fn cursor(&self, conversation: &ConversationId) -> Result<u64, SearchError> {
        if let Some(cursor) = locked(&self.cursors).get(conversation) {
            return Ok(*cursor);
        }
        let searcher = self.reader.searcher();
        let q = TermQuery::new(
            Term::from_field_text(self.f.key, conversation.as_str()),
            IndexRecordOption::Basic,
        );
        let found = searcher
            .search(&q, &TopDocs::with_limit(1).order_by_score())
            .map_err(unavailable)?;
        let Some((_, at)) = found.first() else {
            return Ok(0);
        };
        let doc: TantivyDocument = searcher.doc(*at).map_err(unavailable)?;
        let cursor = doc
            .get_first(self.f.cursor)
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        remember(&self.cursors, conversation, cursor);
        Ok(cursor)
    }

    async fn search(&self, q: &SearchQuery) -> Result<Hits, SearchError> {
        if q.conversations.is_empty() || q.limit == 0 {
            return Ok(Hits::default());
        }
        let f = self.f;
        let query = self.query(q);
        let searcher = self.reader.searcher();
        let found = searcher
            .search(
                &query,
                &TopDocs::with_limit(q.limit + 1).order_by_u64_field("id", Order::Desc),
            )
            .map_err(unavailable)?;
        let more = found.len() > q.limit;
        let mut snippets = if q.terms.is_empty() {
            None
        } else {
            let mut g = SnippetGenerator::create(&searcher, &query, f.body).map_err(unavailable)?;
            g.set_max_num_chars(FRAGMENT_CHARS);
            Some(g)
        };
        let mut hits = Vec::with_capacity(found.len().min(q.limit));
        for (_, at) in found.into_iter().take(q.limit) {
            let doc: TantivyDocument = searcher.doc(at).map_err(unavailable)?;
            let conversation = doc
                .get_first(f.conversation)
                .and_then(|v| v.as_str())
                .and_then(|c| ConversationId::new(c).ok());
            let id = doc.get_first(f.id).and_then(|v| v.as_u64());
            let (Some(conversation), Some(id)) = (conversation, id) else {
                continue;
            };
            let highlights = match (
                &mut snippets,
                doc.get_first(f.body).and_then(|v| v.as_str()),
            ) {
                (Some(g), Some(body)) => {
                    let mut s = g.snippet(body);
                    s.set_snippet_prefix_postfix("<mark>", "</mark>");
                    let html = s.to_html();
                    if html.is_empty() {
                        Vec::new()
                    } else {
                        vec![html]
                    }
                }
                _ => Vec::new(),
            };
            hits.push(Hit {
                conversation,
                id: MessageId(id),
                highlights,
            });
        }
        Ok(Hits { hits, more })
    }

    async fn clear(&self) -> Result<(), SearchError> {
        let writer = self.writer.clone();
        let reader = self.reader.clone();
        let commits = self.commits.clone();
        let cursors = self.cursors.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = locked(&writer);
            guard.w.delete_all_documents().map_err(unavailable)?;
            guard.w.commit().map_err(unavailable)?;
            guard.tops.clear();
            locked(&cursors).clear();
            commits.all_committed();
            reader.reload().map_err(unavailable)
        })
        .await
        .map_err(unavailable)?
    }
}
