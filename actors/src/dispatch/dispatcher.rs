//! The dispatcher's state (what it reaches) and who a request comes from:
//! what the handler of every kind of frame shares.

use std::sync::Arc;

use chat_protocol::{IdGenerator, UserId};
use chat_storage::MessageStore;
use ractor::ActorRef;

use super::visibility::Visibility;
use crate::conn::ConnId;
use crate::error::ChatError;
use crate::media::MediaLinks;
use crate::metrics::Metrics;
use crate::msg::{Request, RouterMsg, SessionHandle};
use crate::rate::UserRates;
use crate::running::RunningConversations;

/// Who a request comes from.
pub struct Caller {
    /// The authenticated user.
    pub user: UserId,
    /// The connection, for WebSocket requests.
    pub conn: Option<ConnId>,
    /// The user's session on this node, for WebSocket requests.
    pub session: Option<SessionHandle>,
}

/// What the dispatcher reaches.
pub struct Dispatch {
    pub(super) running: Arc<RunningConversations>,
    pub(super) router: ActorRef<RouterMsg>,
    pub(super) rate: Arc<UserRates>,
    pub(super) ids: Arc<IdGenerator>,
    pub(super) store: Arc<dyn MessageStore>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) visibility: Visibility,
    pub(super) media: Arc<dyn MediaLinks>,
}

impl Dispatch {
    /// A dispatcher over the node's running conversations and its Router.
    pub fn new(
        running: Arc<RunningConversations>,
        router: ActorRef<RouterMsg>,
        rate: Arc<UserRates>,
        ids: Arc<IdGenerator>,
        store: Arc<dyn MessageStore>,
        metrics: Arc<Metrics>,
        visibility: Visibility,
    ) -> Self {
        Dispatch {
            media: Arc::new(crate::media::NoMedia),
            running,
            router,
            rate,
            ids,
            store,
            metrics,
            visibility,
        }
    }

    /// Shows attachments with `media`'s links (none without it).
    pub fn with_media(mut self, media: Arc<dyn MediaLinks>) -> Self {
        self.media = media;
        self
    }

    /// To the conversation's actor if it runs here, else through the Router
    /// (which starts it, or forwards to the owner on another node).
    pub(super) fn route(&self, request: Request) {
        let Err(request) = self.running.cast(request) else {
            return;
        };
        if let Err(ractor::MessagingErr::SendErr(RouterMsg::Route(request))) =
            self.router.cast(RouterMsg::Route(request))
        {
            request.fail(ChatError::Unavailable("node is shutting down".into()));
        }
    }
}
