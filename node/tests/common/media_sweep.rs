//! The life of an upload no message takes, and of a file deleted while a
//! message attaches it; shared by `media.rs` (local directory) and
//! `media_s3.rs` (a real S3 server).
#![allow(dead_code)]

use chat_node::media::{collect, Collected};
use chat_protocol::codec::Codec;
use chat_protocol::now_ms;

use super::media::{get, noise, upload};
use super::*;

/// Whether `id`'s bytes are gone from the node's object store.
pub async fn bytes_gone(node: &TestNode, id: &str) -> bool {
    matches!(
        node.app
            .media
            .blobs
            .get(id, chat_media::Which::Original, None)
            .await,
        Err(chat_media::MediaError::NotFound)
    )
}

/// On a node whose `unattached_ttl_secs` is 2: an upload nothing takes is
/// deleted (bytes, record, quota); one a message took stays, and leaves
/// the sweeper's list.
pub async fn unattached_uploads_are_swept(node: &TestNode) {
    let ann = node.user(&unique("msweep")).await;
    let owner = frames::user(&ann.id);
    let mut a = connect(node.addr, &ann.access, Codec::Json).await;
    let conv = group(&mut a, &[]).await;
    let (_, kept) = upload(node, &ann, "kept.bin", noise(3000, 21)).await;
    let (_, left) = upload(node, &ann, "left.bin", noise(4000, 22)).await;
    let (kept, left) = (
        kept["id"].as_str().unwrap().to_owned(),
        left["id"].as_str().unwrap().to_owned(),
    );
    ok(
        a.request(frames::send_files(&conv, &unique("m"), "k", &[&kept]))
            .await,
    );
    assert_eq!(
        node.app.store.media_usage(&owner).await.unwrap(),
        7000,
        "both count until swept"
    );
    let store = node.app.store.clone();
    eventually("the upload nothing took is swept", || {
        let (store, owner, left, kept) = (store.clone(), owner.clone(), left.clone(), kept.clone());
        async move {
            let record = store.media(&left).await.map_err(|e| e.to_string())?;
            let usage = store.media_usage(&owner).await.map_err(|e| e.to_string())?;
            let listed = store
                .unattached_media(0, now_ms() + 1, 10_000)
                .await
                .map_err(|e| e.to_string())?;
            let kept_listed = listed.iter().any(|(_, id)| *id == kept);
            if record.is_none() && usage == 3000 && !kept_listed {
                Ok(())
            } else {
                Err(format!(
                    "left's record {record:?}, usage {usage}, kept still listed: {kept_listed}"
                ))
            }
        }
    })
    .await;
    assert!(bytes_gone(node, &left).await, "its bytes are gone");
    assert_eq!(
        get(node, &format!("/v1/media/{kept}"), Some(&ann.access), &[])
            .await
            .status,
        200,
        "the attached one stays"
    );
}

/// A release and an attach at the same moment: whichever way they
/// interleave, no message carries a file whose bytes are gone.
pub async fn a_release_and_an_attach_never_cross(node: &TestNode) {
    let ann = node.user(&unique("mrace")).await;
    let mut a = connect(node.addr, &ann.access, Codec::Json).await;
    let conv = group(&mut a, &[]).await;
    let store = node.app.store.clone();
    let blobs = &node.app.media.blobs;

    // The release marked the file first: the attach sees it and refuses.
    let (_, v) = upload(node, &ann, "going.bin", noise(1000, 23)).await;
    let going = v["id"].as_str().unwrap().to_owned();
    let mut record = store.media(&going).await.unwrap().unwrap();
    record.released = true;
    store.update_media(&record).await.unwrap();
    let e = a
        .request(frames::send_files(&conv, &unique("m"), "x", &[&going]))
        .await;
    assert_eq!(err_code(&e), chat_protocol::ErrorCode::NotFound, "{e:?}");
    assert!(
        store.media_refs(&going, 10).await.unwrap().is_empty(),
        "the refused attach took its reference back"
    );
    assert_eq!(
        collect(store.as_ref(), blobs, &going).await.unwrap(),
        Collected::Deleted
    );
    assert!(bytes_gone(node, &going).await);

    // The attach wrote its reference first: the release sees it and keeps
    // the file, unmarked.
    let (_, v) = upload(node, &ann, "staying.bin", noise(1000, 24)).await;
    let staying = v["id"].as_str().unwrap().to_owned();
    ok(
        a.request(frames::send_files(&conv, &unique("m"), "y", &[&staying]))
            .await,
    );
    assert_eq!(
        collect(store.as_ref(), blobs, &staying).await.unwrap(),
        Collected::Referred
    );
    assert!(!store.media(&staying).await.unwrap().unwrap().released);
    assert!(!bytes_gone(node, &staying).await);
    // A second attach of it still works.
    ok(
        a.request(frames::send_files(&conv, &unique("m"), "z", &[&staying]))
            .await,
    );
}
