//! A node on the ScyllaDB backend, as a process: it keeps nothing it needs
//! on its own disk (kill -9, then a restart on an empty data directory loses
//! no message, account or session), and it rides out the database failing
//! (sends answered `unavailable`, `/readyz` saying why, nothing acknowledged
//! lost, recovery by itself).
//!
//! Needs a CQL server: `SCYLLA_NODES` for the first test (scripts/test.sh
//! sets it), and `scripts/cql.sh` for the second, which kills its own
//! server. Without `SCYLLA_NODES` the tests fail when `CHAT_REQUIRE_SCYLLA`
//! is set (test.sh, CI) and otherwise skip with a line saying so.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chat_protocol::{Codec, ErrorCode, ServerFrame};
use common::procs::*;
use common::*;

fn scylla_nodes() -> Option<String> {
    match std::env::var("SCYLLA_NODES") {
        Ok(v) if !v.trim().is_empty() => Some(v),
        _ => {
            if std::env::var_os("CHAT_REQUIRE_SCYLLA").is_some() {
                panic!("CHAT_REQUIRE_SCYLLA is set but SCYLLA_NODES is not");
            }
            eprintln!("skipped: SCYLLA_NODES is not set (scripts/test.sh starts a CQL server)");
            None
        }
    }
}

/// A node on the CQL server at `nodes`, without a send rate limit.
fn node_env(nodes: &str, keyspace: &str, timeout_ms: u64) -> Vec<(String, String)> {
    let mut env = scylla_env(nodes, keyspace, timeout_ms);
    env.push(("CHAT__LIMITS__SENDS_PER_SECOND".into(), "1000000".into()));
    env.push(("CHAT__LIMITS__SEND_BURST".into(), "1000000".into()));
    env
}

async fn start(root: &Path, tag: &str, env: &[(String, String)]) -> NodeProc {
    let data = root.join(format!("data-{tag}"));
    let log = root.join(format!("node-{tag}.log"));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // No JWT secret configured: the node keeps the one it makes in the store.
    NodeProc::start(&data, &log, None, &env).await
}

#[tokio::test]
async fn a_restart_on_an_empty_data_dir_loses_nothing_scylla() {
    let Some(nodes) = scylla_nodes() else { return };
    let root = tempfile::tempdir().unwrap();
    let env = node_env(&nodes, "chat_e2e", 20_000);
    let mut node = start(root.path(), "first", &env).await;
    let alice = register(node.addr, &unique("alice")).await;
    let bob = register(node.addr, &unique("bob")).await;
    let mut a = connect(node.addr, &alice.access, Codec::Json).await;
    let conv = group(&mut a, &[bob.id.as_str()]).await;
    let sent = pipeline(&mut a, &conv, "k", 200, 32, None).await;
    assert_eq!(sent.acked.len(), 200);
    node.kill9();
    drop(a);

    // Another, empty data directory: as if on a new machine.
    let node = start(root.path(), "second", &env).await;
    assert!(
        token_accepted(node.addr, &alice.access).await,
        "a token issued before the crash is still good: the secret is in the store"
    );
    let creds = serde_json::json!({"username": alice.id, "password": "correct horse battery"});
    let (status, body) = http(
        node.addr,
        "POST",
        "/v1/auth/login",
        None,
        Some(&creds.to_string()),
    )
    .await;
    assert_eq!(status, 200, "the account survives: {body}");
    let (status, body) = http(
        node.addr,
        "POST",
        "/v1/auth/refresh",
        None,
        Some(&serde_json::json!({"refresh_token": alice.refresh}).to_string()),
    )
    .await;
    assert_eq!(status, 200, "the refresh token survives: {body}");
    let mut a = connect(node.addr, &alice.access, Codec::Json).await;
    let history = full_history(&node, &mut a, &conv, &bob.access).await;
    check_history(&history, &sent.acked);
    assert_eq!(history.len(), 200);
    // A retry of an acknowledged send answers the stored message.
    let first = &sent.acked[0];
    let again = ok(a
        .request(frames::send(
            &conv,
            first.client_msg_id.as_str(),
            &first.body,
        ))
        .await)
    .message
    .unwrap();
    assert_eq!(&again, first);
}

/// A CQL server of this test's own (the test kills it).
struct OwnCql {
    dir: PathBuf,
    nodes: String,
}

impl OwnCql {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/cql.sh")
    }

    fn run(args: &[&str]) -> String {
        let out = Command::new("bash")
            .arg(Self::script())
            .args(args)
            .output()
            .expect("run scripts/cql.sh");
        stdout_of_success(out, &format!("scripts/cql.sh {args:?}"))
    }

    fn start(dir: &Path) -> Self {
        Self::start_nodes(dir, 1)
    }

    fn start_nodes(dir: &Path, n: usize) -> Self {
        let dir = dir.to_path_buf();
        let n = n.to_string();
        let out = Self::run(&["start", "--nodes", &n, "--dir", dir.to_str().unwrap()]);
        let nodes = out
            .lines()
            .filter_map(|l| l.strip_prefix("SCYLLA_NODES="))
            .next_back()
            .expect("cql.sh prints SCYLLA_NODES")
            .to_owned();
        OwnCql { dir, nodes }
    }

    /// SIGKILLs database node `i` (1-based).
    async fn kill(&self, i: usize) {
        self.node_command("kill", i).await;
    }

    /// Starts database node `i` again on its data (and waits until it
    /// serves).
    async fn restart(&self, i: usize) {
        self.node_command("restart", i).await;
    }

    /// Runs on the blocking pool: a restart takes tens of seconds, and the
    /// test's clients must go on reading (and answering pings) meanwhile.
    async fn node_command(&self, verb: &'static str, i: usize) {
        let dir = self.dir.to_str().unwrap().to_owned();
        tokio::task::spawn_blocking(move || {
            Self::run(&[verb, &i.to_string(), "--dir", &dir]);
        })
        .await
        .expect("scripts/cql.sh ran");
    }
}

impl Drop for OwnCql {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(Self::script())
            .args(["stop", "--dir", self.dir.to_str().unwrap()])
            .output();
    }
}

async fn readyz(addr: std::net::SocketAddr) -> (u16, String) {
    http(addr, "GET", "/readyz", None, None).await
}

/// Sends `cmid` and waits for its answer: the message, or the error code.
async fn send_once(
    c: &mut Client,
    conv: &chat_protocol::ConversationId,
    cmid: &str,
) -> Result<chat_protocol::Message, ErrorCode> {
    match c.request(frames::send(conv, cmid, &body_of(cmid))).await {
        ServerFrame::Ok(ok) => Ok(ok.message.expect("a send's ok carries the message")),
        other => Err(err_code(&other)),
    }
}

#[tokio::test]
async fn the_database_failing_mid_traffic_scylla() {
    if scylla_nodes().is_none() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let cql = OwnCql::start(&root.path().join("cql"));
    // Short request timeouts, so a dead database is noticed in seconds.
    let env = node_env(&cql.nodes, "chat_failing", 2_000);
    let node = start(root.path(), "node", &env).await;
    let alice = register(node.addr, &unique("alice")).await;
    let bob = register(node.addr, &unique("bob")).await;
    let mut a = connect(node.addr, &alice.access, Codec::Json).await;
    let conv = group(&mut a, &[bob.id.as_str()]).await;
    let mut acked = Vec::new();
    let mut refused = Vec::new();
    let mut n = 0;
    for _ in 0..20 {
        n += 1;
        acked.push(
            send_once(&mut a, &conv, &format!("m-{n}"))
                .await
                .expect("stored"),
        );
    }
    assert_eq!(readyz(node.addr).await.0, 200);

    cql.kill(1).await;
    // Every send is answered, and after the kill none is acknowledged:
    // until a send is refused the kill may not have been noticed yet.
    let deadline = Instant::now() + Duration::from_secs(60);
    while refused.len() < 5 {
        assert!(
            Instant::now() < deadline,
            "no send refused within 60 s of the kill"
        );
        n += 1;
        let cmid = format!("m-{n}");
        let answer = tokio::time::timeout(Duration::from_secs(30), send_once(&mut a, &conv, &cmid))
            .await
            .expect("a send is answered while the database is down");
        match answer {
            Ok(m) if refused.is_empty() => acked.push(m),
            Ok(m) => panic!("acknowledged {} with the database down", m.client_msg_id),
            Err(code) => {
                assert_eq!(
                    code,
                    ErrorCode::Unavailable,
                    "a refused send says unavailable"
                );
                refused.push(cmid);
            }
        }
    }
    let (status, body) = readyz(node.addr).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("storage"),
        "readyz says the storage is the reason: {body}"
    );

    cql.restart(1).await;
    // The node recovers by itself: ready again, and the client's retries
    // of what was refused go through.
    eventually_within(
        "ready after the database is back",
        Duration::from_secs(60),
        || async {
            let (status, body) = readyz(node.addr).await;
            if status == 200 {
                Ok(())
            } else {
                Err(body)
            }
        },
    )
    .await;
    // Ready means the node reaches the database again, not that every
    // connection of the driver's pool is back: a write in the first seconds
    // may still time out (2 s here) and be answered `unavailable`, which a
    // client retries, as this one does (the same client_msg_id, so a retry
    // is never stored twice) until a deadline.
    let mut retried = Vec::new();
    for cmid in &refused {
        let deadline = Instant::now() + Duration::from_secs(60);
        let stored = loop {
            match send_once(&mut a, &conv, cmid).await {
                Ok(m) => break m,
                Err(ErrorCode::Unavailable) if Instant::now() < deadline => {
                    // A client's backoff before it retries.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(code) => panic!("a retry after recovery is stored, not {code:?}"),
            }
        };
        retried.push(stored);
    }
    let history = full_history(&node, &mut a, &conv, &bob.access).await;
    check_history(&history, &acked);
    check_history(&history, &retried);
    let cmids: HashSet<&str> = history.iter().map(|m| m.client_msg_id.as_str()).collect();
    assert_eq!(cmids.len(), history.len(), "no send stored twice");
    assert_eq!(history.len(), acked.len() + retried.len());
}

/// Runs `chat-node migrate` with `env` and returns what it printed. Every
/// schema change waits for the CQL nodes to agree on it, which takes seconds
/// each on a small machine with three nodes: hence a deadline of its own,
/// longer than a node's start.
async fn migrate(env: &[(String, String)]) -> String {
    const WITHIN: Duration = Duration::from_secs(300);
    let run = tokio::process::Command::new(node_binary())
        .arg("migrate")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WITHIN, run)
        .await
        .unwrap_or_else(|_| panic!("chat-node migrate did not finish within {WITHIN:?}"))
        .expect("run chat-node migrate");
    stdout_of_success(out, "chat-node migrate")
}

/// What a command that must succeed printed; its errors if it failed.
fn stdout_of_success(out: std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn chat_node_migrate_applies_the_schema_once_scylla() {
    let Some(nodes) = scylla_nodes() else { return };
    let keyspace = format!("chat_migrate_cli_{}", std::process::id());
    let env = node_env(&nodes, &keyspace, 30_000);
    let first = migrate(&env).await;
    let all: Vec<i32> = (1..=chat_storage::scylladb::SCHEMA_VERSION).collect();
    assert!(
        first.contains(&format!("applied migrations {all:?}")),
        "{first}"
    );
    let second = migrate(&env).await;
    let version = chat_storage::scylladb::SCHEMA_VERSION;
    assert!(
        second.contains(&format!("is at schema version {version}")),
        "{second}"
    );
}

/// Three chat nodes over a three-node CQL cluster with replication factor 3
/// and QUORUM, clients on every node: losing one database node costs no
/// acknowledged message and no availability; losing two makes sends answer
/// `unavailable` until one is back, then traffic resumes by itself; a chat
/// node killed and restarted on an empty data directory loses nothing. Every
/// node returns the same history, in id order, each send stored once.
#[tokio::test]
async fn database_and_chat_node_losses_on_a_three_node_cql_cluster_scylla() {
    if scylla_nodes().is_none() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let cql = OwnCql::start_nodes(&root.path().join("cql"), 3);
    let redis = RedisServer::start();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let seeds: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let env_of = |i: usize| {
        let mut env = node_env(&cql.nodes, "chat_rf3", 3_000);
        env.extend([
            (
                "CHAT__STORAGE__SCYLLA__REPLICATION_FACTOR".into(),
                "3".into(),
            ),
            ("CHAT__STORAGE__SCYLLA__CONSISTENCY".into(), "quorum".into()),
            ("CHAT__NODE__NAME".into(), format!("node-{}", i + 1)),
            ("CHAT__NODE__ID".into(), (i + 1).to_string()),
            (
                "CHAT__CLUSTER__LISTEN".into(),
                format!("127.0.0.1:{}", ports[i]),
            ),
            (
                "CHAT__CLUSTER__SEEDS".into(),
                format!("[{}]", seeds.join(",")),
            ),
            (
                "CHAT__CLUSTER__COOKIE".into(),
                "scylla-test-cookie-0123456789".into(),
            ),
            ("CHAT__PRESENCE__BACKEND".into(), "redis".into()),
            ("CHAT__PRESENCE__REDIS_URL".into(), redis.url()),
        ]);
        env
    };
    // As an operator rolls out a fleet on a new keyspace: the schema first,
    // once, then the nodes (which find it in place and start promptly).
    migrate(&env_of(0)).await;
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(Some(
            start(root.path(), &format!("node{i}-a"), &env_of(i)).await,
        ));
    }
    let addr = |nodes: &Vec<Option<NodeProc>>, i: usize| nodes[i].as_ref().expect("running").addr;
    let alice = register(addr(&nodes, 0), &unique("alice")).await;
    let bob = register(addr(&nodes, 1), &unique("bob")).await;
    let carol = register(addr(&nodes, 2), &unique("carol")).await;
    let mut a = connect(addr(&nodes, 0), &alice.access, Codec::Json).await;
    let b = connect(addr(&nodes, 1), &bob.access, Codec::Json).await;
    let conv = group(&mut a, &[bob.id.as_str(), carol.id.as_str()]).await;
    // Steady traffic from a client on every node while a database node and
    // then a chat node are killed and come back (the chat node on an EMPTY
    // data directory): each client retries `unavailable` and reconnects
    // elsewhere when its node dies, as clients do.
    let all_nodes = |nodes: &Vec<Option<NodeProc>>| -> Vec<std::net::SocketAddr> {
        nodes.iter().flatten().map(|n| n.addr).collect()
    };
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let sent = std::sync::atomic::AtomicUsize::new(0);
    let entry = all_nodes(&nodes);
    let c = connect(addr(&nodes, 2), &carol.access, Codec::Json).await;
    let traffic = |mut client: Client,
                   name: &'static str,
                   token: String,
                   order: Vec<std::net::SocketAddr>| {
        let (stop, conv, sent) = (stop.clone(), conv.clone(), &sent);
        async move {
            let mut acked = Vec::new();
            let mut n = 0;
            while !*stop.borrow() {
                n += 1;
                let cmid = format!("{name}-{n}");
                acked.push(send_retrying(&mut client, &order, &token, &conv, &cmid).await);
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            (acked, client)
        }
    };
    let rotate = |k: usize| -> Vec<std::net::SocketAddr> {
        (0..entry.len())
            .map(|i| entry[(i + k) % entry.len()])
            .collect()
    };
    let ta = traffic(a, "a", alice.access.clone(), rotate(0));
    let tb = traffic(b, "b", bob.access.clone(), rotate(1));
    let tc = traffic(c, "c", carol.access.clone(), rotate(2));
    let progress = |at_least: usize| {
        let sent = &sent;
        async move {
            eventually_within("traffic goes on", Duration::from_secs(90), || async {
                let n = sent.load(std::sync::atomic::Ordering::Relaxed);
                (n >= at_least).then_some(()).ok_or(format!("{n} sends"))
            })
            .await
        }
    };
    let changes = async {
        progress(30).await;
        cql.kill(3).await;
        progress(90).await;
        nodes[2].as_mut().expect("running").kill9();
        nodes[2] = None;
        progress(130).await;
        nodes[2] = Some(start(root.path(), "node2-empty", &env_of(2)).await);
        cql.restart(3).await;
        progress(200).await;
        stop_tx.send_replace(true);
    };
    let ((mut acked, a2), (acked_b, b2), (acked_c, c2), ()) = tokio::join!(ta, tb, tc, changes);
    // Only alice goes on; bob's and carol's clients would sit unread.
    let mut a = a2;
    drop((b2, c2));
    acked.extend(acked_b);
    acked.extend(acked_c);
    acked.sort_by_key(|m| m.id);

    // Two down: no quorum, nothing acknowledged.
    let mut n = 0;
    let cmid_of = |n: usize| format!("outage-{n}");
    cql.kill(3).await;
    cql.kill(2).await;
    let mut refused = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while refused.len() < 3 {
        assert!(Instant::now() < deadline, "no send refused within 60 s");
        n += 1;
        let cmid = cmid_of(n);
        match send_once(&mut a, &conv, &cmid).await {
            Ok(m) if refused.is_empty() => acked.push(m),
            Ok(m) => panic!("acknowledged {} without a quorum", m.client_msg_id),
            Err(code) => {
                assert_eq!(code, ErrorCode::Unavailable);
                refused.push(cmid);
            }
        }
    }
    cql.restart(2).await;
    // Back by itself: the refused sends go through when retried.
    for cmid in &refused {
        acked.push(send_until_stored(&mut a, &conv, cmid).await);
    }

    cql.restart(3).await;
    acked.sort_by_key(|m| m.id);

    // Every node returns the same history, in id order, with every
    // acknowledged message once.
    // Fresh connections, one to each node: the traffic clients may have
    // moved between nodes, and an unread client stops answering pings (the
    // CQL restarts above block this thread), which the server closes.
    let mut histories = Vec::new();
    for (i, token) in [&alice.access, &bob.access, &carol.access]
        .into_iter()
        .enumerate()
    {
        let node = nodes[i].as_ref().expect("running");
        let mut client = connect(node.addr, token, Codec::Json).await;
        let h = full_history(node, &mut client, &conv, token).await;
        check_history(&h, &acked);
        let cmids: HashSet<&str> = h.iter().map(|m| m.client_msg_id.as_str()).collect();
        assert_eq!(cmids.len(), h.len(), "node {i}: no send stored twice");
        assert_eq!(
            h.len(),
            acked.len(),
            "node {i}: nothing but what was acknowledged"
        );
        histories.push(h);
    }
    assert_eq!(histories[0], histories[1]);
    assert_eq!(histories[0], histories[2]);
}

/// Sends `cmid` until it is stored, as a client does: `unavailable` is
/// retried after a back-off (a conversation moving between nodes waits for
/// its lease), for at most a minute.
async fn send_until_stored(
    c: &mut Client,
    conv: &chat_protocol::ConversationId,
    cmid: &str,
) -> chat_protocol::Message {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match send_once(c, conv, cmid).await {
            Ok(m) => return m,
            Err(code) => {
                assert_eq!(code, ErrorCode::Unavailable, "send {cmid}");
                assert!(Instant::now() < deadline, "send {cmid} never stored");
                // The client's back-off between retries, not a wait for a
                // condition.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Requests queued behind a claim that another node holds are each answered
/// within one wait (the node waits up to 5 s for a departing owner, counted
/// from when the request arrived), not one full wait after another: such a
/// queue once held a client's send for minutes during a rolling upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_queued_behind_a_claim_held_elsewhere_are_answered_within_one_wait_scylla() {
    use chat_storage::scylladb::{ScyllaConfig, ScyllaStore};
    use chat_storage::{LeaseGrant, LeaseStore, NodeLeaseGrant};
    let Some(nodes) = scylla_nodes() else { return };
    let root = tempfile::tempdir().unwrap();
    let env = node_env(&nodes, "chat_e2e", 20_000);
    let node = start(root.path(), "queued", &env).await;
    let alice = register(node.addr, &unique("alice")).await;

    // Another "node": its own lease, long enough to outlast the test, and
    // the claim on a conversation.
    let other = ScyllaStore::open(&ScyllaConfig {
        nodes: nodes.split(',').map(|n| n.trim().to_string()).collect(),
        keyspace: "chat_e2e".into(),
        request_timeout_ms: 20_000,
        lease_ms: 120_000,
        ..ScyllaConfig::default()
    })
    .await
    .expect("open the store as another node");
    let NodeLeaseGrant::Granted(lease) = other
        .acquire_node_lease(&unique("other-node"), None)
        .await
        .expect("node lease")
    else {
        panic!("a new node's lease is granted");
    };
    let conv = chat_protocol::ConversationId::new(&format!("g:{}", chat_protocol::now_ms()))
        .expect("valid id");
    let LeaseGrant::Granted(claim) = other.claim(&conv, &lease).await.expect("claim") else {
        panic!("a free conversation is claimed");
    };

    const QUEUED: i64 = 6;
    let mut c = connect(node.addr, &alice.access, Codec::Json).await;
    let sent = Instant::now();
    for i in 1..=QUEUED {
        let frame = frames::send(&conv, &format!("q{i}"), "queued");
        assert!(try_send(&mut c, &with_req(frame, chat_protocol::ReqId::Int(i))).await);
    }
    for _ in 0..QUEUED {
        let reply = next_reply(&mut c).await.expect("an answer before 30 s");
        assert_eq!(err_code(&reply), ErrorCode::Unavailable, "{reply:?}");
    }
    let took = sent.elapsed();
    // One wait is 5 s; six in a row were 30 s.
    assert!(
        took < Duration::from_secs(10),
        "{QUEUED} queued requests answered after {took:?}"
    );
    other
        .release_lease(&claim)
        .await
        .expect("release the claim");
    other
        .release_node_lease(&lease)
        .await
        .expect("release the lease");
}
