//! A message's life after its send: edits, deletes and reactions, and
//! `changes`, the catch-up on them.
//!
//! Every change takes the conversation's next revision (`rev`), like a send,
//! and goes through the same single slot for writes: a batch of sends or a
//! batch of updates is in flight, never both, and batches land in revision
//! order. That is what lets `changes` read the store up to the highest
//! revision whose writes have all finished (`durable_rev`) and know that
//! every index entry below it is final (see `MessageStore::changes`).
//!
//! An update reads the message's current state (from the tail, else from
//! the store) in the task that writes it, so the actor does not wait on a
//! read; several updates of one message in a batch apply in order and the
//! store gets the last state once.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chat_protocol::{
    now_ms, parse_mentions, ConversationId, Message, MessageId, OkReply, Reaction, ServerFrame,
    SharedFrame, UserId,
};
use chat_storage::{MessageStore, StoreError};
use ractor::ActorRef;

// The update's types are in a leaf, so that the actor's state (in
// conversation.rs, which this file extends) can hold them without naming
// this file back.
mod update;

use super::{ok, ConversationState, InFlight};
use crate::conn::{ConnId, Delivery};
use crate::error::ChatError;
use crate::leases::NodeLeases;
use crate::media::shown;
use crate::msg::{answer, ConversationMsg, Reply, UpdatesDone};
use update::UpdateSpec;
pub(super) use update::{Change, PendingUpdate};

/// Applies `spec` to `state` at revision `rev`: whether it changed anything,
/// or why it may not.
fn apply(state: &mut Message, spec: &UpdateSpec, rev: u64, now: u64) -> Result<bool, ChatError> {
    let deleted = || ChatError::BadRequest(format!("message {} is deleted", state.id.0));
    match &spec.change {
        Change::Edit { body, mentions } => {
            if state.sender != spec.user {
                return Err(ChatError::Forbidden(
                    "only its sender edits a message".into(),
                ));
            }
            if state.deleted {
                return Err(deleted());
            }
            if &state.body == body {
                return Ok(false);
            }
            state.body.clone_from(body);
            state.mentions.clone_from(mentions);
            state.edited_at = Some(now);
            state.rev = rev;
            Ok(true)
        }
        Change::Delete => {
            if state.sender != spec.user && !spec.moderates {
                return Err(ChatError::Forbidden(
                    "only its sender, an owner or an admin deletes a message".into(),
                ));
            }
            if state.deleted {
                return Ok(false);
            }
            state.delete(rev);
            Ok(true)
        }
        Change::React { emoji, on } => {
            if state.deleted {
                return Err(deleted());
            }
            let changed = state
                .react(&spec.user, emoji, *on)
                .map_err(|e| ChatError::BadRequest(e.to_string()))?;
            if changed {
                state.rev = rev;
            }
            Ok(changed)
        }
    }
}

/// Applies a batch of updates (the first at `first_rev`, each next one a
/// revision up) and stores the last state of each message changed, in
/// revision order; what happened to each update.
async fn write_updates(
    store: Arc<dyn MessageStore>,
    leases: Arc<NodeLeases>,
    fenced: Result<Option<u64>, StoreError>,
    conversation: ConversationId,
    mut states: HashMap<MessageId, Message>,
    specs: Vec<UpdateSpec>,
    first_rev: u64,
) -> UpdatesDone {
    let incarnation = match fenced {
        Ok(incarnation) => incarnation,
        Err(e) => {
            let err = ChatError::from(e);
            return UpdatesDone {
                outcomes: specs.iter().map(|_| Err(err.clone())).collect(),
                written: Vec::new(),
                last_rev: first_rev - 1,
                deleted: Vec::new(),
            };
        }
    };
    let now = now_ms();
    let mut before: HashMap<MessageId, Message> = HashMap::new();
    let mut outcomes = Vec::with_capacity(specs.len());
    // Only an update that changes something takes a revision: a refused
    // one, a reaction already there or an edit to the same body would show
    // every member a gap to catch up on for nothing.
    let mut rev = first_rev;
    for spec in &specs {
        let state = match states.entry(spec.target) {
            Entry::Occupied(held) => held.into_mut(),
            Entry::Vacant(slot) => match store.message(&conversation, spec.target).await {
                Ok(Some(m)) => slot.insert(m),
                Ok(None) => {
                    outcomes.push(Err(ChatError::NotFound(format!(
                        "no message {} in {conversation}",
                        spec.target.0
                    ))));
                    continue;
                }
                Err(e) => {
                    outcomes.push(Err(e.into()));
                    continue;
                }
            },
        };
        before.entry(spec.target).or_insert_with(|| state.clone());
        let mut next = state.clone();
        outcomes.push(apply(&mut next, spec, rev, now).map(|changed| {
            if changed {
                *state = next;
                rev += 1;
            }
            (state.clone(), changed)
        }));
    }
    let last_rev = rev - 1;
    let mut finals: Vec<&Message> = states
        .values()
        .filter(|m| before.get(&m.id).is_some_and(|b| b.rev != m.rev))
        .collect();
    finals.sort_by_key(|m| m.rev);
    // One after another, in revision order, and nothing more after a
    // failure: a later revision never lands before an earlier one (see the
    // module's doc).
    let mut written = Vec::with_capacity(finals.len());
    let mut unwritten: HashMap<MessageId, ChatError> = HashMap::new();
    for state in finals {
        if let Some(e) = unwritten.values().next().cloned() {
            unwritten.insert(state.id, e);
            continue;
        }
        match leases
            .guarded(incarnation, store.update_message(state))
            .await
        {
            Ok(()) => written.push(state.clone()),
            Err(e) => {
                unwritten.insert(state.id, e.into());
            }
        }
    }
    for (spec, outcome) in specs.iter().zip(outcomes.iter_mut()) {
        if let (Ok(_), Some(e)) = (&*outcome, unwritten.get(&spec.target)) {
            *outcome = Err(e.clone());
        }
    }
    let deleted = written
        .iter()
        .filter(|m| m.deleted)
        .filter_map(|m| before.remove(&m.id))
        .filter(|b| !b.deleted && !b.attachments.is_empty())
        .collect();
    UpdatesDone {
        deleted,
        outcomes,
        written,
        last_rev,
    }
}

/// What members are sent of a change: a reaction's own state (a toggle
/// would otherwise send every member the whole message, body and all), or
/// the whole message after an edit or a delete.
fn event_of(spec: &UpdateSpec, shown: &Message) -> ServerFrame {
    let Change::React { emoji, on } = &spec.change else {
        return ServerFrame::MessageUpdated {
            message: shown.clone(),
        };
    };
    let reaction = (shown.reactions.iter())
        .find(|r| &r.emoji == emoji)
        .cloned()
        .unwrap_or_else(|| Reaction {
            emoji: emoji.clone(),
            count: 0,
            users: Vec::new(),
        });
    ServerFrame::Reaction {
        conversation: shown.conversation.clone(),
        message: shown.id,
        rev: shown.rev,
        user: spec.user.clone(),
        on: *on,
        reaction,
    }
}

impl ConversationState {
    /// An `edit`, `delete` or `react`: checked for membership here, queued
    /// for the next batch of updates.
    #[allow(clippy::too_many_arguments)] // one call site per kind of change
    pub(super) fn update(
        &mut self,
        myself: &ActorRef<ConversationMsg>,
        user: UserId,
        target: MessageId,
        change: Change,
        origin: Option<ConnId>,
        reply: Option<Reply>,
        operator: bool,
    ) {
        // An operator (a node acting for an admin) moderates without being
        // a member.
        let moderates = match self.member_role(&user) {
            Ok(role) => role.moderates() || operator,
            Err(_) if operator && self.conversation.is_some() => true,
            Err(e) => return answer(reply, Err(e)),
        };
        let change = match change {
            Change::Edit { body, .. } => {
                let mentions = self.mentions_in(&body, &user);
                Change::Edit { body, mentions }
            }
            other => other,
        };
        self.updates.push(PendingUpdate {
            spec: UpdateSpec {
                user,
                target,
                change,
                moderates,
            },
            origin,
            received: Instant::now(),
            reply,
        });
        if self.in_flight.is_none() {
            self.start_batch(myself);
        }
    }

    /// The members `body` mentions, its sender aside.
    pub(super) fn mentions_in(&self, body: &str, sender: &UserId) -> Vec<UserId> {
        if !body.contains('@') {
            return Vec::new();
        }
        parse_mentions(body, |name| {
            name != sender.as_str() && self.roles.contains_key(name)
        })
    }

    /// Starts the queued updates as one batch.
    pub(super) fn start_updates(&mut self, myself: &ActorRef<ConversationMsg>) {
        let updates = std::mem::take(&mut self.updates);
        if updates.is_empty() {
            return;
        }
        let mut states = HashMap::new();
        for u in &updates {
            if let Some(m) = self.tail.get(u.spec.target) {
                states.insert(u.spec.target, m.message().clone());
            }
        }
        // Revisions are reserved for every update, and those of updates
        // that change nothing given back when the batch is done (nothing
        // else takes one while it is in flight).
        let first_rev = self.rev + 1;
        self.rev += updates.len() as u64;
        let specs: Vec<UpdateSpec> = updates.iter().map(|u| u.spec.clone()).collect();
        let fenced = self.fence().map(|l| l.and_then(|l| l.incarnation));
        let (store, id, me) = (self.deps.store.clone(), self.id.clone(), myself.clone());
        let leases = self.deps.leases.clone();
        tokio::spawn(async move {
            let done = write_updates(store, leases, fenced, id, states, specs, first_rev).await;
            let _ = me.cast(ConversationMsg::UpdatesWritten(done));
        });
        self.in_flight = Some(InFlight {
            batch: Vec::new(),
            updates,
            started: Instant::now(),
            top_rev: self.rev,
        });
    }

    /// Answers a finished batch of updates and fans the changes out.
    pub(super) fn updates_written(
        &mut self,
        myself: &ActorRef<ConversationMsg>,
        done: UpdatesDone,
    ) {
        let Some(in_flight) = self.in_flight.take() else {
            return;
        };
        // Stored after the lease ran out: not acknowledged (see sends).
        let fenced = self.fence().map_err(ChatError::from);
        debug_assert!(done.last_rev <= self.rev);
        self.rev = done.last_rev;
        for m in done.deleted {
            self.release_attachments(m);
        }
        let mut deliveries = Vec::new();
        for (u, outcome) in in_flight.updates.into_iter().zip(done.outcomes) {
            let outcome = match (&fenced, outcome) {
                (Err(e), Ok(_)) => Err(e.clone()),
                (_, outcome) => outcome,
            };
            match outcome {
                Ok((state, changed)) => {
                    let shown = shown(&*self.deps.media, &state);
                    if changed {
                        self.deps.metrics.messages_updated.inc();
                        self.deps
                            .metrics
                            .observe_send(u.received.elapsed().as_secs_f64());
                        deliveries.push(Delivery {
                            trace: None,
                            frame: Arc::new(SharedFrame::new(event_of(&u.spec, &shown))),
                            skip_conn: u.origin,
                        });
                    }
                    answer(
                        u.reply,
                        Ok(OkReply {
                            message: Some(shown),
                            ..ok()
                        }),
                    );
                }
                Err(e) => answer(u.reply, Err(e)),
            }
        }
        if fenced.is_ok() {
            for m in done.written {
                self.refresh_tail(m);
            }
        }
        self.fan_out(&deliveries, None);
        self.durable_rev = done.last_rev;
        if !self.lease_valid() {
            self.lose_lease("lost while writing");
        }
        if !self.pending.is_empty() || !self.updates.is_empty() {
            self.start_batch(myself);
        }
    }

    /// Puts a message's new state where the tail (and the retry index)
    /// holds the old one.
    fn refresh_tail(&mut self, m: Message) {
        if self.tail.get(m.id).is_some() {
            let m = Arc::new(chat_protocol::HeldMessage::new(m));
            let key = (m.sender.clone(), m.client_msg_id.clone());
            if let Some(super::Known::Acked(held)) = self.known.get_mut(&key) {
                *held = m.clone();
            }
            self.tail.refresh(m);
        }
    }

    /// `changes`: from the store, up to the last revision whose writes have
    /// all finished.
    pub(super) fn changes(
        &self,
        reader: &UserId,
        after_rev: u64,
        limit: u32,
        reply: Option<Reply>,
    ) {
        if let Err(e) = self.member_role(reader) {
            return answer(reply, Err(e));
        }
        if after_rev > self.rev {
            return answer(
                reply,
                Err(ChatError::BadRequest(format!(
                    "after_rev {after_rev} is ahead of the conversation's revision {}",
                    self.rev
                ))),
            );
        }
        let up_to = self.durable_rev;
        if after_rev >= up_to {
            return answer(
                reply,
                Ok(OkReply {
                    messages: Some(Vec::new()),
                    more: Some(false),
                    rev: Some(up_to),
                    ..ok()
                }),
            );
        }
        let (store, id) = (self.deps.store.clone(), self.id.clone());
        let metrics = self.deps.metrics.clone();
        let media = self.deps.media.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let max_bytes = chat_protocol::limits::MAX_PAGE_BYTES;
            let page = store
                .changes(&id, after_rev, up_to, limit as usize, max_bytes)
                .await;
            metrics
                .store_read_latency
                .observe(started.elapsed().as_secs_f64());
            let result = page
                .map(|c| OkReply {
                    messages: Some(c.messages.iter().map(|m| shown(&*media, m)).collect()),
                    more: Some(c.more),
                    rev: Some(up_to),
                    ..ok()
                })
                .map_err(ChatError::from);
            answer(reply, result);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_protocol::{ClientMsgId, MessageKind};

    fn user(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    fn message() -> Message {
        Message {
            attachments: Vec::new(),
            id: MessageId(10),
            conversation: ConversationId::new("c").unwrap(),
            sender: user("author"),
            body: "hi".into(),
            kind: MessageKind::default(),
            ts: 1,
            client_msg_id: ClientMsgId::new("k").unwrap(),
            reply_to: None,
            rev: 1,
            edited_at: None,
            deleted: false,
            reactions: Vec::new(),
            mentions: Vec::new(),
        }
    }

    fn spec(who: &str, change: Change, moderates: bool) -> UpdateSpec {
        UpdateSpec {
            user: user(who),
            target: MessageId(10),
            change,
            moderates,
        }
    }

    fn edit(body: &str) -> Change {
        Change::Edit {
            body: body.into(),
            mentions: Vec::new(),
        }
    }

    #[test]
    fn only_the_sender_edits_and_an_owner_or_admin_may_delete() {
        let mut m = message();
        let e = apply(&mut m, &spec("other", edit("x"), true), 2, 5);
        assert!(matches!(e, Err(ChatError::Forbidden(_))));
        assert_eq!(
            apply(&mut m, &spec("author", edit("x"), false), 2, 5).ok(),
            Some(true)
        );
        assert_eq!((m.rev, m.edited_at, m.body.as_str()), (2, Some(5), "x"));
        assert_eq!(
            apply(&mut m, &spec("author", edit("x"), false), 3, 6).ok(),
            Some(false)
        );
        let e = apply(&mut m, &spec("other", Change::Delete, false), 3, 6);
        assert!(matches!(e, Err(ChatError::Forbidden(_))));
        assert_eq!(
            apply(&mut m, &spec("other", Change::Delete, true), 3, 6).ok(),
            Some(true)
        );
        assert_eq!(
            apply(&mut m, &spec("author", Change::Delete, false), 4, 6).ok(),
            Some(false)
        );
        let e = apply(&mut m, &spec("author", edit("back"), false), 4, 6);
        assert!(
            matches!(e, Err(ChatError::BadRequest(_))),
            "a deleted message stays deleted"
        );
        let react = Change::React {
            emoji: "x".into(),
            on: true,
        };
        let e = apply(&mut m, &spec("author", react, false), 4, 6);
        assert!(matches!(e, Err(ChatError::BadRequest(_))));
        assert_eq!(m.rev, 3);
    }
}
