//! The object stores' contract, run against a local directory and against
//! a real S3 server (s3s-fs, which checks signatures): streamed uploads
//! come back whole and by ranges, refused uploads leave nothing, deletes
//! delete, and a wrong key is refused.

use bytes::Bytes;
use chat_media::{Backend, Blobs, MediaConfig, MediaError, S3Config, Which};
use chat_testkit::S3Server;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

fn chunks(
    data: &[u8],
    size: usize,
) -> impl futures_util::Stream<Item = Result<Bytes, String>> + Send {
    let parts: Vec<Result<Bytes, String>> = data
        .chunks(size)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures_util::stream::iter(parts)
}

async fn read(
    blobs: &Blobs,
    id: &str,
    which: Which,
    range: Option<std::ops::Range<u64>>,
) -> Result<Vec<u8>, MediaError> {
    let mut stream = blobs.get(id, which, range).await?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

async fn contract(blobs: &Blobs) {
    blobs.probe().await.expect("the store answers");
    // Streamed in small chunks, a few parts' worth.
    let data = chat_testkit::noise(12 * 1024 * 1024 + 123, 1);
    let id = chat_media::new_media_id();
    let up = blobs
        .upload(&id, chunks(&data, 64 * 1024), 20 * 1024 * 1024)
        .await
        .expect("upload");
    assert_eq!(up.size, data.len() as u64);
    assert_eq!(up.sha256, hex::encode(Sha256::digest(&data)));
    assert_eq!(up.head, &data[..8192]);
    assert_eq!(read(blobs, &id, Which::Original, None).await.unwrap(), data);
    let n = data.len() as u64;
    for range in [0..1, 1000..5_000_000, n - 1..n] {
        assert_eq!(
            read(blobs, &id, Which::Original, Some(range.clone()))
                .await
                .unwrap(),
            &data[range.start as usize..range.end as usize],
            "{range:?}"
        );
    }
    assert_eq!(blobs.read_all(&id, n).await.unwrap(), data);
    assert!(matches!(
        blobs.read_all(&id, n - 1).await,
        Err(MediaError::TooLarge { .. })
    ));
    blobs.put_thumbnail(&id, b"thumb".to_vec()).await.unwrap();
    assert_eq!(
        read(blobs, &id, Which::Thumbnail, None).await.unwrap(),
        b"thumb"
    );
    blobs.delete(&id).await.unwrap();
    assert!(matches!(
        read(blobs, &id, Which::Original, None).await,
        Err(MediaError::NotFound)
    ));
    assert!(matches!(
        read(blobs, &id, Which::Thumbnail, None).await,
        Err(MediaError::NotFound)
    ));
    blobs
        .delete(&id)
        .await
        .expect("deleting what is gone is fine");

    // Over the limit: refused mid-stream, nothing left.
    let big = chat_media::new_media_id();
    let refused = blobs
        .upload(
            &big,
            chunks(&chat_testkit::noise(7 * 1024 * 1024, 1), 100_000),
            6 * 1024 * 1024,
        )
        .await;
    assert!(
        matches!(refused, Err(MediaError::TooLarge { limit }) if limit == 6 * 1024 * 1024),
        "{refused:?}"
    );
    assert!(matches!(
        read(blobs, &big, Which::Original, None).await,
        Err(MediaError::NotFound)
    ));
    // A body that fails mid-way: nothing left.
    let cut = chat_media::new_media_id();
    let failing = futures_util::stream::iter(vec![
        Ok(Bytes::from(chat_testkit::noise(6 * 1024 * 1024, 1))),
        Err("connection reset".to_string()),
    ]);
    let failed = blobs.upload(&cut, failing, u64::MAX).await;
    assert!(matches!(failed, Err(MediaError::Body(_))), "{failed:?}");
    assert!(matches!(
        read(blobs, &cut, Which::Original, None).await,
        Err(MediaError::NotFound)
    ));
    // Nothing at all.
    let empty = chat_media::new_media_id();
    let none = blobs.upload(&empty, chunks(&[], 1), 100).await;
    assert!(matches!(none, Err(MediaError::Empty)), "{none:?}");
    // A small file: one PUT, no multipart upload.
    let small = chat_media::new_media_id();
    blobs
        .upload(&small, chunks(b"hello", 2), 100)
        .await
        .unwrap();
    assert_eq!(
        read(blobs, &small, Which::Original, None).await.unwrap(),
        b"hello"
    );
    blobs.delete(&small).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_directory_keeps_files() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = Blobs::open(&MediaConfig::default(), dir.path()).unwrap();
    contract(&blobs).await;
    // Deleted files leave no files behind.
    let media = dir.path().join("media");
    let left = chat_testkit::files_under(&media);
    assert!(left.is_empty(), "{left:?}");

    // An upload whose future is dropped mid-way (the client went, the
    // handler with it) is aborted: its parts go too.
    let id = chat_media::new_media_id();
    let stalled = chunks(&chat_testkit::noise(1024 * 1024, 1), 64 * 1024)
        .chain(futures_util::stream::pending());
    let task = tokio::spawn({
        let blobs = blobs.clone();
        async move { blobs.upload(&id, stalled, u64::MAX).await }
    });
    chat_testkit::eventually("parts of the stalled upload are written", || {
        let files = chat_testkit::files_under(&media);
        async move {
            (!files.is_empty())
                .then_some(())
                .ok_or("none yet".to_string())
        }
    })
    .await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    chat_testkit::eventually("the dropped upload's parts are gone", || {
        let files = chat_testkit::files_under(&media);
        async move { files.is_empty().then_some(()).ok_or(format!("{files:?}")) }
    })
    .await;
}

fn s3_config(server: &S3Server, secret: &str) -> MediaConfig {
    MediaConfig {
        backend: Backend::S3,
        s3: S3Config {
            endpoint: Some(server.endpoint.clone()),
            bucket: server.bucket.clone(),
            access_key_id: server.access_key.clone(),
            secret_access_key: secret.to_owned(),
            allow_http: true,
            ..S3Config::default()
        },
        ..MediaConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_store_keeps_files_and_checks_signatures() {
    let server = tokio::task::spawn_blocking(S3Server::start).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let blobs = Blobs::open(&s3_config(&server, &server.secret_key), dir.path()).unwrap();
    contract(&blobs).await;
    let wrong = Blobs::open(&s3_config(&server, "not-the-secret-key"), dir.path()).unwrap();
    let id = chat_media::new_media_id();
    let refused = wrong.upload(&id, chunks(b"x", 1), 10).await;
    assert!(
        matches!(refused, Err(MediaError::Unavailable(_))),
        "{refused:?}"
    );
    assert!(matches!(
        wrong.probe().await,
        Err(MediaError::Unavailable(_))
    ));
}
