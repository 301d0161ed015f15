//! The media checks, shared by the suites on a local directory
//! (`media.rs`) and on a real S3 server (`media_s3.rs`): each takes a
//! running node and fails on any departure from docs/protocol.md, "Media".
#![allow(dead_code)]

use chat_protocol::codec::Codec;
use chat_protocol::{now_ms, ServerFrame};
use serde_json::Value;

use super::*;

/// A reply of the node: status, headers (lower-case names), body.
pub struct Got {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Got {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap()
}

/// `s` percent-encoded for a query.
pub fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `POST /v1/media?name=` as `who` (no token: `None`).
pub async fn upload_as(
    node: &TestNode,
    who: Option<&TestUser>,
    name: &str,
    bytes: Vec<u8>,
) -> (u16, Value) {
    upload_typed(node, who, name, "application/octet-stream", bytes).await
}

/// Uploads with the `Content-Type` the client claims.
pub async fn upload_typed(
    node: &TestNode,
    who: Option<&TestUser>,
    name: &str,
    claimed: &str,
    bytes: Vec<u8>,
) -> (u16, Value) {
    let mut req = client()
        .post(format!(
            "http://{}/v1/media?name={}",
            node.addr,
            encode(name)
        ))
        .header("content-type", claimed)
        .body(bytes);
    if let Some(who) = who {
        req = req.bearer_auth(&who.access);
    }
    let res = req.send().await.expect("upload answered");
    let status = res.status().as_u16();
    let body = res.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

/// [`upload_as`] with a token.
pub async fn upload(node: &TestNode, who: &TestUser, name: &str, bytes: Vec<u8>) -> (u16, Value) {
    let (status, v) = upload_as(node, Some(who), name, bytes).await;
    assert_eq!(status, 201, "upload of {name}: {v}");
    (status, v)
}

/// Uploads streamed in chunks with no `Content-Length` (chunked).
pub async fn upload_chunked(node: &TestNode, who: &TestUser, bytes: Vec<u8>) -> (u16, Value) {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let res = client()
        .post(format!("http://{}/v1/media?name=big.bin", node.addr))
        .bearer_auth(&who.access)
        .body(body)
        .send()
        .await
        .expect("upload answered");
    let status = res.status().as_u16();
    let body = res.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

/// `GET path` with an optional token and extra headers.
pub async fn get(
    node: &TestNode,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> Got {
    let mut req = client().get(format!("http://{}{path}", node.addr));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await.expect("answered");
    Got {
        status: res.status().as_u16(),
        headers: res.headers().clone(),
        body: res.bytes().await.unwrap_or_default().to_vec(),
    }
}

pub use chat_testkit::noise;

/// A real PNG of `w` x `h` pixels.
pub fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A real JPEG of `w` x `h` pixels.
pub fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x % 256) as u8, 40, (y % 256) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

/// A PNG that says it is 40,000 x 40,000 pixels.
pub fn png_bomb() -> Vec<u8> {
    chat_testkit::png_bomb(40_000)
}

/// Files in the node's local media directory (none on S3).
pub fn stored_files(node: &TestNode) -> usize {
    chat_testkit::files_under(&node.app.config.node.data_dir.join("media")).len()
}

pub async fn uploads_of_every_kind(node: &TestNode) {
    let ann = node.user(&unique("mkind")).await;
    let files_before = stored_files(node);

    // An image, claimed to be HTML: typed by its bytes, measured,
    // thumbnailed; shown inline.
    let photo = png(800, 600);
    let (status, v) = upload_typed(node, Some(&ann), "photo.png", "text/html", photo.clone()).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["content_type"], "image/png", "{v}");
    assert_eq!(v["size"], photo.len() as u64);
    assert_eq!(v["width"], 800);
    assert_eq!(v["height"], 600);
    assert_eq!(v["thumbnail"]["width"], 320, "{v}");
    assert_eq!(v["thumbnail"]["height"], 240, "{v}");
    {
        use sha2::Digest;
        assert_eq!(v["sha256"], hex::encode(sha2::Sha256::digest(&photo)));
    }
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    let got = get(node, &format!("/v1/media/{id}"), Some(&ann.access), &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, photo, "the bytes come back as sent");
    assert_eq!(got.header("content-type"), Some("image/png"));
    assert_eq!(got.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(got.header("accept-ranges"), Some("bytes"));
    assert_eq!(
        got.header("content-length"),
        Some(photo.len().to_string().as_str())
    );
    assert!(
        got.header("content-disposition").is_none(),
        "images show inline"
    );
    let etag = got.header("etag").unwrap().to_owned();
    let again = get(
        node,
        &format!("/v1/media/{id}"),
        Some(&ann.access),
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(again.status, 304);
    let thumb = get(
        node,
        &format!("/v1/media/{id}/thumbnail"),
        Some(&ann.access),
        &[],
    )
    .await;
    assert_eq!(thumb.status, 200);
    let ct = thumb.header("content-type").unwrap().to_owned();
    assert!(ct == "image/jpeg" || ct == "image/png", "{ct}");
    let decoded = image::load_from_memory(&thumb.body).expect("the thumbnail is an image");
    assert_eq!((decoded.width(), decoded.height()), (320, 240));

    // A PDF and a zip: files to download, never shown inline.
    let pdf = [b"%PDF-1.4\n1 0 obj<<>>endobj\n".as_slice(), &noise(2000, 1)].concat();
    let (_, v) = upload(node, &ann, "report.pdf", pdf).await;
    assert_eq!(v["content_type"], "application/pdf", "{v}");
    assert!(v.get("thumbnail").is_none_or(Value::is_null));
    let got = get(
        node,
        &format!("/v1/media/{}", v["id"].as_str().unwrap()),
        Some(&ann.access),
        &[],
    )
    .await;
    assert!(
        got.header("content-disposition")
            .unwrap()
            .starts_with("attachment"),
        "{:?}",
        got.header("content-disposition")
    );
    assert_eq!(
        get(
            node,
            &format!("/v1/media/{}/thumbnail", v["id"].as_str().unwrap()),
            Some(&ann.access),
            &[]
        )
        .await
        .status,
        404,
        "no thumbnail for a PDF"
    );
    let zip = [b"PK\x03\x04".as_slice(), &noise(500, 2)].concat();
    let (_, v) = upload(node, &ann, "stuff.zip", zip).await;
    assert_eq!(v["content_type"], "application/zip", "{v}");

    // A path for a name: only its last part is kept.
    let (_, v) = upload(node, &ann, "../../x", b"hello".to_vec()).await;
    assert_eq!(v["name"], "x", "{v}");

    // HTML claimed to be a PNG: HTML, downloaded, sandboxed, never run.
    let html = b"<html><script>alert(1)</script></html>".to_vec();
    let (status, v) = upload_typed(node, Some(&ann), "pic.png", "image/png", html).await;
    assert_eq!(status, 201);
    assert_eq!(v["content_type"], "text/html", "{v}");
    assert!(v["thumbnail"].is_null(), "{v}");
    let got = get(
        node,
        &format!("/v1/media/{}", v["id"].as_str().unwrap()),
        Some(&ann.access),
        &[],
    )
    .await;
    assert_eq!(got.header("content-type"), Some("text/html"));
    assert_eq!(got.header("x-content-type-options"), Some("nosniff"));
    assert!(got
        .header("content-disposition")
        .unwrap()
        .starts_with("attachment"));
    assert_eq!(
        got.header("content-security-policy"),
        Some("sandbox; default-src 'none'")
    );

    // A decompression bomb and a truncated PNG: refused, nothing kept,
    // nothing counted.
    let used = node
        .app
        .store
        .media_usage(&frames::user(&ann.id))
        .await
        .unwrap();
    let files = stored_files(node);
    let (status, v) = upload_as(node, Some(&ann), "bomb.png", png_bomb()).await;
    assert_eq!(status, 413, "{v}");
    assert_eq!(v["code"], "too_large", "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("40000 x 40000"),
        "{v}"
    );
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(40_000), Some(40_000)),
        "{v}"
    );
    assert_eq!(
        v["limit_pixels"].as_u64(),
        Some(node.app.config.media.max_image_pixels),
        "{v}"
    );
    let mut cut_png = png(300, 200);
    cut_png.truncate(cut_png.len() / 2);
    let (status, v) = upload_as(node, Some(&ann), "cut.png", cut_png).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["code"], "bad_request", "{v}");
    assert_eq!(
        node.app
            .store
            .media_usage(&frames::user(&ann.id))
            .await
            .unwrap(),
        used
    );
    assert_eq!(stored_files(node), files, "refused uploads leave no bytes");
    // A truncated JPEG shows what arrived, as browsers show it: an image
    // of its full size, with a thumbnail.
    let mut cut_jpeg = jpeg(300, 200);
    cut_jpeg.truncate(cut_jpeg.len() / 2);
    let (_, v) = upload(node, &ann, "cut.jpg", cut_jpeg).await;
    assert_eq!(v["content_type"], "image/jpeg");
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(300), Some(200))
    );
    assert!(v["thumbnail"].is_object(), "{v}");
    if node.app.config.media.backend == chat_media::Backend::Local {
        assert!(stored_files(node) > files_before);
    }
}

pub async fn quotas(node: &TestNode) {
    // Set by the caller: a quota of 1,000,000 bytes, uploads of at most
    // 700,000.
    let ann = node.user(&unique("mquota")).await;
    let files = stored_files(node);
    // Over the size limit, declared: refused before a byte is read.
    let (status, v) = upload_as(node, Some(&ann), "big.bin", noise(800_000, 3)).await;
    assert_eq!(status, 413, "{v}");
    assert_eq!(v["code"], "too_large");
    assert_eq!(v["limit_bytes"], 700_000, "{v}");
    // Over it, undeclared (chunked): cut off while streaming.
    let (status, v) = upload_chunked(node, &ann, noise(800_000, 4)).await;
    assert_eq!(status, 413, "{v}");
    assert_eq!(
        stored_files(node),
        files,
        "nothing of a refused upload is kept"
    );

    let (_, first) = upload(node, &ann, "a.bin", noise(600_000, 5)).await;
    // 600,000 used: 600,000 more would pass the quota, declared or not.
    let (status, v) = upload_as(node, Some(&ann), "b.bin", noise(600_000, 6)).await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["code"], "quota_exceeded", "{v}");
    assert_eq!(
        (v["quota_bytes"].as_u64(), v["used_bytes"].as_u64()),
        (Some(1_000_000), Some(600_000)),
        "{v}"
    );
    let (status, v) = upload_chunked(node, &ann, noise(600_000, 7)).await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["code"], "quota_exceeded", "{v}");
    assert_eq!(v["used_bytes"], 600_000, "{v}");
    // Someone else's quota is theirs.
    let bob = node.user(&unique("mquota")).await;
    upload(node, &bob, "c.bin", noise(600_000, 8)).await;
    // Deleting an upload no message carries gives its bytes back.
    let id = first["id"].as_str().unwrap();
    let (status, _) = call_json(
        node.addr,
        "DELETE",
        &format!("/v1/media/{id}"),
        Some(&bob.access),
        None,
    )
    .await;
    assert_eq!(status, 404, "only the uploader deletes");
    let (status, _) = call_json(
        node.addr,
        "DELETE",
        &format!("/v1/media/{id}"),
        Some(&ann.access),
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(
        get(node, &format!("/v1/media/{id}"), Some(&ann.access), &[])
            .await
            .status,
        404
    );
    upload(node, &ann, "b.bin", noise(600_000, 9)).await;
}

pub async fn ranges(node: &TestNode) {
    let ann = node.user(&unique("mrange")).await;
    let data = noise(100_000, 10);
    let (_, v) = upload(node, &ann, "r.bin", data.clone()).await;
    let path = format!("/v1/media/{}", v["id"].as_str().unwrap());
    for (range, want, content_range) in [
        ("bytes=0-0", 0..1, "bytes 0-0/100000"),
        ("bytes=1000-1999", 1000..2000, "bytes 1000-1999/100000"),
        ("bytes=99999-", 99_999..100_000, "bytes 99999-99999/100000"),
        ("bytes=-10", 99_990..100_000, "bytes 99990-99999/100000"),
        (
            "bytes=50000-200000",
            50_000..100_000,
            "bytes 50000-99999/100000",
        ),
    ] {
        let got = get(node, &path, Some(&ann.access), &[("range", range)]).await;
        assert_eq!(got.status, 206, "{range}");
        assert_eq!(got.body, &data[want.clone()], "{range}");
        assert_eq!(got.header("content-range"), Some(content_range), "{range}");
        assert_eq!(
            got.header("content-length"),
            Some((want.end - want.start).to_string().as_str())
        );
    }
    let got = get(
        node,
        &path,
        Some(&ann.access),
        &[("range", "bytes=100000-")],
    )
    .await;
    assert_eq!(got.status, 416);
    assert_eq!(got.header("content-range"), Some("bytes */100000"));
    // Several ranges: the whole file, as RFC 9110 allows.
    let got = get(
        node,
        &path,
        Some(&ann.access),
        &[("range", "bytes=0-1,5-6")],
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, data);
}

/// Ann's group with Bob, a photo of Ann's in it; Cat is in no conversation
/// with her.
pub async fn access(node: &TestNode) {
    let ann = node.user(&unique("macc")).await;
    let bob = node.user(&unique("macc")).await;
    let cat = node.user(&unique("macc")).await;
    let mut a = connect(node.addr, &ann.access, Codec::Json).await;
    let mut b = connect(node.addr, &bob.access, Codec::Json).await;
    let conv = group(&mut a, &[&bob.id]).await;
    let photo = png(64, 48);
    let (_, v) = upload(node, &ann, "p.png", photo.clone()).await;
    let id = v["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/media/{id}");

    // Before it is shared: the uploader only.
    assert_eq!(get(node, &path, Some(&bob.access), &[]).await.status, 404);
    assert_eq!(get(node, &path, None, &[]).await.status, 401);

    let sent = ok(a
        .request(frames::send_files(&conv, &unique("m"), "look", &[&id]))
        .await)
    .message
    .unwrap();
    assert_eq!(sent.attachments.len(), 1);
    let seen = b
        .event(|f| matches!(f, ServerFrame::Message { message } if message.id == sent.id))
        .await;
    let ServerFrame::Message { message } = seen else {
        unreachable!()
    };
    let att = &message.attachments[0];
    assert_eq!(att.id, id);
    assert_eq!(att.name, "p.png");
    assert_eq!(att.content_type, "image/png");
    assert_eq!(att.size, photo.len() as u64);
    assert_eq!((att.width, att.height), (Some(64), Some(48)));
    let url = att.url.clone().expect("a signed link");
    let thumb_url = att.thumbnail_url.clone().expect("a signed thumbnail link");

    // A member, by token; anyone, by the signed link.
    assert_eq!(get(node, &path, Some(&bob.access), &[]).await.body, photo);
    assert_eq!(get(node, &url, None, &[]).await.body, photo);
    assert_eq!(get(node, &thumb_url, None, &[]).await.status, 200);
    // A stranger, by token: as if there were no file.
    assert_eq!(get(node, &path, Some(&cat.access), &[]).await.status, 404);
    // A link changed or for another file: refused.
    let tampered = url.replace("sig=", "sig=0");
    assert_eq!(get(node, &tampered, None, &[]).await.status, 403);
    let (_, other) = upload(node, &ann, "o.png", png(8, 8)).await;
    let query = url.split_once('?').unwrap().1;
    let borrowed = format!("/v1/media/{}?{query}", other["id"].as_str().unwrap());
    assert_eq!(get(node, &borrowed, None, &[]).await.status, 403);
    // A link whose time is up: refused.
    let old = node.app.media.links.query(&id, now_ms() - 3 * 3_600_000);
    let expired = format!("/v1/media/{id}?{old}");
    assert_eq!(get(node, &expired, None, &[]).await.status, 403);
    assert!(old.contains("exp="), "{old}");
    // Links last at least an hour.
    let exp: u64 = url
        .split("exp=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(exp * 1000 >= now_ms() + 3_600_000 - 1000, "exp {exp}");

    // History carries the attachment, with a fresh link.
    let page = ok(b
        .request(frames::history(&conv, None, None, Some(10)))
        .await);
    let m = page
        .messages
        .unwrap()
        .into_iter()
        .find(|m| m.id == sent.id)
        .unwrap();
    assert!(m.attachments[0].url.is_some());
    // So does the HTTP API.
    let (status, v) = call_json(
        node.addr,
        "GET",
        &format!("/v1/conversations/{conv}/messages?limit=5"),
        Some(&bob.access),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(v.to_string().contains(&id));
}

pub async fn release(node: &TestNode) {
    let ann = node.user(&unique("mrel")).await;
    let bob = node.user(&unique("mrel")).await;
    let mut a = connect(node.addr, &ann.access, Codec::Json).await;
    let conv = group(&mut a, &[&bob.id]).await;
    let (_, v) = upload(node, &ann, "shared.bin", noise(5000, 11)).await;
    let id = v["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/media/{id}");
    let first = ok(a
        .request(frames::send_files(&conv, &unique("m"), "one", &[&id]))
        .await)
    .message
    .unwrap();
    let second = ok(a
        .request(frames::send_files(&conv, &unique("m"), "two", &[&id]))
        .await)
    .message
    .unwrap();
    let (status, _) = call_json(node.addr, "DELETE", &path, Some(&ann.access), None).await;
    assert_eq!(
        status, 409,
        "a file messages carry is not deleted on its own"
    );
    // One of two messages gone: the file stays for the other.
    ok(a.request(frames::delete(&conv, first.id)).await);
    let deleted = ok(a
        .request(frames::history(&conv, None, None, Some(10)))
        .await)
    .messages
    .unwrap()
    .into_iter()
    .find(|m| m.id == first.id)
    .unwrap();
    assert!(
        deleted.attachments.is_empty(),
        "a deleted message shows no files"
    );
    assert_eq!(get(node, &path, Some(&bob.access), &[]).await.status, 200);
    // The last one gone: so are the bytes and the record.
    let used = node
        .app
        .store
        .media_usage(&frames::user(&ann.id))
        .await
        .unwrap();
    ok(a.request(frames::delete(&conv, second.id)).await);
    let store = node.app.store.clone();
    let owner = frames::user(&ann.id);
    eventually("the file is deleted with its last message", || {
        let store = store.clone();
        let id = id.clone();
        let owner = owner.clone();
        async move {
            let record = store.media(&id).await.map_err(|e| e.to_string())?;
            let usage = store.media_usage(&owner).await.map_err(|e| e.to_string())?;
            if record.is_none() && usage == used - 5000 {
                Ok(())
            } else {
                Err(format!("record {record:?}, usage {usage}"))
            }
        }
    })
    .await;
    assert_eq!(get(node, &path, Some(&ann.access), &[]).await.status, 404);
    if node.app.config.media.backend == chat_media::Backend::Local {
        let name_on_disk = chat_testkit::files_under(&node.app.config.node.data_dir.join("media"))
            .into_iter()
            .any(|p| p.to_string_lossy().contains(&id));
        assert!(!name_on_disk, "its bytes are gone from the disk");
    } else {
        let gone = node
            .app
            .media
            .blobs
            .get(&id, chat_media::Which::Original, None)
            .await;
        assert!(
            matches!(gone, Err(chat_media::MediaError::NotFound)),
            "its bytes are gone from S3"
        );
    }
}

/// Avatars: an image of one's own; anyone signed in reads it; replaced or
/// cleared, the old file goes.
pub async fn avatars(node: &TestNode) {
    let ann = node.user(&unique("mava")).await;
    let cat = node.user(&unique("mava")).await;
    let patch = |who: &TestUser, avatar: Value| {
        let token = who.access.clone();
        async move {
            call_json(
                node.addr,
                "PATCH",
                "/v1/me",
                Some(&token),
                Some(serde_json::json!({ "avatar": avatar })),
            )
            .await
        }
    };
    let (_, first) = upload(node, &ann, "me.png", png(600, 600)).await;
    let first = first["id"].as_str().unwrap().to_owned();
    let (_, pdf) = upload(node, &ann, "cv.pdf", b"%PDF-1.4\n%%EOF".to_vec()).await;
    let (_, cats) = upload(node, &cat, "cat.png", png(10, 10)).await;
    let (status, v) = patch(&ann, pdf["id"].clone()).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (400, Some("bad_request")),
        "{v}"
    );
    let (status, v) = patch(&ann, cats["id"].clone()).await;
    assert_eq!(
        (status, v["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    let (status, v) = patch(&ann, Value::String("nope".into())).await;
    assert_eq!(status, 404, "{v}");

    let (status, v) = patch(&ann, Value::String(first.clone())).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["avatar"], first.as_str(), "{v}");
    let link = v["avatar_url"]
        .as_str()
        .expect("a link to the avatar")
        .to_owned();
    assert!(
        link.starts_with(&format!("/v1/media/{first}/thumbnail?")),
        "{link}"
    );
    let thumb = get(node, &link, None, &[]).await;
    assert_eq!(thumb.status, 200);
    let small = image::load_from_memory(&thumb.body).unwrap();
    assert_eq!((small.width(), small.height()), (320, 320));
    // Anyone signed in reads an avatar; others' profiles carry the link.
    let path = format!("/v1/media/{first}");
    assert_eq!(get(node, &path, Some(&cat.access), &[]).await.status, 200);
    let (status, v) = call_json(
        node.addr,
        "GET",
        &format!("/v1/users/{}", ann.id),
        Some(&cat.access),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(v["avatar_url"].as_str().is_some(), "{v}");

    // Replaced: the first file goes; the second stays.
    let (_, second) = upload(node, &ann, "me2.png", png(100, 80)).await;
    let second = second["id"].as_str().unwrap().to_owned();
    let (status, _) = patch(&ann, Value::String(second.clone())).await;
    assert_eq!(status, 200);
    let gone = |id: String| {
        let store = node.app.store.clone();
        async move {
            eventually(&format!("{id} is deleted"), || {
                let (store, id) = (store.clone(), id.clone());
                async move {
                    match store.media(&id).await {
                        Ok(None) => Ok(()),
                        other => Err(format!("{other:?}")),
                    }
                }
            })
            .await
        }
    };
    gone(first.clone()).await;
    assert_eq!(get(node, &path, Some(&ann.access), &[]).await.status, 404);
    assert_eq!(
        get(node, &format!("/v1/media/{second}"), Some(&cat.access), &[])
            .await
            .status,
        200
    );
    // Cleared: so does the second.
    let (status, v) = patch(&ann, Value::Null).await;
    assert_eq!(status, 200);
    assert!(v.get("avatar_url").is_none_or(Value::is_null), "{v}");
    gone(second).await;
}
