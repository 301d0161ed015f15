//! Stand-ins and setup shared by the actors' unit tests: a real store in a
//! temporary directory, a fan-out that records what it is handed, a Router
//! that records what actors tell it, and a connection whose queue the test
//! reads.

use std::sync::{Arc, Mutex, PoisonError};

use chat_protocol::request::ConversationRequest;
use chat_protocol::{
    now_ms, Codec, ConversationId, Message, MessageId, OkReply, ServerFrame, UserId,
};
use chat_storage::embedded::{Durability, EmbeddedStore};
use chat_storage::{AccountStore, HistoryStore, MessageStore, PageQuery, UserRecord};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc;

use crate::conn::{ConnId, Connection, ConnectionEnd, Delivery};
use crate::error::ChatError;
use crate::fanout::Fanout;
use crate::msg::{Request, RouterMsg};

pub(crate) fn user(s: &str) -> UserId {
    UserId::new(s).expect("valid id")
}

pub(crate) fn conversation(s: &str) -> ConversationId {
    ConversationId::new(s).expect("valid id")
}

/// A plain message of `sender` in `conversation`: no edits, reactions or
/// attachments.
pub(crate) fn message(
    conversation: ConversationId,
    sender: UserId,
    id: MessageId,
    body: String,
    key: &str,
) -> Message {
    Message {
        attachments: Vec::new(),
        rev: 0,
        edited_at: None,
        deleted: false,
        reactions: Vec::new(),
        mentions: Vec::new(),
        id,
        conversation,
        sender,
        body,
        kind: Default::default(),
        ts: id.timestamp_ms(),
        client_msg_id: chat_protocol::ClientMsgId::new(key).expect("valid key"),
        reply_to: None,
    }
}

/// A real embedded store in a directory removed with it.
pub(crate) struct TestStore {
    pub(crate) store: Arc<EmbeddedStore>,
    _dir: tempfile::TempDir,
}

impl TestStore {
    /// An empty store where each of `users` has an account.
    pub(crate) async fn with_users(users: &[&str]) -> TestStore {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(
            EmbeddedStore::open(&dir.path().join("store"), Durability::Sync).expect("store"),
        );
        for u in users {
            let record = UserRecord {
                id: user(u),
                password_hash: None,
                display_name: None,
                created_at: now_ms(),
            };
            store.create_user(&record).await.expect("user");
        }
        TestStore { store, _dir: dir }
    }

    pub(crate) fn dyn_store(&self) -> Arc<dyn MessageStore> {
        self.store.clone()
    }

    /// What the store holds of a conversation's history (its newest 200).
    pub(crate) async fn history(&self, id: &ConversationId) -> Vec<Message> {
        let newest = PageQuery::new(None, None, 200);
        self.store.page(id, newest).await.expect("page").messages
    }
}

/// What a conversation actor handed to its fan-out.
#[derive(Debug, Clone)]
pub(crate) enum Fanned {
    /// To the members listening, except `skip`.
    Listeners {
        frames: Vec<(ServerFrame, Option<ConnId>)>,
        skip: Option<UserId>,
    },
    /// To members after a membership change.
    Members {
        frames: Vec<ServerFrame>,
        members: Vec<UserId>,
        removed: Vec<UserId>,
    },
}

/// A fan-out that records every call on a channel.
pub(crate) struct RecordingFanout {
    tx: mpsc::UnboundedSender<Fanned>,
    /// Which users the last `to_listeners` call's filter let through, of
    /// those asked about.
    pub(crate) probe: Mutex<Vec<UserId>>,
}

impl RecordingFanout {
    pub(crate) fn new(probe: &[&str]) -> (Arc<Self>, mpsc::UnboundedReceiver<Fanned>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let probe = Mutex::new(probe.iter().map(|u| user(u)).collect());
        (Arc::new(RecordingFanout { tx, probe }), rx)
    }
}

impl Fanout for RecordingFanout {
    fn to_listeners(
        &self,
        _conversation: &ConversationId,
        events: &[Delivery],
        skip: Option<&UserId>,
        is_member: &dyn Fn(&UserId) -> bool,
    ) {
        let mut probe = self.probe.lock().unwrap_or_else(PoisonError::into_inner);
        probe.retain(|u| is_member(u));
        let frames = events
            .iter()
            .map(|d| (d.frame.frame().clone(), d.skip_conn))
            .collect();
        let _ = self.tx.send(Fanned::Listeners {
            frames,
            skip: skip.cloned(),
        });
    }

    fn to_members(
        &self,
        _conversation: &ConversationId,
        events: &[Delivery],
        members: &[UserId],
        removed: &[UserId],
    ) {
        let _ = self.tx.send(Fanned::Members {
            frames: events.iter().map(|d| d.frame.frame().clone()).collect(),
            members: members.to_vec(),
            removed: removed.to_vec(),
        });
    }
}

/// Stands in for the Router: hands every message to a channel (only the
/// local variants a test looks at; replies are dropped).
pub(crate) struct RouterStandIn;

impl Actor for RouterStandIn {
    type Msg = RouterMsg;
    type State = mpsc::UnboundedSender<RouterMsg>;
    type Arguments = mpsc::UnboundedSender<RouterMsg>;

    async fn pre_start(
        &self,
        _: ActorRef<RouterMsg>,
        tx: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(tx)
    }

    async fn handle(
        &self,
        _: ActorRef<RouterMsg>,
        msg: RouterMsg,
        tx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _ = tx.send(msg);
        Ok(())
    }
}

/// A Router stand-in and what it receives.
pub(crate) async fn router_stand_in() -> (ActorRef<RouterMsg>, mpsc::UnboundedReceiver<RouterMsg>) {
    named_router_stand_in(None).await
}

/// A Router stand-in registered as `name` (as a node's Router is, for the
/// other Routers to find it in the process groups).
pub(crate) async fn named_router_stand_in(
    name: Option<String>,
) -> (ActorRef<RouterMsg>, mpsc::UnboundedReceiver<RouterMsg>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (actor, _) = Actor::spawn(name, RouterStandIn, tx)
        .await
        .expect("router stand-in");
    (actor, rx)
}

/// A client request and the receiving end of its answer.
pub(crate) fn request(
    from: &str,
    conn: Option<ConnId>,
    body: ConversationRequest,
) -> (
    Request,
    ractor::concurrency::OneshotReceiver<Result<OkReply, ChatError>>,
) {
    let (tx, rx) = ractor::concurrency::oneshot();
    (Request::new(user(from), conn, body, Some(tx.into())), rx)
}

/// Waits for the answer of a request.
pub(crate) async fn answer(
    rx: ractor::concurrency::OneshotReceiver<Result<OkReply, ChatError>>,
) -> Result<OkReply, ChatError> {
    tokio::time::timeout(chat_testkit::DEADLINE, rx)
        .await
        .expect("answered in time")
        .expect("answered, not dropped")
}

/// A connection whose queue the test reads.
pub(crate) struct TestConn {
    pub(crate) conn: Connection,
    pub(crate) end: ConnectionEnd,
}

impl TestConn {
    pub(crate) fn new(id: ConnId) -> TestConn {
        let (conn, end) = Connection::new(id, Codec::Json, 64, 1 << 20);
        TestConn { conn, end }
    }

    /// The frames queued so far.
    pub(crate) fn drain(&mut self) -> Vec<ServerFrame> {
        let mut out = Vec::new();
        let mut batch = std::collections::VecDeque::new();
        self.end.outbound.try_take(&mut batch);
        for bytes in batch {
            self.end.outbound.written(bytes.len());
            out.push(serde_json::from_slice(&bytes).expect("a server frame"));
        }
        out
    }
}
