//! The Router's own tests, against stand-ins.

use super::*;

#[test]
fn a_peers_budget_bounds_requests_in_number_and_in_bytes() {
    // Few large requests: the bytes run out long before the count.
    let mut f = InFlight::default();
    let big = MAX_IN_FLIGHT_BYTES_PER_PEER / 4;
    for _ in 0..4 {
        assert!(f.admit(big));
    }
    assert!(!f.admit(1), "admitted past the byte budget");
    assert_eq!(f.requests, 4, "a refused request is not counted");
    f.release(big);
    assert!(f.admit(big), "an answer gives its bytes back");
    assert!(!f.admit(1));

    // Many small ones: the count runs out first.
    let mut f = InFlight::default();
    for _ in 0..MAX_IN_FLIGHT_PER_PEER {
        assert!(f.admit(64));
    }
    assert!(!f.admit(64), "admitted past the request budget");
    f.release(64);
    assert!(f.admit(64));
}

mod actors {
    use std::time::Duration;

    use chat_presence::MemoryPresence;
    use chat_protocol::request::ConversationRequest;
    use chat_protocol::{ClientMsgId, ConversationKind, Limits, MessageKind, OkReply};

    use super::*;
    use chat_protocol::close_code;

    use crate::cluster::Cluster;
    use crate::msg::SessionHandle;
    use crate::testing::{answer, conversation, message, request, user, TestConn, TestStore};
    use crate::tuning::Tuning;
    use chat_storage::replicated::ReplicatedStore;

    struct Fixture {
        router: ActorRef<RouterMsg>,
        services: Arc<Services>,
        store: TestStore,
    }

    /// A single node's Router whose conversation actors stop after `idle`.
    async fn start(idle: Duration) -> Fixture {
        start_on(Cluster::single("n1", 1), idle).await
    }

    async fn start_on(cluster: Cluster, idle: Duration) -> Fixture {
        // Sessions end as their last connection leaves, unless a test
        // is about their linger.
        let tuning = Tuning {
            conversation_idle: idle,
            session_linger: Duration::ZERO,
            ..Tuning::default()
        };
        start_tuned(cluster, tuning).await
    }

    async fn start_tuned(cluster: Cluster, tuning: Tuning) -> Fixture {
        let store = TestStore::with_users(&["ann", "bob"]).await;
        let dyn_store = store.dyn_store();
        start_with(cluster, tuning, store, dyn_store, None).await
    }

    /// A Router over the store of a cluster of embedded stores, whose
    /// writes go through the Router to reach the peers.
    async fn start_replicated(idle: Duration) -> Fixture {
        let store = TestStore::with_users(&["ann", "bob"]).await;
        let replica = Arc::new(ReplicatedStore::new(store.store.clone(), "n1").expect("replica"));
        let tuning = Tuning {
            conversation_idle: idle,
            ..Tuning::default()
        };
        let cluster = Cluster::single("n1", 1);
        let f = start_with(
            cluster,
            tuning,
            store,
            replica.clone(),
            Some(replica.clone()),
        )
        .await;
        replica.set_link(Arc::new(crate::cluster::RouterLink::new(f.router.clone())));
        f
    }

    async fn start_with(
        cluster: Cluster,
        tuning: Tuning,
        store: TestStore,
        dyn_store: Arc<dyn chat_storage::MessageStore>,
        replica: Option<Arc<ReplicatedStore>>,
    ) -> Fixture {
        let services = Services::new(
            cluster,
            dyn_store,
            replica,
            Arc::new(MemoryPresence::new()),
            Limits::default(),
            tuning,
            crate::services::Hooks {
                events: Arc::new(crate::events::NoEvents),
                media: Arc::new(crate::media::NoMedia),
            },
        );
        let (router, _) = Actor::spawn(None, Router, services.clone())
            .await
            .expect("router");
        Fixture {
            router,
            services,
            store,
        }
    }

    impl Fixture {
        async fn route(&self, from: &str, body: ConversationRequest) -> Result<OkReply, ChatError> {
            let (r, rx) = request(from, None, body);
            self.router.cast(RouterMsg::Route(r)).expect("router runs");
            answer(rx).await
        }

        async fn connect(&self, conn: &TestConn) -> Result<SessionHandle, ChatError> {
            ractor::call!(self.router, |reply| RouterMsg::Connect {
                user: user("ann"),
                conn: conn.conn.clone(),
                reply,
            })
            .expect("router answers")
        }
    }

    fn create(id: &str) -> ConversationRequest {
        ConversationRequest::Create {
            conversation: conversation(id),
            kind: ConversationKind::Group,
            members: vec![user("bob")],
            title: None,
        }
    }

    fn send(id: &str, key: &str) -> ConversationRequest {
        ConversationRequest::Send {
            conversation: conversation(id),
            client_msg_id: ClientMsgId::new(key).expect("key"),
            body: key.into(),
            kind: MessageKind::default(),
            reply_to: None,
            attachments: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_request_starts_its_actor_an_idle_actor_stops_and_the_next_reloads_it() {
        let f = start(Duration::from_millis(100)).await;
        f.route("ann", create("g:1")).await.expect("created");
        assert_eq!(f.services.conversations.len(), 1);
        f.route("bob", send("g:1", "k1")).await.expect("sent");
        chat_testkit::until("idle actor stopped", || f.services.conversations.is_empty()).await;

        // A fresh actor loads the conversation and its history.
        let page = f
            .route(
                "bob",
                ConversationRequest::History {
                    conversation: conversation("g:1"),
                    before: None,
                    after: None,
                    limit: 10,
                },
            )
            .await
            .expect("history");
        assert_eq!(page.into_messages().expect("messages").len(), 1);
        let again = f.route("bob", send("g:1", "k1")).await.expect("retry");
        assert_eq!(again.into_message().expect("message").body, "k1");
        let stored = f.store.history(&conversation("g:1")).await;
        assert_eq!(stored.len(), 1, "the retry stored nothing");
    }

    /// Node "n2" asks node "n1" to serve `request`, as its request `id`.
    fn ask_for_n2(f: &Fixture, id: u64, from: &str, request: ConversationRequest) {
        let ask = PeerMsg::Request {
            from: "n2".into(),
            id,
            user: user(from),
            conn: 0,
            request,
            trace: None,
        };
        f.router.cast(RouterMsg::Peer(ask)).expect("router runs");
    }

    /// The next answer n1 sends n2: its request id and result.
    async fn answer_to_n2(
        n2: &mut tokio::sync::mpsc::UnboundedReceiver<RouterMsg>,
    ) -> (u64, Result<Box<OkReply>, chat_protocol::ErrorCode>) {
        loop {
            let got = tokio::time::timeout(chat_testkit::DEADLINE, n2.recv())
                .await
                .expect("n1 answers n2 in time")
                .expect("stand-in runs");
            let RouterMsg::Wire(bytes) = got else {
                continue;
            };
            if let PeerMsg::Reply { id, result } =
                chat_protocol::peer::decode(&bytes).expect("valid")
            {
                return (id, result.map_err(|e| e.code));
            }
        }
    }

    /// What node "n2" asks node "n1" to serve, and n1's answer.
    async fn served_for_n2(
        f: &Fixture,
        n2: &mut tokio::sync::mpsc::UnboundedReceiver<RouterMsg>,
        id: u64,
        from: &str,
        request: ConversationRequest,
    ) -> Result<Box<OkReply>, chat_protocol::ErrorCode> {
        ask_for_n2(f, id, from, request);
        let (got, result) = answer_to_n2(n2).await;
        assert_eq!(got, id);
        result
    }

    #[tokio::test]
    async fn a_conversation_served_for_a_peer_it_does_not_own_is_not_kept_here() {
        // Node n1 sees n2 serving (and not itself yet): n2 owns everything.
        // n2, whose view was another, still sent n1 a request. n1 answers
        // it, then gives the conversation up: kept, its actor would hold the
        // claim against the owner until idle (minutes with no writes there).
        let (events, _) = tokio::sync::mpsc::unbounded_channel();
        let cluster = Cluster::clustered("n1", 1, events);
        let (n2, mut n2_rx) =
            crate::testing::named_router_stand_in(Some(crate::cluster::router_name("n2"))).await;
        for group in [crate::cluster::NODES_GROUP, crate::cluster::ROUTERS_GROUP] {
            ractor::pg::join(group.into(), vec![n2.get_cell()]);
        }
        let theirs = "g:1";
        let f = start_on(cluster, Duration::from_secs(600)).await;

        served_for_n2(&f, &mut n2_rx, 1, "ann", create(theirs))
            .await
            .expect("created");
        let sent = served_for_n2(&f, &mut n2_rx, 2, "bob", send(theirs, "k1"))
            .await
            .expect("sent");
        assert_eq!(sent.into_message().expect("message").body, "k1");
        chat_testkit::until("the actor served and stopped", || {
            f.services.conversations.is_empty()
                && f.services.metrics.conversations_active.get() == 0
        })
        .await;
        assert_eq!(f.store.history(&conversation(theirs)).await.len(), 1);

        // Sends pipelined: each retires the actor it started, and the next
        // waits for it to stop rather than start a second beside it (two
        // would give out the same revision, and a retried send could be
        // stored twice).
        for i in 10..18 {
            ask_for_n2(&f, i, "bob", send(theirs, &format!("p{i}")));
        }
        let mut answered = Vec::new();
        for _ in 10..18 {
            let (id, result) = answer_to_n2(&mut n2_rx).await;
            result.unwrap_or_else(|code| panic!("request {id}: {code:?}"));
            answered.push(id);
        }
        answered.sort_unstable();
        assert_eq!(answered, (10..18).collect::<Vec<_>>());
        chat_testkit::until("every actor stopped", || {
            f.services.metrics.conversations_active.get() == 0
        })
        .await;
        let history = f.store.history(&conversation(theirs)).await;
        assert_eq!(history.len(), 9);
        let mut revs: Vec<u64> = history.iter().map(|m| m.rev).collect();
        revs.sort_unstable();
        revs.dedup();
        assert_eq!(revs.len(), 9, "one revision per message: {history:?}");
    }

    #[tokio::test]
    async fn one_session_per_user_stopped_when_its_last_connection_goes() {
        let f = start(Duration::from_secs(60)).await;
        let (a, b) = (TestConn::new(1), TestConn::new(2));
        let first = f.connect(&a).await.expect("attached");
        let second = f.connect(&b).await.expect("attached");
        assert_eq!(first.user(), second.user());
        assert_eq!(f.services.directory.len(), 1);
        for conn in [1, 2] {
            first.send(SessionMsg::Detach { conn }).ok().expect("runs");
        }
        chat_testkit::until("session stopped", || f.services.directory.is_empty()).await;
        let m = &f.services.metrics;
        assert_eq!((m.sessions_active.get(), m.sessions_asleep.get()), (0, 0));
        // A new connection gets a new session.
        let c = TestConn::new(3);
        let third = f.connect(&c).await.expect("attached");
        assert_ne!(third.id(), first.id());
        assert_eq!(f.services.directory.len(), 1);
    }

    /// The session's actor of a connected user with nothing to do.
    fn asleep(f: &Fixture) -> bool {
        f.services.metrics.sessions_asleep.get() == 1
            && f.services
                .directory
                .get(&user("ann"))
                .is_some_and(|s| ractor::registry::where_is_pid(s).is_none())
    }

    #[tokio::test]
    async fn a_session_with_nothing_to_do_sleeps_and_each_message_wakes_it() {
        let f = start(Duration::from_secs(60)).await;
        let (mut a, mut b) = (TestConn::new(1), TestConn::new(2));
        let handle = f.connect(&a).await.expect("attached");
        chat_testkit::until("asleep after the attach", || asleep(&f)).await;

        // Events reach the connection of a sleeping session.
        let event = Arc::new(chat_protocol::SharedFrame::new(
            chat_protocol::ServerFrame::ok(None),
        ));
        let delivery = |frame: &Arc<chat_protocol::SharedFrame>| crate::conn::Delivery {
            frame: frame.clone(),
            skip_conn: None,
            trace: None,
        };
        let n = f
            .services
            .directory
            .deliver(&[user("ann")], &[delivery(&event)]);
        assert_eq!(n, 1);
        assert_eq!(a.drain().len(), 1);

        // Another device attaches without waking it.
        f.connect(&b).await.expect("second attached");
        assert!(asleep(&f), "attached while asleep");
        let n = f
            .services
            .directory
            .deliver(&[user("ann")], &[delivery(&event)]);
        assert_eq!(n, 2, "both connections are published");
        assert_eq!((a.drain().len(), b.drain().len()), (1, 1));

        // A watch, through the handle of the actor that slept, wakes it;
        // watching, it stays awake; unwatched, it sleeps.
        let (tx, rx) = ractor::concurrency::oneshot();
        handle
            .send(SessionMsg::Watch {
                conn: 1,
                users: vec![user("bob")],
                reply: tx.into(),
            })
            .ok()
            .expect("sent");
        answer(rx).await.expect("watching");
        assert_eq!(f.services.metrics.sessions_asleep.get(), 0);
        assert!(!asleep(&f));
        let (tx, rx) = ractor::concurrency::oneshot();
        handle
            .send(SessionMsg::Unwatch {
                conn: 1,
                users: vec![user("bob")],
                reply: tx.into(),
            })
            .ok()
            .expect("sent");
        answer(rx).await.expect("unwatched");
        chat_testkit::until("asleep after the unwatch", || asleep(&f)).await;

        // An operator's close reaches a sleeping session's connections.
        f.router
            .cast(RouterMsg::CloseUser {
                user: user("ann"),
                code: 4004,
            })
            .expect("router runs");
        chat_testkit::until("closed", || {
            a.end.closer.code() == Some(4004) && b.end.closer.code() == Some(4004)
        })
        .await;

        // The closes detach both (without waking it): it ends.
        for conn in [1, 2] {
            handle.send(SessionMsg::Detach { conn }).ok().expect("sent");
        }
        chat_testkit::until("session ended", || f.services.directory.is_empty()).await;
        let m = &f.services.metrics;
        chat_testkit::until("counted", || {
            (m.sessions_active.get(), m.sessions_asleep.get()) == (0, 0)
        })
        .await;
        assert!(f.services.interest.is_empty(), "interest withdrawn");
    }

    /// A Router whose empty sessions linger for `linger`.
    async fn lingering(linger: Duration) -> Fixture {
        let tuning = Tuning {
            conversation_idle: Duration::from_secs(60),
            session_linger: linger,
            ..Tuning::default()
        };
        start_tuned(Cluster::single("n1", 1), tuning).await
    }

    fn listens(f: &Fixture, id: &str) -> bool {
        f.services
            .interest
            .listeners(&conversation(id))
            .is_some_and(|l| l.contains(&user("ann")))
    }

    #[tokio::test]
    async fn a_client_back_within_the_linger_resumes_its_session() {
        let f = lingering(Duration::from_secs(600)).await;
        let a = TestConn::new(1);
        let first = f.connect(&a).await.expect("attached");
        f.route("ann", create("g:linger")).await.expect("created");
        assert!(listens(&f, "g:linger"));
        first
            .send(SessionMsg::Detach { conn: 1 })
            .ok()
            .expect("runs");
        let m = &f.services.metrics;
        chat_testkit::until("empty and asleep", || {
            m.connections_open.get() == 0 && asleep(&f)
        })
        .await;
        // Not ended: still in the directory, its interest never withdrawn.
        assert_eq!(m.sessions_active.get(), 1);
        assert!(listens(&f, "g:linger"), "interest kept while it lingers");
        // The client comes back: the same session takes it (no second one
        // is counted) without even waking, and events reach the new
        // connection.
        let mut b = TestConn::new(2);
        f.connect(&b).await.expect("attached again");
        assert_eq!(m.sessions_active.get(), 1);
        assert!(asleep(&f), "attached while asleep");
        assert_eq!(m.connections_open.get(), 1);
        assert!(listens(&f, "g:linger"));
        let event = Arc::new(chat_protocol::SharedFrame::new(
            chat_protocol::ServerFrame::ok(None),
        ));
        let n = f.services.directory.deliver(
            &[user("ann")],
            &[crate::conn::Delivery {
                frame: event,
                skip_conn: None,
                trace: None,
            }],
        );
        assert_eq!(n, 1);
        assert_eq!(b.drain().len(), 1);
    }

    #[tokio::test]
    async fn an_empty_session_ends_once_its_linger_is_over() {
        let f = lingering(Duration::from_millis(200)).await;
        let a = TestConn::new(1);
        let first = f.connect(&a).await.expect("attached");
        f.route("ann", create("g:over")).await.expect("created");
        first
            .send(SessionMsg::Detach { conn: 1 })
            .ok()
            .expect("runs");
        chat_testkit::until("ended after its linger", || f.services.directory.is_empty()).await;
        let m = &f.services.metrics;
        chat_testkit::until("counted", || {
            (m.sessions_active.get(), m.sessions_asleep.get()) == (0, 0)
        })
        .await;
        assert!(!listens(&f, "g:over"), "interest withdrawn");
        // A later connection starts a new session, which lists the
        // conversations again.
        let b = TestConn::new(2);
        f.connect(&b).await.expect("attached");
        chat_testkit::until("listens again", || listens(&f, "g:over")).await;
        assert_eq!(m.sessions_active.get(), 1);
    }

    #[tokio::test]
    async fn a_draining_node_ends_sleeping_sessions_without_waking_them() {
        let f = start(Duration::from_secs(60)).await;
        let a = TestConn::new(1);
        f.connect(&a).await.expect("attached");
        chat_testkit::until("asleep", || asleep(&f)).await;
        ractor::call!(f.router, |reply| RouterMsg::Drain { reply }).expect("drained");
        assert_eq!(a.end.closer.code(), Some(close_code::GOING_AWAY));
        assert!(f.services.directory.is_empty());
        assert!(f.services.interest.is_empty());
        let m = &f.services.metrics;
        assert_eq!((m.sessions_active.get(), m.sessions_asleep.get()), (0, 0));
    }

    #[tokio::test]
    async fn draining_answers_what_was_accepted_then_refuses() {
        let f = start(Duration::from_secs(60)).await;
        f.route("ann", create("g:2")).await.expect("created");
        let mut answers = Vec::new();
        for i in 0..20 {
            let (r, rx) = request("bob", None, send("g:2", &format!("d{i}")));
            f.router.cast(RouterMsg::Route(r)).expect("runs");
            answers.push(rx);
        }
        ractor::call!(f.router, |reply| RouterMsg::Drain { reply }).expect("drained");
        for rx in answers {
            answer(rx).await.expect("accepted before the drain");
        }
        assert!(f.services.conversations.is_empty());
        let late = f.route("bob", send("g:2", "late")).await;
        assert!(matches!(late, Err(ChatError::Unavailable(_))), "{late:?}");
    }

    fn history(id: &str) -> ConversationRequest {
        ConversationRequest::History {
            conversation: conversation(id),
            before: None,
            after: None,
            limit: 50,
        }
    }

    /// The bodies of a history page, oldest first, from memory or store.
    fn bodies(page: &OkReply) -> Vec<String> {
        let messages = match (&page.messages, &page.held) {
            (Some(m), _) => m.clone(),
            (None, Some(held)) => held.to_messages(),
            (None, None) => Vec::new(),
        };
        let mut bodies: Vec<String> = messages.into_iter().map(|m| m.body).collect();
        bodies.sort();
        bodies
    }

    #[tokio::test]
    async fn a_previous_owners_late_write_restarts_the_conversation_here() {
        // This node took g:5 over and loaded it; the previous owner's last
        // write reaches it afterwards. The actor's tail (which serves
        // pages) and its last revision lack it: it must reload.
        let f = start_replicated(Duration::from_secs(60)).await;
        f.route("ann", create("g:5")).await.expect("created");
        f.route("ann", send("g:5", "here")).await.expect("sent");
        let before = bodies(&f.route("bob", history("g:5")).await.expect("page"));
        assert_eq!(before, vec!["here".to_owned()]);

        // The previous owner, n2, wrote a send of bob's.
        let other = TestStore::with_users(&[]).await;
        let n2 = ReplicatedStore::new(other.store.clone(), "n2").expect("replica");
        let id = chat_protocol::MessageId(
            chat_protocol::MessageId::floor_at(chat_protocol::now_ms()).0 | (2 << 12),
        );
        let late = message(conversation("g:5"), user("bob"), id, "late".into(), "late");
        chat_storage::HistoryStore::append(&n2, &[late])
            .await
            .expect("written at n2");
        let ops = n2
            .ops_after(&Default::default(), 16, 1 << 20)
            .await
            .expect("n2's log");
        for op in ops {
            let msg = chat_protocol::peer::PeerMsg::Replicate {
                from: "n2".into(),
                op: super::replication::op_to_wire(op),
            };
            f.router.cast(RouterMsg::Peer(msg)).expect("runs");
        }
        let m = f.services.metrics.clone();
        chat_testkit::until("the actor restarted", || {
            m.conversations_reloaded.get() == 1
        })
        .await;
        let after = bodies(&f.route("bob", history("g:5")).await.expect("page"));
        assert_eq!(after, vec!["here".to_owned(), "late".to_owned()]);
    }

    #[tokio::test]
    async fn a_drain_answers_once_the_writes_in_flight_are_answered() {
        // On a cluster of embedded stores each write reaches the peers
        // through the Router. A drain that held the Router while it waited
        // for the conversations held their writes too: it answered at its
        // deadline with sends written here, unreplicated and unanswered,
        // and their senders' retries stored them a second time elsewhere.
        let f = start_replicated(Duration::from_secs(60)).await;
        f.route("ann", create("g:3")).await.expect("created");
        let mut answers = Vec::new();
        for i in 0..20 {
            let (r, rx) = request("bob", None, send("g:3", &format!("d{i}")));
            f.router.cast(RouterMsg::Route(r)).expect("runs");
            answers.push(rx);
        }
        ractor::call!(f.router, |reply| RouterMsg::Drain { reply }).expect("drained");
        for (i, mut rx) in answers.into_iter().enumerate() {
            let answered = rx.try_recv();
            assert!(
                matches!(answered, Ok(Ok(_))),
                "send d{i} not answered ok when the drain was: {answered:?}"
            );
        }
        let stored = f.store.history(&conversation("g:3")).await;
        assert_eq!(stored.len(), 20, "every send stored once");
    }
}
