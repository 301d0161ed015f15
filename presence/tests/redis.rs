//! The Redis presence backend against a real `redis-server`: two nodes
//! sharing one Redis, a node that dies, Redis going away and coming back.
//!
//! Each test starts its own `redis-server` on a free loopback port, so they
//! run in parallel. `scripts/test.sh` installs `redis-server`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_presence::redis::{RedisPresence, RedisPresenceConfig};
use chat_presence::PresenceStore;
use chat_protocol::{now_ms, Presence, Status, UserId};
use chat_testkit::eventually;
use common::{conn, user};
use tokio::sync::broadcast;

/// Generous bound on anything that should happen "soon".
const DEADLINE: Duration = Duration::from_secs(10);
/// What the issue allows a presence call to take while Redis is down.
const QUICK: Duration = Duration::from_secs(3);

/// A `redis-server` on 127.0.0.1, killed on drop.
struct RedisServer {
    port: u16,
    child: Option<Child>,
    /// Where `SAVE` writes and a restart reads, when data must survive one.
    dir: Option<tempfile::TempDir>,
}

use chat_testkit::free_port;

impl RedisServer {
    fn start() -> Self {
        Self::start_on(free_port())
    }

    fn start_on(port: u16) -> Self {
        let mut server = RedisServer {
            port,
            child: None,
            dir: None,
        };
        server.restart();
        server
    }

    /// A server that reloads what [`save`](Self::save) wrote when restarted.
    fn start_persistent() -> Self {
        let mut server = RedisServer {
            port: free_port(),
            child: None,
            dir: Some(tempfile::tempdir().expect("temp dir")),
        };
        server.restart();
        server
    }

    fn save(&self) {
        let reply = command(self.port, "SAVE");
        assert_eq!(reply.as_deref(), Some("+OK"), "SAVE");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server again on the same port (empty: nothing is saved).
    fn restart(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string()]).args([
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        if let Some(dir) = &self.dir {
            cmd.arg("--dir").arg(dir.path());
        }
        let spawned = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed: these tests need a real Redis. \
                 Run scripts/test.sh, which installs it (or `apt-get install -y redis-server`)."
            ),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + DEADLINE;
        while !ping(self.port) {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("redis-server on port {} exited: {status}", self.port);
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not answer PING",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("server running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            // A frozen server ignores nothing but SIGKILL, but be tidy.
            let _ = Command::new("kill")
                .args([
                    "-CONT",
                    &self.child.as_ref().map(Child::id).unwrap_or(0).to_string(),
                ])
                .status();
        }
        self.kill();
    }
}

fn ping(port: u16) -> bool {
    command(port, "PING").as_deref() == Some("+PONG")
}

/// Sends an inline command; the first line of the reply, if any.
fn command(port: u16, line: &str) -> Option<String> {
    let addr = ([127, 0, 0, 1], port).into();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(format!("{line}\r\n").as_bytes()).ok()?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") {
        stream.read_exact(&mut byte).ok()?;
        reply.push(byte[0]);
    }
    reply.truncate(reply.len() - 2);
    String::from_utf8(reply).ok()
}

fn config(url: &str, node: &str, ttl: Duration) -> RedisPresenceConfig {
    RedisPresenceConfig::new(url, node)
        .with_ttl(ttl)
        .with_key_prefix("test:")
        .with_op_timeout(Duration::from_secs(1))
}

async fn node(redis: &RedisServer, name: &str, ttl: Duration) -> RedisPresence {
    RedisPresence::connect(config(&redis.url(), name, ttl))
        .await
        .expect("connect to redis")
}

/// The next change about one of `users`, skipping changes about others.
/// Nodes `a` and `b` on `redis`; alice connects to `a` while `b` watches
/// her, and `b`'s changes have said she is online.
async fn alice_online_on_a_seen_from_b(
    redis: &RedisServer,
    ttl: Duration,
) -> (RedisPresence, RedisPresence, broadcast::Receiver<Presence>) {
    let a = node(redis, "a", ttl).await;
    let b = node(redis, "b", ttl).await;
    let mut changes = b.changes();
    b.watch(&[user("alice")]).await.expect("watch");
    a.connected(&user("alice"), &conn("a", 1))
        .await
        .expect("connected");
    assert_eq!(
        next_for(&mut changes, &["alice"]).await.status,
        Status::Online
    );
    (a, b, changes)
}

async fn next_for(rx: &mut broadcast::Receiver<Presence>, users: &[&str]) -> Presence {
    let wanted: Vec<UserId> = users.iter().map(|u| user(u)).collect();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(change)) if wanted.contains(&change.user) => return change,
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => panic!("change channel: {e}"),
            Err(_) => panic!("no change about {users:?} within {DEADLINE:?}"),
        }
    }
}

/// Waits for `name` to be announced with `status`, skipping other changes.
async fn until(rx: &mut broadcast::Receiver<Presence>, name: &str, status: Status) {
    let deadline = Instant::now() + DEADLINE;
    while next_for(rx, &[name]).await.status != status {
        assert!(Instant::now() < deadline, "{name} never became {status:?}");
    }
}

async fn status_of(p: &RedisPresence, name: &str) -> Result<Presence, String> {
    let mut answer = p.query(&[user(name)]).await.map_err(|e| e.to_string())?;
    answer.pop().ok_or_else(|| "empty answer".to_string())
}

async fn quickly<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    let started = Instant::now();
    let out = f.await;
    let took = started.elapsed();
    assert!(took < QUICK, "{what} took {took:?} while Redis was away");
    out
}

fn assert_recent(last_seen: Option<u64>, since: u64) {
    let t = last_seen.expect("offline with last_seen");
    let now = now_ms();
    assert!(
        t + 1_000 >= since && t <= now + 1_000,
        "last_seen {t} not between {since} and {now}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_another_node_sees_online_and_offline() {
    let redis = RedisServer::start();
    let a = node(&redis, "a", Duration::from_secs(30)).await;
    let b = node(&redis, "b", Duration::from_secs(30)).await;
    a.ready().await.expect("a ready");
    b.ready().await.expect("b ready");
    let mut changes = b.changes();
    b.watch(&[user("alice")]).await.expect("watch");

    let before = status_of(&b, "alice").await.expect("query");
    assert_eq!(before.status, Status::Offline);
    assert_eq!(before.last_seen, None, "never seen");

    a.connected(&user("alice"), &conn("a", 1))
        .await
        .expect("connected");
    let change = next_for(&mut changes, &["alice"]).await;
    assert_eq!(change.status, Status::Online);
    assert_eq!(change.last_seen, None);
    assert_eq!(
        status_of(&b, "alice").await.expect("query").status,
        Status::Online
    );

    let left_at = now_ms();
    a.disconnected(&user("alice"), &conn("a", 1))
        .await
        .expect("disconnected");
    let change = next_for(&mut changes, &["alice"]).await;
    assert_eq!(change.status, Status::Offline);
    assert_recent(change.last_seen, left_at);

    for p in [&a, &b] {
        let now = status_of(p, "alice").await.expect("query");
        assert_eq!(now.status, Status::Offline);
        assert_eq!(now.last_seen, change.last_seen, "query and event agree");
    }

    // After unwatch, nothing more reaches this node.
    b.unwatch(&[user("alice")]).await.expect("unwatch");
    b.watch(&[user("zed")]).await.expect("watch marker");
    a.connected(&user("alice"), &conn("a", 2))
        .await
        .expect("connected");
    a.connected(&user("zed"), &conn("a", 3))
        .await
        .expect("connected");
    let change = next_for(&mut changes, &["alice", "zed"]).await;
    assert_eq!(change.user, user("zed"), "unwatched user still forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_on_two_nodes_stays_online_until_both_are_gone() {
    let redis = RedisServer::start();
    let a = node(&redis, "a", Duration::from_secs(30)).await;
    let b = node(&redis, "b", Duration::from_secs(30)).await;
    let mut changes = b.changes();
    b.watch(&[user("alice"), user("zed")]).await.expect("watch");

    a.connected(&user("alice"), &conn("a", 1)).await.expect("a");
    b.connected(&user("alice"), &conn("b", 1)).await.expect("b");
    let change = next_for(&mut changes, &["alice"]).await;
    assert_eq!(change.status, Status::Online);

    a.disconnected(&user("alice"), &conn("a", 1))
        .await
        .expect("a");
    // Pub/sub keeps order: any event about alice (a second online, an
    // offline) would arrive before the marker's.
    a.connected(&user("zed"), &conn("a", 2))
        .await
        .expect("marker");
    let change = next_for(&mut changes, &["alice", "zed"]).await;
    assert_eq!(
        (change.user.as_str(), change.status),
        ("zed", Status::Online),
        "alice changed while still connected on b"
    );
    assert_eq!(
        status_of(&a, "alice").await.expect("query").status,
        Status::Online
    );

    let left_at = now_ms();
    b.disconnected(&user("alice"), &conn("b", 1))
        .await
        .expect("b");
    let change = next_for(&mut changes, &["alice"]).await;
    assert_eq!(change.status, Status::Offline);
    assert_recent(change.last_seen, left_at);
    assert_eq!(
        status_of(&a, "alice").await.expect("query").status,
        Status::Offline
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_users_go_offline_within_the_ttl() {
    let redis = RedisServer::start();
    let ttl = Duration::from_secs(1);
    let (a, b, mut changes) = alice_online_on_a_seen_from_b(&redis, ttl).await;

    // A live node keeps its users online well past the TTL.
    tokio::time::sleep(ttl * 3).await;
    assert_eq!(
        status_of(&b, "alice").await.expect("query").status,
        Status::Online
    );
    assert!(
        matches!(
            changes.try_recv(),
            Err(broadcast::error::TryRecvError::Empty)
        ),
        "no change while a lives"
    );

    // Crash: no disconnect, no cleanup.
    let died_at = now_ms();
    let started = Instant::now();
    drop(a);
    let change = next_for(&mut changes, &["alice"]).await;
    let took = started.elapsed();
    assert_eq!(change.status, Status::Offline);
    // TTL, plus one check period, plus slack for a loaded machine.
    assert!(
        took < ttl + ttl / 3 + Duration::from_millis(1_500),
        "took {took:?}"
    );
    assert_recent(change.last_seen, died_at);

    let now = status_of(&b, "alice").await.expect("query");
    assert_eq!(now.status, Status::Offline);
    assert_eq!(now.last_seen, change.last_seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_fast_and_presence_recovers_when_it_returns() {
    let mut redis = RedisServer::start();
    let ttl = Duration::from_secs(1);
    let a = node(&redis, "a", ttl).await;
    let b = node(&redis, "b", ttl).await;
    let mut changes = b.changes();
    // As a session does: watch, then query.
    // As a session does: watch, then query.
    b.watch(&[user("alice"), user("carol")])
        .await
        .expect("watch");
    b.query(&[user("alice"), user("carol")])
        .await
        .expect("query");
    b.query(&[user("alice"), user("carol")])
        .await
        .expect("query");
    a.connected(&user("alice"), &conn("a", 1))
        .await
        .expect("connected");
    assert_eq!(
        next_for(&mut changes, &["alice"]).await.status,
        Status::Online
    );

    redis.kill();
    let err = quickly("ready", a.ready())
        .await
        .expect_err("ready while down");
    assert!(err.to_string().contains("redis"), "{err}");
    quickly("ready", b.ready())
        .await
        .expect_err("ready while down");
    let err = quickly("connected", a.connected(&user("carol"), &conn("a", 2)))
        .await
        .expect_err("connected while down");
    assert!(
        err.to_string().contains(&redis.port.to_string()),
        "names the server: {err}"
    );
    quickly("connected", a.connected(&user("dave"), &conn("a", 3)))
        .await
        .expect_err("connected while down");
    quickly("disconnected", a.disconnected(&user("dave"), &conn("a", 3)))
        .await
        .expect_err("disconnected while down");
    quickly("query", b.query(&[user("alice")]))
        .await
        .expect_err("query while down");
    quickly("watch", b.watch(&[user("erin")]))
        .await
        .expect_err("watch while down");
    quickly("query", b.query(&[user("erin")]))
        .await
        .expect_err("query while down");

    // Back, and empty: node a re-adds what is still connected on it.
    redis.restart();
    for p in [&a, &b] {
        eventually("ready again", || async {
            p.ready().await.map_err(|e| e.to_string())
        })
        .await;
    }
    for (name, expected) in [
        ("alice", Status::Online),
        ("carol", Status::Online),
        ("dave", Status::Offline),
    ] {
        eventually(name, || async {
            let now = status_of(&b, name).await?;
            if now.status == expected {
                Ok(())
            } else {
                Err(format!("{now:?}"))
            }
        })
        .await;
    }
    // Carol, who connected during the outage, is announced.
    until(&mut changes, "carol", Status::Online).await;
    // And a user watched while Redis was down is followed too.
    eventually("connected", || async {
        a.connected(&user("erin"), &conn("a", 4))
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    until(&mut changes, "erin", Status::Online).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_times_out_and_the_disconnect_lands_later() {
    let redis = RedisServer::start();
    // Long TTL: the offline below cannot come from expiry.
    let ttl = Duration::from_secs(30);
    let (a, b, mut changes) = alice_online_on_a_seen_from_b(&redis, ttl).await;

    redis.signal("-STOP");
    let left_at = now_ms();
    quickly(
        "disconnected",
        a.disconnected(&user("alice"), &conn("a", 1)),
    )
    .await
    .expect_err("disconnected while frozen");
    let err = quickly("ready", a.ready())
        .await
        .expect_err("ready while frozen");
    assert!(err.to_string().contains("redis"), "{err}");
    redis.signal("-CONT");

    let change = next_for(&mut changes, &["alice"]).await;
    assert_eq!(change.status, Status::Offline);
    assert_recent(change.last_seen, left_at);
    let now = status_of(&b, "alice").await.expect("query");
    assert_eq!(now.status, Status::Offline);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starts_while_redis_is_down_and_catches_up() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let a = quickly(
        "connect",
        RedisPresence::connect(config(&url, "a", Duration::from_secs(1))),
    )
    .await
    .expect("starts without redis");
    let err = quickly("ready", a.ready()).await.expect_err("not ready");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    quickly("connected", a.connected(&user("alice"), &conn("a", 1)))
        .await
        .expect_err("connected without redis");

    let redis = RedisServer::start_on(port);
    eventually("ready", || async {
        a.ready().await.map_err(|e| e.to_string())
    })
    .await;
    let b = node(&redis, "b", Duration::from_secs(1)).await;
    eventually("alice online", || async {
        let now = status_of(&b, "alice").await?;
        if now.status == Status::Online {
            Ok(())
        } else {
            Err(format!("{now:?}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_users_are_batched() {
    let redis = RedisServer::start();
    let a = Arc::new(node(&redis, "a", Duration::from_secs(30)).await);
    let b = node(&redis, "b", Duration::from_secs(30)).await;
    let users: Vec<UserId> = (0..1_200).map(|i| user(&format!("u{i}"))).collect();
    let mut tasks = Vec::new();
    for (i, u) in users.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        let (a, u) = (a.clone(), u.clone());
        tasks.push(tokio::spawn(async move {
            a.connected(&u, &conn("a", i as u64)).await
        }));
    }
    for t in tasks {
        t.await.expect("task").expect("connected");
    }
    b.watch(&users).await.expect("watch");
    let answer = b.query(&users).await.expect("query");
    assert_eq!(answer.len(), users.len());
    for (i, (p, u)) in answer.iter().zip(&users).enumerate() {
        assert_eq!(&p.user, u);
        let expected = if i % 2 == 0 {
            Status::Online
        } else {
            Status::Offline
        };
        assert_eq!(p.status, expected, "{u}");
    }
}

#[tokio::test]
async fn bad_settings_are_refused() {
    let err = RedisPresence::connect(RedisPresenceConfig::new("not a url", "a"))
        .await
        .err()
        .expect("bad url refused");
    assert!(err.to_string().contains("url"), "{err}");
    let short =
        RedisPresenceConfig::new("redis://127.0.0.1:1", "a").with_ttl(Duration::from_millis(10));
    assert!(
        RedisPresence::connect(short).await.is_err(),
        "tiny ttl refused"
    );
    let secret = RedisPresenceConfig::new("redis://u:hunter2@127.0.0.1:1", "a");
    assert!(
        !format!("{secret:?}").contains("hunter2"),
        "password in Debug"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_made_while_redis_is_away_is_replayed() {
    let mut redis = RedisServer::start_persistent();
    // Long TTL: the offline below cannot come from expiry.
    let ttl = Duration::from_secs(30);
    let (a, b, mut changes) = alice_online_on_a_seen_from_b(&redis, ttl).await;
    redis.save();
    redis.kill();

    let left_at = now_ms();
    quickly(
        "disconnected",
        a.disconnected(&user("alice"), &conn("a", 1)),
    )
    .await
    .expect_err("disconnected while down");
    // Long enough that a last_seen dated by the replay would show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.restart();
    assert_eq!(
        command(redis.port, "EXISTS test:p:{alice}").as_deref(),
        Some(":1"),
        "the restarted server still has alice's entry"
    );

    let change = next_for(&mut changes, &["alice"]).await;
    assert_eq!(change.status, Status::Offline);
    assert_recent(change.last_seen, left_at);
    let seen = change.last_seen.unwrap_or_default();
    assert!(
        seen < left_at + 1_000,
        "last_seen {seen} dated by the replay, not the disconnect {left_at}"
    );
    eventually("offline", || async {
        let now = status_of(&b, "alice").await?;
        if now.status == Status::Offline {
            Ok(())
        } else {
            Err(format!("{now:?}"))
        }
    })
    .await;
}

/// Runs `redis-cli` against the server; its output, trimmed.
fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli (installed with redis-server)");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// How many times Redis ran `command` since its stats were last reset.
fn calls(port: u16, command: &str) -> u64 {
    let info = cli(port, &["INFO", "commandstats"]);
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().expect("a call count"))
}

/// The incarnations in the heartbeat table, with their last beats.
fn incarnations(port: u16) -> Vec<(String, String)> {
    let out = cli(port, &["HGETALL", "test:nodes"]);
    let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    lines
        .chunks(2)
        .map(|p| (p[0].to_string(), p.get(1).unwrap_or(&"").to_string()))
        .collect()
}

/// Waits until the incarnation `id` has beaten `n` more times.
async fn beats(port: u16, id: &str, n: usize) {
    let deadline = Instant::now() + DEADLINE;
    let beat_of = || {
        incarnations(port)
            .into_iter()
            .find(|(i, _)| i == id)
            .map(|(_, t)| t)
    };
    let mut last = beat_of();
    let mut seen = 0;
    while seen < n {
        assert!(Instant::now() < deadline, "{id} beat {seen} of {n} times");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = beat_of();
        if now != last {
            seen += 1;
            last = now;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_node_costs_redis_a_heartbeat_not_a_call_per_connection() {
    let redis = RedisServer::start();
    let ttl = Duration::from_secs(3);
    let a = node(&redis, "a", ttl).await;
    let users: Vec<UserId> = (0..100).map(|i| user(&format!("u{i}"))).collect();
    for i in 0..300u64 {
        a.connected(&users[i as usize % 100], &conn("a", i))
            .await
            .expect("connected");
    }
    let mine = incarnations(redis.port);
    assert_eq!(mine.len(), 1, "{mine:?}");
    let id = mine[0].0.clone();
    assert!(id.starts_with("a/"), "{id}");
    assert_eq!(
        cli(redis.port, &["SCARD", &format!("test:u:{{{id}}}")]),
        "100"
    );

    // Idle for three heartbeats (a period each: a TTL of them).
    assert_eq!(cli(redis.port, &["CONFIG", "RESETSTAT"]), "OK");
    beats(redis.port, &id, 3).await;
    let scripts = calls(redis.port, "evalsha");
    // A heartbeat and a look for dead nodes per period: a handful; entries
    // refreshed one by one would be 300 per period.
    assert!(scripts < 30, "{scripts} scripts ran for an idle node");
    assert_eq!(calls(redis.port, "sadd"), 0);
    let b = node(&redis, "b", ttl).await;
    assert_eq!(
        status_of(&b, "u7").await.expect("query").status,
        Status::Online,
        "entries outlive the TTL while their node beats"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_users_come_and_go_renews_its_list() {
    let redis = RedisServer::start();
    let ttl = Duration::from_secs(1);
    let a = RedisPresence::connect(config(&redis.url(), "a", ttl).with_list_slack(1_024))
        .await
        .expect("connect to redis");
    let b = node(&redis, "b", ttl).await;
    a.connected(&user("stays"), &conn("a", 0))
        .await
        .expect("connected");
    // Many users, each for a moment: every one lands on the list.
    for i in 1..=3_000u64 {
        let u = user(&format!("u{i}"));
        a.connected(&u, &conn("a", i)).await.expect("connected");
        a.disconnected(&u, &conn("a", i))
            .await
            .expect("disconnected");
    }
    // Renewed at heartbeats, the old lists swept and forgotten after the
    // ttl: what is left lists at most the users since the last renewal
    // (which comes here once a list holds 1,024 more than twice those here).
    eventually("one incarnation of a, with a short list", || async {
        let mine: Vec<String> = incarnations(redis.port)
            .into_iter()
            .map(|(i, _)| i)
            .filter(|i| i.starts_with("a/"))
            .collect();
        let listed: Vec<String> = mine
            .iter()
            .map(|i| cli(redis.port, &["SCARD", &format!("test:u:{{{i}}}")]))
            .collect();
        let short = listed.len() == 1 && listed[0].parse::<usize>().is_ok_and(|n| n < 2_000);
        if short {
            Ok(())
        } else {
            Err(format!("{mine:?} list {listed:?} users"))
        }
    })
    .await;
    assert_eq!(
        status_of(&b, "stays").await.expect("query").status,
        Status::Online
    );
    assert_eq!(
        status_of(&b, "u7").await.expect("query").status,
        Status::Offline
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_redis_lost_track_of_adds_its_connections_again() {
    let redis = RedisServer::start();
    let ttl = Duration::from_millis(900);
    let (a, b, _changes) = alice_online_on_a_seen_from_b(&redis, ttl).await;
    let mine: Vec<String> = incarnations(redis.port)
        .into_iter()
        .map(|(i, _)| i)
        .filter(|i| i.starts_with("a/"))
        .collect();
    assert_eq!(mine.len(), 1, "{mine:?}");
    let old = mine[0].clone();

    // As if a had been cut off from Redis for longer than the TTL: its
    // last heartbeat is ancient, and b may sweep its entries.
    assert_eq!(cli(redis.port, &["HSET", "test:nodes", &old, "0"]), "0");
    eventually(
        "a under a new incarnation, online, the old one forgotten",
        || async {
            let members = cli(redis.port, &["ZRANGE", "test:p:{alice}", "0", "-1"]);
            let listed: Vec<String> = incarnations(redis.port)
                .into_iter()
                .map(|(i, _)| i)
                .collect();
            let renewed = members.starts_with("a/") && !members.starts_with(&format!("{old}/"));
            let status = status_of(&b, "alice").await?.status;
            if renewed
                && !members.contains('\n')
                && status == Status::Online
                && !listed.contains(&old)
            {
                Ok(())
            } else {
                Err(format!(
                    "members {members:?}, incarnations {listed:?}, {status:?}"
                ))
            }
        },
    )
    .await;
    // And it keeps the new one: the connection goes as usual.
    a.disconnected(&user("alice"), &conn("a", 1))
        .await
        .expect("disconnected");
    assert_eq!(
        status_of(&b, "alice").await.expect("query").status,
        Status::Offline
    );
    assert_eq!(cli(redis.port, &["EXISTS", "test:p:{alice}"]), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_redis_brings_back_after_its_removal_is_swept() {
    let mut redis = RedisServer::start_persistent();
    let ttl = Duration::from_secs(1);
    let (a, b, mut changes) = alice_online_on_a_seen_from_b(&redis, ttl).await;
    redis.save();
    // Removed and confirmed, then undone: Redis restarts from a snapshot
    // taken before (or a replica that lagged takes over).
    a.disconnected(&user("alice"), &conn("a", 1))
        .await
        .expect("disconnected");
    assert_eq!(
        next_for(&mut changes, &["alice"]).await.status,
        Status::Offline
    );
    redis.kill();
    redis.restart();
    assert_eq!(
        cli(redis.port, &["EXISTS", "test:p:{alice}"]),
        "1",
        "the restarted server has alice's entry back"
    );
    eventually("alice offline again", || async {
        let now = status_of(&b, "alice").await?;
        if now.status == Status::Offline {
            Ok(())
        } else {
            Err(format!(
                "{now:?}; entries {}; incarnations {:?}",
                cli(redis.port, &["ZRANGE", "test:p:{alice}", "0", "-1"]),
                incarnations(redis.port)
            ))
        }
    })
    .await;
    assert_eq!(cli(redis.port, &["EXISTS", "test:p:{alice}"]), "0");
}
