//! Every write replicated to every node: the store of a cluster whose nodes
//! each keep an embedded store (no ScyllaDB).
//!
//! With the replication factor equal to the number of nodes (fine for the
//! small clusters that run without ScyllaDB), any node can serve any
//! conversation after another dies, and a node that was down or cut off
//! catches up by pulling what it lacks from any peer (anti-entropy).
//!
//! # The op log
//!
//! A node accepts a write (it is the write's *origin*), turns it into a
//! `StoreOp` (what changed, not the call that changed it), gives it the next
//! *seq* of its own log (1, 2, 3, ... with no gap) and commits the change and
//! the log entry in one fjall batch, so the log never lacks a write that
//! happened nor holds one that did not, whatever the moment of a crash. Only
//! then does it hand the op to the [`ReplicaLink`], which resolves once every
//! connected peer has applied it durably. A peer applies an op with the same
//! code the origin ran, and logs it under the origin's name and seq in the
//! same batch. Ops of one origin may arrive in any order, twice, or from a
//! node other than their origin: an op already held is skipped, and the
//! [`ReplicatedStore::vector`] of a node says per origin up to which seq it
//! holds everything.
//!
//! Keyspaces, in the embedded store's database (strings length-prefixed as in
//! [`super::embedded`]):
//!
//! | keyspace           | key                         | value                                   |
//! |--------------------|-----------------------------|-----------------------------------------|
//! | `op_log`           | origin, seq (u64 BE)        | the op (MessagePack of `StoreOp`)       |
//! | `op_marks`         | origin                      | contiguous seq (u64 BE), highest seq (u64 BE) |
//! | `replica_versions` | conversation [, user]       | version: ms (u64 BE), origin            |
//!
//! # Convergence
//!
//! Every op is applied as a merge that is idempotent and commutative with
//! every other op, so nodes that hold the same set of ops hold the same data,
//! whatever order the ops came in:
//!
//! - **append**: messages are keyed by their id, which is unique in the
//!   cluster (it embeds the issuing node's id), so storing one twice is a
//!   no-op. The `client_msg_id` index of a (conversation, sender,
//!   client_msg_id) keeps the lowest message id that claimed it. Two messages
//!   can claim one key only when two owners accepted the same retried send,
//!   which takes a partition (each side's owner checked only its own store)
//!   or a crash between a write reaching some nodes and the client's retry
//!   going elsewhere; both messages stay in the history (both were
//!   acknowledged), and every node resolves the key to the same one.
//! - **message updates** (edit, delete, reactions): the state with the
//!   higher `rev` wins, at one `rev` the larger encoding; an append that
//!   arrives after an update of the same message keeps the update. The
//!   revision and mentions indexes move with the state that wins.
//! - **read markers**: max. A marker never moves back, here and in the
//!   embedded store itself, so the highest position anyone reached wins.
//! - **conversations**: last writer wins per *register*, where the registers
//!   are the conversation's metadata and each (conversation, user)
//!   membership (a role, or "removed", which is kept as a tombstone version).
//!   An op carries the metadata after the change, the members it touched and
//!   one version: the origin's wall-clock milliseconds, raised above every
//!   version the origin holds for the registers it touches (a hybrid clock,
//!   so a later change at one node always wins over what that node has seen,
//!   even if its clock stepped back), tie-broken by origin name. A replica
//!   applies each register of the op whose held version is lower, and keeps
//!   the per-user conversation index in step with each membership it
//!   changes. A total order of versions per register makes the outcome
//!   independent of arrival order. This is better than shipping the whole
//!   member list with one version for the conversation: two sides of a
//!   partition adding different members both keep their member after the
//!   heal (only changes of the same register conflict), and an op is as big
//!   as its change, not as the member list of a large channel.
//! - **users**: creation is checked against the local store at the origin
//!   (a taken id is [`StoreError::Conflict`]). A replica that holds the id
//!   already (the same id was created on both sides of a partition) keeps
//!   the record that is smaller by (created_at, password_hash,
//!   display_name), so every node picks the same.
//! - **account flags** (admin, suspended): a register per user and flag,
//!   the later setting by the origin's clock winning, then the greater
//!   origin. **Audit entries** are keyed by time and a random id: a replay
//!   rewrites the same entry.
//! - **refresh tokens**: a put, and the effects of a rotation or revocation
//!   as decided at the origin: "these token records" (the old one now used,
//!   the new one) or "this family is revoked". Token records merge with
//!   `used` only ever turning on, and revocation is a flag that only turns
//!   on; so replaying a rotation's effect, or applying it where it is
//!   applied already, can never be mistaken for the reuse of a used token
//!   and revoke its family, as replaying the call would. Failed rotations
//!   write nothing and log nothing.
//!
//! # Limits
//!
//! - The log keeps every op for good (messages are stored twice), so the
//!   body of a deleted message stays in the append op that brought it.
//!   Trimming what every node holds, with a snapshot transfer for a node
//!   whose gap has been trimmed, is future work.
//! - A node that loses its disk must come back under a new name: with the
//!   old one, its new ops would reuse seqs its peers hold with other
//!   content. Such a clash is detected ([`StoreError::Corrupt`] from
//!   [`ReplicatedStore::apply_remote`]), not repaired.
//! - [`ReplicatedStore::ops_after`] offers only ops below the first gap of an
//!   origin's log here (see there for why). Ops above a gap reach others
//!   from nodes without the gap; if the only node that ever held the missing
//!   op is gone for good, the ops above it stay on the nodes that have them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use chat_protocol::{
    ClientMsgId, Conversation, ConversationId, Member, Message, MessageId, Role, UserId,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::embedded::{
    decode_u64, key_of, split_part, EmbeddedStore, RefreshEffect, RefreshToken, ReplicaTable, Txn,
};
use super::{
    corrupt, AccountStore, AuditEntry, Changes, ConversationChange, ConversationStore,
    HistoryStore, LeaseStore, LoginState, ModerationStore, Page, PageQuery, RefreshRecord,
    Rotation, StoreError, UserFlag, UserFlags, UserRecord,
};

/// Longest origin (node name) an op may carry: it is part of keys.
const MAX_ORIGIN: usize = 255;

/// Longest token hash or family an op may carry: they are keys, and a key
/// part must fit its u16 length prefix; real ones are 64 hex digits.
const MAX_KEY_STRING: usize = 1024;

/// One write as shipped between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicatedOp {
    /// The node that accepted the write.
    pub origin: String,
    /// Its position in the origin's op log: 1, 2, 3, ... per origin, with no
    /// gap at the origin.
    pub seq: u64,
    /// The MessagePack encoding of the (private) `StoreOp`.
    pub bytes: Vec<u8>,
}

/// How a [`ReplicatedStore`] reaches its peers; the cluster layer implements
/// it.
#[async_trait]
pub trait ReplicaLink: Send + Sync + 'static {
    /// Sends `op` to every connected peer; resolves once each has it durably,
    /// or has been dropped from the cluster. `Err` means the write cannot be
    /// promised: the caller returns that error, and the op, which stays in
    /// the local log, reaches the peers by anti-entropy.
    async fn replicate(&self, op: ReplicatedOp) -> Result<(), StoreError>;
}

/// What an op does. The variant names and field names are the wire format
/// (encoded as maps): add variants and defaulted fields, never rename.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum StoreOp {
    /// Messages, stored by id.
    Append { messages: Vec<Message> },
    /// A message's new state (edit, delete, reactions), merged by `rev`.
    Update { message: Message },
    /// A read marker, merged by max.
    ReadMarker {
        conversation: ConversationId,
        user: UserId,
        up_to: MessageId,
    },
    /// A conversation change at version (`ms`, the op's origin): the
    /// metadata after it (`members` empty, unused) and the memberships it
    /// touched. A user in both lists is removed.
    Conversation {
        ms: u64,
        conversation: Conversation,
        upsert: Vec<Member>,
        remove: Vec<UserId>,
    },
    /// A user record, merged by keeping the smaller.
    User { record: UserRecord },
    /// A refresh-token effect.
    Refresh { effect: RefreshEffect },
    /// An account flag set at `at` (ms): the later setting wins, then the
    /// greater origin.
    UserFlag {
        user: UserId,
        flag: UserFlag,
        on: bool,
        at: u64,
    },
    /// An admin action (idempotent: keyed by its time and id).
    Audit { entry: AuditEntry },
}

/// The version of a conversation register. Ordered by `ms`, then `origin`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Version {
    ms: u64,
    origin: String,
}

impl Version {
    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(8 + self.origin.len());
        bytes.extend_from_slice(&self.ms.to_be_bytes());
        bytes.extend_from_slice(self.origin.as_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<Version, StoreError> {
        let (ms, origin) = bytes
            .split_first_chunk::<8>()
            .ok_or_else(|| corrupt("malformed version"))?;
        let origin = std::str::from_utf8(origin).map_err(|_| corrupt("malformed version"))?;
        Ok(Version {
            ms: u64::from_be_bytes(*ms),
            origin: origin.to_owned(),
        })
    }
}

/// How much of one origin's log a node holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Marks {
    /// Every seq in 1..=contiguous is held.
    contiguous: u64,
    /// The highest seq held.
    highest: u64,
}

impl Marks {
    fn encode(self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(16);
        bytes.extend_from_slice(&self.contiguous.to_be_bytes());
        bytes.extend_from_slice(&self.highest.to_be_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<Marks, StoreError> {
        let bytes: &[u8; 16] = bytes
            .try_into()
            .map_err(|_| corrupt("malformed op-log marks"))?;
        let (contiguous, highest) = bytes.split_at(8);
        Ok(Marks {
            contiguous: decode_u64(contiguous)?,
            highest: decode_u64(highest)?,
        })
    }
}

/// The [`MessageStore`](crate::MessageStore) of a node of a cluster of embedded stores: reads are
/// local, writes are logged and replicated (see the module documentation).
pub struct ReplicatedStore {
    local: Arc<EmbeddedStore>,
    node: Arc<str>,
    link: RwLock<Option<Arc<dyn ReplicaLink>>>,
    /// Per origin, the contiguous mark as last committed (the database has
    /// the truth; this answers [`Self::vector`] without a read). Origins held
    /// only above a gap have 0.
    contiguous: Mutex<BTreeMap<String, u64>>,
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

    /// Applies an op received from a peer (live replication or
    /// anti-entropy), durably when it returns `Ok`. An op held already is
    /// skipped, so duplicates and any order of arrival are fine. A malformed
    /// op is [`StoreError::Corrupt`] and changes nothing; so is an op whose
    /// (origin, seq) is held with other content (see the module's limits).
    pub async fn apply_remote(&self, op: ReplicatedOp) -> Result<(), StoreError> {
        let ReplicatedOp { origin, seq, bytes } = op;
        check_origin(&origin)?;
        if seq == 0 {
            return Err(corrupt("an op's seq starts at 1"));
        }
        // Decoded here rather than on the writer thread, which every write
        // of the node waits for.
        let decoded: StoreOp = decode(&bytes)?;
        check_op(&decoded)?;
        let held_by = origin.clone();
        let contiguous = self
            .local
            .update(move |txn| {
                if let Some(held) = txn.replica_get(ReplicaTable::OpLog, &log_key(&origin, seq))? {
                    if held != bytes {
                        return Err(corrupt(format!(
                            "op {seq} of {origin} is held with other content: \
                             did a node come back without its disk under its old name?"
                        )));
                    }
                    return Ok(None);
                }
                apply_op(txn, &origin, &decoded)?;
                log_op(txn, &origin, seq, bytes).map(Some)
            })
            .await?;
        if let Some(contiguous) = contiguous {
            self.note(&held_by, contiguous);
        }
        Ok(())
    }

    /// Per origin, the highest seq S such that every op 1..=S of that origin
    /// is held here (origins with S = 0 are left out).
    pub fn vector(&self) -> BTreeMap<String, u64> {
        self.contiguous
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, &seq)| seq > 0)
            .map(|(origin, &seq)| (origin.clone(), seq))
            .collect()
    }

    /// Ops held here that `vector` lacks, for pull-based anti-entropy in
    /// chunks: per origin (in name order), ascending from `vector[origin] +
    /// 1` (or 1), at most `max_ops` ops and `max_bytes` bytes of op (but at
    /// least one op if any is offered).
    ///
    /// Only ops up to this node's own contiguous mark of each origin are
    /// offered, never ops above a gap here. A `vector` cannot say which ops
    /// above its gaps the asker holds, so ops above a gap would be offered
    /// again in every chunk and a pull "until empty" would never end. With
    /// this rule every non-empty chunk moves the asker's vector forward (its
    /// first op of an origin is exactly the one after the asker's mark), so
    /// the pull ends; ops above a gap here come from a node without the gap.
    pub async fn ops_after(
        &self,
        vector: &BTreeMap<String, u64>,
        max_ops: usize,
        max_bytes: usize,
    ) -> Result<Vec<ReplicatedOp>, StoreError> {
        let wanted: Vec<(String, u64, u64)> = self
            .contiguous
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|(origin, &held)| {
                let have = vector.get(origin).copied().unwrap_or(0);
                (held > have).then(|| (origin.clone(), have + 1, held))
            })
            .collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let log = self.local.replica_keyspace(ReplicaTable::OpLog);
        let max_ops = max_ops.max(1);
        tokio::task::spawn_blocking(move || {
            let mut ops = Vec::new();
            let mut bytes = 0usize;
            for (origin, first, last) in wanted {
                let range = log.range(log_key(&origin, first), log_key(&origin, last));
                let mut expected = first;
                for entry in range {
                    let (key, value) = entry?;
                    if ops.len() == max_ops || (!ops.is_empty() && bytes + value.len() > max_bytes)
                    {
                        return Ok(ops);
                    }
                    let seq = log_seq(&key, &origin)?;
                    if seq != expected {
                        return Err(corrupt(format!(
                            "op {expected} of {origin} is missing below its mark"
                        )));
                    }
                    expected += 1;
                    bytes += value.len();
                    ops.push(ReplicatedOp {
                        origin: origin.clone(),
                        seq,
                        bytes: value,
                    });
                }
                if expected != last + 1 {
                    return Err(corrupt(format!(
                        "op {expected} of {origin} is missing below its mark"
                    )));
                }
            }
            Ok(ops)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("storage task failed: {e}")))?
    }

    /// Records a committed contiguous mark. Marks only grow, and replies of
    /// two commits may be handled in either order, hence the max.
    fn note(&self, origin: &str, contiguous: u64) {
        let mut marks = self.contiguous.lock().unwrap_or_else(|e| e.into_inner());
        let mark = marks.entry(origin.to_owned()).or_insert(0);
        *mark = (*mark).max(contiguous);
    }

    /// A local write: `decide` reads the current state and says what the
    /// write changes (`None`: nothing, so nothing is logged); the change is
    /// applied with the code a replica runs, logged under the next seq, all
    /// in one batch, then replicated.
    async fn write<R, F>(&self, decide: F) -> Result<R, StoreError>
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

/// Applies an op of `origin`: the same code at the origin and at replicas.
fn apply_op(txn: &mut Txn<'_>, origin: &str, op: &StoreOp) -> Result<(), StoreError> {
    match op {
        StoreOp::Append { messages } => txn.append_messages(messages),
        StoreOp::Update { message } => txn.update_message(message),
        StoreOp::ReadMarker {
            conversation,
            user,
            up_to,
        } => txn.raise_read_marker(conversation, user, *up_to),
        StoreOp::Conversation {
            ms,
            conversation,
            upsert,
            remove,
        } => {
            let version = Version {
                ms: *ms,
                origin: origin.to_owned(),
            };
            let id = &conversation.id;
            let meta = version_key(id, None);
            if held_version(txn, &meta)?.is_none_or(|held| held < version) {
                txn.put_conversation_meta(conversation)?;
                txn.replica_put(ReplicaTable::Versions, meta, version.encode());
            }
            for (user, role) in memberships(upsert, remove) {
                let key = version_key(id, Some(user));
                if held_version(txn, &key)?.is_none_or(|held| held < version) {
                    txn.set_member(id, user, role)?;
                    txn.replica_put(ReplicaTable::Versions, key, version.encode());
                }
            }
            Ok(())
        }
        StoreOp::User { record } => txn.merge_user(record),
        StoreOp::Refresh { effect } => txn.apply_refresh_effect(effect),
        StoreOp::UserFlag { user, flag, on, at } => {
            txn.set_user_flag(user, *flag, *on, *at, origin)
        }
        StoreOp::Audit { entry } => txn.put_audit(entry),
    }
}

/// The membership registers a change sets: upserts in order (a later one of
/// the same user wins), then removals, which win over upserts.
fn memberships<'a>(
    upsert: &'a [Member],
    remove: &'a [UserId],
) -> BTreeMap<&'a UserId, Option<Role>> {
    let mut changes = BTreeMap::new();
    for member in upsert {
        changes.insert(&member.user, Some(member.role));
    }
    for user in remove {
        changes.insert(user, None);
    }
    changes
}

/// Writes op (`origin`, `seq`) into the log and moves the origin's marks;
/// returns the new contiguous mark.
fn log_op(txn: &mut Txn<'_>, origin: &str, seq: u64, bytes: Vec<u8>) -> Result<u64, StoreError> {
    txn.replica_put(ReplicaTable::OpLog, log_key(origin, seq), bytes);
    let mut marks = marks(txn, origin)?;
    marks.highest = marks.highest.max(seq);
    if seq == marks.contiguous + 1 {
        // Ops that arrived early may close up behind this one.
        marks.contiguous = seq;
        while marks.contiguous < marks.highest
            && txn
                .replica_get(ReplicaTable::OpLog, &log_key(origin, marks.contiguous + 1))?
                .is_some()
        {
            marks.contiguous += 1;
        }
    }
    // Written even when unchanged: the marks keyspace is also the list of
    // origins held, read at start.
    txn.replica_put(ReplicaTable::OpMarks, key_of(&[origin]), marks.encode());
    Ok(marks.contiguous)
}

fn marks(txn: &Txn<'_>, origin: &str) -> Result<Marks, StoreError> {
    match txn.replica_get(ReplicaTable::OpMarks, &key_of(&[origin]))? {
        Some(bytes) => Marks::decode(&bytes),
        None => Ok(Marks::default()),
    }
}

fn held_version(txn: &Txn<'_>, key: &[u8]) -> Result<Option<Version>, StoreError> {
    match txn.replica_get(ReplicaTable::Versions, key)? {
        Some(bytes) => Version::decode(&bytes).map(Some),
        None => Ok(None),
    }
}

/// The version a local conversation change gets: now, or if this node holds
/// a version of one of the registers it touches at or after now (a clock
/// that stepped back, or a peer's clock ahead), just above the highest such.
/// So the change wins over everything this node has seen, here and on every
/// replica alike.
fn next_conversation_ms(txn: &Txn<'_>, change: &ConversationChange) -> Result<u64, StoreError> {
    let id = &change.conversation.id;
    let mut ms = now_ms();
    let users = change
        .upsert
        .iter()
        .map(|m| Some(&m.user))
        .chain(change.remove.iter().map(Some));
    for user in std::iter::once(None).chain(users) {
        if let Some(held) = held_version(txn, &version_key(id, user))? {
            ms = ms.max(held.ms.saturating_add(1));
        }
    }
    Ok(ms)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The register of a conversation's metadata (`None`) or of one membership.
fn version_key(conversation: &ConversationId, user: Option<&UserId>) -> Vec<u8> {
    match user {
        None => key_of(&[conversation.as_str()]),
        Some(user) => key_of(&[conversation.as_str(), user.as_str()]),
    }
}

fn log_key(origin: &str, seq: u64) -> Vec<u8> {
    let mut key = key_of(&[origin]);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The seq of a log key of `origin`.
fn log_seq(key: &[u8], origin: &str) -> Result<u64, StoreError> {
    let (held, seq) = split_part(key)?;
    if held != origin {
        return Err(corrupt("op-log key of another origin"));
    }
    decode_u64(seq)
}

fn check_origin(origin: &str) -> Result<(), StoreError> {
    if origin.is_empty() || origin.len() > MAX_ORIGIN {
        return Err(corrupt(format!(
            "an op's origin must be 1 to {MAX_ORIGIN} bytes, not {}",
            origin.len()
        )));
    }
    Ok(())
}

/// What decoding does not check of a peer's op: strings that become keys
/// must fit a key part. (Ids check themselves when they are decoded.)
fn check_op(op: &StoreOp) -> Result<(), StoreError> {
    let check = |s: &str| {
        if s.len() > MAX_KEY_STRING {
            Err(corrupt("a token hash or family in an op is too long"))
        } else {
            Ok(())
        }
    };
    match op {
        StoreOp::Refresh {
            effect: RefreshEffect::Tokens(tokens),
        } => tokens.iter().try_for_each(|t| {
            check(&t.token_hash)?;
            check(&t.family)
        }),
        StoreOp::Refresh {
            effect: RefreshEffect::RevokeFamily(family),
        } => check(family),
        _ => Ok(()),
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    // Maps rather than arrays: fields can be added without breaking peers
    // that run the previous version.
    rmp_serde::to_vec_named(value).map_err(|e| corrupt(format!("cannot encode an op: {e}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    rmp_serde::from_slice(bytes).map_err(|e| corrupt(format!("malformed op: {e}")))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_by_time_then_origin() {
        let v = |ms, origin: &str| Version {
            ms,
            origin: origin.into(),
        };
        assert!(v(1, "b") < v(2, "a"));
        assert!(v(2, "a") < v(2, "b"));
        for version in [v(0, "a"), v(u64::MAX, "node-7"), v(5, "")] {
            assert_eq!(Version::decode(&version.encode()).ok(), Some(version));
        }
        assert!(Version::decode(&[1, 2, 3]).is_err());
    }

    #[test]
    fn marks_and_log_keys_round_trip() {
        let marks = Marks {
            contiguous: 3,
            highest: 9,
        };
        assert_eq!(Marks::decode(&marks.encode()).ok(), Some(marks));
        assert!(Marks::decode(&[0; 15]).is_err());
        assert_eq!(log_seq(&log_key("n1", 42), "n1").ok(), Some(42));
        assert!(log_seq(&log_key("n1", 42), "n10").is_err());
        assert!(log_seq(&[0, 5, b'a'], "a").is_err());
        // Keys of one origin sort by seq, so a range scan walks the log in order.
        assert!(log_key("n", 255) < log_key("n", 256));
    }

    #[test]
    fn removals_win_over_upserts() {
        let (a, b) = (UserId::new("a").unwrap(), UserId::new("b").unwrap());
        let upsert = [
            Member {
                user: a.clone(),
                role: Role::Member,
            },
            Member {
                user: b.clone(),
                role: Role::Member,
            },
            Member {
                user: a.clone(),
                role: Role::Admin,
            },
        ];
        let changes = memberships(&upsert, std::slice::from_ref(&b));
        assert_eq!(changes.get(&a), Some(&Some(Role::Admin)));
        assert_eq!(changes.get(&b), Some(&None));
    }
}
