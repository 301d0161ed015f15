//! The object store that holds the bytes: uploads streamed in, ranges
//! streamed out.
//!
//! Objects are named `<first two hex digits>/<id>` (and `.thumb` for a
//! thumbnail), so that a local directory holds at most a few thousand
//! files per subdirectory. Memory: an upload holds at most two parts (one
//! in flight, one filling). Parts are small on a local directory; on S3
//! they must be at least 5 MiB, so uploads there take a slot of
//! `upload_buffer_bytes` first and wait when none is free.

use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, RetryConfig};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::sniff::HEAD_BYTES;
use crate::{Backend, MediaConfig, MediaError};

mod writer;

use writer::{unavailable, Writer};

/// Parts written to a local directory.
const LOCAL_PART: usize = 256 * 1024;
/// Parts written to S3: its smallest part but the last.
const S3_PART: usize = 5 * 1024 * 1024;
/// How long `/readyz` waits for the object store.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Which object of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The bytes as uploaded.
    Original,
    /// An image's thumbnail.
    Thumbnail,
}

/// What an upload was.
#[derive(Debug)]
pub struct Uploaded {
    /// Bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
    /// The first bytes, for sniffing.
    pub head: Vec<u8>,
}

/// The files' object store.
#[derive(Clone)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
    /// The same store without retries and with short timeouts: `/readyz`
    /// must answer at once, not after the data path's backoff.
    probe: Arc<dyn ObjectStore>,
    part: usize,
    /// S3: turns to hold part buffers.
    slots: Option<Arc<Semaphore>>,
}

impl Blobs {
    /// The store `config` names; a local one under `data_dir` unless it
    /// names a directory.
    pub fn open(config: &MediaConfig, data_dir: &FsPath) -> Result<Blobs, MediaError> {
        match config.backend {
            Backend::Local => {
                let dir = config.dir.clone().unwrap_or_else(|| data_dir.join("media"));
                std::fs::create_dir_all(&dir).map_err(|e| {
                    MediaError::Config(format!("cannot create {}: {e}", dir.display()))
                })?;
                let store = LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| MediaError::Config(e.to_string()))?
                    // A deleted file's emptied directory goes with it.
                    .with_automatic_cleanup(true);
                let store: Arc<dyn ObjectStore> = Arc::new(store);
                Ok(Blobs {
                    probe: store.clone(),
                    store,
                    part: LOCAL_PART,
                    slots: None,
                })
            }
            Backend::S3 => {
                let s3 = &config.s3;
                if s3.bucket.is_empty() {
                    return Err(MediaError::Config("media.s3.bucket is not set".into()));
                }
                let mut builder = AmazonS3Builder::new()
                    .with_bucket_name(&s3.bucket)
                    .with_region(&s3.region)
                    .with_access_key_id(&s3.access_key_id)
                    .with_secret_access_key(&s3.secret_access_key)
                    .with_virtual_hosted_style_request(!s3.path_style)
                    .with_allow_http(s3.allow_http);
                if let Some(endpoint) = &s3.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                let probe = builder
                    .clone()
                    .with_retry(RetryConfig {
                        max_retries: 0,
                        ..RetryConfig::default()
                    })
                    .with_client_options(
                        ClientOptions::new()
                            .with_connect_timeout(PROBE_TIMEOUT)
                            .with_timeout(PROBE_TIMEOUT),
                    )
                    // The options above replaced the builder's: again.
                    .with_allow_http(s3.allow_http)
                    .build()
                    .map_err(|e| MediaError::Config(e.to_string()))?;
                let store = builder
                    .build()
                    .map_err(|e| MediaError::Config(e.to_string()))?;
                // Two parts an upload: one sent, one filling (writer.rs).
                let slots = (config.upload_buffer_bytes / (2 * S3_PART as u64)).max(1);
                Ok(Blobs {
                    store: Arc::new(store),
                    probe: Arc::new(probe),
                    part: S3_PART,
                    slots: Some(Arc::new(Semaphore::new(slots as usize))),
                })
            }
        }
    }

    fn path(id: &str, which: Which) -> Path {
        let dir = id.get(..2).unwrap_or("00");
        match which {
            Which::Original => Path::from(format!("{dir}/{id}")),
            Which::Thumbnail => Path::from(format!("{dir}/{id}.thumb")),
        }
    }

    /// Streams `body` into the object `id`, at most `max_bytes` of it;
    /// on any failure nothing of it is left.
    pub async fn upload<S, E>(
        &self,
        id: &str,
        body: S,
        max_bytes: u64,
    ) -> Result<Uploaded, MediaError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let _slot = match &self.slots {
            Some(s) => Some(
                s.clone()
                    .acquire_owned()
                    .await
                    .map_err(|e| MediaError::Unavailable(e.to_string()))?,
            ),
            None => None,
        };
        let mut writer = Writer::new(
            self.store.clone(),
            Self::path(id, Which::Original),
            self.part,
        );
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut head = Vec::with_capacity(HEAD_BYTES);
        let mut body = std::pin::pin!(body);
        let read: Result<(), MediaError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| MediaError::Body(e.to_string()))?;
                size += chunk.len() as u64;
                if size > max_bytes {
                    return Err(MediaError::TooLarge { limit: max_bytes });
                }
                hasher.update(&chunk);
                if head.len() < HEAD_BYTES {
                    let take = (HEAD_BYTES - head.len()).min(chunk.len());
                    head.extend_from_slice(&chunk[..take]);
                }
                writer.write(chunk).await?;
            }
            if size == 0 {
                return Err(MediaError::Empty);
            }
            Ok(())
        }
        .await;
        if let Err(e) = read {
            writer.abort().await;
            return Err(e);
        }
        writer.finish().await?;
        Ok(Uploaded {
            size,
            sha256: hex::encode(hasher.finalize()),
            head,
        })
    }

    /// Stores an image's thumbnail.
    pub async fn put_thumbnail(&self, id: &str, bytes: Vec<u8>) -> Result<(), MediaError> {
        self.store
            .put(&Self::path(id, Which::Thumbnail), bytes.into())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// The whole object `id`, when it has at most `max_bytes`.
    pub async fn read_all(&self, id: &str, max_bytes: u64) -> Result<Bytes, MediaError> {
        let got = self
            .store
            .get(&Self::path(id, Which::Original))
            .await
            .map_err(unavailable)?;
        if got.meta.size > max_bytes {
            return Err(MediaError::TooLarge { limit: max_bytes });
        }
        got.bytes().await.map_err(unavailable)
    }

    /// The bytes of `id` (or its thumbnail), whole or `range` (end
    /// exclusive), as they come. A range is the caller's to check against
    /// the size: one that is empty or starts past the end is refused
    /// (`Unavailable`), one that ends past it is cut at the end.
    pub async fn get(
        &self,
        id: &str,
        which: Which,
        range: Option<Range<u64>>,
    ) -> Result<BoxStream<'static, Result<Bytes, MediaError>>, MediaError> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let got = self
            .store
            .get_opts(&Self::path(id, which), options)
            .await
            .map_err(unavailable)?;
        Ok(got.into_stream().map(|r| r.map_err(unavailable)).boxed())
    }

    /// Deletes `id` and its thumbnail; either missing is fine.
    pub async fn delete(&self, id: &str) -> Result<(), MediaError> {
        for which in [Which::Thumbnail, Which::Original] {
            match self.store.delete(&Self::path(id, which)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        Ok(())
    }

    /// Whether the store answers (a missing object is an answer).
    pub async fn probe(&self) -> Result<(), MediaError> {
        match self.probe.head(&Path::from("probe/none")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }
}
