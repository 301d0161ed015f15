//! Fan-out: handing a conversation's events to the connections of the
//! members who listen, here and on other nodes.
//!
//! ```text
//!  ConversationActor ──Fanout──► LocalSessions (local connections' queues)
//!                          └───► Cluster::deliver (one message per listening node)
//!  peer's Router ──PeerDelivery──► NodeFanout::from_peer ──► LocalSessions
//! ```
//!
//! The conversation actor sees only the [`Fanout`] trait, so its unit tests
//! drive it with a recording stand-in; [`NodeFanout`] is the node's, over
//! the interest table, the [`LocalSessions`] of local sessions and the cluster.

use std::sync::{Arc, PoisonError, RwLock};

use chat_protocol::peer::{Audience, PeerDelivery};
use chat_protocol::{ConversationId, ServerFrame, SharedFrame, UserId};
use ractor::ActorId;

use crate::cluster::Cluster;
use crate::conn::{Connection, Delivery};
use crate::interest::Interest;
use crate::maps::IdMap;
use crate::metrics::Metrics;
use crate::telemetry::{Span, TraceParent};

/// The outbound queues of a node's connections at one moment.
#[derive(Debug, Default, Clone, Copy)]
pub struct QueueDepths {
    /// Frames queued, all connections.
    pub frames: usize,
    /// Bytes queued, all connections.
    pub bytes: usize,
    /// The longest queue, in frames.
    pub max_frames: usize,
}

/// Local sessions by user, with their connections.
///
/// Events are pushed from here straight into the connections' outbound
/// queues, not through the session actor: a fan-out to G members costs G
/// queue pushes, not G actor messages and G more task wake-ups. The session
/// keeps the list in step as connections attach and detach.
#[derive(Default)]
pub struct LocalSessions {
    sessions: RwLock<IdMap<UserId, Local>>,
}

struct Local {
    /// Its actor (the last one, while it sleeps).
    session: ActorId,
    conns: Arc<[Connection]>,
}

impl LocalSessions {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, IdMap<UserId, Local>> {
        self.sessions.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, IdMap<UserId, Local>> {
        self.sessions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The session of `user` on this node.
    pub fn get(&self, user: &UserId) -> Option<ActorId> {
        self.read().get(user).map(|l| l.session)
    }

    /// Queues `events` on every connection of each of `users` here, except
    /// an event's `skip_conn`; returns how many frames were queued.
    pub fn deliver<'a>(
        &self,
        users: impl IntoIterator<Item = &'a UserId>,
        events: &[Delivery],
    ) -> u64 {
        let map = self.read();
        let mut n = 0;
        for u in users {
            let Some(local) = map.get(u) else { continue };
            for c in local.conns.iter() {
                for d in events {
                    if d.skip_conn != Some(c.id) && c.push_event(&d.frame) {
                        n += 1;
                    }
                }
            }
        }
        n
    }

    pub(crate) fn insert(&self, user: UserId, session: ActorId) {
        self.write().insert(
            user,
            Local {
                session,
                conns: Arc::from([]),
            },
        );
    }

    /// `user`'s session woke as `session`; its connections stay.
    pub(crate) fn rebind(&self, user: &UserId, session: ActorId) {
        if let Some(l) = self.write().get_mut(user) {
            l.session = session;
        }
    }

    /// The connections of `user`'s session `session` are now `conns`.
    pub(crate) fn set_conns(&self, user: &UserId, session: ActorId, conns: Arc<[Connection]>) {
        if let Some(l) = self.write().get_mut(user) {
            if l.session == session {
                l.conns = conns;
            }
        }
    }

    pub(crate) fn remove(&self, user: &UserId) {
        self.write().remove(user);
    }

    /// What the outbound queues of every connection here hold, read when
    /// metrics are scraped (counting on every push would put a shared
    /// counter on the fan-out's hot path).
    pub fn queues(&self) -> QueueDepths {
        let mut d = QueueDepths::default();
        for local in self.read().values() {
            for c in local.conns.iter() {
                let frames = c.queued_frames();
                d.frames += frames;
                d.bytes += c.queued_bytes();
                d.max_frames = d.max_frames.max(frames);
            }
        }
        d
    }

    /// Sessions on this node.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether no session lives here.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a conversation's events go.
pub trait Fanout: Send + Sync + 'static {
    /// Hands `events` to the members listening to `conversation`, on this
    /// node and on the others, except `skip`. Interest may still name a user
    /// removed a moment ago: only those `is_member` accepts get them here.
    fn to_listeners(
        &self,
        conversation: &ConversationId,
        events: &[Delivery],
        skip: Option<&UserId>,
        is_member: &dyn Fn(&UserId) -> bool,
    );

    /// Hands `events` to `members` and `removed` wherever they are connected,
    /// after a membership change, and keeps interest in step with it: the
    /// members with a session start listening, the removed stop.
    fn to_members(
        &self,
        conversation: &ConversationId,
        events: &[Delivery],
        members: &[UserId],
        removed: &[UserId],
    );
}

/// The node's fan-out.
pub struct NodeFanout {
    interest: Arc<Interest>,
    directory: Arc<LocalSessions>,
    cluster: Arc<Cluster>,
    metrics: Arc<Metrics>,
}

impl NodeFanout {
    /// Over the node's tables.
    pub fn new(
        interest: Arc<Interest>,
        directory: Arc<LocalSessions>,
        cluster: Arc<Cluster>,
        metrics: Arc<Metrics>,
    ) -> Self {
        NodeFanout {
            interest,
            directory,
            cluster,
            metrics,
        }
    }

    /// Queues `events` on the connections of `users` here and counts them.
    fn local<'a>(&self, users: impl Iterator<Item = &'a UserId>, events: &[Delivery]) {
        let mut span = Span::child("fanout.deliver", first_trace(events));
        // Counted as they pass: `users` may be a filter, run once.
        let mut counted = 0i64;
        let n = self
            .directory
            .deliver(users.inspect(|_| counted += 1), events);
        if let Some(span) = &mut span {
            span.set_i64("chat.users", counted);
            span.set_i64("chat.queued", n as i64);
        }
        self.metrics.messages_delivered.inc_by(n);
        if n > 0 {
            // Once per event, not per connection: the histogram says how
            // late messages reach this node's sockets, not how many.
            let now = chat_protocol::now_ms();
            for d in events {
                if let ServerFrame::Message { message } = d.frame.frame() {
                    let ms = now.saturating_sub(message.ts);
                    self.metrics.delivery_latency.observe(ms as f64 / 1000.0);
                }
            }
        }
    }

    /// The same events for the sessions on other nodes: one message per node.
    fn remote(
        &self,
        conversation: &ConversationId,
        events: &[Delivery],
        to: Audience,
        listen: &[UserId],
        unlisten: &[UserId],
    ) {
        let (sent, skipped) = self.cluster.deliver(
            conversation,
            to,
            listen,
            unlisten,
            || {
                events
                    .iter()
                    .map(|d| (d.frame.frame().clone(), d.skip_conn))
                    .collect()
            },
            first_trace(events),
        );
        // Nothing to count on a single node, the common case.
        if sent + skipped > 0 {
            self.metrics.peer_deliveries_sent.inc_by(sent);
            self.metrics.peer_deliveries_skipped.inc_by(skipped);
        }
    }

    /// Hands a remote conversation's events to the local sessions.
    pub fn from_peer(&self, d: PeerDelivery) {
        self.metrics.peer_deliveries_received.inc();
        let conv = [d.conversation.clone()];
        for u in &d.unlisten {
            self.interest.remove(u, &d.conversation, &self.cluster);
        }
        for u in &d.listen {
            if self.directory.get(u).is_some() {
                self.interest.add(u, &conv, &self.cluster);
            }
        }
        if !d.listen.is_empty() {
            self.interest.confirm(&d.conversation, &self.cluster);
        }
        let deliveries: Vec<Delivery> = d
            .events
            .into_iter()
            .enumerate()
            .map(|(i, (frame, skip_conn))| Delivery {
                frame: Arc::new(SharedFrame::new(frame)),
                skip_conn,
                // The batch's trace, on its first event: one span for it.
                trace: if i == 0 { d.trace } else { None },
            })
            .collect();
        let targets: Vec<UserId> = match d.to {
            Audience::Users(users) => users,
            Audience::Listeners { except } => match self.interest.listeners(&d.conversation) {
                Some(l) => l
                    .iter()
                    .filter(|u| Some(*u) != except.as_ref())
                    .cloned()
                    .collect(),
                None => {
                    self.metrics.peer_deliveries_unheard.inc();
                    return;
                }
            },
        };
        self.local(targets.iter(), &deliveries);
    }
}

impl Fanout for NodeFanout {
    fn to_listeners(
        &self,
        conversation: &ConversationId,
        events: &[Delivery],
        skip: Option<&UserId>,
        is_member: &dyn Fn(&UserId) -> bool,
    ) {
        let to = Audience::Listeners {
            except: skip.cloned(),
        };
        self.remote(conversation, events, to, &[], &[]);
        let Some(listeners) = self.interest.listeners(conversation) else {
            return;
        };
        // Filtered as they are delivered: no list of the members is made.
        self.local(
            listeners
                .iter()
                .filter(|u| is_member(u) && Some(*u) != skip),
            events,
        );
    }

    fn to_members(
        &self,
        conversation: &ConversationId,
        events: &[Delivery],
        members: &[UserId],
        removed: &[UserId],
    ) {
        for u in removed {
            self.interest.remove(u, conversation, &self.cluster);
        }
        let conv_list = std::slice::from_ref(conversation);
        for u in members {
            if self.directory.get(u).is_some() {
                self.interest.add(u, conv_list, &self.cluster);
            }
        }
        let mut targets: Vec<UserId> = members.to_vec();
        targets.extend(removed.iter().cloned());
        self.local(targets.iter(), events);
        self.remote(
            conversation,
            events,
            Audience::Users(targets),
            members,
            removed,
        );
    }
}

/// The trace of the first traced event: a batch gets one span.
fn first_trace(events: &[Delivery]) -> Option<TraceParent> {
    if !crate::telemetry::enabled() {
        return None;
    }
    events.iter().find_map(|d| d.trace)
}
