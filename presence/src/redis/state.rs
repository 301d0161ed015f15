//! What the Redis backend's tasks share: the client, the scripts, this
//! node's connections and watched users, the ops the writer takes, and the
//! limits on each; the writer's own state between batches.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::{ConnKey, PresenceError};
use chat_protocol::{now_ms, Presence, Status, UserId};
use fred::clients::SubscriberClient;
use fred::prelude::{Client, Server};
use fred::types::scripts::Script;
use fred::types::{ConnectHandle, Message};
use tokio::sync::{broadcast, oneshot, Notify};

/// Commands per pipeline (and channels per SUBSCRIBE): large enough to
/// amortise round trips, small enough not to stall Redis.
pub(super) const MAX_BATCH: usize = 512;
/// Failed removals kept for replay; beyond this the oldest are left to expire.
pub(super) const MAX_PENDING_LEAVES: usize = 65_536;
/// Disconnects that overtook their connect (see [`Local::early`]).
pub(super) const MAX_EARLY: usize = 4_096;
/// How often to look whether a lost connection is back.
pub(super) const RECONNECT_POLL: Duration = Duration::from_millis(50);
/// Capacity of the change channel and of the client's event channels.
pub(super) const CHANNEL_CAPACITY: usize = 4_096;
/// Below this the refresh traffic would dominate.
pub(super) const MIN_TTL: Duration = Duration::from_millis(300);

pub(super) struct Shared {
    pub(super) client: Client,
    pub(super) subscriber: SubscriberClient,
    pub(super) handles: Mutex<Vec<ConnectHandle>>,
    pub(super) scripts: [Script; SCRIPTS],
    pub(super) node: Arc<str>,
    /// The incarnation this node's writer adds entries under, for the
    /// checker, which must not sweep it.
    pub(super) current: Mutex<Arc<str>>,
    pub(super) prefix: String,
    pub(super) ttl: Duration,
    pub(super) op_timeout: Duration,
    pub(super) list_slack: usize,
    /// `host:port`, for error messages (the URL may hold a password).
    pub(super) server: String,
    pub(super) local: Mutex<Local>,
    pub(super) watched: Mutex<HashMap<UserId, Known>>,
    pub(super) tx: broadcast::Sender<Presence>,
    pub(super) recheck: Notify,
    pub(super) sub_order: tokio::sync::Mutex<()>,
}

#[derive(Default)]
pub(super) struct Local {
    /// The user of each live connection.
    pub(super) conns: HashMap<ConnKey, UserId>,
    /// How many of them each user has.
    pub(super) per_user: HashMap<UserId, u32>,
    /// Sessions report each change from its own task, so a short-lived
    /// connection's disconnect can run before its connect; remembering it
    /// keeps the late connect from leaving an entry refreshed forever.
    pub(super) early: HashSet<ConnKey>,
}

/// What this node knows about a watched user.
#[derive(Default)]
pub(super) struct Known {
    pub(super) status: Option<Status>,
    /// Bumped by every observation, so a check that read Redis before a
    /// newer pub/sub message cannot overwrite it with a stale answer.
    pub(super) generation: u64,
    /// A query about the user failed, or messages were lost before anyone
    /// read it, so a session may know nothing: the next check announces the
    /// status even if unchanged.
    pub(super) unsure: bool,
}

/// Where an observation of a watched user comes from; reads carry the
/// user's generation from before Redis was read.
#[derive(Clone, Copy)]
pub(super) enum Source {
    Message,
    Check(u64),
    Query(u64),
}

pub(super) enum Op {
    Touch {
        user: UserId,
        conn: u64,
        /// The user had no other connection here: it may be new to the
        /// incarnation's list.
        first: bool,
        reply: oneshot::Sender<Result<(), PresenceError>>,
    },
    Leave {
        leave: Leave,
        reply: oneshot::Sender<Result<(), PresenceError>>,
    },
}

/// The clients' event streams, taken before they connect.
pub(super) struct Events {
    pub(super) messages: broadcast::Receiver<Message>,
    pub(super) sub_reconnects: broadcast::Receiver<Server>,
    pub(super) main_reconnects: broadcast::Receiver<Server>,
    pub(super) writer_reconnects: broadcast::Receiver<Server>,
}

pub(super) struct Leave {
    pub(super) user: UserId,
    pub(super) conn: u64,
    /// Unix ms, this node's clock.
    pub(super) at: u64,
}

/// The scripts, by index in [`Shared::scripts`].
#[derive(Clone, Copy)]
pub(super) enum Which {
    Touch = 0,
    Leave = 1,
    Observe = 2,
    Sweep = 3,
    Beat = 4,
    Stale = 5,
    Forget = 6,
}

pub(super) const SCRIPTS: usize = 7;

/// One command of a pipeline: a script, or a plain command whose first
/// argument is its key.
pub(super) enum Cmd {
    Script(Which),
    Plain(&'static str),
}

pub(super) struct Call {
    pub(super) cmd: Cmd,
    pub(super) keys: Vec<String>,
    pub(super) args: Vec<String>,
}

/// This run of the node as Redis knows it: `node/start.n`, where `n` counts
/// the times Redis lost track of it (see the module docs).
pub(super) struct Incarnation {
    pub(super) node: Arc<str>,
    pub(super) start: u64,
    pub(super) n: u32,
    pub(super) id: Arc<str>,
    /// Its first heartbeat is in: a node that dies from now on is swept.
    pub(super) registered: bool,
}

impl Incarnation {
    pub(super) fn new(node: Arc<str>) -> Self {
        let start = now_ms();
        Incarnation {
            id: Self::id(&node, start, 0),
            node,
            start,
            n: 0,
            registered: false,
        }
    }

    pub(super) fn id(node: &str, start: u64, n: u32) -> Arc<str> {
        Arc::from(format!("{node}/{start:x}.{n}"))
    }

    /// The next one, after Redis lost this one.
    pub(super) fn next(&mut self) {
        self.n += 1;
        self.id = Self::id(&self.node, self.start, self.n);
        self.registered = false;
    }
}

pub(super) fn stopped() -> PresenceError {
    PresenceError("redis presence stopped".into())
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the writer task keeps between batches.
pub(super) struct WriterState {
    pub(super) me: Incarnation,
    /// Removals that failed, to replay.
    pub(super) pending: VecDeque<Leave>,
    /// Every live connection is to be added again (a connect failed, or
    /// Redis may have lost entries).
    pub(super) add_all: bool,
    /// The next heartbeat starts a new incarnation: Redis may hold entries
    /// this node removed, or removals were dropped.
    pub(super) renew: bool,
    /// About how many users the incarnation's list holds.
    pub(super) listed: usize,
}

impl WriterState {
    pub(super) fn keep(&mut self, leave: Leave) {
        if self.pending.len() >= MAX_PENDING_LEAVES {
            // Its entry stays: the next incarnation leaves it to a sweep.
            self.pending.pop_front();
            self.renew = true;
        }
        self.pending.push_back(leave);
    }
}
