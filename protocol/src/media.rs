//! Files shared in messages (docs/protocol.md, "Media"): what a message
//! carries of each attachment, and the form of a media id.
//!
//! The bytes live in the node's object store; a message holds only this
//! description of each. `url` is not stored: the node signs a fresh link
//! (valid at least an hour) each time it shows the message, so that a page
//! can put it in an `<img>` without a token.

use serde::{Deserialize, Serialize};

/// Most attachments one message carries.
pub const MAX_ATTACHMENTS: usize = 10;

/// Characters of a media id: 32 lower-case hex digits (128 random bits).
pub const MEDIA_ID_LEN: usize = 32;

/// Whether `id` has the form of a media id. Checked before any lookup, so
/// that nothing else reaches a store key or an object path.
pub fn is_media_id(id: &str) -> bool {
    id.len() == MEDIA_ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// One file a message carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(ts_rs::TS))]
pub struct Attachment {
    /// The media id.
    pub id: String,
    /// The file's name as uploaded (cleaned of any path).
    pub name: String,
    /// Sniffed from the bytes.
    pub content_type: String,
    /// Bytes.
    pub size: u64,
    /// Images: pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Images: pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// A signed link to the bytes; set when shown, never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Images: a signed link to the thumbnail; set when shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail_url: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_ids_are_32_lower_hex_digits() {
        assert!(is_media_id("0123456789abcdef0123456789abcdef"));
        assert!(!is_media_id("0123456789ABCDEF0123456789abcdef"));
        assert!(!is_media_id("../../etc/passwd0000000000000000"));
        assert!(!is_media_id("0123456789abcdef0123456789abcde"));
        assert!(!is_media_id(""));
    }
}
