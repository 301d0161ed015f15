//! The conversation actors running on this node, and the count that makes
//! stopping an idle one safe.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use chat_protocol::ConversationId;
use ractor::{ActorId, ActorRef};

use crate::maps::IdMap;
use crate::msg::{ConversationMsg, Request};

/// The conversation actors running on this node, shared so that a request
/// reaches a running actor straight from a connection's task, without a pass
/// through the Router. The Router alone starts, stops and removes them.
///
/// Stopping an idle actor stays safe: every cast is counted before it is
/// made, under the read lock, and the Router stops an actor only under the
/// write lock and only when the count equals the messages the actor reported
/// handled, so nothing is ever left in a stopping actor's mailbox.
#[derive(Default)]
pub struct RunningConversations {
    running: RwLock<IdMap<ConversationId, Running>>,
}

struct Running {
    actor: ActorRef<ConversationMsg>,
    forwarded: AtomicU64,
}

impl RunningConversations {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, IdMap<ConversationId, Running>> {
        self.running.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, IdMap<ConversationId, Running>> {
        self.running.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Casts `request` to the actor of its conversation if one runs here;
    /// hands it back otherwise (the Router then decides where it goes).
    #[allow(clippy::result_large_err)] // moved, not copied: Err hands the request back
    pub fn cast(&self, request: Request) -> Result<(), Request> {
        let running = self.read();
        let Some(r) = running.get(request.body.conversation()) else {
            return Err(request);
        };
        r.forwarded.fetch_add(1, Ordering::AcqRel);
        match r.actor.cast(ConversationMsg::Request(request)) {
            Ok(()) => Ok(()),
            Err(ractor::MessagingErr::SendErr(ConversationMsg::Request(back))) => {
                r.forwarded.fetch_sub(1, Ordering::AcqRel);
                Err(back)
            }
            // The message is gone with its reply port: the client is told
            // the request was lost and retries.
            Err(_) => Ok(()),
        }
    }

    pub(crate) fn contains(&self, conversation: &ConversationId) -> bool {
        self.read().contains_key(conversation)
    }

    pub(crate) fn insert(&self, conversation: ConversationId, actor: ActorRef<ConversationMsg>) {
        self.write().insert(
            conversation,
            Running {
                actor,
                forwarded: AtomicU64::new(0),
            },
        );
    }

    pub(crate) fn remove(
        &self,
        conversation: &ConversationId,
    ) -> Option<ActorRef<ConversationMsg>> {
        self.write().remove(conversation).map(|r| r.actor)
    }

    /// Removes the actor `actor` of `conversation` if every message cast to
    /// it is among the `handled` it reported.
    pub(crate) fn remove_if_idle(
        &self,
        conversation: &ConversationId,
        actor: ActorId,
        handled: u64,
    ) -> Option<ActorRef<ConversationMsg>> {
        let mut running = self.write();
        let r = running.get(conversation)?;
        if r.actor.get_id() != actor || r.forwarded.load(Ordering::Acquire) != handled {
            return None;
        }
        running.remove(conversation).map(|r| r.actor)
    }

    /// Removes the actor `actor`, which stopped.
    pub(crate) fn remove_actor(&self, actor: ActorId) {
        self.write().retain(|_, r| r.actor.get_id() != actor);
    }

    /// Removes every actor, with its conversation.
    pub(crate) fn drain(&self) -> Vec<(ConversationId, ActorRef<ConversationMsg>)> {
        self.write().drain().map(|(c, r)| (c, r.actor)).collect()
    }

    /// The conversations with an actor here.
    pub(crate) fn ids(&self) -> Vec<ConversationId> {
        self.read().keys().cloned().collect()
    }

    /// How many actors run.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether none runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_protocol::request::ConversationRequest;
    use chat_protocol::UserId;

    /// Stands in for a conversation actor: takes any message.
    struct Sink;

    impl ractor::Actor for Sink {
        type Msg = ConversationMsg;
        type State = ();
        type Arguments = ();

        async fn pre_start(
            &self,
            _: ActorRef<ConversationMsg>,
            _: (),
        ) -> Result<(), ractor::ActorProcessingErr> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn an_actor_is_removed_as_idle_only_when_it_handled_every_cast() {
        let table = RunningConversations::default();
        let c = ConversationId::new("g:1").unwrap();
        let typing = || {
            Request::new(
                UserId::new("u").unwrap(),
                None,
                ConversationRequest::Typing {
                    conversation: c.clone(),
                    active: true,
                },
                None,
            )
        };
        assert!(table.cast(typing()).is_err(), "none runs");
        let (a, _) = ractor::Actor::spawn(None, Sink, ()).await.unwrap();
        table.insert(c.clone(), a.clone());
        for _ in 0..2 {
            assert!(table.cast(typing()).is_ok());
        }
        assert!(
            table.remove_if_idle(&c, a.get_id(), 1).is_none(),
            "a cast it has not handled yet keeps it"
        );
        assert!(table.remove_if_idle(&c, a.get_id(), 2).is_some());
        assert!(table.cast(typing()).is_err(), "removed");

        // A cast that fails (the actor stopped) hands the message back and
        // is not counted.
        let (b, handle) = ractor::Actor::spawn(None, Sink, ()).await.unwrap();
        table.insert(c.clone(), b.clone());
        b.stop(None);
        handle.await.unwrap();
        assert!(table.cast(typing()).is_err());
        assert!(table.remove_if_idle(&c, b.get_id(), 0).is_some());
    }
}
