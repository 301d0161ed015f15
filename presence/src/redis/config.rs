//! How a node reaches Redis for presence: [`RedisPresenceConfig`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Settings of [`RedisPresence`].
#[derive(Clone)]
pub struct RedisPresenceConfig {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// How long a node may go without a heartbeat before its entries are
    /// swept: about the most a dead node's users stay online (a check period
    /// more at worst). Nodes beat every `ttl / 3`; at least 300 ms.
    pub ttl: Duration,
    /// This node's name, the first part of its entries' members
    /// (`node/incarnation/conn`). It, not [`ConnKey::node`], names the
    /// entries, because this node removes them: two nodes must not share a
    /// name.
    pub node: Arc<str>,
    /// Prepended to every key and channel, so clusters can share a Redis.
    pub key_prefix: String,
    /// The longest any presence call waits for Redis.
    pub op_timeout: Duration,
    /// How many users beyond twice those connected here this node's list in
    /// Redis may hold before the node renews it (lists only grow; see the
    /// module docs). Renewing costs a call per connection and, after the
    /// ttl, a call per user on the old list: large enough that a connect
    /// storm (users coming and going at once) does not set it off.
    pub list_slack: usize,
}

impl RedisPresenceConfig {
    /// The default [`ttl`](Self::ttl).
    pub const DEFAULT_TTL: Duration = Duration::from_secs(30);
    /// The default [`key_prefix`](Self::key_prefix).
    pub const DEFAULT_PREFIX: &'static str = "chat:";
    /// The default [`op_timeout`](Self::op_timeout).
    pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_secs(1);
    /// The default [`list_slack`](Self::list_slack).
    pub const DEFAULT_LIST_SLACK: usize = 65_536;

    /// Defaults for everything but where Redis is and who this node is.
    pub fn new(url: impl Into<String>, node: impl Into<Arc<str>>) -> Self {
        RedisPresenceConfig {
            url: url.into(),
            ttl: Self::DEFAULT_TTL,
            node: node.into(),
            key_prefix: Self::DEFAULT_PREFIX.to_string(),
            op_timeout: Self::DEFAULT_OP_TIMEOUT,
            list_slack: Self::DEFAULT_LIST_SLACK,
        }
    }

    /// With another TTL.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// With another key prefix.
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// With another per-call timeout.
    pub fn with_op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// With another [`list_slack`](Self::list_slack).
    pub fn with_list_slack(mut self, users: usize) -> Self {
        self.list_slack = users;
        self
    }
}

// By hand so that a password in the URL never reaches a log.
impl fmt::Debug for RedisPresenceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisPresenceConfig")
            .field("url", &redact(&self.url))
            .field("ttl", &self.ttl)
            .field("node", &self.node)
            .field("key_prefix", &self.key_prefix)
            .field("op_timeout", &self.op_timeout)
            .field("list_slack", &self.list_slack)
            .finish()
    }
}

pub(super) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_string(),
    }
}
