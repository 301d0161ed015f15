//! The cluster view alone: peers are stand-ins that hand what they get to
//! channels.

use std::time::Duration;

use super::*;
use crate::testing::router_stand_in;

struct Fixture {
    cluster: Cluster,
    rx: HashMap<&'static str, mpsc::UnboundedReceiver<RouterMsg>>,
}

/// What a peer's Router got on the wire.
fn wire(msg: RouterMsg) -> PeerMsg {
    match msg {
        RouterMsg::Wire(bytes) => chat_protocol::peer::decode(&bytes).expect("valid"),
        _ => panic!("only wire messages travel between nodes"),
    }
}

/// Node "a" with peers "b" and "c", all serving.
async fn fixture() -> Fixture {
    let (events, _) = mpsc::unbounded_channel();
    let cluster = Cluster::clustered("a", 1, events);
    let mut peers = HashMap::new();
    let mut rx = HashMap::new();
    for name in ["b", "c"] {
        let (actor, r) = router_stand_in().await;
        peers.insert(Arc::from(name), actor);
        rx.insert(name, r);
    }
    cluster.set_view(View::new(Placement::new(["a", "b", "c"]), peers));
    Fixture { cluster, rx }
}

/// A conversation `owner` owns among a, b and c.
fn owned_by(owner: &str, skip: usize) -> ConversationId {
    let p = Placement::new(["a", "b", "c"]);
    (0..)
        .map(|i| ConversationId::new(&format!("g:{i}")).unwrap())
        .filter(|c| **p.owner(c).unwrap() == *owner)
        .nth(skip)
        .unwrap()
}

impl Fixture {
    fn fingerprint(&self) -> u64 {
        self.cluster.view().fingerprint
    }

    /// Who got a `Listeners` delivery of `conv` (sorted).
    async fn deliver(&mut self, conv: &ConversationId) -> Vec<&'static str> {
        self.deliver_to(conv, Audience::Listeners { except: None }, &[])
            .await
    }

    async fn deliver_to(
        &mut self,
        conv: &ConversationId,
        to: Audience,
        listen: &[UserId],
    ) -> Vec<&'static str> {
        let (sent, skipped) = self.cluster.deliver(conv, to, listen, &[], Vec::new, None);
        assert_eq!(sent + skipped, 2);
        // Exactly `sent` peers were cast to: collect that many.
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while (got.len() as u64) < sent {
            assert!(tokio::time::Instant::now() < deadline, "got only {got:?}");
            for (name, rx) in self.rx.iter_mut() {
                if let Some(PeerMsg::Deliver(d)) = rx.try_recv().ok().map(wire) {
                    assert_eq!(d.conversation, *conv);
                    got.push(*name);
                }
            }
            tokio::task::yield_now().await;
        }
        got.sort();
        assert_eq!(got.len() as u64, sent);
        got
    }

    fn sync(&self, from: &str, view: u64, conversations: &[ConversationId]) {
        self.cluster
            .peer_interest_sync(from, view, conversations.to_vec(), true, true);
    }
}

#[tokio::test]
async fn a_peer_gets_everything_until_its_interest_is_known() {
    let mut f = fixture().await;
    let conv = owned_by("a", 0);
    assert_eq!(f.deliver(&conv).await, ["b", "c"]);
    assert!(!f.cluster.interest_synced("b"));
}

#[tokio::test]
async fn after_a_sync_only_listening_peers_get_deliveries() {
    let mut f = fixture().await;
    let (x, y) = (owned_by("a", 0), owned_by("a", 1));
    let fp = f.fingerprint();
    f.sync("b", fp, std::slice::from_ref(&x));
    f.sync("c", fp, &[]);
    assert!(f.cluster.interest_synced("b") && f.cluster.interest_synced("c"));
    assert_eq!(f.deliver(&x).await, ["b"]);
    assert!(f.deliver(&y).await.is_empty());
    // c starts listening to y, b stops listening to x.
    f.cluster.peer_interest("c", fp, true, vec![y.clone()]);
    f.cluster.peer_interest("b", fp, false, vec![x.clone()]);
    assert!(f.deliver(&x).await.is_empty());
    assert_eq!(f.deliver(&y).await, ["c"]);
    assert_eq!(f.cluster.listening("c"), 1);
}

#[tokio::test]
async fn interest_under_another_view_is_not_trusted() {
    let mut f = fixture().await;
    let x = owned_by("a", 0);
    let fp = f.fingerprint();
    // b's sync was made while b saw another set of nodes.
    f.sync("b", fp ^ 1, &[]);
    f.sync("c", fp, &[]);
    assert_eq!(f.deliver(&x).await, ["b"]);
    // A report under another view than its sync is dropped.
    f.cluster.peer_interest("c", fp ^ 1, true, vec![x.clone()]);
    assert_eq!(f.deliver(&x).await, ["b"]);
}

#[tokio::test]
async fn a_sync_counts_only_when_whole() {
    let mut f = fixture().await;
    let x = owned_by("a", 0);
    let fp = f.fingerprint();
    f.sync("c", fp, &[]);
    f.cluster.peer_interest_sync("b", fp, vec![], true, false);
    assert_eq!(f.deliver(&x).await, ["b"], "half a sync");
    f.cluster
        .peer_interest_sync("b", fp, vec![x.clone()], false, true);
    assert_eq!(f.deliver(&x).await, ["b"]);
    // A chunk whose first was never seen does not complete anything.
    f.cluster.forget_interest("b");
    f.cluster.peer_interest_sync("b", fp, vec![], false, true);
    assert!(!f.cluster.interest_synced("b"));
}

#[tokio::test]
async fn a_member_added_makes_every_peer_listen_until_it_says_otherwise() {
    let mut f = fixture().await;
    let x = owned_by("a", 0);
    let fp = f.fingerprint();
    f.sync("b", fp, &[]);
    f.sync("c", fp, &[]);
    let dave = UserId::new("dave").unwrap();
    let to = Audience::Users(vec![dave.clone()]);
    assert_eq!(f.deliver_to(&x, to, &[dave]).await, ["b", "c"]);
    assert_eq!(f.deliver(&x).await, ["b", "c"]);
    f.cluster.peer_interest("b", fp, false, vec![x.clone()]);
    assert_eq!(f.deliver(&x).await, ["c"]);
}

#[tokio::test]
async fn a_conversation_owned_elsewhere_goes_to_everyone() {
    let mut f = fixture().await;
    let fp = f.fingerprint();
    f.sync("b", fp, &[]);
    f.sync("c", fp, &[]);
    // An actor finishing writes after its conversation moved to b.
    assert_eq!(f.deliver(&owned_by("b", 0)).await, ["b", "c"]);
}

#[tokio::test]
async fn reports_go_to_owners_and_acks_end_the_wait() {
    let mut f = fixture().await;
    let (x, y, z) = (owned_by("b", 0), owned_by("c", 0), owned_by("a", 0));
    let acks = f
        .cluster
        .report_interest(&[x.clone(), y.clone(), z.clone()], true, true);
    assert_eq!(acks.len(), 2, "one per remote owner; none for this node");
    for (name, conv) in [("b", &x), ("c", &y)] {
        match f.rx.get_mut(name).unwrap().recv().await.map(wire) {
            Some(PeerMsg::Interest {
                conversations,
                listening: true,
                ack: Some(id),
                view,
                ..
            }) => {
                assert_eq!(conversations, std::slice::from_ref(conv));
                assert_eq!(view, f.fingerprint());
                f.cluster.interest_acked(id);
            }
            other => panic!("{other:?}"),
        }
    }
    let mut reported: Vec<ConversationId> = Vec::new();
    for ack in acks {
        reported.extend(ack.conversations);
        ack.acked.await.expect("acked");
    }
    reported.sort();
    let mut expected = vec![x.clone(), y.clone()];
    expected.sort();
    assert_eq!(reported, expected, "each wait names what it reported");
    // A departed owner's acks end too, unanswered.
    let acks = f.cluster.report_interest(&[x], true, true);
    f.cluster.forget_interest("b");
    assert!(acks.into_iter().next().unwrap().acked.await.is_err());
}
