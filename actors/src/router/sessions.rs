//! The Router's sessions: which users have one on this node, awake or
//! asleep, the messages waiting for one that is falling asleep, and the
//! empty ones sleeping out their linger.
//!
//! A session's actor falls asleep by draining itself (see
//! [`crate::session`]): messages already in its mailbox are handled, later
//! ones are refused and come here ([`RouterMsg::ToSession`], or a refused
//! cast of the Router's own). They wait, in order, until the actor's stop
//! reaches the Router with its state; the session then sleeps, or, with
//! messages waiting, wakes at once and gets them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use chat_protocol::UserId;
use ractor::actor::messages::BoxedState;
use ractor::{Actor, ActorId, ActorRef, MessagingErr};

use crate::maps::IdMap;
use crate::msg::{RouterMsg, SessionMsg};
use crate::session::{Asleep, SessionArgs, SessionDeps, Stopped, UserSession};

/// The sessions of this node's connected users.
#[derive(Default)]
pub(super) struct Sessions {
    map: IdMap<UserId, Entry>,
    /// Empty sessions asleep, in the order they emptied (one linger for
    /// all, so deadlines come in order): when each ends, unless an attach
    /// reached it since (its `forwarded` count moved on).
    lingering: VecDeque<Lingering>,
}

struct Lingering {
    until: Instant,
    user: UserId,
    forwarded: u64,
}

struct Entry {
    /// Attaches handed to the session (it counts those it saw, so an empty
    /// session is stopped only if none is on its way).
    forwarded: u64,
    life: Life,
    /// The `forwarded` count of its entry in the lingering queue, if one
    /// waits there (an older entry of the user's is stale).
    queued: Option<u64>,
}

enum Life {
    Awake {
        actor: ActorRef<SessionMsg>,
        /// Refused by the actor while it falls asleep, in arrival order.
        parked: Vec<SessionMsg>,
    },
    Asleep(Asleep),
}

impl Sessions {
    /// Users with a session here.
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// Hands `msg` to `user`'s session, starting one if there is none (a
    /// first connection) and waking it if it sleeps. Without a session,
    /// any message but `Attach` is dropped (its reply port with it).
    pub(super) async fn send(
        &mut self,
        router: &ActorRef<RouterMsg>,
        deps: &Arc<SessionDeps>,
        user: UserId,
        msg: SessionMsg,
    ) {
        if !self.map.contains_key(&user) {
            let SessionMsg::Attach { .. } = msg else {
                return;
            };
            let args = SessionArgs {
                user: user.clone(),
                deps: deps.clone(),
                router: router.clone(),
                woken: None,
            };
            match Actor::spawn_linked(None, UserSession, args, router.get_cell()).await {
                Ok((actor, _)) => {
                    let life = Life::Awake {
                        actor,
                        parked: Vec::new(),
                    };
                    self.map.insert(
                        user.clone(),
                        Entry {
                            forwarded: 0,
                            life,
                            queued: None,
                        },
                    );
                }
                Err(e) => {
                    if let SessionMsg::Attach { reply, .. } = msg {
                        let _ = reply.send(Err(crate::ChatError::Internal(format!(
                            "cannot start session: {e}"
                        ))));
                    }
                    return;
                }
            }
        }
        let msg = match (msg, self.map.get_mut(&user)) {
            (
                SessionMsg::Attach { conn, reply },
                Some(Entry {
                    forwarded,
                    life: Life::Asleep(asleep),
                    ..
                }),
            ) => {
                // Counted as handed to it, so a linger that started
                // before this attach does not end the session.
                *forwarded += 1;
                let _ = reply.send(asleep.attach(conn));
                return;
            }
            (
                SessionMsg::Detach { conn },
                Some(Entry {
                    forwarded,
                    life: Life::Asleep(asleep),
                    ..
                }),
            ) => {
                // As for an attach: the actor would wake only to do this.
                if asleep.detach(conn) {
                    let (forwarded, linger) = (*forwarded, asleep.linger());
                    self.emptied(&user, forwarded, linger);
                }
                return;
            }
            (msg, _) => msg,
        };
        if matches!(self.map.get(&user).map(|e| &e.life), Some(Life::Asleep(_))) {
            self.wake(router, &user, Vec::new()).await;
        }
        let Some(entry) = self.map.get_mut(&user) else {
            return;
        };
        entry.deliver(msg);
    }

    /// `user`'s session `actor` has no connection left, having seen `seen`
    /// attaches: stopped, unless another is on its way.
    pub(super) fn empty(&mut self, user: &UserId, actor: ActorId, seen: u64) {
        let Some(e) = self.map.get(user) else { return };
        let Life::Awake { actor: a, parked } = &e.life else {
            return;
        };
        if a.get_id() == actor && e.forwarded == seen && parked.is_empty() {
            a.stop(Some("no connections".into()));
            self.map.remove(user);
        }
    }

    /// Actor `id` stopped (`state`: what it left, if it stopped cleanly).
    /// A session that fell asleep sleeps, or wakes at once for the messages
    /// that waited; one that ended leaves the table. While the node drains,
    /// a session that fell asleep ends instead.
    pub(super) async fn stopped(
        &mut self,
        router: &ActorRef<RouterMsg>,
        id: ActorId,
        state: Option<BoxedState>,
        draining: bool,
    ) {
        let is_it =
            |e: &Entry| matches!(&e.life, Life::Awake { actor, .. } if actor.get_id() == id);
        let asleep = match Stopped::of(state) {
            Stopped::Asleep(asleep) => asleep,
            Stopped::Ended(user) => {
                // Usually removed already (an empty session is stopped by
                // the Router); this one stopped by itself.
                if self.map.get(&user).is_some_and(is_it) {
                    self.map.remove(&user);
                }
                return;
            }
            // A conversation actor: most stops.
            Stopped::Other => return,
            Stopped::Unknown => {
                // Killed or failed (rare): which session, if any, is not
                // known without a scan.
                self.map.retain(|_, e| !is_it(e));
                return;
            }
        };
        let user = asleep.user().clone();
        let parked = match self.map.get_mut(&user) {
            Some(Entry {
                life: Life::Awake { actor, parked },
                ..
            }) if actor.get_id() == id && !draining => std::mem::take(parked),
            _ => {
                // Not this node's session any more (or the node stops).
                asleep.end();
                return;
            }
        };
        let entry = self.map.get_mut(&user).expect("matched above");
        if parked.is_empty() && asleep.is_empty() {
            // Its last connection left. Every attach handed to it was
            // handled (those it refused are parked): it sleeps out its
            // linger, or without one ends now (it told the Router, but
            // that word may come after this).
            let linger = asleep.linger();
            entry.life = Life::Asleep(asleep);
            let forwarded = entry.forwarded;
            self.emptied(&user, forwarded, linger);
            return;
        }
        let wake = !parked.is_empty() || !asleep.may_sleep();
        entry.life = Life::Asleep(asleep);
        if wake {
            self.wake(router, &user, parked).await;
        }
    }

    /// `user`'s sleeping session has no connection left, having been
    /// handed `forwarded` attaches: it sleeps out `linger`, or ends now.
    fn emptied(&mut self, user: &UserId, forwarded: u64, linger: std::time::Duration) {
        if !linger.is_zero() {
            let Some(entry) = self.map.get_mut(user) else {
                return;
            };
            if entry.queued == Some(forwarded) {
                // Woken while it lingered (not by an attach) and empty
                // again: its first deadline stands.
                return;
            }
            entry.queued = Some(forwarded);
            self.lingering.push_back(Lingering {
                until: Instant::now() + linger,
                user: user.clone(),
                forwarded,
            });
            let map = &self.map;
            compact(&mut self.lingering, map.len(), |l| {
                map.get(&l.user)
                    .is_some_and(|e| e.queued == Some(l.forwarded))
            });
        } else if let Some(Entry {
            life: Life::Asleep(asleep),
            ..
        }) = self.map.remove(user)
        {
            asleep.end();
        }
    }

    /// Ends the empty sessions whose linger is over, unless a connection
    /// came since (it woke them: they are awake, or asleep with it).
    pub(super) fn end_lingered(&mut self, now: Instant) {
        while let Some(l) = self.lingering.front() {
            if l.until > now {
                return;
            }
            let Some(l) = self.lingering.pop_front() else {
                return;
            };
            let Some(e) = self.map.get_mut(&l.user) else {
                continue;
            };
            if e.queued != Some(l.forwarded) {
                // Stale: the user's session emptied again since, and
                // waits behind this under a later deadline.
                continue;
            }
            e.queued = None;
            let over =
                e.forwarded == l.forwarded && matches!(&e.life, Life::Asleep(a) if a.is_empty());
            if over {
                if let Some(Entry {
                    life: Life::Asleep(asleep),
                    ..
                }) = self.map.remove(&l.user)
                {
                    asleep.end();
                }
            }
        }
    }

    /// Stops every session (the node drains): awake ones as their actor
    /// stops, sleeping ones without waking.
    pub(super) async fn drain(&mut self) {
        self.lingering.clear();
        for (_, e) in self.map.drain() {
            match e.life {
                Life::Awake { actor, .. } => {
                    let _ = actor
                        .stop_and_wait(Some("node draining".into()), None)
                        .await;
                }
                Life::Asleep(asleep) => asleep.end(),
            }
        }
    }

    /// Starts `user`'s sleeping session again and hands it `parked`.
    async fn wake(&mut self, router: &ActorRef<RouterMsg>, user: &UserId, parked: Vec<SessionMsg>) {
        let (forwarded, queued, asleep) = match self.map.remove(user) {
            Some(Entry {
                forwarded,
                life: Life::Asleep(asleep),
                queued,
            }) => (forwarded, queued, asleep),
            Some(awake) => {
                self.map.insert(user.clone(), awake);
                return;
            }
            None => return,
        };
        let args = SessionArgs {
            user: user.clone(),
            deps: asleep.deps(),
            router: router.clone(),
            woken: Some(asleep),
        };
        match Actor::spawn_linked(None, UserSession, args, router.get_cell()).await {
            Ok((actor, _)) => {
                let life = Life::Awake {
                    actor,
                    parked: Vec::new(),
                };
                let entry = self.map.entry(user.clone()).or_insert(Entry {
                    forwarded,
                    life,
                    // A lingering session woken by another message keeps
                    // its place (and deadline) in the queue.
                    queued,
                });
                for msg in parked {
                    entry.deliver(msg);
                }
            }
            Err(e) => {
                // Only when the Router itself stops: the node is going.
                tracing::error!(%user, error = %e, "cannot wake a session");
            }
        }
    }
}

/// Drops the stale entries of `queue` once it holds more than twice the
/// `live` sessions (and a margin): each time a session empties again after
/// an attach its earlier entry goes stale, and a client flapping its
/// connection would otherwise grow the queue by one entry per cycle for a
/// whole linger. Amortized O(1) a push; what is left is at most one entry
/// per session.
fn compact(queue: &mut VecDeque<Lingering>, live: usize, valid: impl Fn(&Lingering) -> bool) {
    if queue.len() > 2 * live + 64 {
        queue.retain(valid);
    }
}

impl Entry {
    /// Casts `msg` to the awake actor, behind any message already waiting;
    /// one the actor refuses (it is falling asleep) waits.
    fn deliver(&mut self, msg: SessionMsg) {
        let Life::Awake { actor, parked } = &mut self.life else {
            return;
        };
        if !parked.is_empty() {
            parked.push(msg);
            return;
        }
        let attach = matches!(msg, SessionMsg::Attach { .. });
        match actor.cast(msg) {
            Ok(()) => self.forwarded += u64::from(attach),
            Err(MessagingErr::SendErr(msg)) => parked.push(msg),
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flapping_client_leaves_at_most_one_entry_per_session_in_the_queue() {
        let users: Vec<UserId> = (0..10)
            .map(|i| UserId::new(&format!("u{i}")).expect("user id"))
            .collect();
        let mut queue = VecDeque::new();
        // Each user flaps 10,000 times: every cycle an attach (the count
        // moves on) and an empty session queued again.
        let mut latest = std::collections::HashMap::new();
        let mut longest = 0;
        for cycle in 0..10_000u64 {
            for u in &users {
                latest.insert(u.clone(), cycle);
                queue.push_back(Lingering {
                    until: Instant::now(),
                    user: u.clone(),
                    forwarded: cycle,
                });
                compact(&mut queue, users.len(), |l| {
                    latest.get(&l.user) == Some(&l.forwarded)
                });
                longest = longest.max(queue.len());
            }
        }
        assert!(longest <= 2 * users.len() + 65, "{longest}");
        // Of what is left, one entry per user is live: its latest.
        queue.retain(|l| latest.get(&l.user) == Some(&l.forwarded));
        assert_eq!(queue.len(), users.len());
    }
}
