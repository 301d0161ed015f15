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
//! Keyspaces, in the embedded store's database (strings length-prefixed as
//! everywhere in [`super::embedded`]):
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
//! - **notification settings, push subscriptions, outbox jobs, digests,
//!   dead letters, e-mail addresses and mailed tokens**: last-writer-wins
//!   registers, one per key (`registers.rs`), versioned like the
//!   conversation registers; deletes are kept as versions, so a delete
//!   that arrives before its put still wins. **Notification cursors**:
//!   max. The outbox's *marks* are not replicated: every node marks its own
//!   copy when it applies a message write, and its worker clears its own.
//!
//! # Limits
//!
//! - The log keeps every op for good (messages are stored twice), so the
//!   body of a deleted message stays in the append op that brought it.
//!   Trimming what every node holds, with a snapshot transfer for a node
//!   whose gap has been trimmed, is future work.
//! - The versions of deleted registers (a job done, a digest mailed) are
//!   kept for good, like the op log.
//! - A mailed token taken on two nodes cut off from each other works on
//!   both (each store takes it once); on ScyllaDB a transaction decides.
//! - A node that loses its disk must come back under a new name: with the
//!   old one, its new ops would reuse seqs its peers hold with other
//!   content. Such a clash is detected ([`StoreError::Corrupt`] from
//!   [`ReplicatedStore::apply_remote`]), not repaired.
//! - [`ReplicatedStore::ops_after`] offers only ops below the first gap of an
//!   origin's log here (see there for why). Ops above a gap reach others
//!   from nodes without the gap; if the only node that ever held the missing
//!   op is gone for good, the ops above it stay on the nodes that have them.
//!
//! # Where things are
//!
//! `link.rs`: the op as shipped and the [`ReplicaLink`] that ships it.
//! `op_log.rs`: the log and its marks. `apply.rs`: what an op does, at its
//! origin and at every replica. `receive.rs`: the ops a peer sends.
//! `pull.rs`: anti-entropy. `store.rs`: the [`ReplicatedStore`], its local
//! writes and its domain traits.
//! The embedded store is used only through the face it exposes for this
//! (see [`super::embedded`]).
//!
//! [`StoreError::Conflict`]: crate::StoreError::Conflict
//! [`StoreError::Corrupt`]: crate::StoreError::Corrupt

mod access;
mod apply;
mod link;
mod media;
mod notifications;
mod op_log;
mod profiles;
mod pull;
mod receive;
mod registers;
mod relations;
mod reports;
mod security;
mod store;
mod version;

pub use link::{ReplicaLink, ReplicatedOp};
pub use store::ReplicatedStore;
