//! One upload's way into the store. Parts are exactly the part size but
//! the last (some S3-compatible stores, R2 among them, refuse uneven
//! parts); one is sent while the next fills, never two, so an upload holds
//! at most two parts. A file that fits in one part is one PUT (on S3 three
//! requests fewer than a multipart upload of one part). Whatever ends an
//! upload early aborts it, so no parts are left behind: an error, and the
//! future being dropped (a client gone mid-upload).

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload, PutPayloadMut};
use tokio::task::JoinSet;

use crate::MediaError;

/// Bytes on their way to the object at `path`.
pub(super) struct Writer {
    store: Arc<dyn ObjectStore>,
    path: Path,
    part: usize,
    filling: PutPayloadMut,
    /// Started with the first full part; `None` again once complete.
    upload: Option<Box<dyn MultipartUpload>>,
    /// The part being sent (at most one).
    sending: JoinSet<object_store::Result<()>>,
}

impl Writer {
    pub(super) fn new(store: Arc<dyn ObjectStore>, path: Path, part: usize) -> Writer {
        Writer {
            store,
            path,
            part,
            filling: PutPayloadMut::new(),
            upload: None,
            sending: JoinSet::new(),
        }
    }

    /// Takes `bytes` (without copying them), sending each part it fills.
    pub(super) async fn write(&mut self, mut bytes: Bytes) -> Result<(), MediaError> {
        while !bytes.is_empty() {
            let room = self.part - self.filling.content_length();
            if bytes.len() < room {
                self.filling.push(bytes);
                return Ok(());
            }
            self.filling.push(bytes.split_to(room));
            let part = std::mem::take(&mut self.filling).freeze();
            self.send(part).await?;
        }
        Ok(())
    }

    async fn send(&mut self, part: PutPayload) -> Result<(), MediaError> {
        self.sent().await?;
        let upload = match &mut self.upload {
            Some(upload) => upload,
            None => {
                let started = self
                    .store
                    .put_multipart(&self.path)
                    .await
                    .map_err(unavailable)?;
                self.upload.insert(started)
            }
        };
        self.sending.spawn(upload.put_part(part));
        Ok(())
    }

    /// Waits for the part being sent.
    async fn sent(&mut self) -> Result<(), MediaError> {
        while let Some(done) = self.sending.join_next().await {
            done.map_err(|e| MediaError::Unavailable(e.to_string()))?
                .map_err(unavailable)?;
        }
        Ok(())
    }

    /// Sends the rest and makes the object visible; aborts on failure.
    pub(super) async fn finish(mut self) -> Result<(), MediaError> {
        let last = std::mem::take(&mut self.filling).freeze();
        let done = if self.upload.is_none() {
            self.store
                .put(&self.path, last)
                .await
                .map(drop)
                .map_err(unavailable)
        } else {
            self.complete(last).await
        };
        if let Err(e) = done {
            self.abort().await;
            return Err(e);
        }
        Ok(())
    }

    async fn complete(&mut self, last: PutPayload) -> Result<(), MediaError> {
        if last.content_length() > 0 {
            self.send(last).await?;
        }
        self.sent().await?;
        if let Some(upload) = &mut self.upload {
            upload.complete().await.map_err(unavailable)?;
        }
        self.upload = None;
        Ok(())
    }

    /// Drops what was written.
    pub(super) async fn abort(mut self) {
        self.sending.shutdown().await;
        if let Some(mut upload) = self.upload.take() {
            if let Err(e) = upload.abort().await {
                tracing::warn!(path = %self.path, error = %e, "aborting an upload");
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Dropped mid-upload: drop cannot wait, so the abort runs on its
        // own (S3 would keep the parts until a lifecycle rule removed them).
        let Some(mut upload) = self.upload.take() else {
            return;
        };
        self.sending.abort_all();
        let path = self.path.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = upload.abort().await {
                    tracing::warn!(%path, error = %e, "aborting a dropped upload");
                }
            });
        }
    }
}

/// What the store's error means to a caller: no such object, or the store
/// failed.
pub(super) fn unavailable(e: object_store::Error) -> MediaError {
    match e {
        object_store::Error::NotFound { .. } => MediaError::NotFound,
        other => MediaError::Unavailable(other.to_string()),
    }
}
