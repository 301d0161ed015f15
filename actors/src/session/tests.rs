//! The session alone: a real store and the in-memory presence backend, a
//! Router stand-in, connections whose queues the test reads; no sockets.

use chat_presence::MemoryPresence;
use chat_protocol::{
    Conversation, ConversationKind, Member, Role, ServerFrame, SharedFrame, Status,
};
use chat_storage::{ConversationChange, ConversationStore};
use ractor::{Actor, RpcReplyPort};
use tokio::sync::mpsc;

use super::*;
use crate::conn::Delivery;
use crate::testing::{conversation, router_stand_in, user, TestConn, TestStore};

struct Fixture {
    session: ActorRef<SessionMsg>,
    router: mpsc::UnboundedReceiver<RouterMsg>,
    deps: Arc<SessionDeps>,
    memory: Arc<MemoryPresence>,
    _store: TestStore,
}

/// Ann's session, with ann a member of `g:1`; `limit` connections.
async fn start(limit: usize) -> Fixture {
    let store = TestStore::with_users(&["ann", "bob"]).await;
    let group = Conversation {
        rev: 0,
        id: conversation("g:1"),
        kind: ConversationKind::Group,
        title: None,
        members: vec![Member {
            user: user("ann"),
            role: Role::Owner,
        }],
        member_count: None,
        created_at: chat_protocol::now_ms(),
    };
    store
        .store
        .apply_conversation(&ConversationChange {
            upsert: group.members.clone(),
            conversation: group,
            remove: vec![],
        })
        .await
        .expect("stored");
    let memory = Arc::new(MemoryPresence::new());
    let watchers = Arc::new(Watchers::new());
    tokio::spawn(watchers.clone().run(memory.changes()));
    let deps = Arc::new(SessionDeps {
        node: Arc::from("n1"),
        store: store.dyn_store(),
        presence: memory.clone(),
        directory: Arc::new(LocalSessions::default()),
        interest: Arc::new(Interest::new()),
        cluster: Arc::new(Cluster::single("n1", 1)),
        watchers,
        metrics: Arc::new(Metrics::default()),
        connections_per_user: limit,
        watch_per_connection: 2,
        // The session's own logic; sleeping needs the Router (its tests).
        sleep_when_idle: false,
        linger: Duration::ZERO,
        interest_ack_deadline: std::time::Duration::from_secs(2),
    });
    let (router, routed) = router_stand_in().await;
    let args = SessionArgs {
        user: user("ann"),
        deps: deps.clone(),
        router,
        woken: None,
    };
    let (session, _) = Actor::spawn(None, UserSession, args)
        .await
        .expect("session");
    Fixture {
        session,
        router: routed,
        deps,
        memory,
        _store: store,
    }
}

async fn call<T: Send + 'static>(
    session: &ActorRef<SessionMsg>,
    msg: impl FnOnce(RpcReplyPort<T>) -> SessionMsg,
) -> T {
    let (tx, rx) = ractor::concurrency::oneshot();
    session.cast(msg(tx.into())).expect("session runs");
    tokio::time::timeout(chat_testkit::DEADLINE, rx)
        .await
        .expect("answered in time")
        .expect("answered")
}

impl Fixture {
    async fn attach(&self, id: ConnId) -> (TestConn, Result<SessionHandle, ChatError>) {
        let c = TestConn::new(id);
        let conn = c.conn.clone();
        let r = call(&self.session, |reply| SessionMsg::Attach { conn, reply }).await;
        (c, r)
    }

    async fn status_of(&self, name: &str) -> Status {
        let mut p = self.memory.query(&[user(name)]).await.expect("query");
        p.pop().expect("one").status
    }
}

#[tokio::test]
async fn connections_past_the_limit_are_refused_and_the_router_hears_when_none_is_left() {
    let mut f = start(2).await;
    let (_a, first) = f.attach(1).await;
    assert_eq!(first.expect("attached").id(), f.session.get_id());
    let (_b, second) = f.attach(2).await;
    assert!(second.is_ok());
    let (_c, third) = f.attach(3).await;
    assert_eq!(third.unwrap_err(), ChatError::TooManyConnections);

    for conn in [1, 2] {
        f.session.cast(SessionMsg::Detach { conn }).expect("runs");
    }
    let empty = loop {
        let msg = tokio::time::timeout(chat_testkit::DEADLINE, f.router.recv())
            .await
            .expect("told in time")
            .expect("router open");
        if let RouterMsg::SessionEmpty { actor, seen, .. } = msg {
            break (actor, seen);
        }
    };
    assert_eq!(empty, (f.session.get_id(), 3), "every attach counted");
}

#[tokio::test]
async fn a_connection_is_published_for_delivery_and_reported_online_until_it_goes() {
    let f = start(4).await;
    let (mut c, r) = f.attach(1).await;
    r.expect("attached");
    let event = Arc::new(SharedFrame::new(ServerFrame::ok(None)));
    let delivered = f.deps.directory.deliver(
        &[user("ann")],
        &[Delivery {
            frame: event,
            skip_conn: None,
            trace: None,
        }],
    );
    assert_eq!(delivered, 1);
    assert_eq!(c.drain(), vec![ServerFrame::ok(None)]);

    // The interest read at start covers the user's conversations.
    let listeners = f.deps.interest.listeners(&conversation("g:1"));
    assert_eq!(listeners.as_deref(), Some(&[user("ann")][..]));

    chat_testkit::eventually("ann online", || async {
        match f.status_of("ann").await {
            Status::Online => Ok(()),
            s => Err(format!("{s:?}")),
        }
    })
    .await;
    f.session
        .cast(SessionMsg::Detach { conn: 1 })
        .expect("runs");
    chat_testkit::eventually("ann offline", || async {
        match f.status_of("ann").await {
            Status::Offline => Ok(()),
            s => Err(format!("{s:?}")),
        }
    })
    .await;
}

#[tokio::test]
async fn presence_changes_reach_only_the_connections_that_watch() {
    let f = start(4).await;
    let (mut watching, _) = f.attach(1).await;
    let (mut other, _) = f.attach(2).await;
    let watched = call(&f.session, |reply| SessionMsg::Watch {
        conn: 1,
        users: vec![user("bob")],
        reply,
    })
    .await
    .expect("watching");
    assert_eq!(
        watched.presence.expect("presence")[0].status,
        Status::Offline
    );

    let too_many = call(&f.session, |reply| SessionMsg::Watch {
        conn: 1,
        users: vec![user("x1"), user("x2")],
        reply,
    })
    .await;
    assert!(
        matches!(too_many, Err(ChatError::BadRequest(_))),
        "{too_many:?}"
    );

    let bob = ConnKey {
        node: Arc::from("n2"),
        conn: 9,
    };
    f.memory
        .connected(&user("bob"), &bob)
        .await
        .expect("online");
    chat_testkit::eventually("bob's presence event", || {
        let got = watching.drain();
        async move {
            match got.as_slice() {
                [ServerFrame::Presence(p)] if p.user == user("bob") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    assert!(other.drain().is_empty(), "connection 2 watches no one");

    // Unwatched: the node's table no longer has a watcher of bob (the
    // next watch of bob is fresh again).
    call(&f.session, |reply| SessionMsg::Unwatch {
        conn: 1,
        users: vec![user("bob")],
        reply,
    })
    .await
    .expect("unwatched");
    let (router, _) = router_stand_in().await;
    let handle = SessionHandle::new(user("ann"), f.session.get_id(), router);
    assert_eq!(
        f.deps.watchers.add(&handle, &[user("bob")]),
        vec![user("bob")]
    );
}

#[tokio::test]
async fn stopping_withdraws_the_session_and_closes_its_connections() {
    let f = start(4).await;
    let (c, _) = f.attach(1).await;
    assert!(!f.deps.interest.is_empty());
    f.session.stop(None);
    chat_testkit::until("session gone", || {
        f.deps.directory.is_empty() && f.deps.interest.is_empty()
    })
    .await;
    assert_eq!(c.end.closer.code(), Some(close_code::GOING_AWAY));
}
