//! The replicated store: the conformance suite with and without peers, and
//! convergence: catch-up of a node that was down, a healed partition, ops
//! delivered twice and out of order, restarts, malformed ops.
//!
//! The nodes are in-process: each has its own embedded store in a temporary
//! directory, and a test link applies a node's ops on the others.

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
    conformance, AccountStore, AuditEntry, Changes, ConversationChange, ConversationStore,
    HistoryStore, LeaseStore, LoginState, MessageStore, ModerationStore, Page, PageQuery,
    RefreshRecord, Rotation, StoreError, UserFlag, UserFlags, UserRecord,
};
use tempfile::TempDir;

#[path = "replicated/notify.rs"]
mod notify;

// ---------------------------------------------------------------------------
// Nodes and links

struct Node {
    name: String,
    local: Arc<EmbeddedStore>,
    store: Arc<ReplicatedStore>,
    dir: TempDir,
}

fn node(name: &str) -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    let (local, store) = open(&dir, name);
    Node {
        name: name.to_owned(),
        local,
        store,
        dir,
    }
}

fn open(dir: &TempDir, name: &str) -> (Arc<EmbeddedStore>, Arc<ReplicatedStore>) {
    let local = Arc::new(EmbeddedStore::open(dir.path(), Durability::Sync).expect("open"));
    let store = Arc::new(ReplicatedStore::new(local.clone(), name).expect("replicated store"));
    (local, store)
}

/// Closes a node's store and opens it again from its directory.
async fn restart(node: Node) -> Node {
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
struct TestLink {
    peers: Vec<Arc<ReplicatedStore>>,
    /// Indexes of the peers that are down (skipped).
    down: Mutex<BTreeSet<usize>>,
}

impl TestLink {
    fn new(peers: &[&Node]) -> Arc<TestLink> {
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
struct CaptureLink {
    ops: Mutex<Vec<ReplicatedOp>>,
    fail: bool,
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
async fn pull(from: &ReplicatedStore, to: &ReplicatedStore, max_ops: usize, max_bytes: usize) {
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
async fn full_log(store: &ReplicatedStore) -> Vec<ReplicatedOp> {
    store
        .ops_after(&BTreeMap::new(), usize::MAX, usize::MAX)
        .await
        .expect("ops_after")
}

// ---------------------------------------------------------------------------
// Recording what the suite touches, and reading it all back

/// The keys written or read through a [`Recorder`].
#[derive(Default)]
struct Seen {
    conversations: BTreeSet<ConversationId>,
    users: BTreeSet<UserId>,
    client_msg_ids: BTreeSet<(ConversationId, UserId, ClientMsgId)>,
    tokens: BTreeSet<String>,
    media: BTreeSet<String>,
}

/// A store that notes every conversation, user, client_msg_id and token it
/// is asked about, so that a test can read all of it back from every node.
struct Recorder {
    store: Arc<ReplicatedStore>,
    seen: Arc<Mutex<Seen>>,
}

impl Recorder {
    fn new(store: &Arc<ReplicatedStore>, seen: &Arc<Mutex<Seen>>) -> Recorder {
        Recorder {
            store: store.clone(),
            seen: seen.clone(),
        }
    }

    fn note(&self, f: impl FnOnce(&mut Seen)) {
        f(&mut self.seen.lock().expect("lock"));
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
struct State {
    conversations: Vec<ConversationState>,
    client_msg_ids: Vec<Option<MessageId>>,
    users: Vec<(UserId, Option<UserRecord>, UserFlags, Vec<ConversationId>)>,
    audit: Vec<AuditEntry>,
    notify: notify::NotifyState,
    media: Vec<(Option<chat_storage::MediaRecord>, Vec<String>)>,
}

#[derive(Debug, PartialEq)]
struct ConversationState {
    id: ConversationId,
    history: Vec<Message>,
    last: Option<Message>,
    /// Every change, and the revision.
    changes: Vec<Message>,
    rev: u64,
    /// Unread mentions of each user seen.
    mentions: Vec<u64>,
    /// The record, members sorted.
    record: Option<Conversation>,
    markers: Vec<(UserId, MessageId)>,
}

async fn state(store: &dyn MessageStore, seen: &Mutex<Seen>) -> State {
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
        notify: notify::notify_state(
            store,
            &users.iter().cloned().collect::<Vec<_>>(),
            &conversations.iter().cloned().collect::<Vec<_>>(),
        )
        .await,
        media: Vec::new(),
    };
    for id in media {
        state.media.push(notify::media_state(store, &id).await);
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
async fn probe_tokens(store: &dyn MessageStore, seen: &Mutex<Seen>) -> Vec<(String, Rotation)> {
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
async fn assert_same(nodes: &[&Node], seen: &Mutex<Seen>) {
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

fn conv(s: &str) -> ConversationId {
    ConversationId::new(s).expect("valid id")
}

fn user(s: &str) -> UserId {
    UserId::new(s).expect("valid id")
}

/// A message id as node `node` issues it `n` ms after a fixed time.
fn mid(n: u64, node: u64, seq: u64) -> MessageId {
    MessageId(MessageId::floor_at(1_750_000_000_000 + n).0 | (node << 12) | seq)
}

fn message(c: &ConversationId, sender: &UserId, id: MessageId, key: &str) -> Message {
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

fn member(u: &str, role: Role) -> Member {
    Member {
        user: user(u),
        role,
    }
}

fn change(
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

fn token(hash: &str, family: &str) -> RefreshRecord {
    RefreshRecord {
        token_hash: hash.into(),
        user: user("alice"),
        family: family.into(),
        expires_at: u64::MAX,
    }
}

/// A bit of everything, written through `store`.
async fn write_some(store: &dyn MessageStore, tag: &str, node_id: u64) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_without_a_link() {
    let a = node("a");
    conformance::run_all(a.store.as_ref()).await;
    // Every write was logged, under seqs 1, 2, 3, ... of this node.
    let log = full_log(&a.store).await;
    assert!(log.len() >= 30, "only {} ops logged", log.len());
    assert!(log.iter().all(|op| op.origin == "a"));
    assert_eq!(
        log.iter().map(|op| op.seq).collect::<Vec<_>>(),
        (1..=log.len() as u64).collect::<Vec<_>>()
    );
    assert_eq!(
        a.store.vector(),
        BTreeMap::from([("a".into(), log.len() as u64)])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_with_two_peers_leaves_them_equal() {
    let (a, b, c) = (node("a"), node("b"), node("c"));
    a.store.set_link(TestLink::new(&[&b, &c]));
    let seen = Arc::new(Mutex::new(Seen::default()));
    conformance::run_all(&Recorder::new(&a.store, &seen)).await;
    let vector = a.store.vector();
    assert_eq!(b.store.vector(), vector);
    assert_eq!(c.store.vector(), vector);
    let log = full_log(&a.store).await;
    assert_eq!(full_log(&b.store).await, log);
    assert_eq!(full_log(&c.store).await, log);
    assert_same(&[&a, &b, &c], &seen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_was_down_catches_up_in_chunks() {
    let (a, b, c) = (node("a"), node("b"), node("c"));
    let link = TestLink::new(&[&b, &c]);
    a.store.set_link(link.clone());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let on_a = Recorder::new(&a.store, &seen);
    write_some(&on_a, "before", 1).await;
    // c goes down: it misses the whole suite and more.
    link.down.lock().expect("lock").insert(1);
    conformance::run_all(&on_a).await;
    write_some(&on_a, "during", 1).await;
    assert_ne!(c.store.vector(), a.store.vector());
    assert!(c.store.vector()["a"] > 0, "c saw the first writes");

    // Back up: it pulls from b (not the origin) in small chunks.
    pull(&b.store, &c.store, 5, 4096).await;
    assert_eq!(c.store.vector(), a.store.vector());
    assert_eq!(full_log(&c.store).await, full_log(&a.store).await);
    // Nothing more to pull from anyone.
    assert!(a
        .store
        .ops_after(&c.store.vector(), 10, 10_000)
        .await
        .expect("ops_after")
        .is_empty());
    assert_same(&[&a, &b, &c], &seen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healed_partition_converges() {
    let (a, b) = (node("a"), node("b"));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (on_a, on_b) = (
        Recorder::new(&a.store, &seen),
        Recorder::new(&b.store, &seen),
    );
    let room = conv("room");
    let (alice, bob) = (user("alice"), user("bob"));

    // Before the partition, in sync.
    on_a.apply_conversation(&change(
        &room,
        "start",
        vec![
            member("alice", Role::Owner),
            member("bob", Role::Member),
            member("carol", Role::Member),
        ],
        &[],
    ))
    .await
    .expect("create");
    on_a.put_refresh(&token("t1", "f1")).await.expect("put");
    on_a.put_refresh(&token("u1", "f2")).await.expect("put");
    pull(&a.store, &b.store, 100, 1 << 20).await;

    // The partition: both sides write.
    for (store, node_id) in [(&on_a, 1), (&on_b, 2)] {
        let messages: Vec<Message> = (0..5)
            .map(|n| {
                message(
                    &room,
                    &alice,
                    mid(n * 10 + node_id, node_id, 0),
                    &format!("a{node_id}-{n}"),
                )
            })
            .collect();
        store.append(&messages).await.expect("append");
    }
    // The same retried send accepted on both sides; b's id is the lower.
    let dup_a = message(&room, &bob, mid(100, 1, 0), "retried");
    let dup_b = message(&room, &bob, mid(90, 2, 0), "retried");
    on_a.append(std::slice::from_ref(&dup_a))
        .await
        .expect("append");
    on_b.append(std::slice::from_ref(&dup_b))
        .await
        .expect("append");
    // Read markers moved differently on each side.
    on_a.set_read_marker(&room, &bob, mid(10, 1, 0))
        .await
        .expect("marker");
    on_b.set_read_marker(&room, &bob, mid(20, 2, 0))
        .await
        .expect("marker");
    on_a.set_read_marker(&room, &alice, mid(30, 1, 0))
        .await
        .expect("marker");
    on_b.set_read_marker(&room, &alice, mid(5, 2, 0))
        .await
        .expect("marker");
    // Membership: a renames, adds dave, makes bob admin; b renames, removes
    // carol, adds erin, makes bob a member again (one register, two writers).
    on_a.apply_conversation(&change(
        &room,
        "title a",
        vec![member("dave", Role::Member), member("bob", Role::Admin)],
        &[],
    ))
    .await
    .expect("change");
    on_b.apply_conversation(&change(
        &room,
        "title b",
        vec![member("erin", Role::Member), member("bob", Role::Member)],
        &["carol"],
    ))
    .await
    .expect("change");
    // One user id signed up on both sides.
    let zed = |created_at, hash: &str| UserRecord {
        id: user("zed"),
        password_hash: Some(hash.into()),
        display_name: None,
        created_at,
    };
    on_a.create_user(&zed(100, "from-a")).await.expect("create");
    on_b.create_user(&zed(50, "from-b")).await.expect("create");
    // The same token rotated on both sides; a family revoked on one side
    // while the other rotates in it.
    assert!(matches!(
        on_a.rotate_refresh("t1", &token("t2a", "x"), 1).await,
        Ok(Rotation::Rotated { .. })
    ));
    assert!(matches!(
        on_b.rotate_refresh("t1", &token("t2b", "x"), 1).await,
        Ok(Rotation::Rotated { .. })
    ));
    assert!(matches!(
        on_a.rotate_refresh("u1", &token("u2", "x"), 1).await,
        Ok(Rotation::Rotated { .. })
    ));
    assert_eq!(
        on_b.revoke_refresh_family("u1").await.expect("revoke"),
        Some(alice.clone())
    );

    // Heal: anti-entropy both ways.
    pull(&a.store, &b.store, 3, 2048).await;
    pull(&b.store, &a.store, 3, 2048).await;
    assert_eq!(a.store.vector(), b.store.vector());
    assert_eq!(
        a.store.vector().keys().cloned().collect::<Vec<_>>(),
        ["a", "b"]
    );

    // What the rules promise, on both nodes.
    for store in [&a.store, &b.store] {
        let found = store
            .find_by_client_msg_id(&room, &bob, &ClientMsgId::new("retried").expect("valid"))
            .await
            .expect("find");
        assert_eq!(found, Some(dup_b.clone()), "the lower id keeps the key");
        let history = store
            .page(&room, PageQuery::new(None, None, 100))
            .await
            .expect("page");
        assert_eq!(
            history.messages.len(),
            12,
            "both sides' messages, both retries"
        );
        assert!(history.messages.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(
            store.read_marker(&room, &bob).await.expect("m"),
            Some(mid(20, 2, 0))
        );
        assert_eq!(
            store.read_marker(&room, &alice).await.expect("m"),
            Some(mid(30, 1, 0))
        );
        let record = store
            .conversation(&room)
            .await
            .expect("read")
            .expect("exists");
        let members: BTreeMap<UserId, Role> = record
            .members
            .iter()
            .map(|m| (m.user.clone(), m.role))
            .collect();
        let names: Vec<&str> = members.keys().map(|u| u.as_str()).collect();
        assert_eq!(
            names,
            ["alice", "bob", "dave", "erin"],
            "both sides' adds, b's removal"
        );
        assert_eq!(
            store
                .user_conversations(&user("carol"))
                .await
                .expect("index"),
            Vec::<ConversationId>::new()
        );
        assert_eq!(
            store
                .user_conversations(&user("dave"))
                .await
                .expect("index"),
            vec![room.clone()]
        );
        assert_eq!(
            store.user(&user("zed")).await.expect("user"),
            Some(zed(50, "from-b"))
        );
    }
    assert_same(&[&a, &b], &seen).await;

    // Tokens can only be read by rotating them, which writes: check a copy
    // made by anti-entropy (the probes above wrote to a's and b's embedded
    // stores only, not to their logs).
    let copy = node("copy");
    pull(&b.store, &copy.store, 50, 1 << 20).await;
    assert_eq!(copy.store.vector(), b.store.vector());
    let rotate = |old: &'static str| {
        let store = copy.store.clone();
        async move {
            store
                .rotate_refresh(old, &token(&format!("{old}-next"), "x"), 2)
                .await
                .expect("rotate")
        }
    };
    let rotated = Rotation::Rotated {
        user: alice.clone(),
    };
    assert_eq!(rotate("t2a").await, rotated, "a's rotation stands");
    assert_eq!(rotate("t2b").await, rotated, "so does b's");
    assert_eq!(
        rotate("u2").await,
        Rotation::Invalid,
        "b revoked its family"
    );
    assert_eq!(
        rotate("t1").await,
        Rotation::Reused,
        "t1 was used up on both sides"
    );
}

/// Ops of two origins that both changed one conversation, applied in many
/// orders (per origin out of order too): every order gives the same state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_changes_converge_in_any_order() {
    let (a, b) = (node("a"), node("b"));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (on_a, on_b) = (
        Recorder::new(&a.store, &seen),
        Recorder::new(&b.store, &seen),
    );
    let room = conv("room");
    let others = ["u1", "u2", "u3", "u4"];
    // Interleaved changes on both sides, each touching some members and the title.
    for round in 0..6usize {
        for (side, store) in [(0usize, &on_a), (1, &on_b)] {
            let pick = |k: usize| others[(round + side + k) % others.len()];
            let role = if (round + side) % 2 == 0 {
                Role::Admin
            } else {
                Role::Member
            };
            store
                .apply_conversation(&change(
                    &room,
                    &format!("title {round} from {side}"),
                    vec![member(pick(0), role), member("owner", Role::Owner)],
                    &[pick(1)],
                ))
                .await
                .expect("change");
        }
    }
    let ops: Vec<ReplicatedOp> = [full_log(&a.store).await, full_log(&b.store).await].concat();
    assert_eq!(ops.len(), 12);

    // Reference: heal a and b by anti-entropy.
    pull(&a.store, &b.store, 4, 1 << 20).await;
    pull(&b.store, &a.store, 4, 1 << 20).await;
    let reference = state(a.store.as_ref(), &seen).await;
    assert_eq!(reference, state(b.store.as_ref(), &seen).await);

    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut orders: Vec<Vec<ReplicatedOp>> = vec![ops.iter().rev().cloned().collect()];
    for _ in 0..4 {
        let mut order = ops.clone();
        // Fisher-Yates with xorshift: reproducible orders.
        for i in (1..order.len()).rev() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            order.swap(i, (rng % (i as u64 + 1)) as usize);
        }
        orders.push(order);
    }
    for (i, order) in orders.into_iter().enumerate() {
        let fresh = node(&format!("fresh{i}"));
        for op in order {
            fresh.store.apply_remote(op).await.expect("apply");
        }
        assert_eq!(fresh.store.vector(), a.store.vector());
        assert_eq!(
            state(fresh.store.as_ref(), &seen).await,
            reference,
            "order {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_and_out_of_order_delivery() {
    let (a, b) = (node("a"), node("b"));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let on_a = Recorder::new(&a.store, &seen);
    write_some(&on_a, "x", 1).await;
    let ops = full_log(&a.store).await;
    assert!(ops.len() >= 6, "{} ops", ops.len());
    let op = |seq: u64| ops[seq as usize - 1].clone();
    let at = |v: u64| BTreeMap::from([("a".to_owned(), v)]);

    assert_eq!(b.store.vector(), BTreeMap::new());
    b.store.apply_remote(op(2)).await.expect("apply");
    assert_eq!(b.store.vector(), BTreeMap::new(), "2 without 1 is a gap");
    for seq in [1, 4, 4, 1, 2] {
        b.store.apply_remote(op(seq)).await.expect("apply");
    }
    assert_eq!(b.store.vector(), at(2), "1, 2 and 4 held");
    // Only what lies below the gap is offered onwards.
    let offered = b
        .store
        .ops_after(&BTreeMap::new(), 100, 1 << 20)
        .await
        .expect("ops_after");
    assert_eq!(offered, vec![op(1), op(2)]);
    b.store.apply_remote(op(3)).await.expect("apply");
    assert_eq!(b.store.vector(), at(4), "3 closes the gap up to 4");
    for op in ops.iter().rev() {
        b.store.apply_remote(op.clone()).await.expect("apply");
    }
    for op in &ops {
        b.store.apply_remote(op.clone()).await.expect("apply");
    }
    assert_eq!(b.store.vector(), a.store.vector());
    assert_eq!(full_log(&b.store).await, ops);
    // max_ops 0 still gives one op.
    let one = a.store.ops_after(&at(2), 0, 0).await.expect("ops_after");
    assert_eq!(one, vec![op(3)]);
    assert_same(&[&a, &b], &seen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_ops_are_refused_and_change_nothing() {
    let (a, b) = (node("a"), node("b"));
    let seen = Arc::new(Mutex::new(Seen::default()));
    write_some(&Recorder::new(&a.store, &seen), "m", 1).await;
    let ops = full_log(&a.store).await;
    b.store.apply_remote(ops[0].clone()).await.expect("apply");
    let vector = b.store.vector();
    let log = full_log(&b.store).await;

    // write_some's first op is the conversation, whose first "alice" is a
    // member's user id: same length, but `!` is not allowed in one.
    let mut bad_id = ops[0].clone();
    assert!(bad_id.bytes.windows(6).any(|w| w == b"upsert"));
    let at = bad_id
        .bytes
        .windows(5)
        .position(|w| w == b"alice")
        .expect("alice in the op");
    bad_id.bytes[at + 1] = b'!';
    bad_id.seq = 2;
    let mut truncated = ops[1].clone();
    truncated.bytes.truncate(truncated.bytes.len() / 2);
    let garbage = ReplicatedOp {
        origin: "a".into(),
        seq: 2,
        bytes: vec![0xc1, 0xff, 0x00],
    };
    let seq_zero = ReplicatedOp {
        seq: 0,
        ..ops[1].clone()
    };
    let no_origin = ReplicatedOp {
        origin: String::new(),
        ..ops[1].clone()
    };
    let long_origin = ReplicatedOp {
        origin: "n".repeat(300),
        ..ops[1].clone()
    };
    // Seq 1 of a is held with other content.
    let clash = ReplicatedOp {
        seq: 1,
        ..ops[1].clone()
    };
    for (what, op) in [
        ("a bad user id", bad_id),
        ("a truncated op", truncated),
        ("garbage", garbage),
        ("seq 0", seq_zero),
        ("an empty origin", no_origin),
        ("a long origin", long_origin),
        ("a clash with a held op", clash),
    ] {
        let result = b.store.apply_remote(op).await;
        assert!(
            matches!(result, Err(StoreError::Corrupt(_))),
            "{what}: {result:?}"
        );
        assert_eq!(b.store.vector(), vector, "{what} changed the vector");
        assert_eq!(full_log(&b.store).await, log, "{what} changed the log");
    }
    // The store still works: the real ops apply.
    for op in &ops {
        b.store.apply_remote(op.clone()).await.expect("apply");
    }
    assert_eq!(b.store.vector(), a.store.vector());
    assert_same(&[&a, &b], &seen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_log_the_vector_and_the_seq() {
    let a = node("a");
    let x = node("x");
    write_some(x.store.as_ref(), "x", 2).await;
    let from_x = full_log(&x.store).await;
    write_some(a.store.as_ref(), "a", 1).await;
    let own = a.store.vector()["a"];
    // Hold x's ops 1, 2 and 4: a gap at 3.
    for seq in [1, 2, 4] {
        a.store
            .apply_remote(from_x[seq - 1].clone())
            .await
            .expect("apply");
    }
    let vector = a.store.vector();
    assert_eq!(vector, BTreeMap::from([("a".into(), own), ("x".into(), 2)]));
    let log = full_log(&a.store).await;

    let a = restart(a).await;
    assert_eq!(a.store.vector(), vector, "the vector after a restart");
    assert_eq!(full_log(&a.store).await, log, "the log after a restart");
    // The next local write continues the seq.
    let link = Arc::new(CaptureLink::default());
    a.store.set_link(link.clone());
    a.store
        .set_read_marker(&conv("room-a"), &user("alice"), mid(11, 1, 0))
        .await
        .expect("marker");
    let sent = link.ops.lock().expect("lock").clone();
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].origin.as_str(), sent[0].seq), ("a", own + 1));
    // The op above the gap survived too: 3 closes the gap up to 4.
    a.store
        .apply_remote(from_x[2].clone())
        .await
        .expect("apply");
    assert_eq!(a.store.vector()["x"], 4);
    assert_eq!(
        a.store
            .ops_after(&BTreeMap::from([("a".into(), own + 1)]), 100, 1 << 20)
            .await
            .expect("ops_after"),
        from_x[..4].to_vec()
    );
}

/// A write the link cannot promise returns the link's error, but it is
/// stored and logged here and reaches the peer by anti-entropy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_replication_is_caught_up_later() {
    let (a, b) = (node("a"), node("b"));
    a.store.set_link(Arc::new(CaptureLink {
        fail: true,
        ..CaptureLink::default()
    }));
    let m = message(&conv("room"), &user("alice"), mid(1, 1, 0), "k");
    let result = a.store.append(std::slice::from_ref(&m)).await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
    assert_eq!(a.store.vector()["a"], 1);
    assert_eq!(
        a.store.last_message(&conv("room")).await.expect("last"),
        Some(m.clone())
    );
    pull(&a.store, &b.store, 10, 1 << 20).await;
    assert_eq!(
        b.store.last_message(&conv("room")).await.expect("last"),
        Some(m)
    );
}

/// Writes that change nothing log nothing: a marker that would move back,
/// a failed rotation, a taken user id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ops_for_writes_that_change_nothing() {
    let a = node("a");
    let (c, bob) = (conv("room"), user("bob"));
    a.store
        .set_read_marker(&c, &bob, mid(5, 1, 0))
        .await
        .expect("marker");
    let record = UserRecord {
        id: bob.clone(),
        password_hash: None,
        display_name: None,
        created_at: 1,
    };
    a.store.create_user(&record).await.expect("create");
    let logged = a.store.vector()["a"];
    a.store
        .set_read_marker(&c, &bob, mid(4, 1, 0))
        .await
        .expect("marker");
    a.store
        .set_read_marker(&c, &bob, mid(5, 1, 0))
        .await
        .expect("marker");
    assert!(matches!(
        a.store.create_user(&record).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(
        a.store
            .rotate_refresh("unknown", &token("n", "f"), 1)
            .await
            .expect("rotate"),
        Rotation::Invalid
    );
    assert_eq!(
        a.store
            .revoke_refresh_family("unknown")
            .await
            .expect("revoke"),
        None
    );
    assert_eq!(a.store.vector()["a"], logged);
    assert_eq!(
        a.store.read_marker(&c, &bob).await.expect("m"),
        Some(mid(5, 1, 0))
    );
}

/// Refresh-token ops carry effects, not calls: in any order, on any node,
/// a rotation leaves the old token used and the new one valid, and a
/// revocation sticks even if it arrives before the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_effects_apply_in_any_order() {
    let a = node("a");
    a.store.put_refresh(&token("t1", "f1")).await.expect("put");
    assert_eq!(
        a.store
            .rotate_refresh("t1", &token("t2", "x"), 1)
            .await
            .expect("rotate"),
        Rotation::Rotated {
            user: user("alice")
        }
    );
    a.store.put_refresh(&token("u1", "f2")).await.expect("put");
    assert_eq!(
        a.store.revoke_refresh_family("u1").await.expect("revoke"),
        Some(user("alice"))
    );
    let ops = full_log(&a.store).await;
    assert_eq!(ops.len(), 4);
    for (i, order) in [[0, 1, 2, 3], [1, 0, 3, 2], [3, 1, 2, 0]]
        .iter()
        .enumerate()
    {
        let n = node(&format!("n{i}"));
        for &k in order {
            n.store.apply_remote(ops[k].clone()).await.expect("apply");
        }
        // Probed on the embedded store: these rotations are not logged.
        let rotate = |old: &'static str| {
            let store = n.local.clone();
            async move {
                store
                    .rotate_refresh(old, &token(&format!("{old}-next"), "x"), 2)
                    .await
                    .expect("rotate")
            }
        };
        assert_eq!(
            rotate("u1").await,
            Rotation::Invalid,
            "order {order:?}: revoked family"
        );
        assert_eq!(
            rotate("t2").await,
            Rotation::Rotated {
                user: user("alice")
            },
            "order {order:?}: the rotated-to token works"
        );
        assert_eq!(
            rotate("t1").await,
            Rotation::Reused,
            "order {order:?}: the old token stays used"
        );
    }
}
