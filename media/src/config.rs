//! `[media]` in the node's configuration.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where the bytes live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// A directory on this machine (`dir`, or `media/` in the data
    /// directory).
    #[default]
    Local,
    /// An S3-compatible object store.
    S3,
}

/// `[media.s3]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// The store's address (`http://127.0.0.1:9000`); AWS when unset.
    pub endpoint: Option<String>,
    /// The bucket (it must exist).
    pub bucket: String,
    /// The region.
    pub region: String,
    /// Credentials.
    pub access_key_id: String,
    /// Credentials.
    pub secret_access_key: String,
    /// `endpoint/bucket/key` addresses rather than `bucket.endpoint/key`
    /// (most stores other than AWS want these).
    pub path_style: bool,
    /// Plain HTTP to the endpoint (a store on loopback).
    pub allow_http: bool,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: None,
            bucket: String::new(),
            region: "us-east-1".into(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            path_style: true,
            allow_http: false,
        }
    }
}

/// `[media]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// `local` or `s3`.
    pub backend: Backend,
    /// Local: the directory (default: `media/` in the data directory).
    pub dir: Option<PathBuf>,
    /// S3: the store.
    pub s3: S3Config,
    /// The largest file, bytes.
    pub max_upload_bytes: u64,
    /// What one user's uploads may hold together, bytes.
    pub quota_bytes: u64,
    /// The memory all uploads in flight on a node may hold in part buffers
    /// together (S3 parts are at least 5 MiB; uploads beyond wait).
    pub upload_buffer_bytes: u64,
    /// Images with more pixels are refused, not decoded (decompression
    /// bombs: a few kilobytes of PNG can claim gigabytes of pixels).
    pub max_image_pixels: u64,
    /// The long side of thumbnails, pixels.
    pub thumbnail_px: u32,
    /// An upload no message or avatar took within this long is deleted
    /// (an app that uploaded, then never sent, leaves nothing for good).
    pub unattached_ttl_secs: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            backend: Backend::Local,
            dir: None,
            s3: S3Config::default(),
            max_upload_bytes: 25 * 1024 * 1024,
            quota_bytes: 1024 * 1024 * 1024,
            upload_buffer_bytes: 48 * 1024 * 1024,
            max_image_pixels: 50_000_000,
            thumbnail_px: 320,
            unattached_ttl_secs: 86_400,
        }
    }
}
