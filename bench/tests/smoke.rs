//! Smoke test: real servers in this process on port 0 (the ceiling server and
//! a chat node), a tiny `rooms` run against each through the library API, and
//! checks that messages were delivered and their latency recorded.

use std::time::Duration;

use chat_bench::RunArgs;
use clap::Parser;

const SECRET: &str = "smoke-test-secret-smoke-test-secret!";

fn tiny_rooms(target: &str, node: std::net::SocketAddr) -> RunArgs {
    let node = format!("http://{node}");
    RunArgs::try_parse_from([
        "chat-bench",
        "--target",
        target,
        "--scenario",
        "rooms",
        "--nodes",
        &node,
        "--users",
        "12",
        "--group-size",
        "4",
        "--rate",
        "5",
        "--warmup",
        "0.3",
        "--duration",
        "1",
        "--quiet",
        "--jwt-secret",
        SECRET,
    ])
    .expect("valid arguments")
}

fn assert_delivered(report: &chat_bench::RunReport) {
    // Not `peak`: on a loaded machine (the whole suite runs at once) a step
    // may fall behind, which says nothing about whether delivery works.
    let step = report.headline().expect("a measured window");
    assert!(step.accepted > 0, "no send accepted: {}", report.table());
    assert!(step.deliveries > 0, "nothing delivered: {}", report.table());
    assert!(
        step.latency_ms.count > 0 && step.latency_ms.p50 > 0.0,
        "no latency: {}",
        report.table()
    );
    assert_eq!(step.errors, 0, "errors: {}", report.table());
    assert!(report.table().contains("deliveries/s"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_against_the_ceiling_server() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(chat_bench::ceiling::serve(listener, async {
        let _ = stopped.await;
    }));
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        chat_bench::run(&tiny_rooms("ceiling", addr)),
    )
    .await
    .expect("run ends in time")
    .expect("run succeeds");
    assert_delivered(&report);
    let json = serde_json::to_string(&report).unwrap();
    let back: chat_bench::RunReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back.target, "ceiling");
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// The node's `/metrics` text, over a plain HTTP/1.0 request.
async fn get_metrics(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "{answer:.200}"
    );
    answer
}

/// A chat node in this process on port 0, whose users' tokens the harness
/// mints: its address, and what stops it.
async fn chat_node() -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), chat_node::NodeError>>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = chat_node::Config::default();
    config.node.data_dir = dir.path().to_path_buf();
    config.listen.http = "127.0.0.1:0".parse().unwrap();
    config.auth.jwt_secret = Some(SECRET.into());
    // The harness mints its users' tokens, naming no login.
    config.auth.require_session = false;
    let listener = tokio::net::TcpListener::bind(config.listen.http)
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = chat_node::App::start(config).await.expect("node starts");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(chat_node::app::serve(app, listener, async {
        let _ = stopped.await;
    }));
    (addr, stop, server, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_against_a_chat_node() {
    let (addr, stop, server, _dir) = chat_node().await;
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        chat_bench::run(&tiny_rooms("chat", addr)),
    )
    .await
    .expect("run ends in time")
    .expect("run succeeds");
    assert_delivered(&report);
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(20), server).await;
}

/// The rooms variant with edits and reactions: each change fans out as
/// `message_updated` and is counted and timed like a delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_with_edits_and_reactions_against_a_chat_node() {
    let (addr, stop, server, _dir) = chat_node().await;
    let mut args = tiny_rooms("chat", addr);
    args.changes_share = 0.5;
    let report = tokio::time::timeout(Duration::from_secs(20), chat_bench::run(&args))
        .await
        .expect("run ends in time")
        .expect("run succeeds");
    assert_delivered(&report);
    let step = report.headline().expect("a measured window");
    assert_eq!(
        step.deliveries,
        step.accepted * 3,
        "every change reached every other member: {}",
        report.table()
    );
    let metrics = get_metrics(addr).await;
    let updated: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("chat_messages_updated_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the updates counter");
    assert!(updated > 0.0, "no edit or reaction was stored");
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(20), server).await;
}
