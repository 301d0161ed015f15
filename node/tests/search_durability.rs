//! Search that survives its node: real node processes on one data
//! directory. A node killed with SIGKILL while it indexes a burst loses
//! none of it (the outbox repeats the work after the restart), and
//! `chat-node reindex` rebuilds a lost index from the history, going on
//! where it stopped when run again.

mod common;

use std::path::Path;
use std::time::Duration;

use chat_protocol::codec::Codec;
use common::media::encode;
use common::procs::NodeProc;
use common::*;

const SECRET: &str = "search-durability-secret-0123456789";

/// How many messages a search for `word` finds, all pages walked.
async fn count(addr: std::net::SocketAddr, who: &TestUser, word: &str) -> Result<usize, String> {
    let mut found = 0;
    let mut cursor = String::new();
    loop {
        let path = format!("/v1/search?q={}&limit=100{cursor}", encode(word));
        let (status, v) = call_json(addr, "GET", &path, Some(&who.access), None).await;
        if status != 200 {
            return Err(format!("{status} {v}"));
        }
        found += v["results"].as_array().map_or(0, Vec::len);
        match v["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return Ok(found),
        }
    }
}

/// A group of a fresh user's, and `n` messages in it that all hold `word`.
async fn burst(addr: std::net::SocketAddr, word: &str, n: usize) -> TestUser {
    let ann = register(addr, &unique("sdur")).await;
    let bob = register(addr, &unique("sdur")).await;
    let mut a = connect(addr, &ann.access, Codec::Json).await;
    let conv = group(&mut a, &[&bob.id]).await;
    for i in 0..n {
        let body =
            serde_json::json!({"client_msg_id": unique("k"), "body": format!("{word} number {i}")});
        let (status, v) = call_json(
            addr,
            "POST",
            &format!("/v1/conversations/{conv}/messages"),
            Some(&ann.access),
            Some(body),
        )
        .await;
        assert_eq!(status, 201, "{v}");
    }
    ann
}

async fn all_found(addr: std::net::SocketAddr, who: &TestUser, word: &str, n: usize) {
    eventually_within(
        &format!("{n} found"),
        Duration::from_secs(60),
        || async move {
            match count(addr, who, word).await? {
                found if found == n => Ok(()),
                found => Err(format!("{found} of {n} found")),
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_indexing_loses_nothing() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("node.log");
    let mut node = NodeProc::start(&data, &log, Some(SECRET), &[]).await;
    let word = unique("kept");
    let ann = burst(node.addr, &word, 200).await;
    // Every message was acknowledged, so stored; the indexing of most is
    // still ahead.
    node.kill9();
    let node = NodeProc::start(&data, &log, Some(SECRET), &[]).await;
    all_found(node.addr, &ann, &word, 200).await;
}

fn reindex(data: &Path, fresh: bool) -> String {
    let mut cmd = std::process::Command::new(node_binary());
    cmd.arg("--data-dir").arg(data).arg("reindex");
    if fresh {
        cmd.arg("--fresh");
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("CHAT__") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(storage_env())
        .env("CHAT__AUTH__JWT_SECRET", SECRET)
        .envs(own());
    let out = cmd.output().expect("chat-node reindex runs");
    assert!(
        out.status.success(),
        "reindex failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Loses the search index of the node on `data`: its directory, or (on
/// OpenSearch) its index, which this test names for itself.
async fn lose_index(data: &Path) {
    match std::env::var("OPENSEARCH_URL") {
        Ok(url) if search_env().iter().any(|(_, v)| v == "opensearch") => {
            let res = reqwest::Client::new()
                .delete(format!("{url}/{}-messages", prefix()))
                .send()
                .await
                .unwrap();
            assert!(res.status().is_success(), "{}", res.status());
        }
        _ => std::fs::remove_dir_all(data.join("search")).unwrap(),
    }
}

/// This test's own OpenSearch index prefix (unused on the embedded index).
fn prefix() -> &'static str {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PREFIX.get_or_init(|| unique("rebuild").to_lowercase())
}

/// This test's own index.
fn own() -> Vec<(&'static str, &'static str)> {
    vec![("CHAT__SEARCH__OPENSEARCH__PREFIX", prefix())]
}

/// Held while a test runs on ScyllaDB: nodes on one keyspace share its
/// outbox, so a node of the other test, run at the same time, could index
/// this test's messages into its own index. (A keyspace of its own costs
/// schema changes that a loaded CQL server timed out.)
async fn serial() -> Option<tokio::sync::MutexGuard<'static, ()>> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let scylla = std::env::var("CHAT_TEST_STORAGE").as_deref() == Ok("scylla");
    if scylla {
        Some(SERIAL.lock().await)
    } else {
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_rebuilds_a_lost_index_and_goes_on_where_it_stopped() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("node.log");
    let mut node = NodeProc::start(&data, &log, Some(SECRET), &own()).await;
    let word = unique("rebuilt");
    let ann = burst(node.addr, &word, 60).await;
    all_found(node.addr, &ann, &word, 60).await;
    node.sigterm();
    node.wait_exit(Duration::from_secs(30)).await;
    // The index is lost; the history is not.
    lose_index(&data).await;
    let said = reindex(&data, false);
    assert!(said.contains("reindexed"), "{said}");
    // Again: nothing is left to do, and it says so quickly.
    reindex(&data, false);
    // A node that indexes nothing itself finds everything.
    let mut off = own();
    off.push(("CHAT__NOTIFICATIONS__ENABLED", "false"));
    let node = NodeProc::start(&data, &log, Some(SECRET), &off).await;
    assert_eq!(count(node.addr, &ann, &word).await.unwrap(), 60);
}

/// The index unreachable for a while (OpenSearch behind a link that is
/// cut): what was sent meanwhile is found once it is back, by the index
/// jobs the passes left for it and retried. (The embedded index is the
/// node's own files: it is not cut off; the suite's OpenSearch run, in
/// scripts/test.sh, runs this.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_while_the_index_is_unreachable_are_found_once_it_is_back() {
    let url = match std::env::var("OPENSEARCH_URL") {
        Ok(url) if search_env().iter().any(|(_, v)| v == "opensearch") => url,
        _ => {
            eprintln!(
                "the embedded index cannot be cut off: CHAT_TEST_SEARCH=opensearch runs this"
            );
            return;
        }
    };
    let _serial = serial().await;
    let target: std::net::SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("OPENSEARCH_URL is http://host:port");
    let link = common::cluster::Link::start(target).await;
    let dir = tempfile::tempdir().unwrap();
    let (data, log) = (dir.path().join("data"), dir.path().join("node.log"));
    let through = format!("http://{}", link.addr);
    // An index of its own: the rebuild test deletes the one `own` names.
    let prefix = unique("unreachable").to_lowercase();
    let mut env = vec![
        ("CHAT__SEARCH__OPENSEARCH__PREFIX", prefix.as_str()),
        ("CHAT__SEARCH__OPENSEARCH__URL", &through),
    ];
    // Retries a second apart at most: the test waits for one after the heal.
    env.push(("CHAT__NOTIFICATIONS__RETRY_BASE_MS", "200"));
    let node = NodeProc::start(&data, &log, Some(SECRET), &env).await;
    let word = unique("unreachable");
    link.cut();
    let ann = burst(node.addr, &word, 50).await;
    // Passes ran with the index away (each fails and leaves a job).
    eventually_within("an index pass failed", Duration::from_secs(30), || async {
        let failed = metric(
            node.addr,
            "chat_notifications_failed_total{channel=\"search\"}",
        )
        .await;
        (failed >= 1.0)
            .then_some(())
            .ok_or(format!("{failed} failed index passes"))
    })
    .await;
    link.heal();
    all_found(node.addr, &ann, &word, 50).await;
}
