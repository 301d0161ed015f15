//! Conversation actors told to retire (their conversation moved to another
//! node, or they must reload from the store) that have not stopped yet.
//!
//! A retiring actor answers what it holds, finishes the batch it has in
//! flight and stops. A second actor for the conversation started meanwhile
//! would write beside it: on a shared store both live under this node's
//! lease, and a node may take its own claim again. So requests for a
//! retiring conversation wait here until its actor has stopped, then are
//! routed as usual (a fresh actor, which reloads from the store).

use std::collections::HashMap;

use chat_protocol::ConversationId;
use ractor::{ActorId, ActorRef};

use crate::error::ChatError;
use crate::msg::{ConversationMsg, Request};

/// Requests held for one retiring conversation; past this they are
/// answered `unavailable` (the client retries). An actor stops once its
/// batch in flight is written, so this is a burst's worth of requests.
const MAX_HELD: usize = 1024;

/// The retiring actors, and the requests waiting for each to stop.
#[derive(Default)]
pub(super) struct Retiring {
    held: HashMap<ConversationId, Held>,
    by_actor: HashMap<ActorId, ConversationId>,
}

struct Held {
    actor: ActorId,
    requests: Vec<Request>,
}

impl Retiring {
    /// Tells `actor`, `conversation`'s actor here (already out of the
    /// running table), to retire; requests for the conversation wait for
    /// it to stop.
    pub(super) fn retire(
        &mut self,
        conversation: ConversationId,
        actor: &ActorRef<ConversationMsg>,
    ) {
        if actor.cast(ConversationMsg::Retire).is_err() {
            // Stopped already: nothing to wait for.
            return;
        }
        let id = actor.get_id();
        self.by_actor.insert(id, conversation.clone());
        let held = self.held.entry(conversation).or_insert_with(|| Held {
            actor: id,
            requests: Vec::new(),
        });
        if held.actor != id {
            self.by_actor.remove(&held.actor);
            held.actor = id;
        }
    }

    /// Keeps `request` while its conversation's actor retires; gives it
    /// back when none does.
    pub(super) fn hold(&mut self, request: Request) -> Option<Request> {
        let Some(held) = self.held.get_mut(request.body.conversation()) else {
            return Some(request);
        };
        if held.requests.len() < MAX_HELD {
            held.requests.push(request);
        } else {
            request.fail(ChatError::Unavailable(
                "conversation is moving, retry".into(),
            ));
        }
        None
    }

    /// `actor` stopped: if it was retiring, its conversation and the
    /// requests that waited for it, in the order they came.
    pub(super) fn stopped(&mut self, actor: ActorId) -> Option<(ConversationId, Vec<Request>)> {
        let conversation = self.by_actor.remove(&actor)?;
        let held = self.held.remove(&conversation)?;
        Some((conversation, held.requests))
    }
}
