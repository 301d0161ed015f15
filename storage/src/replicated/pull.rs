//! Anti-entropy: what this node holds of each origin's log, and the ops a
//! peer lacks, which it pulls in chunks until it has them all.

use std::collections::BTreeMap;

use super::link::ReplicatedOp;
use super::op_log::{log_key, log_seq};
use super::ReplicatedStore;
use crate::embedded::ReplicaTable;
use crate::{corrupt, lock, StoreError};

impl ReplicatedStore {
    /// Per origin, the highest seq S such that every op 1..=S of that origin
    /// is held here (origins with S = 0 are left out).
    pub fn vector(&self) -> BTreeMap<String, u64> {
        lock(&self.contiguous)
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
        let wanted: Vec<(String, u64, u64)> = lock(&self.contiguous)
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
}
