//! The embedded backend: fjall, an LSM tree on local disk.
//!
//! The keyspaces mirror the ScyllaDB tables so both backends answer the same
//! queries with the same kind of scan:
//!
//! | keyspace             | key                                   | value                 |
//! |----------------------|---------------------------------------|-----------------------|
//! | `messages`           | conversation, bucket (u32 BE), id (u64 BE) | the message (MessagePack map) |
//! | `client_msg_ids`     | conversation, sender, client_msg_id   | id (u64 BE)           |
//! | `message_revs`       | conversation, rev (u64 BE)            | id (u64 BE)           |
//! | `mentions`           | conversation, user, id (u64 BE)       | empty                 |
//! | `conversations`      | conversation                          | id, kind, title, created_at |
//! | `members`            | conversation, user                    | role                  |
//! | `user_conversations` | user, conversation                    | empty                 |
//! | `read_markers`       | conversation, user                    | id (u64 BE)           |
//! | `users`              | user                                  | the user record       |
//! | `refresh_tokens`     | token hash                            | user, family, expiry, used |
//! | `refresh_families`   | family                                | active 0 / revoked 1  |
//! | `user_flags`         | user, flag                            | on, set at (ms), by   |
//! | `audit`              | at (u64 BE), id (u64 BE)              | the audit entry       |
//!
//! Three more keyspaces belong to [`super::replicated`], which keeps its op
//! log in this database so that a write and its log entry commit in one
//! batch: `op_log`, `op_marks` and `replica_versions` (their layout is
//! described there). A store that is never replicated leaves them empty.
//!
//! Every string in a key is preceded by its length (u16 BE): without it the
//! range of conversation `ab` would also hold the keys of conversation `abc`.
//!
//! fjall's calls block (and a durable write waits for an fsync), so writes
//! and long reads stay off the async runtime. Every write goes to one writer
//! thread that commits everything queued in one batch with one fsync: a
//! thousand conversations appending at once cost a few fsyncs, not a
//! thousand. Scans and pages run on the blocking pool. A read of one key
//! (a user, a flag, a marker, the last revision) or of the few changes the
//! search indexer asks for each pass runs on the caller's thread: it is
//! served from memory as a rule, and the hand-off to the pool and back
//! cost more than the read.
//!
//! Some writes depend on what is stored: a read marker never moves back, a
//! `client_msg_id` keeps pointing at the lowest message id that claimed it, a
//! user id is taken once, a refresh token is used up once. Those run as an
//! update (a `Txn`) on the writer thread, which sees the committed data with
//! the writes of the batch being built laid over it. The writer is the only
//! writer of this database, so what an update reads there is exactly what its
//! writes will land on: no lock, and no read-then-write race between two
//! callers (two sign-ups of one name, two rotations of one token).
//!
//! The engine is `store.rs` (the handle), `keyspaces.rs`, `keys.rs` (the key
//! layout), `writer.rs` (the thread) and `txn.rs` (the transaction); each
//! domain has a file of its own (`history.rs`, `conversations.rs`,
//! `accounts.rs`, `moderation.rs`) with its reads, its transaction steps and
//! its trait's implementation.
//!
//! # The face the replicated store builds on
//!
//! The replicated store keeps its op log in this database and applies ops
//! with the same transaction steps as the store itself, so this module lets
//! it see, on purpose and nothing more (everything `pub(crate)` re-exported
//! below): `EmbeddedStore::update` and the steps of `Txn` (each domain's
//! `pub(crate)` ones, and `replica_get` / `replica_put` on its own
//! keyspaces, named by `ReplicaTable`), `EmbeddedStore::replica_keyspace`
//! to scan them, the key layout (`key_of`, `split_part`, `decode_u64`), and
//! the refresh-token effects it ships (`RefreshEffect`, `RefreshToken`).

mod access;
mod accounts;
mod conversations;
#[cfg(feature = "faults")]
mod faults;
mod history;
mod keys;
mod keyspaces;
mod marks;
mod media;
mod moderation;
mod notifications;
mod outbox;
mod people;
mod profiles;
mod registers;
mod relations;
mod reports;
mod security;
mod store;
mod txn;
mod writer;

pub use store::{Durability, EmbeddedStore};

pub(crate) use accounts::{RefreshEffect, RefreshToken};
pub(crate) use keys::{decode_u64, key_of, split_part};
pub(crate) use keyspaces::ReplicaTable;
pub(crate) use registers::Writes;
pub(crate) use txn::Txn;

use crate::LeaseStore;

/// A store on one node's disk has no other writer to take turns with: every
/// lease is granted (the trait's defaults).
impl LeaseStore for EmbeddedStore {}
