//! The statements of profiles and the name index. The index is partitioned
//! by a name's first two characters (a lookup takes at least two), and
//! clustered by the name, so a prefix is one slice of one partition.

use scylla::statement::prepared::PreparedStatement;

use super::prepare::Prepare;
use crate::StoreError;

/// Their statements.
pub(in crate::scylladb) struct Statements {
    pub(in crate::scylladb) put: PreparedStatement,
    pub(in crate::scylladb) select: PreparedStatement,
    pub(in crate::scylladb) put_name: PreparedStatement,
    pub(in crate::scylladb) delete_name: PreparedStatement,
    pub(in crate::scylladb) find_names: PreparedStatement,
}

impl Statements {
    pub(super) async fn prepare(p: &Prepare<'_>) -> Result<Statements, StoreError> {
        Ok(Statements {
            put: p
                .cql("INSERT INTO {ks}.user_profiles (user_id, record) VALUES (?, ?)")
                .await?,
            select: p
                .cql("SELECT record FROM {ks}.user_profiles WHERE user_id = ?")
                .await?,
            put_name: p
                .cql("INSERT INTO {ks}.user_names (bucket, name, user_id) VALUES (?, ?, ?)")
                .await?,
            delete_name: p
                .cql("DELETE FROM {ks}.user_names WHERE bucket = ? AND name = ? AND user_id = ?")
                .await?,
            find_names: p
                .cql(
                    "SELECT name, user_id FROM {ks}.user_names \
                     WHERE bucket = ? AND name >= ? AND name < ? LIMIT ?",
                )
                .await?,
        })
    }
}
