//! What a peer sends: an op applied here with the code its origin ran, and
//! logged under the origin's name and seq, in one batch.

use super::apply::{apply_op, check_op, decode, StoreOp};
use super::link::ReplicatedOp;
use super::op_log::{check_origin, log_key, log_op};
use super::store::ReplicatedStore;
use crate::embedded::ReplicaTable;
use crate::{corrupt, StoreError};
use chat_protocol::ConversationId;

impl ReplicatedStore {
    /// Applies an op received from a peer (live replication or
    /// anti-entropy), durably when it returns `Ok`. An op held already is
    /// skipped, so duplicates and any order of arrival are fine. A malformed
    /// op is [`StoreError::Corrupt`] and changes nothing; so is an op whose
    /// (origin, seq) is held with other content (see the module's limits).
    ///
    /// Returns the conversations whose messages, read markers or record the
    /// op changed here (none when it was held already): a conversation
    /// actor running here holds them in memory, and must reload.
    pub async fn apply_remote(&self, op: ReplicatedOp) -> Result<Vec<ConversationId>, StoreError> {
        let ReplicatedOp { origin, seq, bytes } = op;
        check_origin(&origin)?;
        if seq == 0 {
            return Err(corrupt("an op's seq starts at 1"));
        }
        // Decoded here rather than on the writer thread, which every write
        // of the node waits for.
        let decoded: StoreOp = decode(&bytes)?;
        check_op(&decoded)?;
        let changed = decoded.conversations();
        let held_by = origin.clone();
        let contiguous = self
            .local
            .update(move |txn| {
                if let Some(held) = txn.replica_get(ReplicaTable::OpLog, &log_key(&origin, seq))? {
                    if held != bytes {
                        return Err(corrupt(format!(
                            "op {seq} of {origin} is held with other content: \
                             did a node come back without its disk under its old name?"
                        )));
                    }
                    return Ok(None);
                }
                apply_op(txn, &origin, &decoded)?;
                log_op(txn, &origin, seq, bytes).map(Some)
            })
            .await?;
        match contiguous {
            Some(contiguous) => {
                self.note(&held_by, contiguous);
                Ok(changed)
            }
            None => Ok(Vec::new()),
        }
    }
}
