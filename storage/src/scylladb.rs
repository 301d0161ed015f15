//! The ScyllaDB backend: history and accounts in a ScyllaDB (or Apache
//! Cassandra) cluster, so that a node keeps nothing it needs on its own disk.
//!
//! Tables (the keyspace is configured; `docs/storage.md` says why each key is
//! what it is and what each request costs):
//!
//! | table                  | partition key                        | clustering        |
//! |------------------------|--------------------------------------|-------------------|
//! | `messages`             | conversation, bucket                 | id DESC           |
//! | `conversation_buckets` | conversation                         | bucket DESC       |
//! | `client_msg_ids`       | conversation, sender, client_msg_id  |                   |
//! | `conversations`        | conversation (metadata in static columns) | user (a member) |
//! | `user_conversations`   | user                                 | conversation      |
//! | `read_markers`         | conversation                         | user              |
//! | `users`                | user                                 |                   |
//! | `refresh_tokens`       | token hash                           |                   |
//! | `logins`               | refresh family                       |                   |
//! | `settings`             | name                                 |                   |
//! | `conversation_leases`  | conversation                         |                   |
//!
//! A bucket is a fixed window (`bucket_days`) of a message id's time, so no
//! partition grows without bound; `conversation_buckets` lists the buckets
//! that hold messages, so paging jumps from one non-empty bucket to the next
//! without probing the empty ones in between.
//!
//! One node writes a conversation at a time: the holder of its lease
//! (`conversation_leases`, taken and renewed with lightweight transactions,
//! once per activation and renewal), which then checks `client_msg_id`s with
//! plain reads and writes with plain writes. Elsewhere, where two writers may
//! race, a lightweight transaction decides: a username, the use of a refresh
//! token, a `client_msg_id` claimed without a lease. Other writes are plain
//! writes that commute: read markers carry their message id as the write
//! timestamp (the highest wins, whatever the arrival order), a login's
//! revocation is written at a higher timestamp than its activation.
//!
//! Batches hold rows of one partition only (atomic and isolated there, and no
//! coordinator fan-out); writes to several partitions run concurrently, in an
//! order that leaves no dangling reference if one fails: the id claim, then
//! the bucket list, then the message row.
//!
//! # Where things are
//!
//! `config.rs` (`[storage.scylla]`), `cql.rs` (the session, what a
//! lightweight transaction answered), `schema.rs` (the migrations),
//! `statements.rs` and `statements/` (each domain's prepared statements, in a
//! file of its own), `store.rs` (the handle: settings, how a statement
//! runs); one file per domain with its trait's implementation:
//! `history.rs` (with `history/rows.rs`, the message row and its writes, and
//! `history/buckets.rs`), `conversations.rs`, `accounts.rs`, `leases.rs`,
//! `moderation.rs`.

mod access;
mod accounts;
mod config;
mod conversations;
mod cql;
mod history;
mod leases;
mod media;
mod moderation;
mod notifications;
mod outbox;
mod people;
mod profiles;
mod relations;
mod reports;
mod schema;
mod security;
mod statements;
mod store;

pub use config::{ConsistencyLevel, ScyllaConfig, CLOCK_MARGIN_MS};
pub use schema::{migrate, SCHEMA_VERSION};
pub use store::ScyllaStore;
