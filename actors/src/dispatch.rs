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
//! conversation's id), [`conversation_list`] (the `conversations` list), [`watch`] (presence
//! watches).

use chat_protocol::request::ConversationRequest;
use chat_protocol::{ClientFrame, OkReply, UserId};

use crate::error::ChatError;
use crate::msg::{Reply, Request};
use crate::telemetry::TraceParent;

mod conversation_list;
mod create;
mod dispatcher;
mod visibility;
mod watch;

// The dispatcher's state and the presence setting are leaves that the
// handlers of each kind use, so that they need not import this file, which
// calls them.
pub use dispatcher::{Caller, Dispatch};
pub use visibility::Visibility;

impl Dispatch {
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
            ClientFrame::Conversations { .. } => {
                conversation_list::list(self, caller, frame, reply)
            }
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

    /// A request the node makes itself for an operator (an admin): sent as
    /// is, with no frame behind it.
    pub fn operator(&self, admin: UserId, body: ConversationRequest, reply: Reply) {
        self.route(Request::new(admin, None, body, Some(reply)));
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
}
