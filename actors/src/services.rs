//! Where a node's actors and tables are composed: the only place that
//! holds everything. Each actor and the dispatcher get only what they use
//! ([`ConversationDeps`], [`SessionDeps`], [`Dispatch`]); the Router, which
//! starts the actors, holds this.

use std::sync::Arc;

use chat_presence::PresenceStore;
use chat_protocol::{IdGenerator, Limits, ServerFrame, SharedFrame, UserId};
use chat_storage::replicated::ReplicatedStore;
use chat_storage::MessageStore;
use ractor::ActorRef;

use crate::cluster::Cluster;
use crate::conn::Delivery;
use crate::conversation::ConversationDeps;
use crate::dispatch::{Dispatch, Visibility};
use crate::events::ConversationEvents;
use crate::fanout::LocalSessions;
use crate::fanout::NodeFanout;
use crate::interest::Interest;
use crate::leases::NodeLeases;
use crate::media::MediaLinks;
use crate::metrics::Metrics;
use crate::msg::RouterMsg;
use crate::rate::UserRates;
use crate::running::RunningConversations;
use crate::session::SessionDeps;
use crate::tuning::Tuning;
use crate::watchers::Watchers;

/// What the node plugs into its actors: who hears of conversation
/// changes, and its media.
pub struct Hooks {
    /// Operators' webhooks.
    pub events: Arc<dyn ConversationEvents>,
    /// Attachments' links and the release of deleted messages' files.
    pub media: Arc<dyn MediaLinks>,
}

/// Everything the actors of one node share.
pub struct Services {
    /// History, conversations, accounts.
    pub store: Arc<dyn MessageStore>,
    /// Who is online.
    pub presence: Arc<dyn PresenceStore>,
    /// Message ids of this node.
    pub ids: Arc<IdGenerator>,
    /// Which local users listen to which conversations.
    pub interest: Arc<Interest>,
    /// Which local sessions watch which users' presence.
    pub watchers: Arc<Watchers>,
    /// Local sessions by user.
    pub directory: Arc<LocalSessions>,
    /// Conversation actors running here.
    pub conversations: Arc<RunningConversations>,
    /// Client limits.
    pub limits: Limits,
    /// Counters and histograms.
    pub metrics: Arc<Metrics>,
    /// Send rate per user.
    pub rate: Arc<UserRates>,
    /// This node's view of the cluster (inert on a single node).
    pub cluster: Arc<Cluster>,
    /// The replicated store behind `store`, when the node is in a cluster
    /// without a shared database: peers' writes are applied through it.
    pub replica: Option<Arc<ReplicatedStore>>,
    /// Fan-out of conversations' events, here and to other nodes.
    pub fanout: Arc<NodeFanout>,
    /// This node's lease on a store that several nodes share.
    pub leases: Arc<NodeLeases>,
    /// What conversation actors use.
    pub conversation_deps: Arc<ConversationDeps>,
    /// What sessions use.
    pub session_deps: Arc<SessionDeps>,
}

impl Services {
    /// Assembles a node's services.
    pub fn new(
        cluster: Cluster,
        store: Arc<dyn MessageStore>,
        replica: Option<Arc<ReplicatedStore>>,
        presence: Arc<dyn PresenceStore>,
        limits: Limits,
        tuning: Tuning,
        hooks: Hooks,
    ) -> Arc<Self> {
        let Hooks { events, media } = hooks;
        let cluster = Arc::new(cluster);
        let ids = Arc::new(IdGenerator::new(cluster.node_id()));
        let interest = Arc::new(Interest::new());
        let directory = Arc::new(LocalSessions::default());
        let watchers = Arc::new(Watchers::new());
        let metrics = Arc::new(Metrics::default());
        let fanout = Arc::new(NodeFanout::new(
            interest.clone(),
            directory.clone(),
            cluster.clone(),
            metrics.clone(),
        ));
        let interest_ack_deadline = tuning.interest_ack_deadline;
        let sleep_when_idle = tuning.sessions_sleep;
        let linger = if sleep_when_idle {
            tuning.session_linger
        } else {
            std::time::Duration::ZERO
        };
        let leases = NodeLeases::start(store.clone(), cluster.name().clone(), metrics.clone());
        let conversation_deps = Arc::new(ConversationDeps {
            node: cluster.name().clone(),
            store: store.clone(),
            leases: leases.clone(),
            ids: ids.clone(),
            fanout: fanout.clone(),
            metrics: metrics.clone(),
            tuning,
            events,
            media,
        });
        let session_deps = Arc::new(SessionDeps {
            node: cluster.name().clone(),
            store: store.clone(),
            presence: presence.clone(),
            directory: directory.clone(),
            interest: interest.clone(),
            cluster: cluster.clone(),
            watchers: watchers.clone(),
            metrics: metrics.clone(),
            connections_per_user: limits.connections_per_user,
            watch_per_connection: limits.watch_per_connection,
            interest_ack_deadline,
            sleep_when_idle,
            linger,
        });
        Arc::new(Services {
            rate: Arc::new(UserRates::new(&limits)),
            conversations: Arc::new(RunningConversations::default()),
            cluster,
            replica,
            store,
            presence,
            ids,
            interest,
            watchers,
            directory,
            limits,
            metrics,
            fanout,
            leases,
            conversation_deps,
            session_deps,
        })
    }

    /// The dispatcher of client frames, once the Router runs; presence
    /// shown as `visibility` says.
    pub fn dispatch(&self, router: ActorRef<RouterMsg>, visibility: Visibility) -> Dispatch {
        Dispatch::new(
            self.conversations.clone(),
            router,
            self.rate.clone(),
            self.ids.clone(),
            self.store.clone(),
            self.metrics.clone(),
            visibility,
        )
        .with_media(self.conversation_deps.media.clone())
    }

    /// Queues `frame` on every connection of `users` on this node.
    pub fn to_users(&self, users: &[UserId], frame: ServerFrame) {
        let delivery = Delivery {
            frame: Arc::new(SharedFrame::new(frame)),
            skip_conn: None,
            trace: None,
        };
        self.directory.deliver(users, &[delivery]);
    }
}
