//! The schema: numbered migrations, applied once per keyspace, in order,
//! by whichever node takes the migration lock first.

use std::collections::HashSet;
use std::time::Duration;

use chat_protocol::now_ms;
use scylla::client::session::Session;

use super::config::ScyllaConfig;
use super::cql::{applied, connect};
use crate::{corrupt, unavailable, StoreError};

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
}, Migration {
    version: 5,
    name: "notifications: settings, subscriptions, the outbox; e-mail addresses",
    statements: &[
        "CREATE TABLE IF NOT EXISTS {ks}.notify_settings (user_id text PRIMARY KEY, settings blob)",
        "CREATE TABLE IF NOT EXISTS {ks}.notify_levels (user_id text, conversation_id text, \
         notify blob, PRIMARY KEY (user_id, conversation_id))",
        "CREATE TABLE IF NOT EXISTS {ks}.push_subscriptions (user_id text, id text, sub blob, \
         PRIMARY KEY (user_id, id))",
        "CREATE TABLE IF NOT EXISTS {ks}.notify_marks (shard int, conversation_id text, \
         rev bigint, PRIMARY KEY (shard, conversation_id))",
        "CREATE TABLE IF NOT EXISTS {ks}.notify_cursors (conversation_id text PRIMARY KEY, \
         rev bigint, last_id bigint)",
        "CREATE TABLE IF NOT EXISTS {ks}.notify_jobs (shard int, due bigint, id bigint, \
         job blob, PRIMARY KEY (shard, due, id))",
        "CREATE TABLE IF NOT EXISTS {ks}.notify_dead (part int, id bigint, dead blob, \
         PRIMARY KEY (part, id))",
        "CREATE TABLE IF NOT EXISTS {ks}.notify_digest (user_id text, conversation_id text, \
         message bigint, PRIMARY KEY (user_id, conversation_id, message))",
        "CREATE TABLE IF NOT EXISTS {ks}.user_emails (user_id text PRIMARY KEY, email blob)",
        "CREATE TABLE IF NOT EXISTS {ks}.email_tokens (token_hash text PRIMARY KEY, record blob)",
    ],
}, Migration {
    version: 6,
    name: "people: contacts, blocks and privacy",
    statements: &[
        "CREATE TABLE IF NOT EXISTS {ks}.user_relations (user_id text PRIMARY KEY, record blob)",
    ],
}, Migration {
    version: 7,
    name: "people: profiles and the name index",
    statements: &[
        "CREATE TABLE IF NOT EXISTS {ks}.user_profiles (user_id text PRIMARY KEY, record blob)",
        "CREATE TABLE IF NOT EXISTS {ks}.user_names (bucket text, name text, user_id text, \
         PRIMARY KEY (bucket, name, user_id))",
    ],
}, Migration {
    version: 8,
    name: "people: credentials, e-mail owners and listed logins",
    statements: &[
        "CREATE TABLE IF NOT EXISTS {ks}.user_credentials (user_id text PRIMARY KEY, record blob)",
        "CREATE TABLE IF NOT EXISTS {ks}.email_owners (address text PRIMARY KEY, user_id text)",
        "CREATE TABLE IF NOT EXISTS {ks}.user_logins (user_id text, login_id text, record blob, \
         PRIMARY KEY (user_id, login_id))",
    ],
}, Migration {
    version: 9,
    name: "people: reports",
    statements: &[
        "CREATE TABLE IF NOT EXISTS {ks}.reports (id text PRIMARY KEY, record blob)",
        "CREATE TABLE IF NOT EXISTS {ks}.open_reports (part int, id text, PRIMARY KEY (part, id))",
    ],
}, Migration {
    version: 10,
    name: "media: records, owners' uploads, references, messages' attachments",
    statements: &[
        "CREATE TABLE IF NOT EXISTS {ks}.media (id text PRIMARY KEY, record blob)",
        "CREATE TABLE IF NOT EXISTS {ks}.media_owners (owner text, id text, size bigint, \
         PRIMARY KEY (owner, id))",
        "CREATE TABLE IF NOT EXISTS {ks}.media_refs (media_id text, ref text, \
         PRIMARY KEY (media_id, ref))",
        "ALTER TABLE {ks}.messages ADD attachments blob",
    ],
}, Migration {
    version: 11,
    name: "media: uploads not yet attached, by day, for the sweeper",
    statements: &[
        "CREATE TABLE IF NOT EXISTS {ks}.media_unattached (day bigint, created_at bigint, \
         id text, PRIMARY KEY (day, created_at, id))",
    ],
}, Migration {
    version: 12,
    name: "node leases, and conversations claimed under them",
    // A row without an incarnation is an expiring lease (what earlier
    // releases write): both kinds live in one table during an upgrade.
    statements: &[
        "CREATE TABLE IF NOT EXISTS {ks}.node_leases (node text PRIMARY KEY, \
         incarnation bigint, expires_at bigint)",
        "ALTER TABLE {ks}.conversation_leases ADD incarnation bigint",
    ],
}];

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i32 = 12;

/// How long a node may hold the migration lock before others take over
/// (it expires with the row's TTL if the node dies mid-migration).
const MIGRATION_LOCK_TTL_SECS: u32 = 60;

/// Creates the keyspace if missing and applies the migrations it lacks;
/// returns the versions this call applied. Safe to run from several nodes at
/// once: one takes a lock row (a lightweight transaction, with a TTL in case
/// it dies) and the others wait for it to finish.
pub async fn migrate(config: &ScyllaConfig) -> Result<Vec<i32>, StoreError> {
    let session = connect(config).await?;
    migrate_on(&session, config).await
}

pub(super) async fn migrate_on(
    session: &Session,
    config: &ScyllaConfig,
) -> Result<Vec<i32>, StoreError> {
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
