//! The version of a register a replica merges by: the origin's clock, then
//! its name.

use crate::{corrupt, StoreError};

/// The version of a conversation register. Ordered by `ms`, then `origin`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Version {
    pub(super) ms: u64,
    pub(super) origin: String,
}

impl Version {
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(8 + self.origin.len());
        bytes.extend_from_slice(&self.ms.to_be_bytes());
        bytes.extend_from_slice(self.origin.as_bytes());
        bytes
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Version, StoreError> {
        let (ms, origin) = bytes
            .split_first_chunk::<8>()
            .ok_or_else(|| corrupt("malformed version"))?;
        let origin = std::str::from_utf8(origin).map_err(|_| corrupt("malformed version"))?;
        Ok(Version {
            ms: u64::from_be_bytes(*ms),
            origin: origin.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_by_time_then_origin() {
        let v = |ms, origin: &str| Version {
            ms,
            origin: origin.into(),
        };
        assert!(v(1, "b") < v(2, "a"));
        assert!(v(2, "a") < v(2, "b"));
        for version in [v(0, "a"), v(u64::MAX, "node-7"), v(5, "")] {
            assert_eq!(Version::decode(&version.encode()).ok(), Some(version));
        }
        assert!(Version::decode(&[1, 2, 3]).is_err());
    }
}
