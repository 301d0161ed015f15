//! Talking to the cluster at all: the session, and what a lightweight
//! transaction answered. Below everything else here, the schema included.

use std::time::Duration;

use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::response::query_result::QueryResult;
use scylla::value::{CqlValue, Row};

use super::config::ScyllaConfig;
use crate::{corrupt, StoreError};

pub(super) async fn connect(config: &ScyllaConfig) -> Result<Session, StoreError> {
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

/// Whether a lightweight transaction applied: its `[applied]` column, the
/// first on both ScyllaDB and Cassandra (which differ in what follows).
pub(super) fn applied(result: QueryResult) -> Result<bool, StoreError> {
    let rows = result.into_rows_result().map_err(corrupt)?;
    match rows.maybe_first_row::<Row>().map_err(corrupt)? {
        Some(row) => applied_of(&row),
        None => Err(StoreError::Corrupt(
            "a lightweight transaction without a row".into(),
        )),
    }
}

pub(super) fn applied_of(row: &Row) -> Result<bool, StoreError> {
    match row.columns.first() {
        Some(Some(CqlValue::Boolean(b))) => Ok(*b),
        other => Err(StoreError::Corrupt(format!(
            "a lightweight transaction answered {other:?}"
        ))),
    }
}
