//! The op log: every op by origin and seq, and per origin how much of its
//! log this node holds (the marks), kept in the embedded store's database so
//! that a write and its log entry commit in one batch.

use crate::embedded::{decode_u64, key_of, split_part, ReplicaTable, Txn};
use crate::{corrupt, StoreError};

/// Longest origin (node name) an op may carry: it is part of keys.
pub(super) const MAX_ORIGIN: usize = 255;

/// How much of one origin's log a node holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Marks {
    /// Every seq in 1..=contiguous is held.
    pub(super) contiguous: u64,
    /// The highest seq held.
    pub(super) highest: u64,
}

impl Marks {
    pub(super) fn encode(self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(16);
        bytes.extend_from_slice(&self.contiguous.to_be_bytes());
        bytes.extend_from_slice(&self.highest.to_be_bytes());
        bytes
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Marks, StoreError> {
        let bytes: &[u8; 16] = bytes
            .try_into()
            .map_err(|_| corrupt("malformed op-log marks"))?;
        let (contiguous, highest) = bytes.split_at(8);
        Ok(Marks {
            contiguous: decode_u64(contiguous)?,
            highest: decode_u64(highest)?,
        })
    }
}

/// Writes op (`origin`, `seq`) into the log and moves the origin's marks;
/// returns the new contiguous mark.
pub(super) fn log_op(
    txn: &mut Txn<'_>,
    origin: &str,
    seq: u64,
    bytes: Vec<u8>,
) -> Result<u64, StoreError> {
    txn.replica_put(ReplicaTable::OpLog, log_key(origin, seq), bytes);
    let mut marks = marks(txn, origin)?;
    marks.highest = marks.highest.max(seq);
    if seq == marks.contiguous + 1 {
        // Ops that arrived early may close up behind this one.
        marks.contiguous = seq;
        while marks.contiguous < marks.highest
            && txn
                .replica_get(ReplicaTable::OpLog, &log_key(origin, marks.contiguous + 1))?
                .is_some()
        {
            marks.contiguous += 1;
        }
    }
    // Written even when unchanged: the marks keyspace is also the list of
    // origins held, read at start.
    txn.replica_put(ReplicaTable::OpMarks, key_of(&[origin]), marks.encode());
    Ok(marks.contiguous)
}

pub(super) fn marks(txn: &Txn<'_>, origin: &str) -> Result<Marks, StoreError> {
    match txn.replica_get(ReplicaTable::OpMarks, &key_of(&[origin]))? {
        Some(bytes) => Marks::decode(&bytes),
        None => Ok(Marks::default()),
    }
}

pub(super) fn log_key(origin: &str, seq: u64) -> Vec<u8> {
    let mut key = key_of(&[origin]);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The seq of a log key of `origin`.
pub(super) fn log_seq(key: &[u8], origin: &str) -> Result<u64, StoreError> {
    let (held, seq) = split_part(key)?;
    if held != origin {
        return Err(corrupt("op-log key of another origin"));
    }
    decode_u64(seq)
}

pub(super) fn check_origin(origin: &str) -> Result<(), StoreError> {
    if origin.is_empty() || origin.len() > MAX_ORIGIN {
        return Err(corrupt(format!(
            "an op's origin must be 1 to {MAX_ORIGIN} bytes, not {}",
            origin.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_and_log_keys_round_trip() {
        let marks = Marks {
            contiguous: 3,
            highest: 9,
        };
        assert_eq!(Marks::decode(&marks.encode()).ok(), Some(marks));
        assert!(Marks::decode(&[0; 15]).is_err());
        assert_eq!(log_seq(&log_key("n1", 42), "n1").ok(), Some(42));
        assert!(log_seq(&log_key("n1", 42), "n10").is_err());
        assert!(log_seq(&[0, 5, b'a'], "a").is_err());
        // Keys of one origin sort by seq, so a range scan walks the log in order.
        assert!(log_key("n", 255) < log_key("n", 256));
    }
}
