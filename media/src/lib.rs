//! Uploaded files: where their bytes live and what is made of them.
//!
//! The node stores each upload as an object named by its media id in an
//! object store ([`Blobs`]): a directory beside the node's data (the
//! default for one machine) or any S3-compatible store (for clusters, and
//! nodes on ScyllaDB, which keep nothing on their own disk). Uploads are
//! streamed part by part, never held whole. The type of a file comes from
//! its bytes ([`sniff`]); images are measured and thumbnailed under limits
//! that refuse decompression bombs ([`process_image`]); links that open a
//! file without a token are signed ([`Links`]).
//!
//! This crate sits beside `chat-storage`, below the actors and the node: it
//! knows nothing of users, conversations or who may read what (the node's
//! routes decide that from the records `chat-storage` keeps).
#![deny(missing_docs, unreachable_pub, unsafe_code)]
#![warn(clippy::mod_module_files)]

pub mod blobs;
pub mod config;
pub mod images;
pub mod links;
pub mod sniff;

pub use blobs::{Blobs, Uploaded, Which};
pub use config::{Backend, MediaConfig, S3Config};
pub use images::{process_image, ImageInfo, Thumbnail};
pub use links::Links;
pub use sniff::{clean_name, is_image, new_media_id, sniff};

/// What can go wrong with a file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MediaError {
    /// The file is over the limit given.
    #[error("over the limit of {limit} bytes")]
    TooLarge {
        /// The limit, bytes.
        limit: u64,
    },
    /// An image with more pixels than may be decoded.
    #[error("an image of {width} x {height} pixels, over the limit of {limit}")]
    ImageTooLarge {
        /// Pixels.
        width: u32,
        /// Pixels.
        height: u32,
        /// The limit, pixels.
        limit: u64,
    },
    /// An image that does not decode (truncated, corrupt).
    #[error("the image does not decode: {0}")]
    Undecodable(String),
    /// An upload of no bytes.
    #[error("the file is empty")]
    Empty,
    /// The client's body failed mid-way (the connection dropped).
    #[error("the upload was cut off: {0}")]
    Body(String),
    /// No such object.
    #[error("no such file")]
    NotFound,
    /// The object store failed or refused.
    #[error("object store: {0}")]
    Unavailable(String),
    /// The configuration is unusable.
    #[error("media configuration: {0}")]
    Config(String),
}
