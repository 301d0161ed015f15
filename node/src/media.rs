//! The node's media service (docs/protocol.md, "Media"): the object store
//! that holds uploaded files (chat-media: a local directory, or any
//! S3-compatible store so that nodes keep nothing on their own disk), the
//! key that signs the links messages carry, and the release of files no
//! message refers to any more. The routes are in `uploads.rs` and
//! `downloads.rs`; the actors reach this through [`MediaLinks`].

use std::sync::Arc;

use chat_actors::media::MediaLinks;
use chat_media::{is_image, Blobs, Links, MediaConfig};
use chat_protocol::{now_ms, Attachment};
use chat_storage::{MediaRef, MessageStore};
use tokio::sync::Semaphore;

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

/// Forgets `reference` to each of `ids`, and deletes each file nothing
/// refers to any more: its bytes, then its record (a failure leaves a
/// record to find again, never bytes nobody can find).
async fn release(
    store: Arc<dyn MessageStore>,
    blobs: Blobs,
    reference: MediaRef,
    ids: Vec<String>,
) -> Result<(), String> {
    for id in ids {
        store
            .remove_media_ref(&id, &reference)
            .await
            .map_err(|e| e.to_string())?;
        let Some(record) = store.media(&id).await.map_err(|e| e.to_string())? else {
            continue;
        };
        if !store
            .media_refs(&id, 1)
            .await
            .map_err(|e| e.to_string())?
            .is_empty()
        {
            continue;
        }
        blobs.delete(&id).await.map_err(|e| e.to_string())?;
        store
            .delete_media(&record)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
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
