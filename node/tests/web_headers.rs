//! What a `chat-node` process answers for the web app, over real sockets:
//! pages and assets carry a Content-Security-Policy (no framing, scripts
//! and connections limited to the node and the nodes it publishes),
//! `nosniff`, `X-Frame-Options` and `Referrer-Policy`; source maps are
//! refused; a missing asset is a JSON 404 like any other; and
//! `GET /v1/cluster/nodes` publishes `[web] nodes`, the only other places the
//! page may send a password or a token; `/v1/ws` reached without a
//! WebSocket upgrade answers a JSON error too.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::procs::NodeProc;
use common::*;
use serde_json::{json, Value};

/// A stand-in for `web/dist`: the two pages, a script, its source map.
fn fake_dist(dir: &Path) {
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(
        dir.join("index.html"),
        "<!doctype html><title>Chat</title><div id=app></div>",
    )
    .unwrap();
    std::fs::write(
        dir.join("admin.html"),
        "<!doctype html><title>Chat admin</title>",
    )
    .unwrap();
    std::fs::write(dir.join("assets/app-1.js"), "console.log(1);\n").unwrap();
    std::fs::write(dir.join("assets/app-1.js.map"), "{\"version\":3}").unwrap();
}

async fn start(tmp: &Path, env: &[(&str, &str)]) -> NodeProc {
    NodeProc::start(&tmp.join("data"), &tmp.join("node.log"), None, env).await
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The policy's directives: name to sources.
fn csp(headers: &[(String, String)], what: &str) -> HashMap<String, Vec<String>> {
    let value = header(headers, "content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no Content-Security-Policy in {headers:?}"));
    value
        .split(';')
        .filter_map(|d| {
            let mut words = d.split_whitespace();
            let name = words.next()?.to_string();
            Some((name, words.map(str::to_string).collect()))
        })
        .collect()
}

/// The headers every page and asset must carry, and the policy's fixed
/// part; returns the `connect-src` sources.
#[track_caller]
fn assert_guarded(headers: &[(String, String)], what: &str) -> Vec<String> {
    assert_eq!(
        header(headers, "x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(header(headers, "x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(
        header(headers, "referrer-policy"),
        Some("no-referrer"),
        "{what}"
    );
    let policy = csp(headers, what);
    let sources = |d: &str| {
        policy
            .get(d)
            .unwrap_or_else(|| panic!("{what}: no {d} in {policy:?}"))
            .clone()
    };
    assert_eq!(sources("default-src"), ["'self'"], "{what}");
    assert_eq!(sources("frame-ancestors"), ["'none'"], "{what}");
    assert_eq!(sources("object-src"), ["'none'"], "{what}");
    assert_eq!(sources("base-uri"), ["'none'"], "{what}");
    // Scripts from the node only: nothing inline, no eval.
    assert_eq!(sources("script-src"), ["'self'"], "{what}");
    assert!(
        !sources("style-src")
            .iter()
            .any(|s| s.starts_with("'unsafe")),
        "{what}: {policy:?}"
    );
    sources("connect-src")
}

#[track_caller]
fn assert_not_found(status: u16, headers: &[(String, String)], body: &str, what: &str) {
    assert_eq!(status, 404, "{what}: {body}");
    assert!(
        header(headers, "content-type").is_some_and(|t| t.starts_with("application/json")),
        "{what}: {headers:?}"
    );
    let v: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body:?}"));
    assert_eq!(v["code"], json!("not_found"), "{what}: {v}");
    assert!(
        v["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {v}"
    );
}

/// `GET path` with `extra` header lines, over a real socket: (status,
/// headers, body), as [`http_full`] answers.
async fn get_with(
    addr: std::net::SocketAddr,
    path: &str,
    extra: &str,
) -> (u16, Vec<(String, String)>, String) {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    // `Connection: close` after `extra`: a second Connection header adds to
    // the first, so a request that names `upgrade` still names it.
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
    exchange(s, &req).await
}

#[track_caller]
fn assert_bad_request(status: u16, headers: &[(String, String)], body: &str, what: &str) {
    assert_eq!(status, 400, "{what}: {body}");
    assert!(
        header(headers, "content-type").is_some_and(|t| t.starts_with("application/json")),
        "{what}: {headers:?}"
    );
    let v: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body:?}"));
    assert_eq!(v["code"], json!("bad_request"), "{what}: {v}");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("WebSocket")),
        "{what}: {v}"
    );
}

#[tokio::test]
async fn the_socket_route_without_an_upgrade_answers_a_json_error() {
    let tmp = tempfile::tempdir().unwrap();
    let node = start(tmp.path(), &[]).await;
    let user = register(node.addr, &unique("plain")).await;

    // A plain GET, as a fetch or a proxy that drops the upgrade headers
    // sends it, with and without a token.
    for (what, token) in [("no token", None), ("a token", Some(user.access.as_str()))] {
        let (status, headers, body) = http_full(node.addr, "GET", "/v1/ws", token, None).await;
        assert_bad_request(status, &headers, &body, what);
    }
    let query = format!("/v1/ws?access_token={}", user.access);
    let (status, headers, body) = http_full(node.addr, "GET", &query, None, None).await;
    assert_bad_request(status, &headers, &body, "a token in the query");

    // Half an upgrade: the headers name it, but no key and no version.
    let half = "Connection: Upgrade\r\nUpgrade: websocket\r\n";
    let (status, headers, body) = get_with(node.addr, "/v1/ws", half).await;
    assert_bad_request(status, &headers, &body, "no Sec-WebSocket-Key");

    // The whole upgrade still upgrades.
    let c = try_connect(node.addr, Some(&user.access), chat_protocol::Codec::Json).await;
    assert!(c.is_ok(), "a real upgrade: {:?}", c.err());
}

#[tokio::test]
async fn pages_and_assets_are_guarded_and_maps_are_not_served() {
    let tmp = tempfile::tempdir().unwrap();
    let dist = tmp.path().join("dist");
    fake_dist(&dist);
    let node = start(tmp.path(), &[("CHAT__WEB__DIR", dist.to_str().unwrap())]).await;

    for (path, kind) in [
        ("/", "text/html"),
        ("/admin", "text/html"),
        ("/assets/app-1.js", "javascript"),
    ] {
        let (status, headers, body) = http_full(node.addr, "GET", path, None, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(
            header(&headers, "content-type").is_some_and(|t| t.contains(kind)),
            "{path}: {headers:?}"
        );
        let connect = assert_guarded(&headers, path);
        // No other node published: the page talks to its own origin only.
        assert_eq!(connect, ["'self'"], "{path}");
    }

    // Source maps are not served, however the path spells them; a missing
    // asset is a JSON 404 as anywhere else.
    for path in [
        "/assets/app-1.js.map",
        "/assets/app-1.js.map?v=1",
        "/assets/app-1.js%2Emap",
        "/assets/app-1.js.MAP",
        "/assets/app-1.js.map/",
        "/assets/app-1.js.map/.",
        "/assets/./app-1.js.map",
        "/assets//app-1.js.map",
        "/assets/missing.js",
        "/assets/",
        "/assets/../index.html",
        "/no-such-page",
    ] {
        let (status, headers, body) = http_full(node.addr, "GET", path, None, None).await;
        assert_not_found(status, &headers, &body, path);
        assert_guarded(&headers, path);
        assert!(!body.contains("version\":3"), "{path}: the map leaked");
    }

    // The API's answers say what they are too.
    let (status, headers, _) = http_full(node.addr, "GET", "/v1/cluster/nodes", None, None).await;
    assert_eq!(status, 200);
    assert_guarded(&headers, "/v1/cluster/nodes");
}

#[tokio::test]
async fn the_published_nodes_are_the_only_other_places_a_page_may_connect_to() {
    let tmp = tempfile::tempdir().unwrap();
    // No build here: the page saying how to build the app is guarded too.
    let missing = tmp.path().join("no-dist");
    let nodes =
        r#"["http://127.0.0.1:18081/", "HTTPS://Chat-2.Example.com:443", "http://[::1]:18083"]"#;
    let node = start(
        tmp.path(),
        &[
            ("CHAT__WEB__DIR", missing.to_str().unwrap()),
            ("CHAT__WEB__NODES", nodes),
        ],
    )
    .await;

    // Published to any page of the cluster, without a token, as origins.
    let (status, headers, body) =
        http_full(node.addr, "GET", "/v1/cluster/nodes", None, None).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let published = [
        "http://127.0.0.1:18081",
        "https://chat-2.example.com",
        "http://[::1]:18083",
    ];
    assert_eq!(v, json!({ "nodes": published }));
    assert!(
        header(&headers, "cache-control").is_some_and(|c| c.contains("no-store")),
        "{headers:?}"
    );

    let (status, headers, body) = http_full(node.addr, "GET", "/", None, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("not built"), "{body}");
    let connect = assert_guarded(&headers, "the note page");
    // HTTP for sign-in, WebSocket for the socket, to each of them.
    assert_eq!(
        connect,
        [
            "'self'",
            "http://127.0.0.1:18081",
            "ws://127.0.0.1:18081",
            "https://chat-2.example.com",
            "wss://chat-2.example.com",
            "http://[::1]:18083",
            "ws://[::1]:18083",
        ]
    );
}

#[tokio::test]
async fn a_node_refuses_to_publish_what_is_not_an_origin() {
    for bad in [
        r#"["javascript:alert(1)"]"#,
        r#"["http://127.0.0.1:8081/v1"]"#,
        r#"["http://user:pw@127.0.0.1:8081"]"#,
        r#"["http://127.0.0.1:8081?x=1"]"#,
        r#"["ftp://127.0.0.1"]"#,
        r#"["127.0.0.1:8081"]"#,
        r#"["http://a b"]"#,
        r#"["http://a;script-src *"]"#,
    ] {
        let mut cmd = std::process::Command::new(node_binary());
        for (k, _) in std::env::vars() {
            if k.starts_with("CHAT__") || k == "CHAT_CONFIG" {
                cmd.env_remove(k);
            }
        }
        let out = cmd
            .arg("check-config")
            .env("CHAT__WEB__NODES", bad)
            .output()
            .expect("run chat-node check-config");
        assert!(!out.status.success(), "{bad}: accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("web.nodes"), "{bad}: {err}");
    }
}
