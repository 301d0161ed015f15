//! The store's handle: the session, the statements, what it remembers of
//! what it wrote, and the few ways every domain runs a statement.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use chat_protocol::{ConversationId, MessageId};
use scylla::client::session::Session;
use scylla::response::query_result::{QueryResult, QueryRowsResult};
use scylla::response::{PagingState, PagingStateResponse};
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;

use super::config::{ScyllaConfig, CLOCK_MARGIN_MS};
use super::cql::{applied, connect};
use super::schema::migrate_on;
use super::statements;
use crate::{corrupt, lock, unavailable, StoreError};

/// Bucket-list rows known to be written, so a busy conversation writes its
/// bucket's row once, not once per message. Bounded: cleared when full.
pub(super) const KNOWN_BUCKETS: usize = 100_000;

/// History and accounts in ScyllaDB.
pub struct ScyllaStore {
    pub(super) session: Session,
    pub(super) q: statements::Statements,
    pub(super) bucket_ms: u64,
    pub(super) lease_ms: u64,
    /// How long after an expiring lease runs out its holder's writes may
    /// still land (its driver retries them up to the request timeout).
    pub(super) lease_grace_ms: u64,
    /// How long after a node lease runs out its holder's writes may still
    /// land (it abandons them when its lease ends; replicas drop what
    /// is older than their write timeout).
    pub(super) node_grace_ms: u64,
    /// Lightweight transactions run for leases and claims.
    pub(super) lease_transactions: std::sync::atomic::AtomicU64,
    pub(super) known_buckets: Mutex<HashSet<(ConversationId, i32)>>,
    /// Revision-index blocks known to be listed in `rev_blocks`, as buckets.
    pub(super) known_rev_blocks: Mutex<HashSet<(ConversationId, i64)>>,
    /// The bucket lists (ascending) of conversations whose lease this
    /// handle holds: it writes every new bucket of theirs, so it keeps their
    /// lists whole and a page costs one read, not two.
    pub(super) bucket_lists: Mutex<HashMap<ConversationId, Vec<i32>>>,
    /// Conversations whose lease this handle holds.
    pub(super) leased: Mutex<HashSet<ConversationId>>,
}

impl std::fmt::Debug for ScyllaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaStore")
            .field("bucket_ms", &self.bucket_ms)
            .finish_non_exhaustive()
    }
}

impl ScyllaStore {
    /// Connects, applies missing migrations, and checks that the keyspace's
    /// bucket width is the configured one.
    pub async fn open(config: &ScyllaConfig) -> Result<Self, StoreError> {
        let session = connect(config).await?;
        // A cluster starting at once on a new keyspace contends in Paxos and
        // schema agreement: what times out is tried again.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match migrate_on(&session, config).await {
                Ok(_) => break,
                Err(e) if attempt >= 5 => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "schema migration failed; trying again");
                    tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
                }
            }
        }
        let q = statements::Statements::prepare(
            &session,
            &config.keyspace,
            config.consistency.serial(),
        )
        .await?;
        let store = ScyllaStore {
            session,
            q,
            bucket_ms: u64::from(config.bucket_days) * 24 * 3600 * 1000,
            lease_ms: config.lease_ms,
            lease_grace_ms: config.request_timeout_ms + config.write_timeout_ms + CLOCK_MARGIN_MS,
            node_grace_ms: config.write_timeout_ms + CLOCK_MARGIN_MS,
            lease_transactions: Default::default(),
            known_buckets: Mutex::new(HashSet::new()),
            known_rev_blocks: Mutex::new(HashSet::new()),
            bucket_lists: Mutex::new(HashMap::new()),
            leased: Mutex::new(HashSet::new()),
        };
        let days = config.bucket_days.to_string();
        let held = store.init_setting("bucket_days", &days).await?;
        if held != days {
            return Err(StoreError::Unavailable(format!(
                "keyspace {} was written with bucket_days = {held}; the configuration says \
                 {days}, which would hide its history",
                config.keyspace
            )));
        }
        Ok(store)
    }

    /// The bucket of a message id.
    pub fn bucket(&self, id: MessageId) -> i32 {
        (id.timestamp_ms() / self.bucket_ms).min(i32::MAX as u64) as i32
    }

    /// Stores `value` under `name` unless a value is there already; returns
    /// the value held. Settings every node must share (the JWT signing
    /// secret of a cluster started without one, the bucket width).
    pub async fn init_setting(&self, name: &str, value: &str) -> Result<String, StoreError> {
        // Read first: every node start asks, and only the first one needs
        // the transaction (many at once on one row contend in Paxos). A
        // transaction that timed out has an unknown outcome: read again.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let rows = self.rows(&self.q.settings.select_setting, (name,)).await?;
            if let Some((Some(held),)) = rows
                .maybe_first_row::<(Option<String>,)>()
                .map_err(corrupt)?
            {
                return Ok(held);
            }
            match self.run(&self.q.settings.init_setting, (name, value)).await {
                Ok(result) => {
                    if applied(result)? {
                        return Ok(value.to_owned());
                    }
                }
                Err(e) if attempt >= 5 => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, setting = name, "retrying a setting's transaction");
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
            }
        }
    }

    pub(super) async fn run(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<QueryResult, StoreError> {
        self.session
            .execute_unpaged(statement, values)
            .await
            .map_err(unavailable)
    }

    pub(super) async fn rows(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<QueryRowsResult, StoreError> {
        self.run(statement, values)
            .await?
            .into_rows_result()
            .map_err(corrupt)
    }

    /// Every row of a query, page by page (partitions that may be large:
    /// a channel's members, a user's conversations).
    pub(super) async fn for_each_row<F>(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow + Clone,
        mut each: F,
    ) -> Result<(), StoreError>
    where
        F: FnMut(&QueryRowsResult) -> Result<bool, StoreError>,
    {
        let mut paging = PagingState::start();
        loop {
            let (result, next) = self
                .session
                .execute_single_page(statement, values.clone(), paging)
                .await
                .map_err(unavailable)?;
            let rows = result.into_rows_result().map_err(corrupt)?;
            if !each(&rows)? {
                return Ok(());
            }
            match next {
                PagingStateResponse::HasMorePages { state } => paging = state,
                PagingStateResponse::NoMorePages => return Ok(()),
            }
        }
    }
}

/// Notes a list row as written, in a set bounded by clearing it when full
/// (a row written twice costs a write, not a wrong answer).
pub(super) fn remember<K: std::hash::Hash + Eq>(known: &Mutex<HashSet<K>>, key: K) {
    let mut set = lock(known);
    if set.len() >= KNOWN_BUCKETS {
        set.clear();
    }
    set.insert(key);
}
