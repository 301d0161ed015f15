//! Media (docs/protocol.md, "Media"), end to end over real sockets on a
//! node whose files live in a local directory: uploads of every kind (an
//! image, a PDF, a zip, a path for a name, a PNG sent as HTML, HTML sent as
//! a PNG, a decompression bomb, a truncated JPEG), quotas and the size
//! limit, ranges, access (uploader, members, strangers, signed links that
//! expire), attachments on messages live and in history, and the bytes
//! deleted with the last message that carries them.
//!
//! `media_s3.rs` runs the same checks against a real S3 server.

mod common;

use chat_protocol::codec::Codec;
use chat_protocol::ServerFrame;
use common::media::*;
use common::media_sweep::*;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_of_every_kind_are_typed_from_their_bytes() {
    let node = TestNode::start().await;
    uploads_of_every_kind(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_and_the_size_limit_hold_and_refused_bytes_are_gone() {
    let node = TestNode::start_with(|c| {
        c.media.quota_bytes = 1_000_000;
        c.media.max_upload_bytes = 700_000;
    })
    .await;
    quotas(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_are_served() {
    let node = TestNode::start().await;
    ranges(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_read_attachments_strangers_do_not_and_links_expire() {
    let node = TestNode::start().await;
    access(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_message_takes_its_files_with_it() {
    let node = TestNode::start().await;
    release(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_nothing_takes_are_swept() {
    let node = TestNode::start_with(|c| c.media.unattached_ttl_secs = 2).await;
    unattached_uploads_are_swept(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_released_while_attached_is_never_lost() {
    let node = TestNode::start().await;
    a_release_and_an_attach_never_cross(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_attachments_are_refused() {
    let node = TestNode::start().await;
    let ann = node.user(&unique("mbad")).await;
    let bob = node.user(&unique("mbad")).await;
    let mut a = connect(node.addr, &ann.access, Codec::Json).await;
    let conv = group(&mut a, &[&bob.id]).await;
    let (_, bobs) = upload(&node, &bob, "b.txt", b"bob's".to_vec()).await;
    let bobs = bobs["id"].as_str().unwrap().to_owned();
    // Someone else's upload: as if there were none.
    let e = a
        .request(frames::send_files(&conv, &unique("m"), "x", &[&bobs]))
        .await;
    assert_eq!(err_code(&e), chat_protocol::ErrorCode::NotFound, "{e:?}");
    // Not a media id.
    let e = a
        .request(frames::send_files(&conv, &unique("m"), "x", &["../../etc"]))
        .await;
    assert_eq!(err_code(&e), chat_protocol::ErrorCode::BadRequest, "{e:?}");
    // Eleven.
    let mut ids = Vec::new();
    for n in 0..11 {
        let (_, v) = upload(&node, &ann, &format!("{n}.txt"), vec![b'a'; 10]).await;
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let e = a
        .request(frames::send_files(&conv, &unique("m"), "x", &refs))
        .await;
    assert_eq!(err_code(&e), chat_protocol::ErrorCode::BadRequest, "{e:?}");
    // The same file twice.
    let e = a
        .request(frames::send_files(
            &conv,
            &unique("m"),
            "x",
            &[refs[0], refs[0]],
        ))
        .await;
    assert_eq!(err_code(&e), chat_protocol::ErrorCode::BadRequest, "{e:?}");
    // Ten, with no text: fine.
    let m = ok(a
        .request(frames::send_files(&conv, &unique("m"), "", &refs[..10]))
        .await)
    .message
    .unwrap();
    assert_eq!(m.attachments.len(), 10);
    // Uploads need a token.
    let (status, _) = upload_as(&node, None, "x.txt", b"x".to_vec()).await;
    assert_eq!(status, 401);
    let _ = ServerFrame::Ok(Default::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avatars_are_images_of_ones_own_that_anyone_signed_in_sees() {
    let node = TestNode::start().await;
    avatars(&node).await;
}
