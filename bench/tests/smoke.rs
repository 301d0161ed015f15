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
    let report = tiny_rooms_against_the_ceiling(None).await;
    let json = serde_json::to_string(&report).unwrap();
    let back: chat_bench::RunReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back.target, "ceiling");
}

/// A ceiling server in this process on a free port.
struct Ceiling {
    addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Ceiling {
    async fn start(journal: Option<chat_bench::ceiling::Journal>) -> Ceiling {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(chat_bench::ceiling::serve_with(listener, journal, async {
            let _ = stopped.await;
        }));
        Ceiling { addr, stop, server }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.server.await.unwrap().unwrap();
    }
}

/// A tiny rooms run against a ceiling server in this process, stopped after.
async fn tiny_rooms_against_the_ceiling(
    journal: Option<chat_bench::ceiling::Journal>,
) -> chat_bench::RunReport {
    let ceiling = Ceiling::start(journal).await;
    let addr = ceiling.addr;
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        chat_bench::run(&tiny_rooms("ceiling", addr)),
    )
    .await
    .expect("run ends in time")
    .expect("run succeeds");
    assert_delivered(&report);
    ceiling.stop().await;
    report
}

/// With a journal, every accepted send is in the history file: it holds at
/// least as many lines as the measured window accepted sends (warm-up sends
/// are there too), each a `message` event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_against_the_ceiling_server_with_a_journal() {
    let dir = tempfile::tempdir().unwrap();
    let journal = chat_bench::ceiling::Journal::open(dir.path()).expect("journal opens");
    let report = tiny_rooms_against_the_ceiling(Some(journal)).await;
    let history = std::fs::read_to_string(dir.path().join("history.jsonl")).unwrap();
    let lines: Vec<&str> = history.lines().collect();
    let accepted = report.headline().expect("a measured window").accepted;
    assert!(
        lines.len() as u64 >= accepted && accepted > 0,
        "{} lines in the journal for {accepted} accepted sends",
        lines.len()
    );
    for line in lines {
        let event: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert_eq!(event["type"], "message", "{line}");
    }
}

/// A reconnect storm against the ceiling: every client comes back and is
/// answered an empty page (the ceiling keeps no history), so the storm is
/// the connections' cost alone, the floor the standard set shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_against_the_ceiling_server() {
    let ceiling = Ceiling::start(None).await;
    let report = storm("ceiling", ceiling.addr).await;
    let r = report.reconnect.as_ref().expect("storm measured");
    assert_eq!(r.failed, 0, "{}", report.table());
    assert_eq!(r.recovered_messages, 0, "{}", report.table());
    ceiling.stop().await;
}

/// A tiny reconnect storm against `target` at `addr`: every client caught
/// up, no error.
async fn storm(target: &str, addr: std::net::SocketAddr) -> chat_bench::RunReport {
    let mut storm = tiny_rooms(target, addr);
    storm.scenario = chat_bench::ScenarioKind::Reconnect;
    let report = tokio::time::timeout(Duration::from_secs(60), chat_bench::run(&storm))
        .await
        .expect("reconnect ends in time")
        .expect("reconnect succeeds");
    let r = report.reconnect.as_ref().expect("storm measured");
    assert_eq!(r.caught_up, r.clients, "{}", report.table());
    assert!(report.errors.is_empty(), "{}", report.table());
    report
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
    // As scripts/bench.sh sets them: the harness's rate, not a user's.
    config.limits.reactions_per_second = 10_000;
    config.limits.reaction_burst = 10_000;
    let listener = tokio::net::TcpListener::bind(config.listen.http)
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = chat_node::App::start(config).await.expect("node starts");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(chat_node::serve::serve(app, listener, async {
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

/// The rooms variant with edits and reactions: each change fans out (an
/// edit as `message_updated`, a reaction as `reaction`) and is counted and
/// timed like a delivery.
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

/// The fixed-rate windows and the CPU readings of a window, against the
/// ceiling server in this process (`--pid` is this process: the figures
/// are the harness's and the server's together, which is all the wiring
/// check needs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_rates_read_cpu_time() {
    let ceiling = Ceiling::start(None).await;
    let addr = ceiling.addr;
    let mut args = tiny_rooms("ceiling", addr);
    args.fixed_rates = vec![2.0, 4.0];
    args.fixed_step = 0.5;
    args.pid = vec![std::process::id()];
    let report = tokio::time::timeout(Duration::from_secs(30), chat_bench::run(&args))
        .await
        .expect("run ends in time")
        .expect("run succeeds");
    assert!(report.steps.is_empty(), "--ramp 0: only the fixed windows");
    assert_eq!(report.fixed.len(), 2, "{}", report.table());
    for step in &report.fixed {
        assert!(step.deliveries > 0, "{}", report.table());
        assert!(step.cpu_window_s > 0.0);
        assert!(step.server_cpu_s.is_some(), "{}", report.table());
        assert!(step.harness_cpu_s.is_some());
        assert!(step.harness_cores >= 1);
        assert!(step.cpu_window_deliveries > 0);
    }
    assert!(report.fixed_at(4.0).is_some());
    assert!(report.table().contains("srv us/dl"));
    ceiling.stop().await;
}

/// Centrifugo as the bench runs it: built by `scripts/centrifugo.sh build`
/// (the same install scripts/bench.sh uses: `go install` of the pinned
/// version, cached per version; the first build takes minutes), configured
/// by `scripts/centrifugo.sh config`, a child process on a free port.
struct Centrifugo {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Centrifugo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_centrifugo() -> Centrifugo {
    use std::process::{Command, Stdio};
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/centrifugo.sh");
    let built = Command::new("bash")
        .arg(&script)
        .arg("build")
        .stderr(Stdio::inherit())
        .output()
        .expect("bash runs scripts/centrifugo.sh");
    assert!(
        built.status.success(),
        "scripts/centrifugo.sh build failed: Centrifugo is built with Go 1.26 from the Go module proxy"
    );
    let bin = String::from_utf8(built.stdout)
        .expect("a path")
        .lines()
        .last()
        .expect("the binary's path on the last line")
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("centrifugo.json");
    let port = chat_testkit::free_port();
    let status = Command::new("bash")
        .arg(&script)
        .args(["config", "--port", &port.to_string(), "--secret", SECRET])
        .arg("--out")
        .arg(&config)
        .status()
        .expect("bash runs");
    assert!(status.success(), "scripts/centrifugo.sh config failed");
    let log = std::fs::File::create(dir.path().join("centrifugo.log")).unwrap();
    let child = Command::new(&bin)
        .arg("-c")
        .arg(&config)
        .env("GOMAXPROCS", "2")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("centrifugo starts");
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let cf = Centrifugo {
        child,
        addr,
        _dir: dir,
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "centrifugo did not listen on {addr} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    cf
}

/// The centrifugo client: rooms (deliveries to the other subscribers only,
/// server CPU from its pid), history pages and a reconnect storm with
/// recovery, against a real Centrifugo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_against_centrifugo() {
    let cf = tokio::task::spawn_blocking(start_centrifugo).await.unwrap();
    let mut rooms = tiny_rooms("centrifugo", cf.addr);
    rooms.pid = vec![cf.child.id()];
    let report = tokio::time::timeout(Duration::from_secs(30), chat_bench::run(&rooms))
        .await
        .expect("rooms ends in time")
        .expect("rooms succeeds");
    assert_delivered(&report);
    let step = report.headline().expect("a window");
    assert_eq!(
        step.deliveries,
        step.expected_deliveries,
        "every publication reached the 3 other subscribers, and the publisher's own copy \
         is not counted: {}",
        report.table()
    );
    assert!(step.server_cpu_s.is_some(), "{}", report.table());

    let node = format!("http://{}", cf.addr);
    let history = RunArgs::try_parse_from([
        "chat-bench",
        "--target",
        "centrifugo",
        "--scenario",
        "history",
        "--nodes",
        &node,
        "--users",
        "8",
        "--group-size",
        "4",
        "--prefill",
        "120",
        "--page-size",
        "50",
        "--warmup",
        "0.3",
        "--duration",
        "1",
        "--quiet",
        "--jwt-secret",
        SECRET,
    ])
    .unwrap();
    let report = tokio::time::timeout(Duration::from_secs(30), chat_bench::run(&history))
        .await
        .expect("history ends in time")
        .expect("history succeeds");
    let h = report.history.as_ref().expect("history measured");
    assert!(h.pages > 0 && h.errors == 0, "{}", report.table());
    assert!(
        h.messages_per_s > 0.0 && h.messages_per_s <= h.pages_per_s * 50.0 + 1.0,
        "{}",
        report.table()
    );

    storm("centrifugo", cf.addr).await;
    drop(cf);
}
