//! Search in a cluster: three nodes, one OpenSearch (scripts/opensearch.sh,
//! or the run's `OPENSEARCH_URL`). A message sent through one node is found
//! through the others, whichever node's outbox worker indexed it, and an
//! edit through a third changes what all of them find.

mod common;

use std::time::Duration;

use chat_protocol::codec::Codec;
use chat_testkit::OpenSearchServer;
use common::media::encode;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_finds_what_any_node_indexed() {
    let server = tokio::task::spawn_blocking(OpenSearchServer::start)
        .await
        .unwrap();
    let prefix = unique("cluster").to_lowercase();
    let env = [
        ("CHAT__SEARCH__BACKEND", "opensearch"),
        ("CHAT__SEARCH__OPENSEARCH__URL", server.url.as_str()),
        ("CHAT__SEARCH__OPENSEARCH__PREFIX", prefix.as_str()),
    ];
    let cluster = common::cluster::TestCluster::start_env(3, &env).await;
    let ann = register(cluster.addr(0), &unique("scann")).await;
    let bob = register(cluster.addr(1), &unique("scbob")).await;
    let mut a = connect(cluster.addr(0), &ann.access, Codec::Json).await;
    let conv = group(&mut a, &[&bob.id]).await;
    let word = unique("heron");
    let m = ok(a
        .request(frames::send(
            &conv,
            &unique("m"),
            &format!("a {word} by the lake"),
        ))
        .await)
    .message
    .unwrap()
    .id;
    let find = |node: usize, who: &TestUser, q: String| {
        let (addr, token) = (cluster.addr(node), who.access.clone());
        async move {
            let path = format!("/v1/search?q={}", encode(&q));
            let (status, v) = call_json(addr, "GET", &path, Some(&token), None).await;
            if status != 200 {
                return Err(format!("{status} {v}"));
            }
            Ok(v["results"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .map(|x| x["message"]["id"].as_str().unwrap_or("").to_owned())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default())
        }
    };
    for node in 0..3 {
        let word = word.clone();
        let bob = &bob;
        let want = vec![m.0.to_string()];
        eventually_within(
            &format!("node {node} finds it"),
            Duration::from_secs(20),
            || {
                let (want, word) = (want.clone(), word.clone());
                async move {
                    let got = find(node, bob, word).await?;
                    if got == want {
                        Ok(())
                    } else {
                        Err(format!("{got:?}"))
                    }
                }
            },
        )
        .await;
    }
    // Edited through node 2: every node finds the new words, not the old.
    let mut a2 = connect(cluster.addr(2), &ann.access, Codec::Json).await;
    let fresh = unique("egret");
    ok(a2
        .request(frames::edit(&conv, m, &format!("an {fresh} by the lake")))
        .await);
    for node in 0..3 {
        let (fresh, word) = (fresh.clone(), word.clone());
        let bob = &bob;
        eventually_within(
            &format!("node {node} sees the edit"),
            Duration::from_secs(5),
            || {
                let (fresh, word) = (fresh.clone(), word.clone());
                async move {
                    let new = find(node, bob, fresh).await?;
                    let old = find(node, bob, word).await?;
                    if new.len() == 1 && old.is_empty() {
                        Ok(())
                    } else {
                        Err(format!("new {new:?}, old {old:?}"))
                    }
                }
            },
        )
        .await;
    }
}
