//! The node's media service (docs/protocol.md, "Media"): the object store
//! that holds uploaded files (chat-media: a local directory, or any
//! S3-compatible store so that nodes keep nothing on their own disk), the
//! key that signs the links messages carry, and the release of files no
//! message refers to any more, or that no message took in time. The routes are in `uploads.rs` and
//! `downloads.rs`; the actors reach this through [`MediaLinks`].

use std::sync::Arc;
use std::time::Duration;

use chat_actors::media::MediaLinks;
use chat_media::{is_image, Blobs, Links, MediaConfig, MediaError};
use chat_protocol::{now_ms, Attachment};
use chat_storage::{MediaRef, MessageStore, StoreError};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Images decoded at once on this node: decoding takes up to the image
/// limit's memory (see `MediaConfig::max_image_pixels`), so one at a time
/// bounds it on a small machine; the others wait their turn.
const DECODES_AT_ONCE: usize = 1;

/// Files, links and their release.
pub struct MediaService {
    /// The bytes.
    pub blobs: Blobs,
    /// The signer of links.
    pub links: Links,
    /// `[media]`.
    pub config: MediaConfig,
    /// Records and references.
    store: Arc<dyn MessageStore>,
    /// Turns to decode an image.
    pub(crate) decoding: Semaphore,
}

impl MediaService {
    /// The service over `blobs`, signing with `key`.
    pub fn new(
        config: MediaConfig,
        blobs: Blobs,
        key: &[u8],
        store: Arc<dyn MessageStore>,
    ) -> MediaService {
        MediaService {
            blobs,
            links: Links::new(key),
            config,
            store,
            decoding: Semaphore::new(DECODES_AT_ONCE),
        }
    }

    /// Runs [`sweep_unattached`] for uploads older than `[media]
    /// unattached_ttl_secs`, a few times per that period (at most every 10
    /// minutes), until `stop`. Every node sweeps: a file collected twice is
    /// deleted once.
    pub fn spawn_sweeper(&self, stop: CancellationToken) {
        let (store, blobs) = (self.store.clone(), self.blobs.clone());
        let ttl_ms = self.config.unattached_ttl_secs.saturating_mul(1000);
        let every = Duration::from_secs((self.config.unattached_ttl_secs / 4).clamp(1, 600));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let before = now_ms().saturating_sub(ttl_ms);
                match sweep_unattached(store.as_ref(), &blobs, before).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, "swept uploads nothing took"),
                    Err(e) => tracing::warn!(error = %e, "sweeping unattached uploads"),
                }
            }
        });
    }

    /// The signed link to `id` (or its thumbnail), a path on any node.
    pub fn url(&self, id: &str, thumbnail: bool, now_ms: u64) -> String {
        let query = self.links.query(id, now_ms);
        if thumbnail {
            format!("/v1/media/{id}/thumbnail?{query}")
        } else {
            format!("/v1/media/{id}?{query}")
        }
    }
}

/// Why a file could not be released.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// Its record.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Its bytes.
    #[error(transparent)]
    Blobs(#[from] MediaError),
}

/// What [`collect`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collected {
    /// Nothing referred to it: its bytes and record are gone.
    Deleted,
    /// Something refers to it: kept.
    Referred,
    /// No such record.
    Gone,
}

/// Deletes `id`'s file if nothing refers to it. The record is marked
/// `released` first and its references read again: an attach racing this
/// one (see `chat_storage::media::refer`) either sees the mark and refuses,
/// or is seen here and the file stays. Then the bytes go, then the record
/// (a failure between leaves a record to find again, never bytes nobody can
/// find).
pub async fn collect(
    store: &dyn MessageStore,
    blobs: &Blobs,
    id: &str,
) -> Result<Collected, ReleaseError> {
    let Some(mut record) = store.media(id).await? else {
        return Ok(Collected::Gone);
    };
    if !store.media_refs(id, 1).await?.is_empty() {
        return Ok(Collected::Referred);
    }
    if !record.released {
        record.released = true;
        store.update_media(&record).await?;
    }
    if !store.media_refs(id, 1).await?.is_empty() {
        record.released = false;
        store.update_media(&record).await?;
        return Ok(Collected::Referred);
    }
    blobs.delete(id).await?;
    store.delete_media(&record).await?;
    Ok(Collected::Deleted)
}

/// Forgets `reference` to each of `ids`, and deletes each file nothing
/// refers to any more.
async fn release(
    store: Arc<dyn MessageStore>,
    blobs: Blobs,
    reference: MediaRef,
    ids: Vec<String>,
) -> Result<(), ReleaseError> {
    for id in ids {
        store.remove_media_ref(&id, &reference).await?;
        collect(store.as_ref(), &blobs, &id).await?;
    }
    Ok(())
}

/// Uploads listed at a time by the sweeper.
const SWEEP_PAGE: usize = 256;

/// Deletes the uploads made before `before_ms` that nothing refers to, and
/// takes those something does off the list; the number deleted.
pub async fn sweep_unattached(
    store: &dyn MessageStore,
    blobs: &Blobs,
    before_ms: u64,
) -> Result<usize, ReleaseError> {
    let (mut from, mut deleted) = (0, 0);
    loop {
        let page = store.unattached_media(from, before_ms, SWEEP_PAGE).await?;
        for (created_at, id) in &page {
            match collect(store, blobs, id).await? {
                Collected::Deleted => deleted += 1,
                // Deleting the record took it off the list; these did not.
                Collected::Referred | Collected::Gone => {
                    store.forget_unattached(*created_at, id).await?;
                }
            }
        }
        match page.last() {
            Some((created_at, _)) if page.len() == SWEEP_PAGE => from = *created_at,
            _ => return Ok(deleted),
        }
    }
}

impl MediaLinks for MediaService {
    fn sign(&self, attachments: &mut [Attachment]) {
        let now = now_ms();
        for a in attachments {
            a.url = Some(self.url(&a.id, false, now));
            if is_image(&a.content_type) && a.width.is_some() {
                a.thumbnail_url = Some(self.url(&a.id, true, now));
            }
        }
    }

    fn released(&self, reference: MediaRef, media: Vec<String>) {
        let (store, blobs) = (self.store.clone(), self.blobs.clone());
        tokio::spawn(async move {
            if let Err(e) = release(store, blobs, reference, media).await {
                // The references left over keep the files: bytes kept too
                // long, never a message's file gone too soon.
                tracing::warn!(error = %e, "releasing a deleted message's files");
            }
        });
    }
}
