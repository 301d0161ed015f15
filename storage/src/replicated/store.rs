//! The store itself: reads go to the local embedded store, writes are
//! decided, applied and logged in one batch there, then replicated.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use chat_protocol::{ClientMsgId, Conversation, ConversationId, Message, MessageId, UserId};

use super::apply::{apply_op, encode, next_conversation_ms, StoreOp};
use super::link::{ReplicaLink, ReplicatedOp};
use super::op_log::{check_origin, log_op, marks, Marks, MAX_ORIGIN};
use crate::embedded::{split_part, EmbeddedStore, RefreshEffect, RefreshToken, ReplicaTable, Txn};
use crate::{
    corrupt, lock, AccountStore, AuditEntry, Changes, ConversationChange, ConversationStore,
    HistoryStore, LeaseStore, LoginState, ModerationStore, Page, PageQuery, RefreshRecord,
    Rotation, StoreError, UserFlag, UserFlags, UserRecord,
};

/// The [`MessageStore`](crate::MessageStore) of a node of a cluster of embedded stores: reads are
/// local, writes are logged and replicated (see the module documentation).
pub struct ReplicatedStore {
    pub(super) local: Arc<EmbeddedStore>,
    pub(super) node: Arc<str>,
    pub(super) link: RwLock<Option<Arc<dyn ReplicaLink>>>,
    /// Per origin, the contiguous mark as last committed (the database has
    /// the truth; this answers [`Self::vector`] without a read). Origins held
    /// only above a gap have 0.
    pub(super) contiguous: Mutex<BTreeMap<String, u64>>,
}

impl std::fmt::Debug for ReplicatedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicatedStore")
            .field("node", &self.node)
            .field("vector", &self.vector())
            .finish_non_exhaustive()
    }
}

impl ReplicatedStore {
    /// Wraps the node's embedded store; `node` is this node's name, the
    /// origin of the ops it accepts. The op log lives in the embedded store's
    /// database, so the next seq continues after a restart.
    ///
    /// Reads the log's marks (one key per origin), blocking: call it where
    /// [`EmbeddedStore::open`] is called.
    pub fn new(local: Arc<EmbeddedStore>, node: &str) -> Result<Self, StoreError> {
        check_origin(node).map_err(|_| {
            StoreError::Unavailable(format!(
                "the node name {node:?} cannot name an op log: it must be 1 to {MAX_ORIGIN} bytes"
            ))
        })?;
        let mut contiguous = BTreeMap::new();
        for entry in local.replica_keyspace(ReplicaTable::OpMarks).all() {
            let (key, value) = entry?;
            let (origin, rest) = split_part(&key)?;
            if !rest.is_empty() {
                return Err(corrupt("malformed op-log marks key"));
            }
            contiguous.insert(origin.to_owned(), Marks::decode(&value)?.contiguous);
        }
        Ok(ReplicatedStore {
            local,
            node: Arc::from(node),
            link: RwLock::new(None),
            contiguous: Mutex::new(contiguous),
        })
    }

    /// From now on local writes are replicated through `link` before they
    /// return. Before this is called, writes are local only (and reach peers
    /// by anti-entropy).
    pub fn set_link(&self, link: Arc<dyn ReplicaLink>) {
        *self.link.write().unwrap_or_else(|e| e.into_inner()) = Some(link);
    }

    /// Records a committed contiguous mark. Marks only grow, and replies of
    /// two commits may be handled in either order, hence the max.
    pub(super) fn note(&self, origin: &str, contiguous: u64) {
        let mut marks = lock(&self.contiguous);
        let mark = marks.entry(origin.to_owned()).or_insert(0);
        *mark = (*mark).max(contiguous);
    }

    /// A local write: `decide` reads the current state and says what the
    /// write changes (`None`: nothing, so nothing is logged); the change is
    /// applied with the code a replica runs, logged under the next seq, all
    /// in one batch, then replicated.
    pub(super) async fn write<R, F>(&self, decide: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Txn<'_>) -> Result<(R, Option<StoreOp>), StoreError> + Send + 'static,
    {
        let node = self.node.clone();
        let (result, logged) = self
            .local
            .update(move |txn| {
                let (result, op) = decide(txn)?;
                let Some(op) = op else {
                    return Ok((result, None));
                };
                let bytes = encode(&op)?;
                // The next seq is read (and written) in the batch, not
                // counted in memory: a batch that fails to commit takes its
                // seq with it, so the log has no gap.
                let seq = marks(txn, &node)?.highest + 1;
                apply_op(txn, &node, &op)?;
                let contiguous = log_op(txn, &node, seq, bytes.clone())?;
                let op = ReplicatedOp {
                    origin: node.to_string(),
                    seq,
                    bytes,
                };
                Ok((result, Some((op, contiguous))))
            })
            .await?;
        if let Some((op, contiguous)) = logged {
            self.note(&op.origin, contiguous);
            let link = self.link.read().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(link) = link {
                link.replicate(op).await?;
            }
        }
        Ok(result)
    }
}

#[async_trait]
impl HistoryStore for ReplicatedStore {
    async fn append(&self, messages: &[Message]) -> Result<(), StoreError> {
        if messages.is_empty() {
            return Ok(());
        }
        let messages = messages.to_vec();
        self.write(move |_| Ok(((), Some(StoreOp::Append { messages }))))
            .await
    }

    async fn append_new(&self, messages: &[Message]) -> Result<Vec<Option<Message>>, StoreError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let messages = messages.to_vec();
        self.write(move |txn| {
            // Decided in the batch: only the new messages are logged (and
            // appended, by applying the op).
            let (held, fresh) = txn.new_messages(&messages)?;
            let op = (!fresh.is_empty()).then_some(StoreOp::Append { messages: fresh });
            Ok((held, op))
        })
        .await
    }

    async fn update_message(&self, message: &Message) -> Result<(), StoreError> {
        let message = message.clone();
        self.write(move |_| Ok(((), Some(StoreOp::Update { message }))))
            .await
    }

    async fn message(
        &self,
        conversation: &ConversationId,
        id: MessageId,
    ) -> Result<Option<Message>, StoreError> {
        self.local.message(conversation, id).await
    }

    async fn changes(
        &self,
        conversation: &ConversationId,
        after_rev: u64,
        up_to_rev: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Changes, StoreError> {
        self.local
            .changes(conversation, after_rev, up_to_rev, limit, max_bytes)
            .await
    }

    async fn last_rev(&self, conversation: &ConversationId) -> Result<u64, StoreError> {
        self.local.last_rev(conversation).await
    }

    async fn count_unread_mentions(
        &self,
        conversation: &ConversationId,
        reader: &UserId,
        after: MessageId,
        cap: u64,
    ) -> Result<u64, StoreError> {
        self.local
            .count_unread_mentions(conversation, reader, after, cap)
            .await
    }

    async fn page(
        &self,
        conversation: &ConversationId,
        query: PageQuery,
    ) -> Result<Page, StoreError> {
        self.local.page(conversation, query).await
    }

    async fn last_message(
        &self,
        conversation: &ConversationId,
    ) -> Result<Option<Message>, StoreError> {
        self.local.last_message(conversation).await
    }

    async fn find_by_client_msg_id(
        &self,
        conversation: &ConversationId,
        sender: &UserId,
        client_msg_id: &ClientMsgId,
    ) -> Result<Option<Message>, StoreError> {
        self.local
            .find_by_client_msg_id(conversation, sender, client_msg_id)
            .await
    }

    async fn count_unread(
        &self,
        conversation: &ConversationId,
        reader: &UserId,
        after: MessageId,
        cap: u64,
    ) -> Result<u64, StoreError> {
        self.local
            .count_unread(conversation, reader, after, cap)
            .await
    }
}

#[async_trait]
impl ConversationStore for ReplicatedStore {
    async fn conversation(&self, id: &ConversationId) -> Result<Option<Conversation>, StoreError> {
        self.local.conversation(id).await
    }

    async fn apply_conversation(&self, change: &ConversationChange) -> Result<(), StoreError> {
        let change = change.clone();
        self.write(move |txn| {
            let ms = next_conversation_ms(txn, &change)?;
            let ConversationChange {
                mut conversation,
                upsert,
                remove,
            } = change;
            // Ignored by every apply: the op names the members it changes.
            conversation.members = Vec::new();
            let op = StoreOp::Conversation {
                ms,
                conversation,
                upsert,
                remove,
            };
            Ok(((), Some(op)))
        })
        .await
    }

    async fn conversation_ids(
        &self,
        after: Option<&ConversationId>,
        limit: usize,
    ) -> Result<Vec<ConversationId>, StoreError> {
        self.local.conversation_ids(after, limit).await
    }

    async fn user_conversations(&self, user: &UserId) -> Result<Vec<ConversationId>, StoreError> {
        self.local.user_conversations(user).await
    }

    async fn set_read_marker(
        &self,
        conversation: &ConversationId,
        user: &UserId,
        up_to: MessageId,
    ) -> Result<(), StoreError> {
        let (conversation, user) = (conversation.clone(), user.clone());
        self.write(move |txn| {
            // A marker at or beyond `up_to` came from an op logged already.
            if txn.read_marker(&conversation, &user)? >= Some(up_to) {
                return Ok(((), None));
            }
            let op = StoreOp::ReadMarker {
                conversation,
                user,
                up_to,
            };
            Ok(((), Some(op)))
        })
        .await
    }

    async fn read_markers(
        &self,
        conversation: &ConversationId,
    ) -> Result<Vec<(UserId, MessageId)>, StoreError> {
        self.local.read_markers(conversation).await
    }

    async fn read_marker(
        &self,
        conversation: &ConversationId,
        user: &UserId,
    ) -> Result<Option<MessageId>, StoreError> {
        self.local.read_marker(conversation, user).await
    }
}

#[async_trait]
impl AccountStore for ReplicatedStore {
    async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let record = user.clone();
        self.write(move |txn| {
            if txn.user(&record.id)?.is_some() {
                return Err(StoreError::Conflict);
            }
            Ok(((), Some(StoreOp::User { record })))
        })
        .await
    }

    async fn user(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError> {
        self.local.user(id).await
    }

    async fn put_refresh(&self, record: &RefreshRecord) -> Result<(), StoreError> {
        let effect = RefreshEffect::Tokens(vec![RefreshToken::unused(record)]);
        self.write(move |_| Ok(((), Some(StoreOp::Refresh { effect }))))
            .await
    }

    async fn rotate_refresh(
        &self,
        old_hash: &str,
        new: &RefreshRecord,
        now: u64,
    ) -> Result<Rotation, StoreError> {
        let (old_hash, new) = (old_hash.to_owned(), new.clone());
        self.write(move |txn| {
            let (rotation, effect) = txn.plan_rotation(&old_hash, &new, now)?;
            Ok((rotation, effect.map(|effect| StoreOp::Refresh { effect })))
        })
        .await
    }

    async fn revoke_refresh_family(&self, token_hash: &str) -> Result<Option<UserId>, StoreError> {
        let token_hash = token_hash.to_owned();
        self.write(move |txn| {
            let (user, effect) = txn.plan_revocation(&token_hash)?;
            Ok((user, effect.map(|effect| StoreOp::Refresh { effect })))
        })
        .await
    }

    async fn login_state(&self, family: &str) -> Result<Option<LoginState>, StoreError> {
        self.local.login_state(family).await
    }
}

/// Every node holds every write (replication, not a shared database, keeps
/// them in step), so no node need take turns: every lease is granted (the
/// trait's defaults).
impl LeaseStore for ReplicatedStore {}

#[async_trait]
impl ModerationStore for ReplicatedStore {
    async fn set_user_flag(
        &self,
        user: &UserId,
        flag: UserFlag,
        on: bool,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        let user = user.clone();
        let op = StoreOp::UserFlag {
            user,
            flag,
            on,
            at: at_ms,
        };
        self.write(move |_| Ok(((), Some(op)))).await
    }

    async fn user_flags(&self, user: &UserId) -> Result<UserFlags, StoreError> {
        self.local.user_flags(user).await
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let op = StoreOp::Audit {
            entry: entry.clone(),
        };
        self.write(move |_| Ok(((), Some(op)))).await
    }

    async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.local.audit(limit).await
    }
}
