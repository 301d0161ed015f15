//! A conversation's buckets: which hold messages (`conversation_buckets`),
//! walked a step at a time, or known whole for a conversation whose lease
//! this handle holds.

use chat_protocol::ConversationId;

use super::super::store::{ScyllaStore, KNOWN_BUCKETS};
use crate::{corrupt, lock, StoreError};

/// Buckets fetched per step of a walk through a conversation's history.
const BUCKET_STEP: i32 = 32;

impl ScyllaStore {
    /// The whole bucket list of a conversation this handle holds the lease
    /// of (kept whole by its writes), or `None` for any other conversation.
    pub(super) async fn leased_buckets(
        &self,
        conversation: &ConversationId,
    ) -> Result<Option<Vec<i32>>, StoreError> {
        if !lock(&self.leased).contains(conversation) {
            return Ok(None);
        }
        if let Some(list) = lock(&self.bucket_lists).get(conversation) {
            return Ok(Some(list.clone()));
        }
        let mut list = Vec::new();
        self.for_each_row(
            &self.q.history.select_all_buckets,
            (conversation.as_str(),),
            |rows| {
                for row in rows.rows::<(i32,)>().map_err(corrupt)? {
                    list.push(row.map_err(corrupt)?.0);
                }
                Ok(true)
            },
        )
        .await?;
        list.sort_unstable();
        let mut lists = lock(&self.bucket_lists);
        if lists.len() >= KNOWN_BUCKETS {
            lists.clear();
        }
        lists.insert(conversation.clone(), list.clone());
        Ok(Some(list))
    }

    /// The buckets of a conversation in `[low, high]` that hold messages,
    /// nearest to the start of the walk first, at most `BUCKET_STEP`.
    pub(super) async fn buckets(
        &self,
        conversation: &ConversationId,
        low: i32,
        high: i32,
        newest_first: bool,
    ) -> Result<Vec<i32>, StoreError> {
        if low > high {
            return Ok(Vec::new());
        }
        let statement = if newest_first {
            &self.q.history.select_buckets_desc
        } else {
            &self.q.history.select_buckets_asc
        };
        let rows = self
            .rows(statement, (conversation.as_str(), low, high, BUCKET_STEP))
            .await?;
        rows.rows::<(i32,)>()
            .map_err(corrupt)?
            .map(|r| r.map(|(b,)| b).map_err(corrupt))
            .collect()
    }
}

/// A walk over a conversation's non-empty buckets, a step of the bucket
/// list at a time.
pub(super) struct BucketWalk<'a> {
    store: &'a ScyllaStore,
    conversation: &'a ConversationId,
    low: i32,
    high: i32,
    newest_first: bool,
    pending: std::vec::IntoIter<i32>,
    done: bool,
}

impl<'a> BucketWalk<'a> {
    /// A walk over a list known whole.
    pub(super) fn listed(
        store: &'a ScyllaStore,
        conversation: &'a ConversationId,
        list: &[i32],
        low: i32,
        high: i32,
        newest_first: bool,
    ) -> Self {
        let mut within: Vec<i32> = list
            .iter()
            .copied()
            .filter(|b| (low..=high).contains(b))
            .collect();
        if newest_first {
            within.reverse();
        }
        BucketWalk {
            store,
            conversation,
            low,
            high,
            newest_first,
            pending: within.into_iter(),
            done: true,
        }
    }

    pub(super) fn new(
        store: &'a ScyllaStore,
        conversation: &'a ConversationId,
        low: i32,
        high: i32,
        newest_first: bool,
    ) -> Self {
        BucketWalk {
            store,
            conversation,
            low,
            high,
            newest_first,
            pending: Vec::new().into_iter(),
            done: false,
        }
    }

    pub(super) async fn next(&mut self) -> Result<Option<i32>, StoreError> {
        if let Some(b) = self.pending.next() {
            return Ok(Some(b));
        }
        if self.done {
            return Ok(None);
        }
        let step = self
            .store
            .buckets(self.conversation, self.low, self.high, self.newest_first)
            .await?;
        if step.len() < BUCKET_STEP as usize {
            self.done = true;
        }
        match (step.last(), self.newest_first) {
            (Some(&last), true) => self.high = last.saturating_sub(1),
            (Some(&last), false) => self.low = last.saturating_add(1),
            (None, _) => self.done = true,
        }
        self.pending = step.into_iter();
        Ok(self.pending.next())
    }
}
