//! What crosses to other nodes: an op as shipped, and the link that ships
//! it, which the cluster layer implements.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::StoreError;

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

/// How a [`ReplicatedStore`](super::ReplicatedStore) reaches its peers; the cluster layer implements
/// it.
#[async_trait]
pub trait ReplicaLink: Send + Sync + 'static {
    /// Sends `op` to every connected peer; resolves once each has it durably,
    /// or has been dropped from the cluster. `Err` means the write cannot be
    /// promised: the caller returns that error, and the op, which stays in
    /// the local log, reaches the peers by anti-entropy.
    async fn replicate(&self, op: ReplicatedOp) -> Result<(), StoreError>;
}
