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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use chat_protocol::{
    ClientMsgId, Conversation, ConversationId, ConversationKind, Member, Message, MessageId,
    MessageKind, Role, UserId,
};
use futures_util::future::try_join_all;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::response::query_result::{QueryResult, QueryRowsResult};
use scylla::response::{PagingState, PagingStateResponse};
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};
use scylla::value::{CqlValue, MaybeUnset, Row};
use serde::{Deserialize, Serialize};

use super::{
    rev_block, AccountStore, AuditEntry, Changes, ConversationChange, ConversationStore,
    HistoryStore, Lease, LeaseGrant, LeaseStore, LoginState, ModerationStore, Page, PageQuery,
    RefreshRecord, Rotation, StoreError, UserFlag, UserFlags, UserRecord,
};

/// `[storage.scylla]`: where the cluster is and how to use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScyllaConfig {
    /// Contact points, `host:port`; the driver discovers the other nodes.
    pub nodes: Vec<String>,
    /// The keyspace, created with the replication below if missing.
    pub keyspace: String,
    /// SimpleStrategy replication factor, used when `datacenters` is empty
    /// (one datacenter: tests and small deployments).
    pub replication_factor: u32,
    /// NetworkTopologyStrategy: replicas per datacenter (production).
    pub datacenters: BTreeMap<String, u32>,
    /// Consistency of every read and write.
    pub consistency: ConsistencyLevel,
    /// Width of a history bucket, in days. Fixed once the keyspace holds
    /// data: the store refuses to open with another width.
    pub bucket_days: u32,
    /// Time to establish a connection to a database node.
    pub connect_timeout_ms: u64,
    /// Time a request may take, retries included, before the store answers
    /// "unavailable".
    pub request_timeout_ms: u64,
    /// Credentials, when the cluster requires them.
    pub username: Option<String>,
    /// Password for `username`.
    pub password: Option<String>,
    /// How long a node's write lease on a conversation lasts without
    /// renewal (the holder renews it three times per period). A node that
    /// dies holds its conversations this long, plus `request_timeout_ms`
    /// for its last writes to land, before another node takes them.
    pub lease_ms: u64,
}

impl Default for ScyllaConfig {
    fn default() -> Self {
        ScyllaConfig {
            nodes: vec!["127.0.0.1:9042".to_owned()],
            keyspace: "chat".to_owned(),
            replication_factor: 1,
            datacenters: BTreeMap::new(),
            consistency: ConsistencyLevel::LocalQuorum,
            bucket_days: 10,
            connect_timeout_ms: 5_000,
            request_timeout_ms: 5_000,
            username: None,
            password: None,
            lease_ms: 10_000,
        }
    }
}

impl ScyllaConfig {
    /// Why this configuration cannot work, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.nodes.is_empty() {
            return Err("storage.scylla.nodes is empty".into());
        }
        if !is_cql_name(&self.keyspace) {
            return Err(format!(
                "storage.scylla.keyspace {:?} must be 1-48 of [a-z0-9_], starting with a letter",
                self.keyspace
            ));
        }
        if self.datacenters.is_empty() && self.replication_factor == 0 {
            return Err("storage.scylla.replication_factor must be above 0".into());
        }
        for (dc, n) in &self.datacenters {
            let ok = !dc.is_empty()
                && dc
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !ok || *n == 0 {
                return Err(format!(
                    "storage.scylla.datacenters: {dc:?} = {n} needs a name of [A-Za-z0-9_-] and at least 1 replica"
                ));
            }
        }
        if !(1..=3650).contains(&self.bucket_days) {
            return Err("storage.scylla.bucket_days must be 1 to 3650".into());
        }
        if self.connect_timeout_ms == 0 || self.request_timeout_ms == 0 {
            return Err("storage.scylla timeouts must be above 0".into());
        }
        if self.lease_ms < 3 * CLOCK_MARGIN_MS {
            return Err(format!(
                "storage.scylla.lease_ms must be at least {} (three clock margins)",
                3 * CLOCK_MARGIN_MS
            ));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err("storage.scylla.username and password go together".into());
        }
        Ok(())
    }

    fn replication(&self) -> String {
        if self.datacenters.is_empty() {
            format!(
                "{{'class': 'SimpleStrategy', 'replication_factor': {}}}",
                self.replication_factor
            )
        } else {
            let dcs: Vec<String> = self
                .datacenters
                .iter()
                .map(|(dc, n)| format!("'{dc}': {n}"))
                .collect();
            format!("{{'class': 'NetworkTopologyStrategy', {}}}", dcs.join(", "))
        }
    }
}

fn is_cql_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && s.len() <= 48
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The consistency level of reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsistencyLevel {
    /// One replica anywhere.
    One,
    /// One replica in the local datacenter.
    LocalOne,
    /// A majority of all replicas.
    Quorum,
    /// A majority of the local datacenter's replicas.
    LocalQuorum,
    /// A majority in every datacenter.
    EachQuorum,
    /// Every replica.
    All,
}

impl ConsistencyLevel {
    fn driver(self) -> Consistency {
        match self {
            ConsistencyLevel::One => Consistency::One,
            ConsistencyLevel::LocalOne => Consistency::LocalOne,
            ConsistencyLevel::Quorum => Consistency::Quorum,
            ConsistencyLevel::LocalQuorum => Consistency::LocalQuorum,
            ConsistencyLevel::EachQuorum => Consistency::EachQuorum,
            ConsistencyLevel::All => Consistency::All,
        }
    }

    /// The Paxos consistency of lightweight transactions: local when the
    /// rest is local, so one datacenter's outage does not stop sign-ups.
    fn serial(self) -> SerialConsistency {
        match self {
            ConsistencyLevel::LocalOne | ConsistencyLevel::LocalQuorum => {
                SerialConsistency::LocalSerial
            }
            _ => SerialConsistency::Serial,
        }
    }
}

/// One schema change, applied once per keyspace, in order.
struct Migration {
    version: i32,
    name: &'static str,
    /// CQL with `{ks}` for the keyspace; each statement is idempotent, so a
    /// migration interrupted half-way is simply applied again.
    statements: &'static [&'static str],
}

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "history, conversations, accounts",
    statements: &[
        "CREATE TABLE IF NOT EXISTS {ks}.messages (conversation_id text, bucket int, id bigint, \
         sender text, body text, kind text, ts bigint, client_msg_id text, reply_to bigint, \
         PRIMARY KEY ((conversation_id, bucket), id)) WITH CLUSTERING ORDER BY (id DESC)",
        "CREATE TABLE IF NOT EXISTS {ks}.conversation_buckets (conversation_id text, bucket int, \
         PRIMARY KEY (conversation_id, bucket)) WITH CLUSTERING ORDER BY (bucket DESC)",
        "CREATE TABLE IF NOT EXISTS {ks}.client_msg_ids (conversation_id text, sender text, \
         client_msg_id text, id bigint, PRIMARY KEY ((conversation_id, sender, client_msg_id)))",
        "CREATE TABLE IF NOT EXISTS {ks}.conversations (conversation_id text, user_id text, \
         role text, kind text STATIC, title text STATIC, created_at bigint STATIC, \
         PRIMARY KEY (conversation_id, user_id))",
        "CREATE TABLE IF NOT EXISTS {ks}.user_conversations (user_id text, conversation_id text, \
         PRIMARY KEY (user_id, conversation_id))",
        "CREATE TABLE IF NOT EXISTS {ks}.read_markers (conversation_id text, user_id text, \
         up_to bigint, PRIMARY KEY (conversation_id, user_id))",
        "CREATE TABLE IF NOT EXISTS {ks}.users (user_id text PRIMARY KEY, password_hash text, \
         display_name text, created_at bigint)",
        "CREATE TABLE IF NOT EXISTS {ks}.refresh_tokens (token_hash text PRIMARY KEY, \
         user_id text, family text, expires_at bigint, used boolean)",
        "CREATE TABLE IF NOT EXISTS {ks}.logins (family text PRIMARY KEY, revoked boolean)",
        "CREATE TABLE IF NOT EXISTS {ks}.settings (name text PRIMARY KEY, value text)",
    ],
}, Migration {
    version: 2,
    name: "conversation write leases",
    statements: &["CREATE TABLE IF NOT EXISTS {ks}.conversation_leases (conversation_id text \
         PRIMARY KEY, owner text, epoch bigint, expires_at bigint)"],
}, Migration {
    version: 3,
    name: "message lifecycle: revisions, edits, reactions, mentions",
    // One column per statement: a migration cut short is run again, and an
    // ADD of a column that exists is then taken as done.
    statements: &[
        "ALTER TABLE {ks}.messages ADD rev bigint",
        "ALTER TABLE {ks}.messages ADD edited_at bigint",
        "ALTER TABLE {ks}.messages ADD deleted boolean",
        "ALTER TABLE {ks}.messages ADD reactions blob",
        "ALTER TABLE {ks}.messages ADD mentions list<text>",
        "CREATE TABLE IF NOT EXISTS {ks}.message_revs (conversation_id text, block bigint, \
         rev bigint, id bigint, PRIMARY KEY ((conversation_id, block), rev))",
        "CREATE TABLE IF NOT EXISTS {ks}.rev_blocks (conversation_id text, block bigint, \
         PRIMARY KEY (conversation_id, block)) WITH CLUSTERING ORDER BY (block DESC)",
        "CREATE TABLE IF NOT EXISTS {ks}.mentions (conversation_id text, user_id text, \
         id bigint, PRIMARY KEY ((conversation_id, user_id), id))",
    ],
}, Migration {
    version: 4,
    name: "operators: account flags and the audit log",
    statements: &[
        "CREATE TABLE IF NOT EXISTS {ks}.user_flags (user_id text, flag text, enabled boolean,          PRIMARY KEY (user_id, flag))",
        "CREATE TABLE IF NOT EXISTS {ks}.audit_days (part int, day int,          PRIMARY KEY (part, day)) WITH CLUSTERING ORDER BY (day DESC)",
        "CREATE TABLE IF NOT EXISTS {ks}.audit_log (day int, at bigint, id bigint, admin text,          action text, target text, node text, PRIMARY KEY (day, at, id))          WITH CLUSTERING ORDER BY (at DESC, id DESC)",
    ],
}];

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i32 = 4;

/// Days of audit log read back at most (one partition per day).
const AUDIT_DAYS: i32 = 400;

/// How far apart the nodes' wall clocks may be: a lease holder stops writing
/// this long before its lease runs out by its own clock, and a new holder
/// waits this long (and the request timeout) after it runs out by its own.
pub const CLOCK_MARGIN_MS: u64 = 1_000;

/// How long a node may hold the migration lock before others take over
/// (it expires with the row's TTL if the node dies mid-migration).
const MIGRATION_LOCK_TTL_SECS: u32 = 60;

/// Bucket-list rows known to be written, so a busy conversation writes its
/// bucket's row once, not once per message. Bounded: cleared when full.
const KNOWN_BUCKETS: usize = 100_000;

/// Buckets fetched per step of a walk through a conversation's history.
const BUCKET_STEP: i32 = 32;

/// Rows per single-partition batch of messages, and the bytes that end one
/// sooner: servers warn at 5 KiB and refuse 50 KiB by default.
const BATCH_ROWS: usize = 64;
const BATCH_BYTES: usize = 32 * 1024;

/// Members written per batch of a conversation change.
const MEMBER_BATCH: usize = 200;

/// How long a refresh token's row outlives its expiry (then the database
/// drops it by itself), and the longest TTL it is given (Cassandra refuses expiry past 2038).
const REFRESH_GRACE_SECS: u64 = 7 * 24 * 3600;
const MAX_TTL_SECS: u64 = 10 * 365 * 24 * 3600;

/// Write timestamps that order a login's two states: revocation wins.
const LOGIN_ACTIVE_TS: i64 = 1;
const LOGIN_REVOKED_TS: i64 = 2;

/// Every statement the store runs, prepared once.
struct Statements {
    insert_message: PreparedStatement,
    select_page_desc: PreparedStatement,
    select_page_asc: PreparedStatement,
    select_message: PreparedStatement,
    select_senders: PreparedStatement,
    insert_bucket: PreparedStatement,
    select_buckets_desc: PreparedStatement,
    select_buckets_asc: PreparedStatement,
    select_all_buckets: PreparedStatement,
    insert_client_msg_id: PreparedStatement,
    claim_client_msg_id: PreparedStatement,
    select_client_msg_id: PreparedStatement,
    update_conversation: PreparedStatement,
    upsert_member: PreparedStatement,
    delete_member: PreparedStatement,
    select_conversation: PreparedStatement,
    insert_user_conversation: PreparedStatement,
    delete_user_conversation: PreparedStatement,
    select_user_conversations: PreparedStatement,
    raise_read_marker: PreparedStatement,
    select_read_markers: PreparedStatement,
    select_read_marker: PreparedStatement,
    create_user: PreparedStatement,
    select_user: PreparedStatement,
    set_user_flag: PreparedStatement,
    select_user_flags: PreparedStatement,
    insert_audit_day: PreparedStatement,
    insert_audit: PreparedStatement,
    select_audit_days: PreparedStatement,
    select_audit: PreparedStatement,
    insert_refresh: PreparedStatement,
    select_refresh: PreparedStatement,
    use_refresh: PreparedStatement,
    activate_login: PreparedStatement,
    revoke_login: PreparedStatement,
    select_login: PreparedStatement,
    init_setting: PreparedStatement,
    select_setting: PreparedStatement,
    select_lease: PreparedStatement,
    insert_lease: PreparedStatement,
    take_lease: PreparedStatement,
    renew_lease: PreparedStatement,
    release_lease: PreparedStatement,
    update_message_state: PreparedStatement,
    insert_rev: PreparedStatement,
    delete_rev: PreparedStatement,
    insert_rev_block: PreparedStatement,
    select_rev_blocks: PreparedStatement,
    select_last_rev_block: PreparedStatement,
    select_revs: PreparedStatement,
    select_last_rev: PreparedStatement,
    insert_mention: PreparedStatement,
    delete_mention: PreparedStatement,
    select_mentions: PreparedStatement,
}

impl Statements {
    async fn prepare(
        session: &Session,
        ks: &str,
        serial: SerialConsistency,
    ) -> Result<Self, StoreError> {
        let p = |cql: &str| {
            let cql = cql.replace("{ks}", ks);
            async move {
                let mut s = session.prepare(cql).await.map_err(unavailable)?;
                // Retrying a write of the same values gives the same row.
                s.set_is_idempotent(true);
                Ok::<_, StoreError>(s)
            }
        };
        let not_idempotent = |mut s: PreparedStatement| {
            s.set_is_idempotent(false);
            s
        };
        let message_columns = "id, sender, body, kind, ts, client_msg_id, reply_to, rev, \
                               edited_at, deleted, reactions, mentions";
        Ok(Statements {
            insert_message: p(
                "INSERT INTO {ks}.messages (conversation_id, bucket, id, sender, \
                 body, kind, ts, client_msg_id, reply_to, rev, edited_at, deleted, reactions, \
                 mentions) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .await?,
            select_page_desc: p(&format!(
                "SELECT {message_columns} FROM {{ks}}.messages WHERE conversation_id = ? \
                 AND bucket = ? AND id > ? AND id < ? ORDER BY id DESC LIMIT ?"
            ))
            .await?,
            select_page_asc: p(&format!(
                "SELECT {message_columns} FROM {{ks}}.messages WHERE conversation_id = ? \
                 AND bucket = ? AND id > ? AND id < ? ORDER BY id ASC LIMIT ?"
            ))
            .await?,
            select_message: p(&format!(
                "SELECT {message_columns} FROM {{ks}}.messages WHERE conversation_id = ? \
                 AND bucket = ? AND id = ?"
            ))
            .await?,
            select_senders: p(
                "SELECT sender FROM {ks}.messages WHERE conversation_id = ? \
                 AND bucket = ? AND id > ? ORDER BY id ASC",
            )
            .await?,
            insert_bucket: p(
                "INSERT INTO {ks}.conversation_buckets (conversation_id, bucket) VALUES (?, ?)",
            )
            .await?,
            select_buckets_desc: p("SELECT bucket FROM {ks}.conversation_buckets \
                 WHERE conversation_id = ? AND bucket >= ? AND bucket <= ? \
                 ORDER BY bucket DESC LIMIT ?")
            .await?,
            select_buckets_asc: p("SELECT bucket FROM {ks}.conversation_buckets \
                 WHERE conversation_id = ? AND bucket >= ? AND bucket <= ? \
                 ORDER BY bucket ASC LIMIT ?")
            .await?,
            select_all_buckets: p(
                "SELECT bucket FROM {ks}.conversation_buckets WHERE conversation_id = ?",
            )
            .await?,
            insert_client_msg_id: p("INSERT INTO {ks}.client_msg_ids (conversation_id, sender, \
                 client_msg_id, id) VALUES (?, ?, ?, ?)")
            .await?,
            claim_client_msg_id: not_idempotent(
                p(
                    "INSERT INTO {ks}.client_msg_ids (conversation_id, sender, client_msg_id, id) \
                   VALUES (?, ?, ?, ?) IF NOT EXISTS",
                )
                .await?,
            ),
            select_client_msg_id: p("SELECT id FROM {ks}.client_msg_ids \
                 WHERE conversation_id = ? AND sender = ? AND client_msg_id = ?")
            .await?,
            update_conversation: p("UPDATE {ks}.conversations SET kind = ?, title = ?, \
                 created_at = ? WHERE conversation_id = ?")
            .await?,
            upsert_member: p(
                "UPDATE {ks}.conversations SET role = ? WHERE conversation_id = ? AND user_id = ?",
            )
            .await?,
            delete_member: p(
                "DELETE FROM {ks}.conversations WHERE conversation_id = ? AND user_id = ?",
            )
            .await?,
            select_conversation: p("SELECT kind, title, created_at, user_id, role \
                 FROM {ks}.conversations WHERE conversation_id = ?")
            .await?,
            insert_user_conversation: p(
                "INSERT INTO {ks}.user_conversations (user_id, conversation_id) VALUES (?, ?)",
            )
            .await?,
            delete_user_conversation: p(
                "DELETE FROM {ks}.user_conversations WHERE user_id = ? AND conversation_id = ?",
            )
            .await?,
            select_user_conversations: p(
                "SELECT conversation_id FROM {ks}.user_conversations WHERE user_id = ?",
            )
            .await?,
            raise_read_marker: p("UPDATE {ks}.read_markers USING TIMESTAMP ? SET up_to = ? \
                 WHERE conversation_id = ? AND user_id = ?")
            .await?,
            select_read_markers: p(
                "SELECT user_id, up_to FROM {ks}.read_markers WHERE conversation_id = ?",
            )
            .await?,
            select_read_marker: p(
                "SELECT up_to FROM {ks}.read_markers WHERE conversation_id = ? AND user_id = ?",
            )
            .await?,
            create_user: not_idempotent(
                p(
                    "INSERT INTO {ks}.users (user_id, password_hash, display_name, created_at) \
                   VALUES (?, ?, ?, ?) IF NOT EXISTS",
                )
                .await?,
            ),
            select_user: p("SELECT user_id, password_hash, display_name, created_at \
                 FROM {ks}.users WHERE user_id = ?")
            .await?,
            // The write time is the setting's time: the later one wins in
            // every replica without a read.
            set_user_flag: p("UPDATE {ks}.user_flags USING TIMESTAMP ? SET enabled = ? \
                 WHERE user_id = ? AND flag = ?")
            .await?,
            select_user_flags: p("SELECT flag, enabled FROM {ks}.user_flags WHERE user_id = ?")
                .await?,
            insert_audit_day: p("INSERT INTO {ks}.audit_days (part, day) VALUES (0, ?)").await?,
            insert_audit: p(
                "INSERT INTO {ks}.audit_log (day, at, id, admin, action, target, \
                 node) VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .await?,
            select_audit_days: p(&format!(
                "SELECT day FROM {{ks}}.audit_days WHERE part = 0 LIMIT {AUDIT_DAYS}"
            ))
            .await?,
            select_audit: p(
                "SELECT at, id, admin, action, target, node FROM {ks}.audit_log \
                 WHERE day = ? LIMIT ?",
            )
            .await?,
            insert_refresh: p(
                "INSERT INTO {ks}.refresh_tokens (token_hash, user_id, family, \
                 expires_at, used) VALUES (?, ?, ?, ?, false) USING TTL ?",
            )
            .await?,
            select_refresh: p("SELECT user_id, family, expires_at, used \
                 FROM {ks}.refresh_tokens WHERE token_hash = ?")
            .await?,
            use_refresh: not_idempotent(
                p(
                    "UPDATE {ks}.refresh_tokens SET used = true WHERE token_hash = ? \
                   IF used = false",
                )
                .await?,
            ),
            activate_login: p(&format!(
                "UPDATE {{ks}}.logins USING TIMESTAMP {LOGIN_ACTIVE_TS} SET revoked = false \
                 WHERE family = ?"
            ))
            .await?,
            revoke_login: p(&format!(
                "UPDATE {{ks}}.logins USING TIMESTAMP {LOGIN_REVOKED_TS} SET revoked = true \
                 WHERE family = ?"
            ))
            .await?,
            select_login: p("SELECT revoked FROM {ks}.logins WHERE family = ?").await?,
            init_setting: not_idempotent(
                p("INSERT INTO {ks}.settings (name, value) VALUES (?, ?) IF NOT EXISTS").await?,
            ),
            select_setting: p("SELECT value FROM {ks}.settings WHERE name = ?").await?,
            select_lease: {
                // A serial read: it sees every transaction decided so far.
                let mut s = p(
                    "SELECT owner, epoch, expires_at FROM {ks}.conversation_leases \
                     WHERE conversation_id = ?",
                )
                .await?;
                s.set_consistency(match serial {
                    SerialConsistency::LocalSerial => Consistency::LocalSerial,
                    SerialConsistency::Serial => Consistency::Serial,
                });
                s
            },
            insert_lease: not_idempotent(
                p(
                    "INSERT INTO {ks}.conversation_leases (conversation_id, owner, epoch, \
                   expires_at) VALUES (?, ?, ?, ?) IF NOT EXISTS",
                )
                .await?,
            ),
            take_lease: not_idempotent(
                p(
                    "UPDATE {ks}.conversation_leases SET owner = ?, epoch = ?, expires_at = ? \
                   WHERE conversation_id = ? IF epoch = ?",
                )
                .await?,
            ),
            renew_lease: not_idempotent(
                p("UPDATE {ks}.conversation_leases SET expires_at = ? \
                   WHERE conversation_id = ? IF owner = ? AND epoch = ?")
                .await?,
            ),
            release_lease: not_idempotent(
                p("UPDATE {ks}.conversation_leases SET expires_at = 0 \
                   WHERE conversation_id = ? IF owner = ? AND epoch = ?")
                .await?,
            ),
            update_message_state: p(
                "UPDATE {ks}.messages SET body = ?, rev = ?, edited_at = ?, \
                 deleted = ?, reactions = ?, mentions = ? \
                 WHERE conversation_id = ? AND bucket = ? AND id = ?",
            )
            .await?,
            insert_rev: p(
                "INSERT INTO {ks}.message_revs (conversation_id, block, rev, id) \
                 VALUES (?, ?, ?, ?)",
            )
            .await?,
            delete_rev: p(
                "DELETE FROM {ks}.message_revs WHERE conversation_id = ? AND block = ? AND rev = ?",
            )
            .await?,
            insert_rev_block: p(
                "INSERT INTO {ks}.rev_blocks (conversation_id, block) VALUES (?, ?)",
            )
            .await?,
            select_rev_blocks: p(
                "SELECT block FROM {ks}.rev_blocks WHERE conversation_id = ? \
                 AND block >= ? AND block <= ? ORDER BY block ASC",
            )
            .await?,
            select_last_rev_block: p(
                "SELECT block FROM {ks}.rev_blocks WHERE conversation_id = ? LIMIT 1",
            )
            .await?,
            select_revs: p(
                "SELECT rev, id FROM {ks}.message_revs WHERE conversation_id = ? \
                 AND block = ? AND rev > ? AND rev <= ? LIMIT ?",
            )
            .await?,
            select_last_rev: p(
                "SELECT rev FROM {ks}.message_revs WHERE conversation_id = ? \
                 AND block = ? ORDER BY rev DESC LIMIT 1",
            )
            .await?,
            insert_mention: p(
                "INSERT INTO {ks}.mentions (conversation_id, user_id, id) VALUES (?, ?, ?)",
            )
            .await?,
            delete_mention: p(
                "DELETE FROM {ks}.mentions WHERE conversation_id = ? AND user_id = ? AND id = ?",
            )
            .await?,
            select_mentions: p("SELECT id FROM {ks}.mentions WHERE conversation_id = ? \
                 AND user_id = ? AND id > ? LIMIT ?")
            .await?,
        })
    }
}

/// History and accounts in ScyllaDB.
pub struct ScyllaStore {
    session: Session,
    q: Statements,
    bucket_ms: u64,
    lease_ms: u64,
    /// How long after a lease runs out its holder's writes may still land.
    lease_grace_ms: u64,
    known_buckets: Mutex<HashSet<(ConversationId, i32)>>,
    /// Revision-index blocks known to be listed in `rev_blocks`, as buckets.
    known_rev_blocks: Mutex<HashSet<(ConversationId, i64)>>,
    /// The bucket lists (ascending) of conversations whose lease this
    /// handle holds: it writes every new bucket of theirs, so it keeps their
    /// lists whole and a page costs one read, not two.
    bucket_lists: Mutex<HashMap<ConversationId, Vec<i32>>>,
    /// Conversations whose lease this handle holds.
    leased: Mutex<HashSet<ConversationId>>,
}

impl std::fmt::Debug for ScyllaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaStore")
            .field("bucket_ms", &self.bucket_ms)
            .finish_non_exhaustive()
    }
}

async fn connect(config: &ScyllaConfig) -> Result<Session, StoreError> {
    config.check().map_err(StoreError::Unavailable)?;
    let profile = ExecutionProfile::builder()
        .consistency(config.consistency.driver())
        .serial_consistency(Some(config.consistency.serial()))
        .request_timeout(Some(Duration::from_millis(config.request_timeout_ms)))
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(&config.nodes)
        .connection_timeout(Duration::from_millis(config.connect_timeout_ms))
        .default_execution_profile_handle(profile.into_handle());
    if let (Some(user), Some(password)) = (&config.username, &config.password) {
        builder = builder.user(user, password);
    }
    builder.build().await.map_err(|e| {
        StoreError::Unavailable(format!(
            "cannot reach ScyllaDB at {}: {e}",
            config.nodes.join(",")
        ))
    })
}

/// Creates the keyspace if missing and applies the migrations it lacks;
/// returns the versions this call applied. Safe to run from several nodes at
/// once: one takes a lock row (a lightweight transaction, with a TTL in case
/// it dies) and the others wait for it to finish.
pub async fn migrate(config: &ScyllaConfig) -> Result<Vec<i32>, StoreError> {
    let session = connect(config).await?;
    migrate_on(&session, config).await
}

async fn migrate_on(session: &Session, config: &ScyllaConfig) -> Result<Vec<i32>, StoreError> {
    let ks = &config.keyspace;
    let ddl = |cql: String| async move {
        match session.query_unpaged(cql.as_str(), ()).await {
            Ok(_) => Ok(()),
            // A column added by a run of this migration that was cut short.
            Err(e)
                if cql.contains(" ADD ")
                    && e.to_string().contains("conflicts with an existing column") =>
            {
                Ok(())
            }
            Err(e) => Err(StoreError::Unavailable(format!(
                "schema change failed: {e}"
            ))),
        }
    };
    // Up to date already (every start but the first): no schema statement,
    // which would wait for every database node to agree and so fail while
    // one is down.
    if let Ok(rows) = session
        .query_unpaged(format!("SELECT version FROM {ks}.schema_migrations"), ())
        .await
    {
        let done: HashSet<i32> = rows
            .into_rows_result()
            .ok()
            .and_then(|r| {
                r.rows::<(i32,)>()
                    .ok()
                    .map(|it| it.filter_map(|row| row.ok().map(|(v,)| v)).collect())
            })
            .unwrap_or_default();
        if MIGRATIONS.iter().all(|m| done.contains(&m.version)) {
            return Ok(Vec::new());
        }
    }
    ddl(format!(
        "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {}",
        config.replication()
    ))
    .await?;
    ddl(format!(
        "CREATE TABLE IF NOT EXISTS {ks}.schema_migrations (version int PRIMARY KEY, \
         name text, applied_at bigint, applied_by text)"
    ))
    .await?;
    ddl(format!(
        "CREATE TABLE IF NOT EXISTS {ks}.schema_lock (id int PRIMARY KEY, holder text)"
    ))
    .await?;
    let applied_versions = || async {
        let rows = session
            .query_unpaged(format!("SELECT version FROM {ks}.schema_migrations"), ())
            .await
            .map_err(unavailable)?;
        let rows = rows.into_rows_result().map_err(corrupt)?;
        let mut versions = HashSet::new();
        for row in rows.rows::<(i32,)>().map_err(corrupt)? {
            versions.insert(row.map_err(corrupt)?.0);
        }
        Ok::<_, StoreError>(versions)
    };
    let missing = |done: &HashSet<i32>| MIGRATIONS.iter().any(|m| !done.contains(&m.version));
    if !missing(&applied_versions().await?) {
        return Ok(Vec::new());
    }
    let holder = format!("{}-{:x}", std::process::id(), now_ms());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2 * 60);
    loop {
        let taken = session
            .query_unpaged(
                format!(
                    "INSERT INTO {ks}.schema_lock (id, holder) VALUES (0, ?) IF NOT EXISTS \
                     USING TTL {MIGRATION_LOCK_TTL_SECS}"
                ),
                (&holder,),
            )
            .await;
        // Nodes starting together contend for the lock in Paxos: a timed-out
        // attempt is one more try, not a failed start.
        let taken = match taken {
            Ok(result) => applied(result)?,
            Err(e) => {
                tracing::debug!(error = %e, "schema lock attempt failed; trying again");
                false
            }
        };
        if taken {
            break;
        }
        if !missing(&applied_versions().await?) {
            return Ok(Vec::new());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(StoreError::Unavailable(
                "another node holds the schema migration lock for over 2 minutes".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let result = async {
        let done = applied_versions().await?;
        let mut ran = Vec::new();
        for m in MIGRATIONS.iter().filter(|m| !done.contains(&m.version)) {
            for cql in m.statements {
                ddl(cql.replace("{ks}", ks)).await?;
            }
            session
                .query_unpaged(
                    format!(
                        "INSERT INTO {ks}.schema_migrations (version, name, applied_at, \
                         applied_by) VALUES (?, ?, ?, ?)"
                    ),
                    (m.version, m.name, now_ms() as i64, &holder),
                )
                .await
                .map_err(unavailable)?;
            tracing::info!(
                version = m.version,
                name = m.name,
                "applied schema migration"
            );
            ran.push(m.version);
        }
        Ok(ran)
    }
    .await;
    let released = session
        .query_unpaged(
            format!("DELETE FROM {ks}.schema_lock WHERE id = 0 IF holder = ?"),
            (&holder,),
        )
        .await;
    if let Err(e) = released {
        tracing::warn!(error = %e, "could not release the schema lock; it expires by itself");
    }
    result
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
        let q =
            Statements::prepare(&session, &config.keyspace, config.consistency.serial()).await?;
        let store = ScyllaStore {
            session,
            q,
            bucket_ms: u64::from(config.bucket_days) * 24 * 3600 * 1000,
            lease_ms: config.lease_ms,
            lease_grace_ms: config.request_timeout_ms + CLOCK_MARGIN_MS,
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
            let rows = self.rows(&self.q.select_setting, (name,)).await?;
            if let Some((Some(held),)) = rows
                .maybe_first_row::<(Option<String>,)>()
                .map_err(corrupt)?
            {
                return Ok(held);
            }
            match self.run(&self.q.init_setting, (name, value)).await {
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

    async fn run(
        &self,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<QueryResult, StoreError> {
        self.session
            .execute_unpaged(statement, values)
            .await
            .map_err(unavailable)
    }

    async fn rows(
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
    async fn for_each_row<F>(
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

    /// Writes the `client_msg_id` index rows, then the message rows: a
    /// message row never exists without the entry that lets its retry find
    /// it.
    async fn index_and_write(&self, messages: &[&Message]) -> Result<(), StoreError> {
        try_join_all(messages.iter().map(|m| {
            let (conversation, sender, key) = index_key(m);
            self.run(
                &self.q.insert_client_msg_id,
                (conversation, sender, key, m.id.0 as i64),
            )
        }))
        .await?;
        self.write_messages(messages).await
    }

    /// Writes message rows, their revision and mentions index rows first
    /// (a reader of the index skips an entry whose message is missing or
    /// moved on, but could not find a message without its entry), and
    /// their buckets' list rows before them.
    async fn write_messages(&self, messages: &[&Message]) -> Result<(), StoreError> {
        try_join_all(messages.iter().map(|m| self.add_index_rows(m))).await?;
        let mut partitions: HashMap<(&ConversationId, i32), Vec<&Message>> = HashMap::new();
        for m in messages {
            partitions
                .entry((&m.conversation, self.bucket(m.id)))
                .or_default()
                .push(m);
        }
        try_join_all(
            partitions
                .into_iter()
                .map(|((conversation, bucket), rows)| {
                    self.write_partition(conversation, bucket, rows)
                }),
        )
        .await?;
        Ok(())
    }

    async fn write_partition(
        &self,
        conversation: &ConversationId,
        bucket: i32,
        rows: Vec<&Message>,
    ) -> Result<(), StoreError> {
        let key = (conversation.clone(), bucket);
        let known = lock(&self.known_buckets).contains(&key);
        if !known {
            self.run(&self.q.insert_bucket, (conversation.as_str(), bucket))
                .await?;
            remember(&self.known_buckets, key);
            if let Some(list) = lock(&self.bucket_lists).get_mut(conversation) {
                if let Err(at) = list.binary_search(&bucket) {
                    list.insert(at, bucket);
                }
            }
        }
        let mut start = 0;
        while start < rows.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < rows.len() && end - start < BATCH_ROWS {
                bytes += stored_size(rows[end]);
                if end > start && bytes > BATCH_BYTES {
                    break;
                }
                end += 1;
            }
            let chunk = &rows[start..end];
            if let [m] = chunk {
                self.run(&self.q.insert_message, message_row(m, bucket)?)
                    .await?;
            } else {
                let mut batch = Batch::new(BatchType::Unlogged);
                for _ in chunk {
                    batch.append_statement(self.q.insert_message.clone());
                }
                batch.set_is_idempotent(true);
                let values = chunk
                    .iter()
                    .map(|m| message_row(m, bucket))
                    .collect::<Result<Vec<_>, _>>()?;
                self.session
                    .batch(&batch, values)
                    .await
                    .map_err(unavailable)?;
            }
            start = end;
        }
        Ok(())
    }

    /// Writes `m`'s revision and mentions index rows.
    async fn add_index_rows(&self, m: &Message) -> Result<(), StoreError> {
        let conversation = m.conversation.as_str();
        if m.rev > 0 {
            let block = rev_block(m.rev) as i64;
            let key = (m.conversation.clone(), block);
            if !lock(&self.known_rev_blocks).contains(&key) {
                self.run(&self.q.insert_rev_block, (conversation, block))
                    .await?;
                remember(&self.known_rev_blocks, key);
            }
            self.run(
                &self.q.insert_rev,
                (conversation, block, m.rev as i64, m.id.0 as i64),
            )
            .await?;
        }
        try_join_all(m.mentions.iter().map(|u| {
            self.run(
                &self.q.insert_mention,
                (conversation, u.as_str(), m.id.0 as i64),
            )
        }))
        .await?;
        Ok(())
    }

    /// Takes away the index rows of `previous` that `m`, the state replacing
    /// it, no longer has; after `m`'s are written, so a reader never finds
    /// neither.
    async fn remove_index_rows(&self, previous: &Message, m: &Message) -> Result<(), StoreError> {
        let conversation = m.conversation.as_str();
        if previous.rev > 0 && previous.rev != m.rev {
            self.run(
                &self.q.delete_rev,
                (
                    conversation,
                    rev_block(previous.rev) as i64,
                    previous.rev as i64,
                ),
            )
            .await?;
        }
        try_join_all(
            previous
                .mentions
                .iter()
                .filter(|u| !m.mentions.contains(u))
                .map(|u| {
                    self.run(
                        &self.q.delete_mention,
                        (conversation, u.as_str(), m.id.0 as i64),
                    )
                }),
        )
        .await?;
        Ok(())
    }

    /// The highest revision in a conversation's index.
    async fn read_last_rev(&self, conversation: &ConversationId) -> Result<u64, StoreError> {
        let rows = self
            .rows(&self.q.select_last_rev_block, (conversation.as_str(),))
            .await?;
        let Some((block,)) = rows.maybe_first_row::<(i64,)>().map_err(corrupt)? else {
            return Ok(0);
        };
        let rows = self
            .rows(&self.q.select_last_rev, (conversation.as_str(), block))
            .await?;
        Ok(rows
            .maybe_first_row::<(i64,)>()
            .map_err(corrupt)?
            .map_or(0, |(rev,)| rev as u64))
    }

    async fn message(
        &self,
        conversation: &ConversationId,
        id: MessageId,
    ) -> Result<Option<Message>, StoreError> {
        let rows = self
            .rows(
                &self.q.select_message,
                (conversation.as_str(), self.bucket(id), id.0 as i64),
            )
            .await?;
        match rows.maybe_first_row::<MessageRow>().map_err(corrupt)? {
            Some(row) => Ok(Some(row.into_message(conversation)?)),
            None => Ok(None),
        }
    }

    /// For each of `messages`, `None` when its key was free (it is stored
    /// now), else the message stored under the id that claimed the key.
    async fn held_messages(
        &self,
        messages: &[Message],
        claims: Vec<Option<MessageId>>,
    ) -> Result<Vec<Option<Message>>, StoreError> {
        let mut held = Vec::with_capacity(messages.len());
        for (m, claim) in messages.iter().zip(claims) {
            let Some(id) = claim else {
                held.push(None);
                continue;
            };
            match self.message(&m.conversation, id).await? {
                Some(first) => held.push(Some(first)),
                None => {
                    // The first claimer has not written its row (yet, or
                    // ever: it failed between the claim and the row). This
                    // send is the same message (same sender and key), so
                    // it writes the row under the claimed id; the first
                    // claimer, if alive, writes the same row.
                    let mut repaired = m.clone();
                    repaired.id = id;
                    repaired.ts = id.timestamp_ms();
                    self.write_messages(&[&repaired]).await?;
                    held.push(Some(repaired));
                }
            }
        }
        Ok(held)
    }

    /// Claims `m`'s `client_msg_id` for its id; the id claimed before, if
    /// someone was first.
    async fn claim(&self, m: &Message) -> Result<Option<MessageId>, StoreError> {
        let (conversation, sender, key) = index_key(m);
        let result = self
            .run(
                &self.q.claim_client_msg_id,
                (conversation, sender, key, m.id.0 as i64),
            )
            .await?;
        let rows = result.into_rows_result().map_err(corrupt)?;
        let id_column = rows.column_specs().get_by_name("id").map(|(i, _)| i);
        let row = rows
            .maybe_first_row::<Row>()
            .map_err(corrupt)?
            .ok_or_else(|| StoreError::Corrupt("a lightweight transaction without a row".into()))?;
        if applied_of(&row)? {
            return Ok(None);
        }
        match id_column.and_then(|i| row.columns.get(i)) {
            Some(Some(CqlValue::BigInt(id))) => Ok(Some(MessageId(*id as u64))),
            _ => Err(StoreError::Corrupt(
                "a refused claim without the claimed id".into(),
            )),
        }
    }

    /// The whole bucket list of a conversation this handle holds the lease
    /// of (kept whole by its writes), or `None` for any other conversation.
    async fn leased_buckets(
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
            &self.q.select_all_buckets,
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

    fn forget_lease(&self, conversation: &ConversationId) {
        lock(&self.leased).remove(conversation);
        lock(&self.bucket_lists).remove(conversation);
    }

    /// The buckets of a conversation in `[low, high]` that hold messages,
    /// nearest to the start of the walk first, at most `BUCKET_STEP`.
    async fn buckets(
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
            &self.q.select_buckets_desc
        } else {
            &self.q.select_buckets_asc
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
struct BucketWalk<'a> {
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
    fn listed(
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

    fn new(
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

    async fn next(&mut self) -> Result<Option<i32>, StoreError> {
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

type MessageRowTuple = (
    i64,
    String,
    String,
    String,
    i64,
    String,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<bool>,
    Option<Vec<u8>>,
    Option<Vec<String>>,
);

/// A `messages` row as read.
struct MessageRow(MessageRowTuple);

impl<'frame, 'metadata> scylla::deserialize::row::DeserializeRow<'frame, 'metadata> for MessageRow {
    fn type_check(
        specs: &[scylla::frame::response::result::ColumnSpec],
    ) -> Result<(), scylla::deserialize::TypeCheckError> {
        <MessageRowTuple as scylla::deserialize::row::DeserializeRow>::type_check(specs)
    }

    fn deserialize(
        row: scylla::deserialize::row::ColumnIterator<'frame, 'metadata>,
    ) -> Result<Self, scylla::deserialize::DeserializationError> {
        <MessageRowTuple as scylla::deserialize::row::DeserializeRow>::deserialize(row)
            .map(MessageRow)
    }
}

impl MessageRow {
    fn size(&self) -> usize {
        let (_, sender, body, kind, _, client_msg_id, _, _, _, _, reactions, mentions) = &self.0;
        32 + sender.len()
            + body.len()
            + kind.len()
            + client_msg_id.len()
            + reactions.as_ref().map_or(0, Vec::len)
            + mentions
                .as_ref()
                .map_or(0, |m| m.iter().map(|u| u.len() + 2).sum())
    }

    fn into_message(self, conversation: &ConversationId) -> Result<Message, StoreError> {
        let (
            id,
            sender,
            body,
            kind,
            ts,
            client_msg_id,
            reply_to,
            rev,
            edited_at,
            deleted,
            reactions,
            mentions,
        ) = self.0;
        Ok(Message {
            rev: rev.unwrap_or(0) as u64,
            edited_at: edited_at.map(|t| t as u64),
            deleted: deleted.unwrap_or(false),
            reactions: match reactions {
                Some(bytes) if !bytes.is_empty() => {
                    rmp_serde::from_slice(&bytes).map_err(corrupt)?
                }
                _ => Vec::new(),
            },
            mentions: mentions
                .unwrap_or_default()
                .iter()
                .map(|u| UserId::new(u).map_err(corrupt))
                .collect::<Result<_, _>>()?,
            id: MessageId(id as u64),
            conversation: conversation.clone(),
            sender: UserId::new(&sender).map_err(corrupt)?,
            body,
            kind: MessageKind::new(&kind)
                .ok_or_else(|| StoreError::Corrupt(format!("message kind {kind:?}")))?,
            ts: ts as u64,
            client_msg_id: ClientMsgId::new(&client_msg_id).map_err(corrupt)?,
            reply_to: reply_to.map(|r| MessageId(r as u64)),
        })
    }
}

/// A message's key in the `client_msg_id` index.
fn index_key(m: &Message) -> (&str, &str, &str) {
    (
        m.conversation.as_str(),
        m.sender.as_str(),
        m.client_msg_id.as_str(),
    )
}

/// What a message takes as stored (for the page byte cap and batch sizes).
fn stored_size(m: &Message) -> usize {
    32 + m.sender.as_str().len()
        + m.body.len()
        + m.kind.as_str().len()
        + m.client_msg_id.as_str().len()
        + m.reactions
            .iter()
            .map(|r| r.emoji.len() + r.users.iter().map(|u| u.as_str().len() + 2).sum::<usize>())
            .sum::<usize>()
        + m.mentions
            .iter()
            .map(|u| u.as_str().len() + 2)
            .sum::<usize>()
}

/// A message's reactions as stored: MessagePack, or nothing when none.
fn reactions_blob(m: &Message) -> Result<Option<Vec<u8>>, StoreError> {
    if m.reactions.is_empty() {
        return Ok(None);
    }
    rmp_serde::to_vec_named(&m.reactions)
        .map(Some)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode reactions: {e}")))
}

/// A new message's row. Columns a new message leaves empty are unset, not
/// null: a null is a tombstone the database keeps and reads past.
type MessageInsert<'a> = (
    &'a str,
    i32,
    i64,
    &'a str,
    &'a str,
    &'a str,
    i64,
    &'a str,
    MaybeUnset<i64>,
    i64,
    MaybeUnset<i64>,
    MaybeUnset<bool>,
    MaybeUnset<Vec<u8>>,
    MaybeUnset<Vec<&'a str>>,
);

fn message_row(m: &Message, bucket: i32) -> Result<MessageInsert<'_>, StoreError> {
    Ok((
        m.conversation.as_str(),
        bucket,
        m.id.0 as i64,
        m.sender.as_str(),
        m.body.as_str(),
        m.kind.as_str(),
        m.ts as i64,
        m.client_msg_id.as_str(),
        unset_unless(m.reply_to.map(|r| r.0 as i64)),
        m.rev as i64,
        unset_unless(m.edited_at.map(|t| t as i64)),
        unset_unless(m.deleted.then_some(true)),
        unset_unless(reactions_blob(m)?),
        unset_unless(
            (!m.mentions.is_empty()).then(|| m.mentions.iter().map(UserId::as_str).collect()),
        ),
    ))
}

fn unset_unless<T>(value: Option<T>) -> MaybeUnset<T> {
    value.map_or(MaybeUnset::Unset, MaybeUnset::Set)
}

fn kind_of(s: &str) -> Result<ConversationKind, StoreError> {
    ConversationKind::from_name(s)
        .ok_or_else(|| StoreError::Corrupt(format!("conversation kind {s:?}")))
}

fn role_of(s: &str) -> Result<Role, StoreError> {
    Role::from_name(s).ok_or_else(|| StoreError::Corrupt(format!("role {s:?}")))
}

/// Notes a list row as written, in a set bounded by clearing it when full
/// (a row written twice costs a write, not a wrong answer).
fn remember<K: std::hash::Hash + Eq>(known: &Mutex<HashSet<K>>, key: K) {
    let mut set = lock(known);
    if set.len() >= KNOWN_BUCKETS {
        set.clear();
    }
    set.insert(key);
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Whether a lightweight transaction applied: its `[applied]` column, the
/// first on both ScyllaDB and Cassandra (which differ in what follows).
fn applied(result: QueryResult) -> Result<bool, StoreError> {
    let rows = result.into_rows_result().map_err(corrupt)?;
    match rows.maybe_first_row::<Row>().map_err(corrupt)? {
        Some(row) => applied_of(&row),
        None => Err(StoreError::Corrupt(
            "a lightweight transaction without a row".into(),
        )),
    }
}

fn applied_of(row: &Row) -> Result<bool, StoreError> {
    match row.columns.first() {
        Some(Some(CqlValue::Boolean(b))) => Ok(*b),
        other => Err(StoreError::Corrupt(format!(
            "a lightweight transaction answered {other:?}"
        ))),
    }
}

#[async_trait]
impl HistoryStore for ScyllaStore {
    async fn append(&self, messages: &[Message]) -> Result<(), StoreError> {
        // Not the path of sends (`append_new`), so a read per message is
        // affordable: a message stored already keeps its newer state.
        let held = try_join_all(
            messages
                .iter()
                .map(|m| ScyllaStore::message(self, &m.conversation, m.id)),
        )
        .await?;
        let mut fresh = Vec::new();
        for (m, held) in messages.iter().zip(held) {
            match held {
                None => fresh.push(m),
                Some(h) if h.rev < m.rev => self.update_message(m).await?,
                Some(_) => {}
            }
        }
        self.index_and_write(&fresh).await
    }

    async fn append_new(&self, messages: &[Message]) -> Result<Vec<Option<Message>>, StoreError> {
        // The claim comes first: a message row never exists without the
        // claim that makes its retries find it.
        let claims = try_join_all(messages.iter().map(|m| self.claim(m))).await?;
        let claims = own_claims_are_fresh(messages, claims);
        let fresh: Vec<&Message> = messages
            .iter()
            .zip(&claims)
            .filter(|(_, c)| c.is_none())
            .map(|(m, _)| m)
            .collect();
        self.write_messages(&fresh).await?;
        self.held_messages(messages, claims).await
    }

    async fn update_message(&self, message: &Message) -> Result<(), StoreError> {
        // A plain read: the conversation's lease holder is its only writer.
        let Some(previous) = ScyllaStore::message(self, &message.conversation, message.id).await?
        else {
            return Ok(());
        };
        if previous.rev >= message.rev {
            return Ok(());
        }
        // The new index rows first, then the state, then the old rows away:
        // at every moment a reader of the index finds the message.
        self.add_index_rows(message).await?;
        let reactions = reactions_blob(message)?;
        let mentions: Vec<&str> = message.mentions.iter().map(UserId::as_str).collect();
        self.run(
            &self.q.update_message_state,
            (
                message.body.as_str(),
                message.rev as i64,
                message.edited_at.map(|t| t as i64),
                message.deleted,
                reactions,
                mentions,
                message.conversation.as_str(),
                self.bucket(message.id),
                message.id.0 as i64,
            ),
        )
        .await?;
        self.remove_index_rows(&previous, message).await
    }

    async fn message(
        &self,
        conversation: &ConversationId,
        id: MessageId,
    ) -> Result<Option<Message>, StoreError> {
        ScyllaStore::message(self, conversation, id).await
    }

    async fn changes(
        &self,
        conversation: &ConversationId,
        after_rev: u64,
        rev: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Changes, StoreError> {
        let limit = limit.max(1);
        let mut changes = Changes::default();
        let mut weight = 0usize;
        if after_rev >= rev {
            return Ok(changes);
        }
        let blocks = self
            .rows(
                &self.q.select_rev_blocks,
                (
                    conversation.as_str(),
                    rev_block(after_rev + 1) as i64,
                    rev_block(rev) as i64,
                ),
            )
            .await?;
        let blocks: Vec<i64> = blocks
            .rows::<(i64,)>()
            .map_err(corrupt)?
            .map(|r| r.map(|(b,)| b).map_err(corrupt))
            .collect::<Result<_, _>>()?;
        let mut low = after_rev as i64;
        'blocks: for block in blocks {
            loop {
                // One entry past what the page needs tells `more`; entries
                // whose message moved on are skipped, so read on until full.
                let want = (limit + 1 - changes.messages.len()) as i32;
                let rows = self
                    .rows(
                        &self.q.select_revs,
                        (conversation.as_str(), block, low, rev as i64, want),
                    )
                    .await?;
                let entries: Vec<(i64, i64)> = rows
                    .rows::<(i64, i64)>()
                    .map_err(corrupt)?
                    .collect::<Result<_, _>>()
                    .map_err(corrupt)?;
                let got = entries.len();
                let found = try_join_all(entries.iter().map(|&(_, id)| {
                    ScyllaStore::message(self, conversation, MessageId(id as u64))
                }))
                .await?;
                for ((at, _), message) in entries.into_iter().zip(found) {
                    low = at;
                    let Some(message) = message.filter(|m| m.rev == at as u64) else {
                        continue;
                    };
                    // Stored, it lists every reacting user.
                    let stored = message.body.len()
                        + (message.reactions.iter())
                            .flat_map(|r| &r.users)
                            .map(|u| u.as_str().len() + 2)
                            .sum::<usize>();
                    weight = weight.saturating_add(crate::page_weight(stored, &message));
                    if changes.messages.len() == limit
                        || (weight > max_bytes && !changes.messages.is_empty())
                    {
                        changes.more = true;
                        break 'blocks;
                    }
                    changes.messages.push(message);
                }
                if got < want as usize {
                    break;
                }
            }
        }
        Ok(changes)
    }

    async fn last_rev(&self, conversation: &ConversationId) -> Result<u64, StoreError> {
        self.read_last_rev(conversation).await
    }

    async fn count_unread_mentions(
        &self,
        conversation: &ConversationId,
        reader: &UserId,
        after: MessageId,
        cap: u64,
    ) -> Result<u64, StoreError> {
        if cap == 0 {
            return Ok(0);
        }
        let rows = self
            .rows(
                &self.q.select_mentions,
                (
                    conversation.as_str(),
                    reader.as_str(),
                    after.0.min(i64::MAX as u64) as i64,
                    cap.min(i32::MAX as u64) as i32,
                ),
            )
            .await?;
        Ok(rows.rows::<(i64,)>().map_err(corrupt)?.count() as u64)
    }

    async fn page(
        &self,
        conversation: &ConversationId,
        query: PageQuery,
    ) -> Result<Page, StoreError> {
        let limit = query.limit.max(1);
        if let (Some(after), Some(before)) = (query.after, query.before) {
            if after >= before {
                return Ok(Page::default());
            }
        }
        let newest_first = !(query.after.is_some() && query.before.is_none());
        // Ids are below 2^63 (ms since 2024 << 22); a bound beyond is clamped.
        let low_id = query.after.map_or(-1, |a| a.0.min(i64::MAX as u64) as i64);
        let high_id = query
            .before
            .map_or(i64::MAX, |b| b.0.min(i64::MAX as u64) as i64);
        let low = query.after.map_or(i32::MIN, |a| self.bucket(a));
        let high = query.before.map_or(i32::MAX, |b| self.bucket(b));
        let mut walk = match self.leased_buckets(conversation).await? {
            Some(list) => BucketWalk::listed(self, conversation, &list, low, high, newest_first),
            None => BucketWalk::new(self, conversation, low, high, newest_first),
        };
        let statement = if newest_first {
            &self.q.select_page_desc
        } else {
            &self.q.select_page_asc
        };
        let mut messages = Vec::with_capacity(limit.min(256));
        let mut bytes = 0usize;
        let mut more = false;
        'buckets: while let Some(bucket) = walk.next().await? {
            // One row past the page tells `more`.
            let want = (limit + 1 - messages.len()).min(i32::MAX as usize) as i32;
            let rows = self
                .rows(
                    statement,
                    (conversation.as_str(), bucket, low_id, high_id, want),
                )
                .await?;
            for row in rows.rows::<MessageRow>().map_err(corrupt)? {
                let row = row.map_err(corrupt)?;
                if messages.len() == limit {
                    more = true;
                    break 'buckets;
                }
                let stored = row.size();
                let message = row.into_message(conversation)?;
                bytes = bytes.saturating_add(crate::page_weight(stored, &message));
                if bytes > query.max_bytes && !messages.is_empty() {
                    more = true;
                    break 'buckets;
                }
                messages.push(message);
            }
        }
        if newest_first {
            messages.reverse();
        }
        Ok(Page { messages, more })
    }

    async fn last_message(
        &self,
        conversation: &ConversationId,
    ) -> Result<Option<Message>, StoreError> {
        let page = self
            .page(conversation, PageQuery::new(None, None, 1))
            .await?;
        Ok(page.messages.into_iter().next())
    }

    async fn find_by_client_msg_id(
        &self,
        conversation: &ConversationId,
        sender: &UserId,
        client_msg_id: &ClientMsgId,
    ) -> Result<Option<Message>, StoreError> {
        let rows = self
            .rows(
                &self.q.select_client_msg_id,
                (
                    conversation.as_str(),
                    sender.as_str(),
                    client_msg_id.as_str(),
                ),
            )
            .await?;
        match rows.maybe_first_row::<(i64,)>().map_err(corrupt)? {
            Some((id,)) => self.message(conversation, MessageId(id as u64)).await,
            None => Ok(None),
        }
    }

    async fn count_unread(
        &self,
        conversation: &ConversationId,
        reader: &UserId,
        after: MessageId,
        cap: u64,
    ) -> Result<u64, StoreError> {
        if cap == 0 {
            return Ok(0);
        }
        let mut walk = BucketWalk::new(self, conversation, self.bucket(after), i32::MAX, false);
        let mut count = 0;
        while let Some(bucket) = walk.next().await? {
            self.for_each_row(
                &self.q.select_senders,
                (conversation.as_str(), bucket, after.0 as i64),
                |rows| {
                    for row in rows.rows::<(&str,)>().map_err(corrupt)? {
                        if row.map_err(corrupt)?.0 != reader.as_str() {
                            count += 1;
                            if count >= cap {
                                return Ok(false);
                            }
                        }
                    }
                    Ok(true)
                },
            )
            .await?;
            if count >= cap {
                break;
            }
        }
        Ok(count)
    }
}

#[async_trait]
impl ConversationStore for ScyllaStore {
    async fn conversation(&self, id: &ConversationId) -> Result<Option<Conversation>, StoreError> {
        let mut meta: Option<(ConversationKind, Option<String>, u64)> = None;
        let mut members = Vec::new();
        self.for_each_row(&self.q.select_conversation, (id.as_str(),), |rows| {
            type ConversationRow<'r> = (
                Option<&'r str>,
                Option<&'r str>,
                Option<i64>,
                Option<&'r str>,
                Option<&'r str>,
            );
            for row in rows.rows::<ConversationRow<'_>>().map_err(corrupt)? {
                let (kind, title, created_at, user, role) = row.map_err(corrupt)?;
                if meta.is_none() {
                    if let Some(kind) = kind {
                        meta = Some((
                            kind_of(kind)?,
                            title.map(str::to_owned),
                            created_at.unwrap_or(0) as u64,
                        ));
                    }
                }
                if let (Some(user), Some(role)) = (user, role) {
                    members.push(Member {
                        user: UserId::new(user).map_err(corrupt)?,
                        role: role_of(role)?,
                    });
                }
            }
            Ok(true)
        })
        .await?;
        Ok(meta.map(|(kind, title, created_at)| Conversation {
            id: id.clone(),
            kind,
            title,
            members,
            member_count: None,
            created_at,
            rev: 0,
        }))
    }

    async fn apply_conversation(&self, change: &ConversationChange) -> Result<(), StoreError> {
        let c = &change.conversation;
        let id = c.id.as_str();
        // The user index first for new members and last for removed ones:
        // after a failure it lists too much, never too little, and the
        // conversation's own partition (members and metadata in one batch
        // where they fit) is the truth.
        try_join_all(
            change
                .upsert
                .iter()
                .map(|m| self.run(&self.q.insert_user_conversation, (m.user.as_str(), id))),
        )
        .await?;
        let mut rows = vec![ChangeRow::Meta((
            c.kind.as_str(),
            c.title.as_deref(),
            c.created_at as i64,
            id,
        ))];
        rows.extend(
            change
                .upsert
                .iter()
                .map(|m| ChangeRow::Upsert((m.role.as_str(), id, m.user.as_str()))),
        );
        rows.extend(
            change
                .remove
                .iter()
                .map(|u| ChangeRow::Remove((id, u.as_str()))),
        );
        // One batch (one partition: atomic and isolated) unless the change
        // is too large for one.
        for chunk in rows.chunks(MEMBER_BATCH) {
            let mut batch = Batch::new(BatchType::Unlogged);
            batch.set_is_idempotent(true);
            for row in chunk {
                batch.append_statement(match row {
                    ChangeRow::Meta(_) => self.q.update_conversation.clone(),
                    ChangeRow::Upsert(_) => self.q.upsert_member.clone(),
                    ChangeRow::Remove(_) => self.q.delete_member.clone(),
                });
            }
            self.session
                .batch(&batch, chunk)
                .await
                .map_err(unavailable)?;
        }
        try_join_all(
            change
                .remove
                .iter()
                .map(|user| self.run(&self.q.delete_user_conversation, (user.as_str(), id))),
        )
        .await?;
        Ok(())
    }

    async fn user_conversations(&self, user: &UserId) -> Result<Vec<ConversationId>, StoreError> {
        let mut ids = Vec::new();
        self.for_each_row(
            &self.q.select_user_conversations,
            (user.as_str(),),
            |rows| {
                for row in rows.rows::<(&str,)>().map_err(corrupt)? {
                    ids.push(ConversationId::new(row.map_err(corrupt)?.0).map_err(corrupt)?);
                }
                Ok(true)
            },
        )
        .await?;
        Ok(ids)
    }

    async fn set_read_marker(
        &self,
        conversation: &ConversationId,
        user: &UserId,
        up_to: MessageId,
    ) -> Result<(), StoreError> {
        // The id is the write timestamp: of two markers the higher one wins
        // in every replica, whatever order they arrive in, with no read.
        let id = up_to.0 as i64;
        self.run(
            &self.q.raise_read_marker,
            (id, id, conversation.as_str(), user.as_str()),
        )
        .await?;
        Ok(())
    }

    async fn read_markers(
        &self,
        conversation: &ConversationId,
    ) -> Result<Vec<(UserId, MessageId)>, StoreError> {
        let mut markers = Vec::new();
        self.for_each_row(
            &self.q.select_read_markers,
            (conversation.as_str(),),
            |rows| {
                for row in rows.rows::<(&str, Option<i64>)>().map_err(corrupt)? {
                    let (user, up_to) = row.map_err(corrupt)?;
                    if let Some(up_to) = up_to {
                        markers
                            .push((UserId::new(user).map_err(corrupt)?, MessageId(up_to as u64)));
                    }
                }
                Ok(true)
            },
        )
        .await?;
        Ok(markers)
    }

    async fn read_marker(
        &self,
        conversation: &ConversationId,
        user: &UserId,
    ) -> Result<Option<MessageId>, StoreError> {
        let rows = self
            .rows(
                &self.q.select_read_marker,
                (conversation.as_str(), user.as_str()),
            )
            .await?;
        Ok(rows
            .maybe_first_row::<(Option<i64>,)>()
            .map_err(corrupt)?
            .and_then(|(up_to,)| up_to)
            .map(|id| MessageId(id as u64)))
    }
}

#[async_trait]
impl AccountStore for ScyllaStore {
    async fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let result = self
            .run(
                &self.q.create_user,
                (
                    user.id.as_str(),
                    user.password_hash.as_deref(),
                    user.display_name.as_deref(),
                    user.created_at as i64,
                ),
            )
            .await?;
        if applied(result)? {
            Ok(())
        } else {
            Err(StoreError::Conflict)
        }
    }

    async fn user(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError> {
        let rows = self.rows(&self.q.select_user, (id.as_str(),)).await?;
        type UserRow = (String, Option<String>, Option<String>, Option<i64>);
        match rows.maybe_first_row::<UserRow>().map_err(corrupt)? {
            Some((user, password_hash, display_name, created_at)) => Ok(Some(UserRecord {
                id: UserId::new(&user).map_err(corrupt)?,
                password_hash,
                display_name,
                created_at: created_at.unwrap_or(0) as u64,
            })),
            None => Ok(None),
        }
    }

    async fn put_refresh(&self, record: &RefreshRecord) -> Result<(), StoreError> {
        // The login first: a token never exists without its family's state.
        self.run(&self.q.activate_login, (record.family.as_str(),))
            .await?;
        self.run(
            &self.q.insert_refresh,
            (
                record.token_hash.as_str(),
                record.user.as_str(),
                record.family.as_str(),
                record.expires_at as i64,
                refresh_ttl(record.expires_at),
            ),
        )
        .await?;
        Ok(())
    }

    async fn rotate_refresh(
        &self,
        old_hash: &str,
        new: &RefreshRecord,
        now: u64,
    ) -> Result<Rotation, StoreError> {
        let rows = self.rows(&self.q.select_refresh, (old_hash,)).await?;
        type RefreshRow = (String, String, i64, Option<bool>);
        let Some((user, family, expires_at, _)) =
            rows.maybe_first_row::<RefreshRow>().map_err(corrupt)?
        else {
            return Ok(Rotation::Invalid);
        };
        if self.login_state(&family).await? == Some(LoginState::Revoked) || now >= expires_at as u64
        {
            return Ok(Rotation::Invalid);
        }
        // The transaction decides between two presenters of one token
        // (two nodes, or a thief and its owner): one rotates, and the other
        // is a reuse that revokes the family.
        let used = self.run(&self.q.use_refresh, (old_hash,)).await?;
        if !applied(used)? {
            self.run(&self.q.revoke_login, (family.as_str(),)).await?;
            return Ok(Rotation::Reused);
        }
        let user = UserId::new(&user).map_err(corrupt)?;
        self.put_refresh(&RefreshRecord {
            token_hash: new.token_hash.clone(),
            user: user.clone(),
            family,
            expires_at: new.expires_at,
        })
        .await?;
        Ok(Rotation::Rotated { user })
    }

    async fn revoke_refresh_family(&self, token_hash: &str) -> Result<Option<UserId>, StoreError> {
        let rows = self.rows(&self.q.select_refresh, (token_hash,)).await?;
        type RefreshRow = (String, String, i64, Option<bool>);
        let Some((user, family, _, _)) = rows.maybe_first_row::<RefreshRow>().map_err(corrupt)?
        else {
            return Ok(None);
        };
        self.run(&self.q.revoke_login, (family.as_str(),)).await?;
        Ok(Some(UserId::new(&user).map_err(corrupt)?))
    }

    async fn login_state(&self, family: &str) -> Result<Option<LoginState>, StoreError> {
        let rows = self.rows(&self.q.select_login, (family,)).await?;
        Ok(
            match rows.maybe_first_row::<(Option<bool>,)>().map_err(corrupt)? {
                Some((Some(true),)) => Some(LoginState::Revoked),
                Some((Some(false),)) => Some(LoginState::Active),
                _ => None,
            },
        )
    }

    async fn keep_secret(&self, name: &str, candidate: &str) -> Result<Option<String>, StoreError> {
        self.init_setting(&format!("secret.{name}"), candidate)
            .await
            .map(Some)
    }
}

#[async_trait]
impl LeaseStore for ScyllaStore {
    fn lease_ttl(&self) -> Option<Duration> {
        Some(Duration::from_millis(self.lease_ms))
    }

    async fn acquire_lease(
        &self,
        conversation: &ConversationId,
        owner: &str,
    ) -> Result<LeaseGrant, StoreError> {
        let id = conversation.as_str();
        let granted = |epoch: i64| {
            // Another holder may have written buckets since this handle last
            // held it: the list is read again.
            lock(&self.bucket_lists).remove(conversation);
            lock(&self.leased).insert(conversation.clone());
            LeaseGrant::Granted(Lease {
                conversation: conversation.clone(),
                owner: owner.to_owned(),
                epoch: epoch as u64,
            })
        };
        // Two rounds: a transaction lost to another taker is read again.
        for _ in 0..2 {
            let now = now_ms();
            let expires = (now + self.lease_ms) as i64;
            let rows = self.rows(&self.q.select_lease, (id,)).await?;
            type LeaseRow = (Option<String>, Option<i64>, Option<i64>);
            let current = rows.maybe_first_row::<LeaseRow>().map_err(corrupt)?;
            let Some((held_by, epoch, expires_at)) = current else {
                let result = self
                    .run(&self.q.insert_lease, (id, owner, 1i64, expires))
                    .await?;
                if applied(result)? {
                    return Ok(granted(1));
                }
                continue;
            };
            let (held_by, epoch) = (held_by.unwrap_or_default(), epoch.unwrap_or(0));
            let expires_at = expires_at.unwrap_or(0).max(0) as u64;
            // Released (0), ours (a restarted node of the same name), or run
            // out long enough ago that the holder's last writes have landed.
            let until = expires_at + self.lease_grace_ms;
            let free = expires_at == 0 || held_by == owner || now > until;
            if !free {
                return Ok(LeaseGrant::Held {
                    owner: held_by,
                    until_ms: until,
                });
            }
            let result = self
                .run(&self.q.take_lease, (owner, epoch + 1, expires, id, epoch))
                .await?;
            if applied(result)? {
                return Ok(granted(epoch + 1));
            }
        }
        let rows = self.rows(&self.q.select_lease, (id,)).await?;
        let current = rows
            .maybe_first_row::<(Option<String>, Option<i64>, Option<i64>)>()
            .map_err(corrupt)?;
        let (held_by, _, expires_at) = current.unwrap_or_default();
        Ok(LeaseGrant::Held {
            owner: held_by.unwrap_or_default(),
            until_ms: expires_at.unwrap_or(0).max(0) as u64 + self.lease_grace_ms,
        })
    }

    async fn renew_lease(&self, lease: &Lease) -> Result<bool, StoreError> {
        let expires = (now_ms() + self.lease_ms) as i64;
        let result = self
            .run(
                &self.q.renew_lease,
                (
                    expires,
                    lease.conversation.as_str(),
                    lease.owner.as_str(),
                    lease.epoch as i64,
                ),
            )
            .await?;
        let held = applied(result)?;
        if !held {
            self.forget_lease(&lease.conversation);
        }
        Ok(held)
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        self.forget_lease(&lease.conversation);
        self.run(
            &self.q.release_lease,
            (
                lease.conversation.as_str(),
                lease.owner.as_str(),
                lease.epoch as i64,
            ),
        )
        .await?;
        Ok(())
    }

    async fn append_new_leased(
        &self,
        lease: &Lease,
        messages: &[Message],
    ) -> Result<Vec<Option<Message>>, StoreError> {
        // The lease holder is the conversation's only writer: a plain read
        // of each key decides, with no transaction per message.
        debug_assert!(messages
            .iter()
            .all(|m| m.conversation == lease.conversation));
        let claimed = try_join_all(messages.iter().map(|m| async move {
            let rows = self
                .rows(&self.q.select_client_msg_id, index_key(m))
                .await?;
            Ok::<_, StoreError>(
                rows.maybe_first_row::<(i64,)>()
                    .map_err(corrupt)?
                    .map(|(id,)| MessageId(id as u64)),
            )
        }))
        .await?;
        let claimed = own_claims_are_fresh(messages, claimed);
        let fresh: Vec<&Message> = messages
            .iter()
            .zip(&claimed)
            .filter(|(_, c)| c.is_none())
            .map(|(m, _)| m)
            .collect();
        self.index_and_write(&fresh).await?;
        self.held_messages(messages, claimed).await
    }
}

#[async_trait]
impl ModerationStore for ScyllaStore {
    async fn set_user_flag(
        &self,
        user: &UserId,
        flag: UserFlag,
        on: bool,
        at_ms: u64,
    ) -> Result<(), StoreError> {
        let micros = i64::try_from(at_ms.saturating_mul(1000)).unwrap_or(i64::MAX);
        self.run(
            &self.q.set_user_flag,
            (micros, on, user.as_str(), flag.as_str()),
        )
        .await?;
        Ok(())
    }

    async fn user_flags(&self, user: &UserId) -> Result<UserFlags, StoreError> {
        let rows = self
            .rows(&self.q.select_user_flags, (user.as_str(),))
            .await?;
        let mut flags = UserFlags::default();
        for row in rows.rows::<(String, Option<bool>)>().map_err(corrupt)? {
            let (name, on) = row.map_err(corrupt)?;
            // A flag a newer build knows is not this build's business.
            if let Some(flag) = UserFlag::from_name(&name) {
                flags.set(flag, on.unwrap_or(false));
            }
        }
        Ok(flags)
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let day = (entry.at / 86_400_000) as i32;
        // The day's row first: an entry is never in a day the log skips.
        self.run(&self.q.insert_audit_day, (day,)).await?;
        self.run(
            &self.q.insert_audit,
            (
                day,
                entry.at as i64,
                entry.id as i64,
                entry.admin.as_str(),
                entry.action.as_str(),
                entry.target.as_str(),
                entry.node.as_str(),
            ),
        )
        .await?;
        Ok(())
    }

    async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let days = self.rows(&self.q.select_audit_days, ()).await?;
        let days: Vec<i32> = days
            .rows::<(i32,)>()
            .map_err(corrupt)?
            .map(|r| r.map(|(d,)| d).map_err(corrupt))
            .collect::<Result<_, _>>()?;
        let mut entries = Vec::new();
        for day in days {
            if entries.len() >= limit {
                break;
            }
            let left = i32::try_from(limit - entries.len()).unwrap_or(i32::MAX);
            let rows = self.rows(&self.q.select_audit, (day, left)).await?;
            type AuditRow = (i64, i64, String, String, String, String);
            for row in rows.rows::<AuditRow>().map_err(corrupt)? {
                let (at, id, admin, action, target, node) = row.map_err(corrupt)?;
                entries.push(AuditEntry {
                    at: at as u64,
                    id: id as u64,
                    admin: UserId::new(&admin).map_err(corrupt)?,
                    action,
                    target,
                    node,
                });
            }
        }
        Ok(entries)
    }
}

/// A key claimed under the message's own id was claimed by this very send:
/// a transaction the driver retried after it had gone through answers "not
/// applied" with our id. The message is then new (its row written, again if
/// need be), not a retry of an earlier send: taken for one, it would be
/// acknowledged and never delivered live.
fn own_claims_are_fresh(
    messages: &[Message],
    claims: Vec<Option<MessageId>>,
) -> Vec<Option<MessageId>> {
    messages
        .iter()
        .zip(claims)
        .map(|(m, c)| c.filter(|id| *id != m.id))
        .collect()
}

/// A refresh token row's TTL: its remaining life plus a grace period, so
/// the database forgets used-up tokens by itself.
fn refresh_ttl(expires_at: u64) -> i32 {
    let left = expires_at.saturating_sub(now_ms()) / 1000;
    (left + REFRESH_GRACE_SECS).min(MAX_TTL_SECS) as i32
}

/// A row of a conversation change's batch, whose statements differ.
enum ChangeRow<'a> {
    Meta((&'a str, Option<&'a str>, i64, &'a str)),
    Upsert((&'a str, &'a str, &'a str)),
    Remove((&'a str, &'a str)),
}

impl SerializeRow for ChangeRow<'_> {
    fn serialize(
        &self,
        ctx: &scylla::serialize::row::RowSerializationContext<'_>,
        writer: &mut scylla::serialize::writers::RowWriter,
    ) -> Result<(), scylla::serialize::SerializationError> {
        match self {
            ChangeRow::Meta(row) => SerializeRow::serialize(row, ctx, writer),
            ChangeRow::Upsert(row) => SerializeRow::serialize(row, ctx, writer),
            ChangeRow::Remove(row) => SerializeRow::serialize(row, ctx, writer),
        }
    }

    fn is_empty(&self) -> bool {
        false
    }
}
