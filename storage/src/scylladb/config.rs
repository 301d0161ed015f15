//! `[storage.scylla]`: where the cluster is, how to reach it, and how much
//! of it every read and write waits for.

use std::collections::BTreeMap;

use scylla::statement::{Consistency, SerialConsistency};
use serde::{Deserialize, Serialize};

/// How far apart the nodes' wall clocks may be (NTP keeps them within
/// milliseconds): a new holder waits this long, and the database's write
/// timeout, after a lease ran out by its own clock, on top of the fifth of
/// the term its holder stopped writing early by.
pub const CLOCK_MARGIN_MS: u64 = 250;

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
    /// How long a node's lease lasts without renewal (the node renews it
    /// three times per period, one lightweight transaction each, however
    /// many conversations it holds). A node that dies holds its
    /// conversations this long, plus `write_timeout_ms` and a clock margin
    /// for its last writes to land, before another node takes them.
    pub lease_ms: u64,
    /// The database's own write timeout (`write_request_timeout` in
    /// ScyllaDB's and Cassandra's configuration, 2 s unless changed): a
    /// replica drops a write older than this, so a dead node's last write
    /// has landed or been dropped this long after its lease ran out. Never
    /// set it below the database's value.
    pub write_timeout_ms: u64,
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
            lease_ms: 1_000,
            write_timeout_ms: 2_000,
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
        if self.write_timeout_ms == 0 {
            return Err("storage.scylla.write_timeout_ms must be above 0".into());
        }
        if self.username.is_some() != self.password.is_some() {
            return Err("storage.scylla.username and password go together".into());
        }
        Ok(())
    }

    pub(super) fn replication(&self) -> String {
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
    pub(super) fn driver(self) -> Consistency {
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
    pub(super) fn serial(self) -> SerialConsistency {
        match self {
            ConsistencyLevel::LocalOne | ConsistencyLevel::LocalQuorum => {
                SerialConsistency::LocalSerial
            }
            _ => SerialConsistency::Serial,
        }
    }
}
