//! The Router: one per node; finds or starts the actors requests are for.
//!
//! ```text
//!            ┌───────────── Router (supervisor) ─────────────┐
//!  Route ──► │ conversations: id ──► ConversationActor       │
//!  Connect ► │ sessions:      user ─► UserSession            │
//!            └───────────────────────────────────────────────┘
//! ```
//!
//! It is the only sender of requests to conversation actors and of new
//! connections to sessions, which makes stopping idle actors safe: an actor
//! reports how many routed messages it has handled, and the Router stops it
//! only if that equals what it has forwarded, so nothing is ever left in a
//! stopping actor's mailbox. Requests for an actor that died are re-routed to
//! a fresh one. This is the seam where the cluster plugs in: a conversation
//! owned by another node is forwarded to that node's Router.

use std::collections::HashMap;
use std::sync::Arc;

use chat_protocol::{ConversationId, UserId};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::conversation::{ConversationActor, ConversationArgs, ConversationMsg};
use crate::error::ChatError;
use crate::services::Services;
use crate::session::{Connection, SessionArgs, SessionMsg, UserSession};

/// Messages the Router handles.
pub enum RouterMsg {
    /// Deliver `msg` to the conversation's actor, starting it if needed.
    Route {
        /// Which conversation.
        conversation: ConversationId,
        /// The message.
        msg: ConversationMsg,
    },
    /// A conversation actor has been idle; stop it if nothing is on its way.
    ConversationIdle {
        /// Which conversation.
        conversation: ConversationId,
        /// Which actor (a newer one may have replaced it).
        actor: ActorId,
        /// Routed messages it has handled.
        handled: u64,
    },
    /// A connection of `user` opened: attach it to the user's session.
    Connect {
        /// Whose.
        user: UserId,
        /// The connection.
        conn: Connection,
        /// Answered by the session.
        reply: RpcReplyPort<Result<ActorRef<SessionMsg>, ChatError>>,
    },
    /// A session has no connection left; stop it if none is on its way.
    SessionEmpty {
        /// Whose.
        user: UserId,
        /// Which actor.
        actor: ActorId,
        /// Attaches it has seen.
        seen: u64,
    },
    /// Stop every actor, letting in-flight batches finish first; answered
    /// when all have stopped.
    Drain {
        /// Answered when done.
        reply: RpcReplyPort<()>,
    },
}

struct Entry<M> {
    actor: ActorRef<M>,
    forwarded: u64,
}

/// The actor (no data; see [`RouterState`]).
pub struct Router;

/// Everything the Router knows.
pub struct RouterState {
    services: Arc<Services>,
    conversations: HashMap<ConversationId, Entry<ConversationMsg>>,
    sessions: HashMap<UserId, Entry<SessionMsg>>,
    draining: bool,
}

impl Actor for Router {
    type Msg = RouterMsg;
    type State = RouterState;
    type Arguments = Arc<Services>;

    async fn pre_start(
        &self,
        _myself: ActorRef<RouterMsg>,
        services: Arc<Services>,
    ) -> Result<RouterState, ActorProcessingErr> {
        Ok(RouterState {
            services,
            conversations: HashMap::new(),
            sessions: HashMap::new(),
            draining: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<RouterMsg>,
        msg: RouterMsg,
        state: &mut RouterState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RouterMsg::Route { conversation, msg } => {
                if state.draining {
                    msg.fail(ChatError::Unavailable("node is shutting down".into()));
                    return Ok(());
                }
                state.route(&myself, conversation, msg).await;
            }
            RouterMsg::ConversationIdle {
                conversation,
                actor,
                handled,
            } => {
                if let Some(e) = state.conversations.get(&conversation) {
                    if e.actor.get_id() == actor && e.forwarded == handled {
                        if let Some(e) = state.conversations.remove(&conversation) {
                            e.actor.stop(Some("idle".into()));
                        }
                    }
                }
            }
            RouterMsg::Connect { user, conn, reply } => {
                if state.draining {
                    let _ = reply.send(Err(ChatError::Unavailable("node is shutting down".into())));
                    return Ok(());
                }
                state.connect(&myself, user, conn, reply).await;
            }
            RouterMsg::SessionEmpty { user, actor, seen } => {
                if let Some(e) = state.sessions.get(&user) {
                    if e.actor.get_id() == actor && e.forwarded == seen {
                        if let Some(e) = state.sessions.remove(&user) {
                            e.actor.stop(Some("no connections".into()));
                        }
                    }
                }
            }
            RouterMsg::Drain { reply } => {
                state.draining = true;
                let sessions: Vec<_> = state.sessions.drain().map(|(_, e)| e.actor).collect();
                for s in sessions {
                    let _ = s.stop_and_wait(Some("node draining".into()), None).await;
                }
                // drain_and_wait lets every queued message (and so every
                // batch in flight) be handled before the actor stops.
                let convs: Vec<_> = state.conversations.drain().map(|(_, e)| e.actor).collect();
                for c in convs {
                    let _ = c
                        .drain_and_wait(Some(std::time::Duration::from_secs(10)))
                        .await;
                }
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<RouterMsg>,
        evt: SupervisionEvent,
        state: &mut RouterState,
    ) -> Result<(), ActorProcessingErr> {
        // A child that stopped or failed leaves the tables, so the next
        // request starts a fresh one (which reloads from the store).
        let dead = match &evt {
            SupervisionEvent::ActorTerminated(cell, _, _) => Some(cell.get_id()),
            SupervisionEvent::ActorFailed(cell, err) => {
                tracing::error!(actor = %cell.get_id(), error = %err, "actor failed");
                Some(cell.get_id())
            }
            _ => None,
        };
        if let Some(id) = dead {
            state.conversations.retain(|_, e| e.actor.get_id() != id);
            state.sessions.retain(|_, e| e.actor.get_id() != id);
        }
        Ok(())
    }
}

impl RouterState {
    async fn route(
        &mut self,
        myself: &ActorRef<RouterMsg>,
        conversation: ConversationId,
        msg: ConversationMsg,
    ) {
        let mut msg = msg;
        // Two tries: the actor found may have died since its last report.
        for _ in 0..2 {
            if !self.conversations.contains_key(&conversation) {
                match self.spawn_conversation(myself, &conversation).await {
                    Ok(actor) => {
                        self.conversations.insert(
                            conversation.clone(),
                            Entry {
                                actor,
                                forwarded: 0,
                            },
                        );
                    }
                    Err(e) => {
                        msg.fail(ChatError::Internal(format!(
                            "cannot start conversation: {e}"
                        )));
                        return;
                    }
                }
            }
            let Some(entry) = self.conversations.get_mut(&conversation) else {
                break;
            };
            match entry.actor.cast(msg) {
                Ok(()) => {
                    entry.forwarded += 1;
                    return;
                }
                Err(ractor::MessagingErr::SendErr(back)) => {
                    self.conversations.remove(&conversation);
                    msg = back;
                }
                Err(_) => {
                    self.conversations.remove(&conversation);
                    return;
                }
            }
        }
        msg.fail(ChatError::Unavailable(
            "conversation unavailable, retry".into(),
        ));
    }

    async fn spawn_conversation(
        &self,
        myself: &ActorRef<RouterMsg>,
        id: &ConversationId,
    ) -> Result<ActorRef<ConversationMsg>, ractor::SpawnErr> {
        let args = ConversationArgs {
            id: id.clone(),
            services: self.services.clone(),
            router: myself.clone(),
        };
        let (actor, _) =
            Actor::spawn_linked(None, ConversationActor, args, myself.get_cell()).await?;
        Ok(actor)
    }

    async fn connect(
        &mut self,
        myself: &ActorRef<RouterMsg>,
        user: UserId,
        conn: Connection,
        reply: RpcReplyPort<Result<ActorRef<SessionMsg>, ChatError>>,
    ) {
        let (mut conn, mut reply) = (conn, reply);
        for _ in 0..2 {
            if !self.sessions.contains_key(&user) {
                let args = SessionArgs {
                    user: user.clone(),
                    services: self.services.clone(),
                    router: myself.clone(),
                };
                match Actor::spawn_linked(None, UserSession, args, myself.get_cell()).await {
                    Ok((actor, _)) => {
                        self.sessions.insert(
                            user.clone(),
                            Entry {
                                actor,
                                forwarded: 0,
                            },
                        );
                    }
                    Err(e) => {
                        let _ = reply.send(Err(ChatError::Internal(format!(
                            "cannot start session: {e}"
                        ))));
                        return;
                    }
                }
            }
            let Some(entry) = self.sessions.get_mut(&user) else {
                break;
            };
            match entry.actor.cast(SessionMsg::Attach { conn, reply }) {
                Ok(()) => {
                    entry.forwarded += 1;
                    return;
                }
                Err(ractor::MessagingErr::SendErr(SessionMsg::Attach { conn: c, reply: r })) => {
                    self.sessions.remove(&user);
                    conn = c;
                    reply = r;
                }
                Err(_) => {
                    self.sessions.remove(&user);
                    return;
                }
            }
        }
        let _ = reply.send(Err(ChatError::Unavailable(
            "session unavailable, retry".into(),
        )));
    }
}
