//! How keys and values are laid out in the database: the layout every
//! keyspace here shares, the replicated store's included.
//!
//! Every string in a key is preceded by its length (u16 BE): without it the
//! range of conversation `ab` would also hold the keys of conversation `abc`.
//! Numbers are big-endian, so keys sort by them. Values are MessagePack maps.

use chat_protocol::UserId;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{corrupt, StoreError};

/// Appends `part` with its length in front.
fn push_part(key: &mut Vec<u8>, part: &str) {
    // Ids are at most 64 bytes and fjall keys at most 64 KiB, so u16 holds
    // every length a key can have.
    key.extend_from_slice(&(part.len() as u16).to_be_bytes());
    key.extend_from_slice(part.as_bytes());
}

/// A key of length-prefixed strings (the layout of every key here, and of
/// the replication keyspaces).
pub(crate) fn key_of(parts: &[&str]) -> Vec<u8> {
    let mut key = Vec::with_capacity(parts.iter().map(|p| p.len() + 2).sum::<usize>() + 12);
    for part in parts {
        push_part(&mut key, part);
    }
    key
}

/// The leading length-prefixed string of a key, and the rest.
pub(crate) fn split_part(key: &[u8]) -> Result<(&str, &[u8]), StoreError> {
    let malformed = || corrupt("malformed key");
    let (len, rest) = key.split_first_chunk::<2>().ok_or_else(malformed)?;
    let len = usize::from(u16::from_be_bytes(*len));
    if rest.len() < len {
        return Err(malformed());
    }
    let (part, rest) = rest.split_at(len);
    let part = std::str::from_utf8(part).map_err(|_| malformed())?;
    Ok((part, rest))
}

/// The one length-prefixed string that follows the first `prefix_len` bytes
/// of `key`.
pub(super) fn last_part(key: &[u8], prefix_len: usize) -> Result<&str, StoreError> {
    let rest = key
        .get(prefix_len..)
        .ok_or_else(|| corrupt("malformed key"))?;
    match split_part(rest)? {
        (part, []) => Ok(part),
        _ => Err(corrupt("malformed key")),
    }
}

/// A u64 stored big-endian (an id, a seq, a revision).
pub(crate) fn decode_u64(bytes: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = bytes.try_into().map_err(|_| corrupt("expected 8 bytes"))?;
    Ok(u64::from_be_bytes(bytes))
}

pub(super) fn user_id(s: &str) -> Result<UserId, StoreError> {
    UserId::new(s).map_err(corrupt)
}

pub(super) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, StoreError> {
    // Every stored type encodes; a failure is a bug, reported as corrupt data
    // rather than as an outage that would invite retries.
    // Most stored values are a message of a few hundred bytes: room for one
    // up front spares the buffer's growth steps (a realloc each).
    let mut buf = Vec::with_capacity(256);
    rmp_serde::encode::write_named(&mut buf, value)
        .map_err(|e| StoreError::Corrupt(format!("cannot encode: {e}")))?;
    Ok(buf)
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    rmp_serde::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip_and_nest_by_prefix() {
        let key = key_of(&["ab", "c"]);
        assert_eq!(split_part(&key).ok(), Some(("ab", &key[4..])));
        assert_eq!(last_part(&key, 4).ok(), Some("c"));
        // A conversation's range holds none of a longer id's keys.
        assert!(!key_of(&["abc"]).starts_with(&key_of(&["ab"])));
        assert!(last_part(&key, 0).is_err());
        assert!(split_part(&[0, 5, b'a']).is_err());
        assert!(decode_u64(&[1; 7]).is_err());
    }
}
