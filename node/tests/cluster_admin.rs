//! An operator's console over a real cluster: an admin suspends a user,
//! disconnects their sessions and drains a node, across three `chat-node`
//! processes.

mod common;

use std::net::SocketAddr;

use chat_protocol::Codec;
use common::cluster::*;
use common::*;
use serde_json::Value;

/// The admin API on a cluster: the listed admin's account made by the
/// operator on one node's store is an admin on every node; 401 without a
/// token and 403 for a user who is not an admin; suspending a user closes
/// their connections on every node with 4005, refuses their login, refresh
/// and new connections on every node until lifted, and ends their logins
/// (after it, only a new sign-in works); a disconnect closes with 4004 and
/// lets them back; a node drained from another node's API exits; every
/// action is in the audit log on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_suspends_disconnects_and_drains_across_nodes() {
    let root_name = unique("root");
    let listed = vec![("CHAT__ADMIN__USERS".into(), format!("[\"{root_name}\"]"))];
    // Configured, none running: registration refuses a listed admin's name,
    // so the operator makes the account, here on node 1's store, which the
    // others copy when they join.
    let mut cluster = TestCluster::start_inner_env(3, 0, false, false, listed).await;
    let mut cli = std::process::Command::new(node_binary());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("CHAT__")) {
        cli.env_remove(k);
    }
    let mut cli = cli
        .arg("--data-dir")
        .arg(cluster.root.path().join(TestCluster::name(0)))
        .args(["admin", "create-user", &root_name])
        .envs(cluster.env(0))
        .envs(storage_env())
        .env("CHAT__AUTH__JWT_SECRET", SECRET)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run chat-node admin create-user");
    std::io::Write::write_all(&mut cli.stdin.take().unwrap(), b"correct horse battery\n").unwrap();
    let made = cli.wait_with_output().unwrap();
    assert!(
        made.status.success(),
        "create-user: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let starts: Vec<_> = (0..3).map(|i| cluster.spawn(i)).collect();
    for (i, node) in futures_util::future::join_all(starts)
        .await
        .into_iter()
        .enumerate()
    {
        cluster.nodes[i] = Some(node);
    }
    cluster.wait_formed(3).await;
    async fn sign_in(addr: SocketAddr, name: &str) -> TestUser {
        let body = serde_json::json!({"username": name, "password": "correct horse battery"});
        let (status, body) = http(
            addr,
            "POST",
            "/v1/auth/login",
            None,
            Some(&body.to_string()),
        )
        .await;
        assert_eq!(status, 200, "login {name} at {addr}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        TestUser {
            id: v["user"]["id"].as_str().unwrap().to_string(),
            access: v["access_token"].as_str().unwrap().to_string(),
            refresh: v["refresh_token"].as_str().unwrap().to_string(),
        }
    }
    let admin = sign_in(cluster.addr(0), &root_name).await;
    let admin_id = admin.id.clone();
    let bob = register(cluster.addr(1), &unique("bob")).await;
    let path = |p: &str| format!("/v1/admin{p}");

    let (status, body) = http(cluster.addr(0), "GET", &path("/nodes"), None, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = http(
        cluster.addr(0),
        "GET",
        &path("/nodes"),
        Some(&bob.access),
        None,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("\"forbidden\""), "{body}");

    // Every node listed, with its load from its heartbeats.
    let nodes = eventually_within("the nodes' stats", FORM_DEADLINE, || async {
        let (status, body) = http(
            cluster.addr(2),
            "GET",
            &path("/nodes"),
            Some(&admin.access),
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
        let ready = nodes.len() == 3
            && nodes
                .iter()
                .all(|n| n["up"] == true && n["store_up"] == true && n["version"].is_string());
        ready.then_some(nodes).ok_or(body)
    })
    .await;
    let names: Vec<&str> = nodes.iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["node-1", "node-2", "node-3"]);

    // Suspend bob, connected on two nodes, through the third.
    let mut on1 = connect(cluster.addr(1), &bob.access, Codec::Json).await;
    let mut on2 = connect(cluster.addr(2), &bob.access, Codec::Json).await;
    let bob_path = path(&format!("/users/{}", bob.id));
    let (status, body) = http(
        cluster.addr(0),
        "POST",
        &format!("{bob_path}/suspend"),
        Some(&admin.access),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"suspended\":true"), "{body}");
    assert_eq!(on1.closed_with().await, Some(4005));
    assert_eq!(on2.closed_with().await, Some(4005));
    for i in 0..3 {
        let login = serde_json::json!({"username": bob.id, "password": "correct horse battery"});
        let (status, body) = http(
            cluster.addr(i),
            "POST",
            "/v1/auth/login",
            None,
            Some(&login.to_string()),
        )
        .await;
        assert_eq!(status, 403, "login on node {i}: {body}");
        assert!(body.contains("suspended"), "{body}");
        assert_eq!(
            try_connect(cluster.addr(i), Some(&bob.access), Codec::Json)
                .await
                .err(),
            Some(403),
            "a new connection on node {i}"
        );
    }
    let refresh = serde_json::json!({ "refresh_token": bob.refresh });
    let (status, _) = http(
        cluster.addr(2),
        "POST",
        "/v1/auth/refresh",
        None,
        Some(&refresh.to_string()),
    )
    .await;
    assert_eq!(status, 403);

    // Lifted: the tokens from before stay dead on every node; a new
    // sign-in works.
    let (status, body) = http(
        cluster.addr(1),
        "POST",
        &format!("{bob_path}/unsuspend"),
        Some(&admin.access),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for i in 0..3 {
        assert!(
            !token_accepted(cluster.addr(i), &bob.access).await,
            "bob's old token on node {i}"
        );
    }
    let (status, _) = http(
        cluster.addr(0),
        "POST",
        "/v1/auth/refresh",
        None,
        Some(&refresh.to_string()),
    )
    .await;
    assert_eq!(status, 401, "bob's old refresh token");
    let bob = sign_in(cluster.addr(1), &bob.id).await;
    let mut on0 = connect(cluster.addr(0), &bob.access, Codec::Json).await;
    let mut on2 = connect(cluster.addr(2), &bob.access, Codec::Json).await;

    // A disconnect closes with 4004 everywhere and lets them back.
    let (status, body) = http(
        cluster.addr(1),
        "POST",
        &format!("{bob_path}/disconnect"),
        Some(&admin.access),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(on0.closed_with().await, Some(4004));
    assert_eq!(on2.closed_with().await, Some(4004));
    connect(cluster.addr(0), &bob.access, Codec::Json).await;

    // Drain node 3 from node 1's API: it exits by itself.
    let (status, body) = http(
        cluster.addr(0),
        "POST",
        &path("/nodes/node-3/drain"),
        Some(&admin.access),
        None,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let (status, _) = http(
        cluster.addr(0),
        "POST",
        &path("/nodes/node-9/drain"),
        Some(&admin.access),
        None,
    )
    .await;
    assert_eq!(status, 404, "an unknown node");
    let mut drained = cluster.nodes[2].take().expect("node 3");
    let exit = drained.wait_exit(FORM_DEADLINE).await;
    assert!(exit.success(), "a drained node exits cleanly: {exit:?}");

    // Each action, newest first, as every node sees it.
    for i in 0..2 {
        let log = eventually_within("the audit log", FORM_DEADLINE, || async {
            let (status, body) = http(
                cluster.addr(i),
                "GET",
                &path("/audit?limit=10"),
                Some(&admin.access),
                None,
            )
            .await;
            assert_eq!(status, 200, "{body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            let actions: Vec<String> = v["entries"]
                .as_array()
                .into_iter()
                .flatten()
                // This run's admin: a CQL keyspace keeps earlier runs' log.
                .filter(|e| e["admin"] == admin_id.as_str())
                .map(|e| e["action"].as_str().unwrap().to_string())
                .collect();
            (actions.len() == 4).then_some(actions).ok_or(body)
        })
        .await;
        assert_eq!(
            log,
            ["drain", "disconnect", "unsuspend", "suspend"],
            "node {i}"
        );
    }
}
