//! The conversation actor alone: a real store in a temporary directory, a
//! recording fan-out and a Router stand-in, no sockets.

use std::time::Duration;

use chat_protocol::request::ConversationRequest;
use chat_protocol::{ClientMsgId, ConversationKind, MessageKind, ServerFrame};
use chat_storage::ConversationStore;
use ractor::Actor;
use tokio::sync::mpsc;

use super::*;
use crate::testing::{
    answer, conversation, request, router_stand_in, user, Fanned, RecordingFanout, TestStore,
};

struct Fixture {
    actor: ActorRef<ConversationMsg>,
    fanned: mpsc::UnboundedReceiver<Fanned>,
    router: mpsc::UnboundedReceiver<RouterMsg>,
    fanout: Arc<RecordingFanout>,
    store: TestStore,
    id: ConversationId,
}

async fn start(tuning: Tuning) -> Fixture {
    let store = TestStore::with_users(&["ann", "bob", "cat", "dan"]).await;
    let (fanout, fanned) = RecordingFanout::new(&["ann", "bob", "cat", "dan"]);
    let (router, routed) = router_stand_in().await;
    let id = conversation("g:1");
    let metrics = Arc::new(Metrics::default());
    let leases =
        crate::leases::NodeLeases::start(store.dyn_store(), Arc::from("n1"), metrics.clone());
    let deps = Arc::new(ConversationDeps {
        node: Arc::from("n1"),
        store: store.dyn_store(),
        leases,
        ids: Arc::new(IdGenerator::new(1)),
        fanout: fanout.clone(),
        metrics,
        tuning,
        events: Arc::new(crate::events::NoEvents),
        media: Arc::new(crate::media::NoMedia),
    });
    let args = ConversationArgs {
        id: id.clone(),
        deps,
        router,
    };
    let (actor, _) = Actor::spawn(None, ConversationActor, args)
        .await
        .expect("actor");
    Fixture {
        actor,
        fanned,
        router: routed,
        fanout,
        store,
        id,
    }
}

impl Fixture {
    async fn ask(&self, from: &str, body: ConversationRequest) -> Result<OkReply, ChatError> {
        self.ask_from(from, None, body).await
    }

    async fn ask_from(
        &self,
        from: &str,
        conn: Option<ConnId>,
        body: ConversationRequest,
    ) -> Result<OkReply, ChatError> {
        let (r, rx) = request(from, conn, body);
        self.actor
            .cast(ConversationMsg::Request(r))
            .expect("actor runs");
        answer(rx).await
    }

    /// A group of ann (owner), bob and cat; its announcement is consumed.
    async fn group(&mut self) {
        let created = self
            .ask(
                "ann",
                ConversationRequest::Create {
                    conversation: self.id.clone(),
                    kind: ConversationKind::Group,
                    members: vec![user("bob"), user("cat")],
                    title: None,
                },
            )
            .await
            .expect("created");
        assert_eq!(created.conversation.expect("conversation").members.len(), 3);
        match self.next().await {
            Fanned::Members {
                members, frames, ..
            } => {
                assert_eq!(members.len(), 3);
                assert!(matches!(frames[..], [ServerFrame::Conversation { .. }]));
            }
            other => panic!("{other:?}"),
        }
    }

    fn send_body(&self, key: &str, body: &str) -> ConversationRequest {
        ConversationRequest::Send {
            conversation: self.id.clone(),
            client_msg_id: ClientMsgId::new(key).expect("valid key"),
            body: body.into(),
            kind: MessageKind::default(),
            reply_to: None,
            attachments: Vec::new(),
        }
    }

    /// Sends a new message and finds it the next one fanned out.
    async fn nothing_was_fanned_out_before_a_new_send(&mut self) {
        let next = sent(self.ask("bob", self.send_body("next", "next")).await);
        match self.next().await {
            Fanned::Listeners { frames, .. } => {
                assert_eq!(frames[0].0, ServerFrame::Message { message: next })
            }
            other => panic!("{other:?}"),
        }
    }

    async fn next(&mut self) -> Fanned {
        tokio::time::timeout(chat_testkit::DEADLINE, self.fanned.recv())
            .await
            .expect("fanned out in time")
            .expect("fan-out open")
    }
}

fn sent(r: Result<OkReply, ChatError>) -> Message {
    r.expect("sent").into_message().expect("message")
}

#[tokio::test]
async fn a_send_is_stored_before_its_ack_and_fanned_out_once_without_its_connection() {
    let mut f = start(Tuning::default()).await;
    f.group().await;
    let m = sent(f.ask_from("bob", Some(7), f.send_body("k1", "hi")).await);
    assert_eq!((m.sender.as_str(), m.body.as_str()), ("bob", "hi"));

    // Acknowledged means stored.
    let stored = f.store.history(&f.id).await;
    assert_eq!(stored, vec![m.clone()]);

    match f.next().await {
        Fanned::Listeners { frames, skip } => {
            assert_eq!(skip, None);
            assert_eq!(
                frames,
                vec![(ServerFrame::Message { message: m }, Some(7))],
                "the sender's connection has the ok, not the event"
            );
        }
        other => panic!("{other:?}"),
    }
    // Only members get it: dan is not one.
    let passed = f.fanout.probe.lock().unwrap().clone();
    assert_eq!(passed, vec![user("ann"), user("bob"), user("cat")]);
}

#[tokio::test]
async fn a_retried_send_answers_the_first_message_and_is_not_delivered_again() {
    let mut f = start(Tuning::default()).await;
    f.group().await;
    let first = sent(f.ask("bob", f.send_body("same", "once")).await);
    let _ = f.next().await;
    let again = sent(f.ask("bob", f.send_body("same", "twice?")).await);
    assert_eq!(again, first);
    // The next fan-out is the next message, not the retry.
    let other = sent(f.ask("bob", f.send_body("other", "next")).await);
    match f.next().await {
        Fanned::Listeners { frames, .. } => {
            assert_eq!(frames[0].0, ServerFrame::Message { message: other })
        }
        x => panic!("{x:?}"),
    }
}

#[tokio::test]
async fn a_retry_older_than_the_tail_is_found_in_the_store() {
    let mut f = start(Tuning {
        tail: 2,
        ..Tuning::default()
    })
    .await;
    f.group().await;
    let first = sent(f.ask("bob", f.send_body("k0", "0")).await);
    for i in 1..5 {
        sent(f.ask("bob", f.send_body(&format!("k{i}"), "x")).await);
    }
    assert_eq!(sent(f.ask("bob", f.send_body("k0", "again")).await), first);
    let stored = f.store.history(&f.id).await;
    assert_eq!(stored.len(), 5, "the retry stored nothing");
}

#[tokio::test]
async fn a_send_stored_by_a_write_that_failed_to_answer_is_delivered_live_by_its_retry() {
    let mut f = start(Tuning::default()).await;
    f.group().await;
    let before = sent(f.ask("bob", f.send_body("k0", "before")).await);
    let _ = f.next().await;

    // Written, then answered as failed (a shared database's timeout, or
    // the node's lease running out during the write).
    f.store.store.fail_appends_after_writing(1);
    let failed = f
        .ask_from("bob", Some(7), f.send_body("k1", "landed"))
        .await;
    assert!(
        matches!(failed, Err(ChatError::Unavailable(_))),
        "{failed:?}"
    );
    let stored = f.store.history(&f.id).await;
    assert_eq!(stored.len(), 2, "the failed write landed");
    let landed = stored[1].clone();

    // Catching up does not skip it: the tail no longer claims the range.
    let page = f
        .ask(
            "cat",
            ConversationRequest::History {
                conversation: f.id.clone(),
                before: None,
                after: Some(before.id),
                limit: 10,
            },
        )
        .await
        .expect("page")
        .into_messages()
        .expect("messages");
    assert_eq!(page, vec![landed.clone()]);

    // Its retry answers it and, as nobody was told, announces it, once.
    let retried = sent(
        f.ask_from("bob", Some(7), f.send_body("k1", "landed"))
            .await,
    );
    assert_eq!(retried, landed);
    match f.next().await {
        Fanned::Listeners { frames, .. } => assert_eq!(
            frames,
            vec![(
                ServerFrame::Message {
                    message: landed.clone()
                },
                Some(7)
            )]
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(sent(f.ask("bob", f.send_body("k1", "again")).await), landed);
    f.nothing_was_fanned_out_before_a_new_send().await;
}

#[tokio::test]
async fn a_retry_of_an_announced_send_in_a_failed_batch_is_not_announced_again() {
    let mut f = start(Tuning::default()).await;
    f.group().await;
    let first = sent(f.ask("bob", f.send_body("k0", "first")).await);
    let _ = f.next().await;
    // A failed write drops the tail: the retry below goes to the store.
    f.store.store.fail_appends_after_writing(1);
    let _ = f.ask("bob", f.send_body("k1", "x")).await;
    f.store.store.fail_appends_after_writing(1);
    let failed = f.ask("bob", f.send_body("k0", "retry")).await;
    assert!(
        matches!(failed, Err(ChatError::Unavailable(_))),
        "{failed:?}"
    );
    // The retry of the retry finds the message its first send announced.
    assert_eq!(sent(f.ask("bob", f.send_body("k0", "retry")).await), first);
    f.nothing_was_fanned_out_before_a_new_send().await;
}

#[tokio::test]
async fn pipelined_sends_get_increasing_ids_in_the_order_they_arrived() {
    let mut f = start(Tuning::default()).await;
    f.group().await;
    let mut answers = Vec::new();
    for i in 0..50 {
        let (r, rx) = request("bob", None, f.send_body(&format!("p{i}"), &i.to_string()));
        f.actor.cast(ConversationMsg::Request(r)).expect("runs");
        answers.push(rx);
    }
    let mut last = MessageId(0);
    for (i, rx) in answers.into_iter().enumerate() {
        let m = sent(answer(rx).await);
        assert_eq!(m.body, i.to_string());
        assert!(m.id > last, "id {} not above {}", m.id.0, last.0);
        last = m.id;
    }
}

#[tokio::test]
async fn non_members_and_readers_of_a_channel_cannot_write() {
    let mut f = start(Tuning::default()).await;
    f.group().await;
    let refused = f.ask("dan", f.send_body("k", "let me in")).await;
    assert!(
        matches!(refused, Err(ChatError::Forbidden(_))),
        "{refused:?}"
    );

    let c = start(Tuning::default()).await;
    c.ask(
        "ann",
        ConversationRequest::Create {
            conversation: c.id.clone(),
            kind: ConversationKind::Channel,
            members: vec![user("bob")],
            title: Some("news".into()),
        },
    )
    .await
    .expect("channel");
    let reader = c.ask("bob", c.send_body("k", "me too")).await;
    assert!(matches!(reader, Err(ChatError::Forbidden(_))), "{reader:?}");
    sent(c.ask("ann", c.send_body("k", "news")).await);
}

#[tokio::test]
async fn a_kick_is_stored_announced_to_the_removed_and_ends_their_rights() {
    let mut f = start(Tuning::default()).await;
    f.group().await;
    let by_member = f
        .ask(
            "bob",
            ConversationRequest::Kick {
                conversation: f.id.clone(),
                user: user("cat"),
            },
        )
        .await;
    assert!(
        matches!(by_member, Err(ChatError::Forbidden(_))),
        "{by_member:?}"
    );
    f.ask(
        "ann",
        ConversationRequest::Kick {
            conversation: f.id.clone(),
            user: user("cat"),
        },
    )
    .await
    .expect("kicked");
    match f.next().await {
        Fanned::Members {
            members, removed, ..
        } => {
            assert_eq!(removed, vec![user("cat")]);
            assert!(!members.contains(&user("cat")));
        }
        x => panic!("{x:?}"),
    }
    let stored = f.store.store.conversation(&f.id).await.expect("read");
    assert_eq!(stored.expect("exists").members.len(), 2);
    let after = f.ask("cat", f.send_body("k", "still here?")).await;
    assert!(matches!(after, Err(ChatError::Forbidden(_))), "{after:?}");
}

#[tokio::test]
async fn typing_ends_by_itself_when_not_refreshed() {
    let timeout = Duration::from_secs(6);
    let mut f = start(Tuning {
        typing_timeout: timeout,
        ..Tuning::default()
    })
    .await;
    f.group().await;
    // Paused only now: while the store's thread works, a paused clock
    // would leap to the next timer.
    tokio::time::pause();
    let typing = |active| ConversationRequest::Typing {
        conversation: f.id.clone(),
        active,
    };
    let (r, _) = request("bob", None, typing(true));
    let started = tokio::time::Instant::now();
    f.actor.cast(ConversationMsg::Request(r)).expect("runs");
    for active in [true, false] {
        match f.next().await {
            Fanned::Listeners { frames, skip } => {
                assert_eq!(skip, Some(user("bob")), "not to the typist");
                assert_eq!(
                    frames[0].0,
                    ServerFrame::Typing {
                        conversation: f.id.clone(),
                        user: user("bob"),
                        active
                    }
                );
            }
            x => panic!("{x:?}"),
        }
    }
    assert!(started.elapsed() >= timeout, "ended before the timeout");
}

#[tokio::test]
async fn an_idle_actor_reports_how_many_requests_it_handled() {
    let idle = Duration::from_secs(60);
    let mut f = start(Tuning {
        conversation_idle: idle,
        ..Tuning::default()
    })
    .await;
    f.group().await;
    // Its last activity is no earlier than this.
    let quiet_since = tokio::time::Instant::now();
    sent(f.ask("bob", f.send_body("k", "last words")).await);
    tokio::time::pause();
    let report = tokio::time::timeout(Duration::from_secs(600), f.router.recv())
        .await
        .expect("reported idle")
        .expect("router open");
    match report {
        RouterMsg::ConversationIdle {
            conversation,
            actor,
            handled,
        } => {
            assert_eq!(conversation, f.id);
            assert_eq!(actor, f.actor.get_id());
            assert_eq!(handled, 2, "the create and the send");
        }
        _ => panic!("not an idle report"),
    }
    assert!(
        quiet_since.elapsed() >= idle,
        "reported before the idle period"
    );
}

#[tokio::test]
async fn history_pages_come_from_the_tail_and_the_store_alike() {
    let mut f = start(Tuning {
        tail: 3,
        ..Tuning::default()
    })
    .await;
    f.group().await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(sent(f.ask("bob", f.send_body(&format!("h{i}"), "x")).await).id);
    }
    let page = |after| ConversationRequest::History {
        conversation: f.id.clone(),
        before: None,
        after: Some(after),
        limit: 2,
    };
    // From the tail (the last 3), and from the store (older).
    for (after, want) in [(ids[3], &ids[4..6]), (ids[0], &ids[1..3])] {
        let r = f.ask("cat", page(after)).await.expect("page");
        let got: Vec<MessageId> = r
            .into_messages()
            .expect("messages")
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(got, want);
    }
    let outsider = f.ask("dan", page(ids[0])).await;
    assert!(
        matches!(outsider, Err(ChatError::Forbidden(_))),
        "{outsider:?}"
    );
}
