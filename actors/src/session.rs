//! The user session: one actor per user connected to this node.
//!
//! ```text
//!  Router ──Attach/Detach──► UserSession ──publishes conns──► LocalSessions ◄── fan-out
//!  dispatch ──Watch/Unwatch──►   │   ├──connected/disconnected──► Presence backend
//!  Watchers ──PresenceChanged──► │   └──join/remove_user──► Interest (and the owners, in a cluster)
//! ```
//!
//! It owns the user's connections on this node (several devices), each with a
//! bounded outbound queue: a connection whose queue is full is closed with
//! 4003 rather than buffered without bound. It publishes them in the
//! [`LocalSessions`], through which conversations push events straight into the
//! queues. It registers the user's interest in its conversations when it
//! starts and withdraws it when the Router stops it, reports each
//! connection's presence, and keeps each connection's presence watches.
//! Requests to conversations never pass through it (see [`crate::dispatch`]).
//!
//! Its actor sleeps while it has nothing to do: once a message leaves the
//! session with connections and no presence watch, it drains (what is
//! already in its mailbox is handled, later messages are refused) and stops,
//! and the Router keeps its state (ractor hands a stopped actor's state to
//! its supervisor). The connections stay published, so events still reach
//! them. A message sent to the sleeping actor comes back to its sender's
//! [`SessionHandle`], which gives it to the Router; the Router starts the
//! session again from the kept state and hands the message over. An idle
//! connected user so costs a few hundred bytes instead of an actor's task
//! and mailboxes (ractor allocates a block of slots for each of two
//! unbounded channels per actor, several KiB), and waking costs a spawn,
//! which happens at most a few times in a connection's life (a watch, the
//! close). A new connection does not wake it: the Router attaches it to the
//! kept state. When its last connection leaves, a session sleeps on for a
//! linger ([`crate::tuning::Tuning::session_linger`]) before the Router
//! ends it, so a client back within it (a blip, a restarted proxy's
//! clients) finds it as it was: no store read, no interest reported again.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chat_presence::{ConnKey, PresenceStore};
use chat_protocol::{
    close_code, ConversationId, OkReply, Presence, ServerFrame, SharedFrame, Status, UserId,
};
use chat_storage::MessageStore;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;

use crate::catch_up::CatchUp;
use crate::cluster::Cluster;
use crate::conn::{ConnId, Connection};
use crate::error::ChatError;
use crate::fanout::LocalSessions;
use crate::interest::Interest;
use crate::metrics::Metrics;
use crate::msg::{Reply, RouterMsg, SessionHandle, SessionMsg};
use crate::watchers::Watchers;

#[cfg(test)]
mod tests;

/// How long a late owner's ack is still waited for, to tell the client to
/// catch up; past it (an owner that neither answers nor leaves the view)
/// the client's own catch-ups on a revision gap are what is left.
const LATE_ACK_WAIT: Duration = Duration::from_secs(120);

/// Tells `user`'s connections to catch up on each late report's
/// conversations once its owner has applied it.
async fn catch_up_when_acked<F>(
    deps: Arc<SessionDeps>,
    user: UserId,
    mut waiting: FuturesUnordered<F>,
) where
    F: std::future::Future<Output = (Vec<ConversationId>, bool)>,
{
    let deadline = tokio::time::Instant::now() + LATE_ACK_WAIT;
    while let Ok(Some((conversations, acked))) =
        tokio::time::timeout_at(deadline, waiting.next()).await
    {
        if acked {
            let catch_up = CatchUp {
                directory: &deps.directory,
                metrics: &deps.metrics,
            };
            catch_up.tell(&user, &conversations);
        }
    }
}

/// What every session of a node uses, shared by all of them.
pub struct SessionDeps {
    /// This node's name (presence keys a connection by node and id).
    pub node: Arc<str>,
    /// Where the user's conversations are listed.
    pub store: Arc<dyn MessageStore>,
    /// Who is online.
    pub presence: Arc<dyn PresenceStore>,
    /// Local sessions and their connections.
    pub directory: Arc<LocalSessions>,
    /// Which local users listen to which conversations.
    pub interest: Arc<Interest>,
    /// The owners interest is reported to.
    pub cluster: Arc<Cluster>,
    /// Which local sessions watch which users.
    pub watchers: Arc<Watchers>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Connections per user on this node.
    pub connections_per_user: usize,
    /// Users a connection may watch.
    pub watch_per_connection: usize,
    /// Whether sessions with nothing to do sleep (see the module doc).
    pub sleep_when_idle: bool,
    /// See [`crate::tuning::Tuning::interest_ack_deadline`].
    pub interest_ack_deadline: Duration,
    /// How long an empty session sleeps before it ends (zero: it ends at
    /// once); see [`crate::tuning::Tuning::session_linger`].
    pub linger: Duration,
}

/// Starting arguments.
pub struct SessionArgs {
    /// Whose session.
    pub user: UserId,
    /// What it uses.
    pub deps: Arc<SessionDeps>,
    /// The Router, which owns the session's life.
    pub router: ActorRef<RouterMsg>,
    /// The state it slept with, when woken.
    pub woken: Option<Asleep>,
}

/// A sleeping session's state, kept by the Router until a message wakes it.
pub struct Asleep(Box<SessionState>);

/// What a stopped actor left, as far as sessions go.
pub enum Stopped {
    /// A session that fell asleep.
    Asleep(Asleep),
    /// A session that ended (its tables are already cleaned).
    Ended(UserId),
    /// Another kind of actor.
    Other,
    /// No state: the actor was killed or failed.
    Unknown,
}

impl Stopped {
    /// Reads the state ractor handed over with an actor's stop.
    pub fn of(state: Option<ractor::actor::messages::BoxedState>) -> Stopped {
        let Some(mut state) = state else {
            return Stopped::Unknown;
        };
        let Ok(state) = state.take::<SessionState>() else {
            return Stopped::Other;
        };
        if state.asleep {
            Stopped::Asleep(Asleep(Box::new(state)))
        } else {
            Stopped::Ended(state.user)
        }
    }
}

impl Asleep {
    /// Whose session.
    pub fn user(&self) -> &UserId {
        &self.0.user
    }

    /// What it uses.
    pub fn deps(&self) -> Arc<SessionDeps> {
        self.0.deps.clone()
    }

    /// Whether its last connection left while it fell asleep.
    pub fn is_empty(&self) -> bool {
        self.0.conns.is_empty()
    }

    /// How long it may sleep without a connection before it ends.
    pub fn linger(&self) -> Duration {
        self.0.deps.linger
    }

    /// Attaches `conn` without waking it (a client back to a lingering
    /// session, another device of a sleeping one), answered as its actor
    /// would: attaching is all it would wake for, and with connections and
    /// no watch it would fall asleep again at once. Spares a reconnect the
    /// spawn of an actor.
    pub fn attach(&mut self, conn: Connection) -> Result<SessionHandle, ChatError> {
        self.0.attach(conn).map(|()| self.0.handle())
    }

    /// Detaches `conn` without waking it (a sleeping session has no
    /// watch, so there is nothing else to do); returns whether it has no
    /// connection left, which the Router then handles (linger or end).
    pub fn detach(&mut self, conn: ConnId) -> bool {
        self.0.detach(conn);
        self.0.conns.is_empty()
    }

    /// Whether it may go on sleeping (a message handled while it fell
    /// asleep may have given it work).
    pub fn may_sleep(&self) -> bool {
        self.0.may_sleep()
    }

    /// Ends it without waking it (the node is stopping), as a stop of its
    /// actor would.
    pub fn end(self) {
        let mut state = self.0;
        state.deps.metrics.sessions_asleep.dec();
        state.end();
    }
}

/// The actor (no data; see [`SessionState`]).
pub struct UserSession;

struct Attached {
    conn: Connection,
    watching: HashSet<UserId>,
}

/// Everything a session knows.
pub struct SessionState {
    user: UserId,
    deps: Arc<SessionDeps>,
    /// Ends when the last presence report made is done: each report waits
    /// for the one before, so a quick disconnect never overtakes its
    /// connect. Nothing is held between reports but this small handle.
    presence_done: Option<oneshot::Receiver<()>>,
    router: ActorRef<RouterMsg>,
    conns: Vec<Attached>,
    attaches_seen: u64,
    /// The actor it runs as (the last one, while asleep).
    me: ActorId,
    /// Its interest is registered (done once, not at every wake).
    joined: bool,
    /// It is falling asleep (or asleep): its stop keeps everything.
    asleep: bool,
}

impl Actor for UserSession {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        if let Some(Asleep(state)) = args.woken {
            let mut state = *state;
            let deps = &state.deps;
            deps.metrics.sessions_asleep.dec();
            // Its connections stay published as they are: events never
            // miss them while it wakes.
            deps.directory.rebind(&state.user, myself.get_id());
            let was = std::mem::replace(&mut state.me, myself.get_id());
            if state.conns.iter().any(|a| !a.watching.is_empty()) {
                // A watch came while it fell asleep.
                state.deps.watchers.rebind(was, &state.handle());
            }
            state.asleep = false;
            return Ok(state);
        }
        args.deps.metrics.sessions_active.inc();
        args.deps
            .directory
            .insert(args.user.clone(), myself.get_id());
        Ok(SessionState {
            presence_done: None,
            user: args.user,
            deps: args.deps,
            router: args.router,
            conns: Vec::new(),
            attaches_seen: 0,
            me: myself.get_id(),
            joined: false,
            asleep: false,
        })
    }

    async fn post_start(
        &self,
        _myself: ActorRef<SessionMsg>,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        // Registered in the directory before the list is read, so a
        // conversation that adds the user meanwhile sees the session and
        // registers the interest itself. Read before the first attach is
        // handled: once a client is told it is connected, everything sent
        // to its conversations reaches it live, on this node or from the
        // owners the interest was just reported to.
        if state.joined {
            return Ok(());
        }
        state.joined = true;
        let deps = &state.deps;
        match deps.store.user_conversations(&state.user).await {
            Ok(list) => {
                let reports = deps.interest.join(&state.user, &list, &deps.cluster);
                let mut waiting: FuturesUnordered<_> = reports
                    .into_iter()
                    .map(|r| async move { (r.conversations, r.acked.await.is_ok()) })
                    .collect();
                let deadline = tokio::time::Instant::now() + deps.interest_ack_deadline;
                while let Ok(Some(_)) = tokio::time::timeout_at(deadline, waiting.next()).await {}
                if !waiting.is_empty() {
                    // The client is let in anyway; what those owners accept
                    // before they apply the report reaches it neither live
                    // nor in its first catch-up, so it is told to catch up
                    // again once they have (see `crate::catch_up`). An
                    // owner that leaves instead changes the view, which
                    // tells it too.
                    tracing::warn!(user = %state.user, owners = waiting.len(), "owners did not acknowledge interest in time");
                    deps.metrics.interest_acks_late.inc_by(waiting.len() as u64);
                    tokio::spawn(catch_up_when_acked(
                        deps.clone(),
                        state.user.clone(),
                        waiting,
                    ));
                }
            }
            Err(e) => {
                tracing::warn!(user = %state.user, error = %e, "cannot list conversations; live delivery limited");
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SessionMsg>,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        if state.asleep {
            // The Router keeps the state; connections, interest and watches
            // stay as they are.
            state.deps.metrics.sessions_asleep.inc();
            return Ok(());
        }
        state.end();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        msg: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SessionMsg::Attach { conn, reply } => {
                let attached = state.attach(conn);
                let refused = attached.is_err();
                let _ = reply.send(attached.map(|()| state.handle()));
                if refused {
                    state.maybe_empty();
                }
            }
            SessionMsg::Detach { conn } => state.detach(conn),
            SessionMsg::Watch { conn, users, reply } => state.watch(conn, users, reply),
            SessionMsg::Unwatch { conn, users, reply } => {
                state.unwatch(conn, &users);
                let _ = reply.send(Ok(OkReply::default()));
            }
            SessionMsg::PresenceChanged { user, frame } => {
                for a in state.conns.iter().filter(|a| a.watching.contains(&user)) {
                    a.conn.push_event(&frame);
                }
            }
            SessionMsg::CloseAll { code } => {
                for a in &state.conns {
                    a.conn.close(code);
                }
            }
            SessionMsg::LoginRevoked { login } => {
                for a in state
                    .conns
                    .iter()
                    .filter(|a| a.conn.login() == Some(&*login))
                {
                    a.conn.close(close_code::TOKEN_EXPIRED);
                }
            }
            SessionMsg::HidePresence { user } => state.hide_presence(user),
        }
        if !state.asleep && state.may_sleep() {
            // What is already queued is handled first; what comes later
            // goes to the Router, which wakes the session for it. (A drain
            // that cannot start means the actor is stopping anyway.)
            state.asleep = myself.drain().is_ok();
        }
        Ok(())
    }
}

impl SessionState {
    /// Nothing for its actor to do until a message comes: connections to
    /// serve, or none but a linger to wait out (without one an empty
    /// session ends instead), and no presence watch (whose events come as
    /// messages).
    fn may_sleep(&self) -> bool {
        self.deps.sleep_when_idle
            && (!self.conns.is_empty() || self.lingers())
            && self.conns.iter().all(|a| a.watching.is_empty())
    }

    /// An empty session sleeps out its linger (the Router ends it after)
    /// rather than asking the Router to stop it.
    fn lingers(&self) -> bool {
        self.deps.sleep_when_idle && !self.deps.linger.is_zero()
    }

    /// The session ends: withdrawn from the node's tables (unless a newer
    /// session of the user replaced it), its connections closed.
    fn end(&mut self) {
        let deps = self.deps.clone();
        deps.metrics.sessions_active.dec();
        if deps.directory.get(&self.user).is_some_and(|s| s == self.me) {
            deps.directory.remove(&self.user);
            deps.interest.remove_user(&self.user, &deps.cluster);
        }
        for a in std::mem::take(&mut self.conns) {
            self.drop_watches(&a.watching);
            a.conn.close(close_code::GOING_AWAY);
        }
    }

    /// How others reach this session.
    fn handle(&self) -> SessionHandle {
        SessionHandle::new(self.user.clone(), self.me, self.router.clone())
    }

    fn attach(&mut self, conn: Connection) -> Result<(), ChatError> {
        self.attaches_seen += 1;
        if self.conns.len() >= self.deps.connections_per_user {
            return Err(ChatError::TooManyConnections);
        }
        self.presence_change(conn.id, true);
        // Most users hold one connection: room for one, not the four a
        // first push makes room for (a few hundred bytes per idle user).
        self.conns.reserve_exact(1);
        self.conns.push(Attached {
            conn,
            watching: HashSet::new(),
        });
        self.publish_conns();
        self.deps.metrics.connections_open.inc();
        Ok(())
    }

    fn detach(&mut self, conn: ConnId) {
        if let Some(pos) = self.conns.iter().position(|a| a.conn.id == conn) {
            let a = self.conns.swap_remove(pos);
            self.publish_conns();
            self.drop_watches(&a.watching);
            self.presence_change(conn, false);
            self.deps.metrics.connections_open.dec();
        }
        self.maybe_empty();
    }

    /// Events reach the connections through the directory.
    fn publish_conns(&self) {
        let conns: Arc<[Connection]> = self.conns.iter().map(|a| a.conn.clone()).collect();
        self.deps.directory.set_conns(&self.user, self.me, conns);
    }

    fn maybe_empty(&self) {
        if self.conns.is_empty() && !self.lingers() {
            let _ = self.router.cast(RouterMsg::SessionEmpty {
                user: self.user.clone(),
                actor: self.me,
                seen: self.attaches_seen,
            });
        }
    }

    /// Reports a connection coming or going. The reports of one session go
    /// through one task, in order: from separate tasks, a quick disconnect
    /// could reach the backend before its connect and leave a ghost online.
    fn presence_change(&mut self, conn: ConnId, online: bool) {
        let key = ConnKey {
            node: self.deps.node.clone(),
            conn,
        };
        let before = self.presence_done.take();
        let (done, after) = oneshot::channel();
        self.presence_done = Some(after);
        let (deps, user) = (self.deps.clone(), self.user.clone());
        tokio::spawn(async move {
            if let Some(before) = before {
                // Err: the previous report's task is gone; go on.
                let _ = before.await;
            }
            let r = if online {
                deps.presence.connected(&user, &key).await
            } else {
                deps.presence.disconnected(&user, &key).await
            };
            if let Err(e) = r {
                deps.metrics.presence_errors.inc();
                tracing::warn!(%user, error = %e, "presence update failed");
            }
            let _ = done.send(());
        });
    }

    fn drop_watches(&self, users: &HashSet<UserId>) {
        if users.is_empty() {
            return;
        }
        // Other connections of this session may still watch some of them.
        let still: HashSet<&UserId> = self.conns.iter().flat_map(|a| a.watching.iter()).collect();
        let gone: Vec<UserId> = users
            .iter()
            .filter(|u| !still.contains(u))
            .cloned()
            .collect();
        let unwatched = self.deps.watchers.remove(self.me, &gone);
        if !unwatched.is_empty() {
            let presence = self.deps.presence.clone();
            tokio::spawn(async move {
                let _ = presence.unwatch(&unwatched).await;
            });
        }
    }

    /// Ends every watch of `user` here, telling each connection that had
    /// one that `user` is offline (as a watch refused from the start is
    /// answered), so a client shows no stale "online".
    fn hide_presence(&mut self, user: UserId) {
        let mut removed = false;
        let frame = Arc::new(SharedFrame::new(ServerFrame::Presence(Presence {
            user: user.clone(),
            status: Status::Offline,
            last_seen: None,
        })));
        for a in &mut self.conns {
            if a.watching.remove(&user) {
                a.conn.push_event(&frame);
                removed = true;
            }
        }
        if removed {
            self.drop_watches(&HashSet::from([user]));
        }
    }

    fn unwatch(&mut self, conn: ConnId, users: &[UserId]) {
        if let Some(pos) = self.conns.iter().position(|a| a.conn.id == conn) {
            let removed: HashSet<UserId> = users
                .iter()
                .filter(|u| self.conns[pos].watching.remove(*u))
                .cloned()
                .collect();
            self.drop_watches(&removed);
        }
    }

    fn watch(&mut self, conn: ConnId, users: Vec<UserId>, reply: Reply) {
        let limit = self.deps.watch_per_connection;
        let Some(attached) = self.conns.iter_mut().find(|a| a.conn.id == conn) else {
            let _ = reply.send(Err(ChatError::BadRequest("connection is closing".into())));
            return;
        };
        let new: HashSet<&UserId> = users
            .iter()
            .filter(|u| !attached.watching.contains(*u))
            .collect();
        if attached.watching.len() + new.len() > limit {
            let _ = reply.send(Err(ChatError::BadRequest(format!(
                "a connection may watch at most {limit} users"
            ))));
            return;
        }
        attached.watching.extend(new.into_iter().cloned());
        let fresh = self.deps.watchers.add(&self.handle(), &users);
        let deps = self.deps.clone();
        tokio::spawn(async move {
            if !fresh.is_empty() {
                if let Err(e) = deps.presence.watch(&fresh).await {
                    deps.metrics.presence_errors.inc();
                    tracing::warn!(error = %e, "presence watch failed");
                }
            }
            let r = deps
                .presence
                .query(&users)
                .await
                .map(|presence| OkReply {
                    presence: Some(presence),
                    ..OkReply::default()
                })
                .map_err(|e| {
                    deps.metrics.presence_errors.inc();
                    ChatError::Unavailable(e.to_string())
                });
            let _ = reply.send(r);
        });
    }
}
