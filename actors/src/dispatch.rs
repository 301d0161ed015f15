//! The dispatcher: a client's frame to the handler of its kind. It runs on
//! the connection's task (or the HTTP handler's), not in an actor: most
//! requests go straight to their conversation's actor.
//!
//! ```text
//!  ws / http ──frame──► Dispatch::dispatch ─┬─ send, history, typing, read,  ──► ConversationActor running here
//!                                           │  invite, kick, leave, create       (else Router: start it or forward)
//!                                           │  edit, delete, react, changes
//!                                           ├─ conversations ──► store (everything listed is durable)
//!                                           └─ watch, unwatch ──► UserSession
//! ```
//!
//! Sends and the other requests to an existing conversation are routed
//! here; the kinds that need more have a file each: [`create`] (the new
//! conversation's id), [`conversations`] (the list), [`watch`] (presence
//! watches).

use std::sync::Arc;

use chat_protocol::peer::ConversationRequest;
use chat_protocol::{ClientFrame, IdGenerator, OkReply, UserId};
use chat_storage::MessageStore;
use ractor::ActorRef;

use crate::conn::ConnId;
use crate::error::ChatError;
use crate::metrics::Metrics;
use crate::msg::{Reply, Request, RouterMsg, SessionHandle};
use crate::rate::UserRates;
use crate::running::Conversations;
use crate::telemetry::TraceParent;

mod conversations;
mod create;
mod watch;

pub use watch::Visibility;

/// Who a request comes from.
pub struct Caller {
    /// The authenticated user.
    pub user: UserId,
    /// The connection, for WebSocket requests.
    pub conn: Option<ConnId>,
    /// The user's session on this node, for WebSocket requests.
    pub session: Option<SessionHandle>,
}

/// What the dispatcher reaches.
pub struct Dispatch {
    running: Arc<Conversations>,
    router: ActorRef<RouterMsg>,
    rate: Arc<UserRates>,
    ids: Arc<IdGenerator>,
    store: Arc<dyn MessageStore>,
    metrics: Arc<Metrics>,
    visibility: Visibility,
}

impl Dispatch {
    /// A dispatcher over the node's running conversations and its Router.
    pub fn new(
        running: Arc<Conversations>,
        router: ActorRef<RouterMsg>,
        rate: Arc<UserRates>,
        ids: Arc<IdGenerator>,
        store: Arc<dyn MessageStore>,
        metrics: Arc<Metrics>,
        visibility: Visibility,
    ) -> Self {
        Dispatch {
            running,
            router,
            rate,
            ids,
            store,
            metrics,
            visibility,
        }
    }

    /// Handles one validated frame; the answer goes to `reply`.
    pub fn dispatch(&self, caller: &Caller, frame: ClientFrame, reply: Reply) {
        self.dispatch_traced(caller, frame, reply, None)
    }

    /// [`Dispatch::dispatch`] of a frame in a sampled trace: the spans of
    /// the nodes it reaches hang under `trace`.
    pub fn dispatch_traced(
        &self,
        caller: &Caller,
        frame: ClientFrame,
        reply: Reply,
        trace: Option<TraceParent>,
    ) {
        match frame {
            // Edits and deletes count against the sender's rate as sends
            // do; reactions against a rate of their own.
            ClientFrame::Send { .. }
            | ClientFrame::Edit { .. }
            | ClientFrame::Delete { .. }
            | ClientFrame::React { .. } => self.send(caller, frame, reply, trace),
            ClientFrame::Create { .. } => create::create(self, caller, frame, reply),
            ClientFrame::Conversations { .. } => conversations::list(self, caller, frame, reply),
            ClientFrame::Watch { users, .. } => watch::watch(self, caller, users, reply),
            ClientFrame::Unwatch { users, .. } => watch::unwatch(caller, users, reply),
            ClientFrame::Ping { .. } => drop(reply.send(Ok(OkReply::default()))),
            _ => self.to_conversation(caller, frame, reply, None),
        }
    }

    /// `send` (and `edit`, `delete`, `react`): the sender's rate, then the
    /// conversation.
    fn send(&self, caller: &Caller, frame: ClientFrame, reply: Reply, trace: Option<TraceParent>) {
        let rate = match frame {
            ClientFrame::React { .. } => &self.rate.reactions,
            _ => &self.rate.sends,
        };
        if let Err(retry_after_ms) = rate.take(&caller.user) {
            self.metrics.rate_limited.inc();
            let _ = reply.send(Err(ChatError::RateLimited { retry_after_ms }));
            return;
        }
        self.to_conversation(caller, frame, reply, trace);
    }

    /// A request to an existing conversation: typing is answered at once
    /// (and never again); the rest by the conversation's actor.
    fn to_conversation(
        &self,
        caller: &Caller,
        frame: ClientFrame,
        reply: Reply,
        trace: Option<TraceParent>,
    ) {
        let body = match ConversationRequest::from_frame(frame) {
            Ok(body) => body,
            Err(_) => return drop(reply.send(Err(ChatError::Internal("not routable".into())))),
        };
        let reply = if body.expects_reply() {
            Some(reply)
        } else {
            let _ = reply.send(Ok(OkReply::default()));
            None
        };
        let mut request = Request::new(caller.user.clone(), caller.conn, body, reply);
        request.trace = trace;
        self.route(request);
    }

    /// To the conversation's actor if it runs here, else through the Router
    /// (which starts it, or forwards to the owner on another node).
    fn route(&self, request: Request) {
        let Err(request) = self.running.cast(request) else {
            return;
        };
        if let Err(ractor::MessagingErr::SendErr(RouterMsg::Route(request))) =
            self.router.cast(RouterMsg::Route(request))
        {
            request.fail(ChatError::Unavailable("node is shutting down".into()));
        }
    }
}
