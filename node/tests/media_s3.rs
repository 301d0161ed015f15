//! The media checks of `media.rs` on a node whose files live in a real
//! S3 server (s3s-fs, which checks signatures): the same contract, with
//! nothing of the files on the node's disk.

mod common;

use chat_media::{Backend, S3Config};
use chat_testkit::S3Server;
use common::media::*;
use common::media_sweep::*;
use common::*;

async fn node_on_s3(tweak: impl FnOnce(&mut chat_node::Config)) -> (TestNode, S3Server) {
    let server = tokio::task::spawn_blocking(S3Server::start).await.unwrap();
    let s3 = S3Config {
        endpoint: Some(server.endpoint.clone()),
        bucket: server.bucket.clone(),
        access_key_id: server.access_key.clone(),
        secret_access_key: server.secret_key.clone(),
        allow_http: true,
        ..S3Config::default()
    };
    let node = TestNode::start_with(|c| {
        c.media.backend = Backend::S3;
        c.media.s3 = s3;
        tweak(c);
    })
    .await;
    let (status, v) = call_json(node.addr, "GET", "/readyz", None, None).await;
    assert_eq!(status, 200, "a node whose S3 store answers is ready: {v}");
    (node, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_of_every_kind_on_s3() {
    let (node, _s3) = node_on_s3(|_| {}).await;
    uploads_of_every_kind(&node).await;
    assert_eq!(stored_files(&node), 0, "nothing on the node's disk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_on_s3() {
    let (node, _s3) = node_on_s3(|c| {
        c.media.quota_bytes = 1_000_000;
        c.media.max_upload_bytes = 700_000;
    })
    .await;
    quotas(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_on_s3() {
    let (node, _s3) = node_on_s3(|_| {}).await;
    ranges(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_on_s3() {
    let (node, _s3) = node_on_s3(|_| {}).await;
    access(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_on_s3() {
    let (node, _s3) = node_on_s3(|_| {}).await;
    release(&node).await;
}

/// Three nodes, one S3 store: a file uploaded through one node is sent
/// through a second and read through the third (by token and by its
/// link), and deleted from the store when its message is deleted through
/// the first. No node needs a file on its own disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_one_store() {
    use chat_protocol::codec::Codec;
    use chat_protocol::ServerFrame;

    let s3 = tokio::task::spawn_blocking(S3Server::start).await.unwrap();
    let env = [
        ("CHAT__MEDIA__BACKEND", "s3"),
        ("CHAT__MEDIA__S3__ENDPOINT", s3.endpoint.as_str()),
        ("CHAT__MEDIA__S3__BUCKET", s3.bucket.as_str()),
        ("CHAT__MEDIA__S3__ACCESS_KEY_ID", s3.access_key.as_str()),
        ("CHAT__MEDIA__S3__SECRET_ACCESS_KEY", s3.secret_key.as_str()),
        ("CHAT__MEDIA__S3__ALLOW_HTTP", "true"),
    ];
    let cluster = common::cluster::TestCluster::start_env(3, &env).await;
    let ann = register(cluster.addr(0), &unique("m3ann")).await;
    let bob = register(cluster.addr(2), &unique("m3bob")).await;
    let photo = png(640, 480);
    let res = reqwest::Client::new()
        .post(format!("http://{}/v1/media?name=p.png", cluster.addr(0)))
        .bearer_auth(&ann.access)
        .body(photo.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    let v: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    let id = v["id"].as_str().unwrap().to_owned();

    let mut a = connect(cluster.addr(1), &ann.access, Codec::Json).await;
    let mut b = connect(cluster.addr(2), &bob.access, Codec::Json).await;
    let conv = group(&mut a, &[&bob.id]).await;
    let sent = ok(a
        .request(frames::send_files(
            &conv,
            &unique("m"),
            "from node 1",
            &[&id],
        ))
        .await)
    .message
    .unwrap();
    let seen = b
        .event(|f| matches!(f, ServerFrame::Message { message } if message.id == sent.id))
        .await;
    let ServerFrame::Message { message } = seen else {
        unreachable!()
    };
    let url = message.attachments[0].url.clone().unwrap();
    let fetch = |addr: std::net::SocketAddr, path: String, token: Option<String>| async move {
        let mut req = reqwest::Client::new().get(format!("http://{addr}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        (res.status().as_u16(), res.bytes().await.unwrap().to_vec())
    };
    // Bob, by token on node 2; anyone, by the link on nodes 0 and 1.
    let path = format!("/v1/media/{id}");
    assert_eq!(
        fetch(cluster.addr(2), path.clone(), Some(bob.access.clone())).await,
        (200, photo.clone())
    );
    for node in [0, 1] {
        assert_eq!(
            fetch(cluster.addr(node), url.clone(), None).await,
            (200, photo.clone())
        );
    }
    // Deleted through node 0: gone from the store, seen from node 2.
    let mut a0 = connect(cluster.addr(0), &ann.access, Codec::Json).await;
    ok(a0.request(frames::delete(&conv, sent.id)).await);
    let addr = cluster.addr(2);
    eventually("the file is gone from every node", || {
        let (path, token) = (path.clone(), ann.access.clone());
        async move {
            let (status, _) = fetch(addr, path, Some(token)).await;
            if status == 404 {
                Ok(())
            } else {
                Err(format!("status {status}"))
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avatars_on_s3() {
    let (node, _s3) = node_on_s3(|_| {}).await;
    avatars(&node).await;
}

/// A node whose S3 store is gone says so on /readyz.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_an_unreachable_store() {
    let dead_port = chat_testkit::free_port();
    let node = TestNode::start_with(|c| {
        c.media.backend = Backend::S3;
        c.media.s3 = S3Config {
            endpoint: Some(format!("http://127.0.0.1:{dead_port}")),
            bucket: "none".into(),
            access_key_id: "a".into(),
            secret_access_key: "b".into(),
            allow_http: true,
            ..S3Config::default()
        };
    })
    .await;
    let asked = std::time::Instant::now();
    let (status, v) = call_json(node.addr, "GET", "/readyz", None, None).await;
    assert_eq!(status, 503, "{v}");
    assert!(v["reasons"].to_string().contains("media"), "{v}");
    // The probe does not retry: a load balancer's check gets its answer
    // well inside its own timeout (the data path's backoff took ~3 s).
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(2),
        "readyz took {:?}",
        asked.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeps_on_s3() {
    let (node, _s3) = node_on_s3(|c| c.media.unattached_ttl_secs = 2).await;
    unattached_uploads_are_swept(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn races_on_s3() {
    let (node, _s3) = node_on_s3(|_| {}).await;
    a_release_and_an_attach_never_cross(&node).await;
}
