//! Who is told to catch up when owners change.
use std::collections::HashMap as Map;

use super::*;
use crate::cluster::Cluster;
use crate::placement::Placement;
use crate::testing::{router_stand_in, TestConn};

fn c(s: &str) -> ConversationId {
    ConversationId::new(s).unwrap()
}

#[tokio::test]
async fn a_changed_owner_tells_the_listeners_of_its_conversations_and_no_one_else() {
    let directory = LocalSessions::default();
    let metrics = Metrics::default();
    let interest = Interest::new();
    let alone = Cluster::single("a", 1);
    let (alice, bob) = (UserId::new("alice").unwrap(), UserId::new("bob").unwrap());
    let conversations: Vec<ConversationId> = (0..64).map(|i| c(&format!("c{i}"))).collect();
    interest.add(&alice, &conversations, &alone);
    interest.add(&bob, &conversations[..1], &alone);
    let mut conn = TestConn::new(1);
    let actor = ractor::ActorId::Local(1);
    directory.insert(alice.clone(), actor);
    directory.set_conns(&alice, actor, Arc::from([conn.conn.clone()]));

    // Two nodes, then the peer gone: what it owned comes here.
    let (peer, _rx) = router_stand_in().await;
    let peers = Map::from([(Arc::<str>::from("b"), peer)]);
    let two = View::new(Placement::new(["a", "b"]), peers);
    let one = View::new(Placement::new(["a"]), Map::new());
    let mut moved: Vec<&str> = conversations
        .iter()
        .filter(|x| two.placement.owner(x).is_some_and(|o| &**o == "b"))
        .map(|x| x.as_str())
        .collect();
    assert!(!moved.is_empty() && moved.len() < 64);

    let catch_up = CatchUp {
        directory: &directory,
        metrics: &metrics,
    };
    assert_eq!(catch_up.after_view_change("a", &two, &two, &interest), 0);
    assert!(conn.drain().is_empty(), "no change, nothing said");
    assert_eq!(
        catch_up.after_view_change("a", &two, &one, &interest),
        moved.len()
    );
    let frames = conn.drain();
    assert_eq!(frames.len(), 1, "one frame for alice's connection");
    let ServerFrame::CatchUp { conversations } = &frames[0] else {
        panic!("{frames:?}");
    };
    let mut named: Vec<&str> = conversations.iter().map(|x| x.as_str()).collect();
    named.sort();
    moved.sort();
    assert_eq!(named, moved);
    assert_eq!(metrics.catch_ups.get(), 1);
}
