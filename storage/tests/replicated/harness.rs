//! The replicated suite's harness: in-process nodes, each an embedded
//! store in a temporary directory, links that apply one node's ops on the
//! others, a recorder that sees what the store applies, and the comparison
//! of every node's state.
#![allow(dead_code)]
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chat_protocol::{
    ClientMsgId, Conversation, ConversationId, ConversationKind, Member, Message, MessageId,
    MessageKind, Role, UserId,
};
use chat_storage::embedded::{Durability, EmbeddedStore};
use chat_storage::replicated::{ReplicaLink, ReplicatedOp, ReplicatedStore};
use chat_storage::{
    AccessFacts, AccessStore, AccountStore, AuditEntry, Changes, ConversationChange,
    ConversationStore, HistoryStore, LeaseStore, LoginState, MessageStore, ModerationStore, Page,
    PageQuery, RefreshRecord, Rotation, StoreError, UserFlag, UserFlags, UserRecord,
};
use tempfile::TempDir;

// ---------------------------------------------------------------------------
// Nodes and links

pub struct Node {
    pub name: String,
    pub local: Arc<EmbeddedStore>,
    pub store: Arc<ReplicatedStore>,
    pub dir: TempDir,
}

pub fn node(name: &str) -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    let (local, store) = open(&dir, name);
    Node {
        name: name.to_owned(),
        local,
        store,
        dir,
    }
}

pub fn open(dir: &TempDir, name: &str) -> (Arc<EmbeddedStore>, Arc<ReplicatedStore>) {
    let local = Arc::new(EmbeddedStore::open(dir.path(), Durability::Sync).expect("open"));
    let store = Arc::new(ReplicatedStore::new(local.clone(), name).expect("replicated store"));
    (local, store)
}

/// Closes a node's store and opens it again from its directory.
pub async fn restart(node: Node) -> Node {
    node.local.close().await;
    let Node {
        name,
        local,
        store,
        dir,
    } = node;
    drop(store);
    // The directory opens again only once every owner has let go.
    assert_eq!(Arc::strong_count(&local), 1, "the store is still held");
    drop(local);
    let (local, store) = open(&dir, &name);
    Node {
        name,
        local,
        store,
        dir,
    }
}

/// Applies every op on the peers that are up, one after the other.
pub struct TestLink {
    pub peers: Vec<Arc<ReplicatedStore>>,
    /// Indexes of the peers that are down (skipped).
    pub down: Mutex<BTreeSet<usize>>,
}

impl TestLink {
    pub fn new(peers: &[&Node]) -> Arc<TestLink> {
        Arc::new(TestLink {
            peers: peers.iter().map(|n| n.store.clone()).collect(),
            down: Mutex::new(BTreeSet::new()),
        })
    }
}

#[async_trait]
impl ReplicaLink for TestLink {
    async fn replicate(&self, op: ReplicatedOp) -> Result<(), StoreError> {
        for (i, peer) in self.peers.iter().enumerate() {
            if self.down.lock().expect("lock").contains(&i) {
                continue;
            }
            peer.apply_remote(op.clone()).await?;
        }
        Ok(())
    }
}

/// Keeps the ops it is given; optionally refuses them.
#[derive(Default)]
pub struct CaptureLink {
    pub ops: Mutex<Vec<ReplicatedOp>>,
    pub fail: bool,
}

#[async_trait]
impl ReplicaLink for CaptureLink {
    async fn replicate(&self, op: ReplicatedOp) -> Result<(), StoreError> {
        self.ops.lock().expect("lock").push(op);
        if self.fail {
            return Err(StoreError::Unavailable("peer timed out".into()));
        }
        Ok(())
    }
}

/// Pulls from `from` into `to` in chunks until `from` has nothing more;
/// checks each chunk's limits and that each moves `to`'s vector forward.
pub async fn pull(from: &ReplicatedStore, to: &ReplicatedStore, max_ops: usize, max_bytes: usize) {
    for _ in 0..100_000 {
        let before = to.vector();
        let ops = from
            .ops_after(&before, max_ops, max_bytes)
            .await
            .expect("ops_after");
        if ops.is_empty() {
            return;
        }
        assert!(ops.len() <= max_ops.max(1), "chunk over max_ops");
        let bytes: usize = ops.iter().map(|op| op.bytes.len()).sum();
        assert!(
            ops.len() == 1 || bytes <= max_bytes,
            "chunk of {bytes} bytes over max_bytes {max_bytes}"
        );
        for op in ops {
            assert!(
                op.seq > before.get(&op.origin).copied().unwrap_or(0),
                "offered an op the vector has"
            );
            to.apply_remote(op).await.expect("apply");
        }
        assert_ne!(to.vector(), before, "a chunk must move the vector forward");
    }
    panic!("anti-entropy did not finish");
}

/// Every op a store holds (below its gaps), in one list.
pub async fn full_log(store: &ReplicatedStore) -> Vec<ReplicatedOp> {
    store
        .ops_after(&BTreeMap::new(), usize::MAX, usize::MAX)
        .await
        .expect("ops_after")
}

// ---------------------------------------------------------------------------
// Recording what the suite touches, and reading it all back

/// The keys written or read through a [`Recorder`].
#[derive(Default)]
pub struct Seen {
    pub conversations: BTreeSet<ConversationId>,
    pub users: BTreeSet<UserId>,
    pub client_msg_ids: BTreeSet<(ConversationId, UserId, ClientMsgId)>,
    pub tokens: BTreeSet<String>,
    pub media: BTreeSet<String>,
}

/// A store that notes every conversation, user, client_msg_id and token it
/// is asked about, so that a test can read all of it back from every node.
pub struct Recorder {
    pub store: Arc<ReplicatedStore>,
    pub seen: Arc<Mutex<Seen>>,
}

impl Recorder {
    pub fn new(store: &Arc<ReplicatedStore>, seen: &Arc<Mutex<Seen>>) -> Recorder {
        Recorder {
            store: store.clone(),
            seen: seen.clone(),
        }
    }

    pub fn note(&self, f: impl FnOnce(&mut Seen)) {
        f(&mut self.seen.lock().expect("lock"));
    }
}

/// The facts of a user read together: the user is noted, as its own read
/// would be.
#[async_trait]
impl AccessStore for Recorder {
    async fn access_facts(
        &self,
        user: &UserId,
        logins: &[&str],
    ) -> Result<AccessFacts, StoreError> {
        self.note(|s| {
            s.users.insert(user.clone());
        });
        self.store.access_facts(user, logins).await
    }
}

#[async_trait]
impl HistoryStore for Recorder {
    async fn append(&self, messages: &[Message]) -> Result<(), StoreError> {
        self.note(|s| {
            for m in messages {
                s.conversations.insert(m.conversation.clone());
                s.users.insert(m.sender.clone());
                s.client_msg_ids.insert((
                    m.conversation.clone(),
                    m.sender.clone(),
                    m.client_msg_id.clone(),
                ));
            }
        });
        self.store.append(messages).await
    }

    async fn update_message(&self, m: &Message) -> Result<(), StoreError> {
        self.note(|s| {
            s.conversations.insert(m.conversation.clone());
        });
        self.store.update_message(m).await
    }

    async fn message(
        &self,
        c: &ConversationId,
        id: MessageId,
    ) -> Result<Option<Message>, StoreError> {
        self.store.message(c, id).await
    }

    async fn changes(
        &self,
        c: &ConversationId,
        after: u64,
        up_to: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Changes, StoreError> {
        self.note(|s| {
            s.conversations.insert(c.clone());
        });
        self.store.changes(c, after, up_to, limit, max_bytes).await
    }

    async fn last_rev(&self, c: &ConversationId) -> Result<u64, StoreError> {
        self.store.last_rev(c).await
    }

    async fn count_unread_mentions(
        &self,
        c: &ConversationId,
        reader: &UserId,
        after: MessageId,
        cap: u64,
    ) -> Result<u64, StoreError> {
        self.note(|s| {
            s.users.insert(reader.clone());
        });
        self.store
            .count_unread_mentions(c, reader, after, cap)
            .await
    }

    async fn page(&self, c: &ConversationId, q: PageQuery) -> Result<Page, StoreError> {
        self.note(|s| {
            s.conversations.insert(c.clone());
        });
        self.store.page(c, q).await
    }

    async fn last_message(&self, c: &ConversationId) -> Result<Option<Message>, StoreError> {
        self.store.last_message(c).await
    }

    async fn find_by_client_msg_id(
        &self,
        c: &ConversationId,
        sender: &UserId,
        key: &ClientMsgId,
    ) -> Result<Option<Message>, StoreError> {
        self.note(|s| {
            s.client_msg_ids
                .insert((c.clone(), sender.clone(), key.clone()));
        });
        self.store.find_by_client_msg_id(c, sender, key).await
    }

    async fn count_unread(
        &self,
        c: &ConversationId,
        reader: &UserId,
        after: MessageId,
        cap: u64,
    ) -> Result<u64, StoreError> {
        self.store.count_unread(c, reader, after, cap).await
    }
}

#[async_trait]
impl ConversationStore for Recorder {
    async fn conversation(&self, id: &ConversationId) -> Result<Option<Conversation>, StoreError> {
        self.note(|s| {
            s.conversations.insert(id.clone());
        });
        self.store.conversation(id).await
    }

    async fn apply_conversation(&self, change: &ConversationChange) -> Result<(), StoreError> {
        self.note(|s| {
            s.conversations.insert(change.conversation.id.clone());
            s.users.extend(change.upsert.iter().map(|m| m.user.clone()));
            s.users.extend(change.remove.iter().cloned());
        });
        self.store.apply_conversation(change).await
    }

    async fn conversation_ids(
        &self,
        after: Option<&ConversationId>,
        limit: usize,
    ) -> Result<Vec<ConversationId>, StoreError> {
        self.store.conversation_ids(after, limit).await
    }

    async fn user_conversations(&self, user: &UserId) -> Result<Vec<ConversationId>, StoreError> {
        self.note(|s| {
            s.users.insert(user.clone());
        });
        self.store.user_conversations(user).await
    }

    async fn set_read_marker(
        &self,
        c: &ConversationId,
        user: &UserId,
        up_to: MessageId,
    ) -> Result<(), StoreError> {
        self.note(|s| {
            s.conversations.insert(c.clone());
            s.users.insert(user.clone());
        });
        self.store.set_read_marker(c, user, up_to).await
    }

    async fn read_markers(
        &self,
        c: &ConversationId,
    ) -> Result<Vec<(UserId, MessageId)>, StoreError> {
        self.store.read_markers(c).await
    }

    async fn read_marker(
        &self,
        c: &ConversationId,
        user: &UserId,
    ) -> Result<Option<MessageId>, StoreError> {
        self.store.read_marker(c, user).await
    }
}

#[async_trait]
impl AccountStore for Recorder {
    async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        self.note(|s| {
            s.users.insert(user.id.clone());
        });
        self.store.create_user(user).await
    }

    async fn user(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError> {
        self.note(|s| {
            s.users.insert(id.clone());
        });
        self.store.user(id).await
    }

    async fn put_refresh(&self, record: &RefreshRecord) -> Result<(), StoreError> {
        self.note(|s| {
            s.tokens.insert(record.token_hash.clone());
        });
        self.store.put_refresh(record).await
    }

    async fn rotate_refresh(
        &self,
        old_hash: &str,
        new: &RefreshRecord,
        now: u64,
    ) -> Result<Rotation, StoreError> {
        self.note(|s| {
            s.tokens.insert(old_hash.to_owned());
            s.tokens.insert(new.token_hash.clone());
        });
        self.store.rotate_refresh(old_hash, new, now).await
    }

    async fn revoke_refresh_family(&self, token_hash: &str) -> Result<Option<UserId>, StoreError> {
        self.note(|s| {
            s.tokens.insert(token_hash.to_owned());
        });
        self.store.revoke_refresh_family(token_hash).await
    }

    async fn login_state(&self, family: &str) -> Result<Option<LoginState>, StoreError> {
        self.store.login_state(family).await
    }
}

impl LeaseStore for Recorder {}

#[async_trait]
impl ModerationStore for Recorder {
    async fn set_user_flag(
        &self,
        user: &UserId,
        flag: UserFlag,
        on: bool,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        self.note(|s| {
            s.users.insert(user.clone());
        });
        self.store.set_user_flag(user, flag, on, at_ms).await
    }

    async fn user_flags(&self, user: &UserId) -> Result<UserFlags, StoreError> {
        self.note(|s| {
            s.users.insert(user.clone());
        });
        self.store.user_flags(user).await
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.store.append_audit(entry).await
    }

    async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.store.audit(limit).await
    }
}

/// Everything a node answers about what was seen, in a comparable form.
#[derive(Debug, PartialEq)]
pub struct State {
    pub conversations: Vec<ConversationState>,
    pub client_msg_ids: Vec<Option<MessageId>>,
    pub users: Vec<(UserId, Option<UserRecord>, UserFlags, Vec<ConversationId>)>,
    pub audit: Vec<AuditEntry>,
    pub notify: crate::notify::NotifyState,
    pub media: Vec<(Option<chat_storage::MediaRecord>, Vec<String>)>,
}

#[derive(Debug, PartialEq)]
pub struct ConversationState {
    pub id: ConversationId,
    pub history: Vec<Message>,
    pub last: Option<Message>,
    /// Every change, and the revision.
    pub changes: Vec<Message>,
    pub rev: u64,
    /// Unread mentions of each user seen.
    pub mentions: Vec<u64>,
    /// The record, members sorted.
    pub record: Option<Conversation>,
    pub markers: Vec<(UserId, MessageId)>,
}

pub async fn state(store: &dyn MessageStore, seen: &Mutex<Seen>) -> State {
    let (conversations, users, keys, media) = {
        let seen = seen.lock().expect("lock");
        (
            seen.conversations.clone(),
            seen.users.clone(),
            seen.client_msg_ids.clone(),
            seen.media.clone(),
        )
    };
    let mut state = State {
        conversations: Vec::new(),
        client_msg_ids: Vec::new(),
        users: Vec::new(),
        audit: store.audit(usize::MAX).await.expect("audit"),
        notify: crate::notify::notify_state(
            store,
            &users.iter().cloned().collect::<Vec<_>>(),
            &conversations.iter().cloned().collect::<Vec<_>>(),
        )
        .await,
        media: Vec::new(),
    };
    for id in media {
        state
            .media
            .push(crate::notify::media_state(store, &id).await);
    }
    for id in conversations {
        let all = PageQuery::new(None, None, 1_000_000);
        let page = store.page(&id, all).await.expect("page");
        assert!(!page.more);
        let mut record = store.conversation(&id).await.expect("conversation");
        if let Some(r) = &mut record {
            r.members.sort_by(|a, b| a.user.cmp(&b.user));
        }
        let mut markers = store.read_markers(&id).await.expect("markers");
        markers.sort();
        let rev = store.last_rev(&id).await.expect("last_rev");
        let changes = store
            .changes(&id, 0, rev, 1_000_000, usize::MAX)
            .await
            .expect("changes");
        assert!(!changes.more);
        let mut mentions = Vec::new();
        for user in &users {
            mentions.push(
                store
                    .count_unread_mentions(&id, user, MessageId(0), u64::MAX)
                    .await
                    .expect("mentions"),
            );
        }
        state.conversations.push(ConversationState {
            changes: changes.messages,
            rev,
            mentions,
            last: store.last_message(&id).await.expect("last"),
            history: page.messages,
            record,
            markers,
            id,
        });
    }
    for (c, sender, key) in keys {
        let found = store
            .find_by_client_msg_id(&c, &sender, &key)
            .await
            .expect("find");
        state.client_msg_ids.push(found.map(|m| m.id));
    }
    for user in users {
        let mut index = store.user_conversations(&user).await.expect("index");
        index.sort();
        let record = store.user(&user).await.expect("user");
        let flags = store.user_flags(&user).await.expect("flags");
        state.users.push((user, record, flags, index));
    }
    state
}

/// What rotating each seen token answers. Rotation writes, so this comes
/// last, and goes to the node's embedded store under the replicated one: a
/// probe must neither be logged nor replicated to the nodes compared with.
/// On nodes in the same state the same probes answer the same.
pub async fn probe_tokens(store: &dyn MessageStore, seen: &Mutex<Seen>) -> Vec<(String, Rotation)> {
    let tokens = seen.lock().expect("lock").tokens.clone();
    let mut answers = Vec::new();
    for token in tokens {
        let next = RefreshRecord {
            token_hash: format!("probe-{token}"),
            user: UserId::new("prober").expect("valid"),
            family: "probe".into(),
            expires_at: u64::MAX,
        };
        // Just after the suite's clock: its unexpired tokens are still valid.
        let rotation = store
            .rotate_refresh(&token, &next, 1_800_000_000_001)
            .await
            .expect("rotate");
        answers.push((token, rotation));
    }
    answers
}

/// Asserts that every node answers like the first, tokens included.
pub async fn assert_same(nodes: &[&Node], seen: &Mutex<Seen>) {
    let first = state(nodes[0].store.as_ref(), seen).await;
    assert!(
        !first.conversations.is_empty() && !first.users.is_empty(),
        "nothing to compare"
    );
    for other in &nodes[1..] {
        let state = state(other.store.as_ref(), seen).await;
        assert!(
            first == state,
            "{} and {} differ:\n{first:#?}\n{state:#?}",
            nodes[0].name,
            other.name
        );
    }
    let first_tokens = probe_tokens(nodes[0].local.as_ref(), seen).await;
    for other in &nodes[1..] {
        assert_eq!(
            first_tokens,
            probe_tokens(other.local.as_ref(), seen).await,
            "refresh tokens of {} and {}",
            nodes[0].name,
            other.name
        );
    }
}

// ---------------------------------------------------------------------------
// Data

pub fn conv(s: &str) -> ConversationId {
    ConversationId::new(s).expect("valid id")
}

pub fn user(s: &str) -> UserId {
    UserId::new(s).expect("valid id")
}

/// A message id as node `node` issues it `n` ms after a fixed time.
pub fn mid(n: u64, node: u64, seq: u64) -> MessageId {
    MessageId(MessageId::floor_at(1_750_000_000_000 + n).0 | (node << 12) | seq)
}

pub fn message(c: &ConversationId, sender: &UserId, id: MessageId, key: &str) -> Message {
    Message {
        attachments: Vec::new(),
        rev: 0,
        edited_at: None,
        deleted: false,
        reactions: Vec::new(),
        mentions: Vec::new(),
        id,
        conversation: c.clone(),
        sender: sender.clone(),
        body: format!("{sender} says {key}"),
        kind: MessageKind::default(),
        ts: id.timestamp_ms(),
        client_msg_id: ClientMsgId::new(key).expect("valid id"),
        reply_to: None,
    }
}

pub fn member(u: &str, role: Role) -> Member {
    Member {
        user: user(u),
        role,
    }
}

pub fn change(
    c: &ConversationId,
    title: &str,
    upsert: Vec<Member>,
    remove: &[&str],
) -> ConversationChange {
    ConversationChange {
        conversation: Conversation {
            rev: 0,
            id: c.clone(),
            kind: ConversationKind::Group,
            title: Some(title.into()),
            members: Vec::new(),
            member_count: None,
            created_at: 1_700_000_000_000,
        },
        upsert,
        remove: remove.iter().map(|u| user(u)).collect(),
    }
}

pub fn token(hash: &str, family: &str) -> RefreshRecord {
    RefreshRecord {
        token_hash: hash.into(),
        user: user("alice"),
        family: family.into(),
        expires_at: u64::MAX,
    }
}

/// A bit of everything, written through `store`.
pub async fn write_some(store: &dyn MessageStore, tag: &str, node_id: u64) {
    let c = conv(&format!("room-{tag}"));
    let (alice, bob) = (user("alice"), user(&format!("bob-{tag}")));
    store
        .apply_conversation(&change(
            &c,
            "room",
            vec![
                member("alice", Role::Owner),
                Member {
                    user: bob.clone(),
                    role: Role::Member,
                },
            ],
            &[],
        ))
        .await
        .expect("conversation");
    for n in 0..12 {
        let sender = if n % 2 == 0 { &alice } else { &bob };
        let m = message(&c, sender, mid(n, node_id, 0), &format!("k{n}"));
        store.append(&[m]).await.expect("append");
    }
    store
        .set_read_marker(&c, &bob, mid(7, node_id, 0))
        .await
        .expect("marker");
    store
        .create_user(&UserRecord {
            id: bob.clone(),
            password_hash: Some(format!("hash-{tag}")),
            display_name: None,
            created_at: 5,
        })
        .await
        .expect("user");
    store
        .put_refresh(&token(&format!("t-{tag}"), &format!("f-{tag}")))
        .await
        .expect("put");
}

// ---------------------------------------------------------------------------
// Tests
