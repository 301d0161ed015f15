//! Cluster membership: the ractor_cluster `NodeServer`, dialing the seeds
//! again and again until they answer, dropping peers the Router finds silent,
//! and refusing to start next to a node with the same name or id.
//!
//! ```text
//!  NodeServer ──events (sync callback)──► channel ─┐
//!  Router ──ClusterEvent (stale, duplicate)────────┼─► membership task ──► dial seeds (backoff)
//!  tick (250 ms) ──────────────────────────────────┘                  └─► stop a stale session
//! ```
//!
//! ractor_cluster authenticates peers with the cookie and keeps `pg` groups in
//! step across connected nodes, but it never reconnects and never times a
//! session out; that is this module's job (docs/design.md, "ractor_cluster").
//! Joining happens in two steps: connect to the seeds (or give up on the
//! missing ones after `join_timeout_secs`), then ask the Router to serve,
//! which it does once it has caught up with every connected node.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_actors::msg::{ClusterEvent, RouterMsg};
use ractor::{Actor, ActorRef};
use ractor_cluster::node::{NodeConnectionMode, NodeServerSessionInformation};
use ractor_cluster::IncomingEncryptionMode;
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage, NodeSessionMessage};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::sync::{mpsc, watch};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::{ClusterSection, Mesh};

/// Why the node cannot join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The node-to-node listener could not start.
    #[error("cluster listener: {0}")]
    Listen(String),
    /// Another node of the cluster has this node's name or id.
    #[error("{0}")]
    Duplicate(String),
    /// The TLS files are unusable.
    #[error("cluster TLS: {0}")]
    Tls(String),
    /// Catching up with the other nodes did not finish in time.
    #[error("could not catch up with the other nodes within {0} s")]
    SyncTimeout(u64),
}

enum SessionEvent {
    Ready(NodeServerSessionInformation),
    Down(NodeServerSessionInformation),
}

struct Subscription(mpsc::UnboundedSender<SessionEvent>);

impl NodeEventSubscription for Subscription {
    fn node_session_opened(&self, _: NodeServerSessionInformation) {}
    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.send(SessionEvent::Down(ses));
    }
    fn node_session_authenticated(&self, _: NodeServerSessionInformation) {}
    fn node_session_ready(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.send(SessionEvent::Ready(ses));
    }
}

struct Seed {
    addr: String,
    /// The node name found at this address, once connected.
    name: Option<String>,
    next_try: Instant,
    backoff: Duration,
}

/// The peers with a ready session.
#[derive(Debug, Default, Clone)]
struct Connected {
    /// How many of the seeds.
    seeds: usize,
    /// Their node names.
    names: Vec<String>,
}

const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The running membership layer.
pub struct Membership {
    server: ActorRef<NodeServerMessage>,
    connected: watch::Receiver<Connected>,
    seeds: usize,
    fatal: watch::Receiver<Option<String>>,
    serving: watch::Sender<bool>,
    drain: watch::Receiver<bool>,
}

impl Membership {
    /// Starts the node-to-node listener and the task that dials the seeds.
    pub async fn start(
        config: &ClusterSection,
        name: &str,
        events: mpsc::UnboundedReceiver<ClusterEvent>,
    ) -> Result<Membership, JoinError> {
        let Some(listen) = config.listen else {
            return Err(JoinError::Listen("cluster.listen is not set".into()));
        };
        let tls = tls_configs(config)?;
        let server = NodeServer::new(
            listen.port(),
            config.cookie.clone(),
            name.to_string(),
            listen.ip().to_string(),
            tls.as_ref()
                .map(|(acceptor, _)| IncomingEncryptionMode::Tls(acceptor.clone())),
            // Transitive: peers tell each other about nodes they know, a full
            // mesh even when a node lists only some of the others as seeds.
            Some(match config.mesh {
                Mesh::Transitive => NodeConnectionMode::Transitive,
                Mesh::Seeds => NodeConnectionMode::Isolated,
            }),
        )
        .with_listen_addr(listen.ip());
        let (server, _) = Actor::spawn(None, server, ())
            .await
            .map_err(|e| JoinError::Listen(e.to_string()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        server
            .cast(NodeServerMessage::SubscribeToEvents {
                id: "membership".into(),
                subscription: Box::new(Subscription(tx)),
            })
            .map_err(|e| JoinError::Listen(e.to_string()))?;
        let own: Vec<SocketAddr> = vec![listen];
        let seeds: Vec<Seed> = config
            .seeds
            .iter()
            .filter(|s| {
                // Every node may share one seed list: skip our own entry.
                !s.parse::<SocketAddr>().is_ok_and(|a| own.contains(&a))
            })
            .map(|s| Seed {
                addr: s.clone(),
                name: None,
                next_try: Instant::now(),
                backoff: BACKOFF_MIN,
            })
            .collect();
        let n_seeds = seeds.len();
        let (connected_tx, connected_rx) = watch::channel(Connected::default());
        let (fatal_tx, fatal_rx) = watch::channel(None);
        let (serving_tx, serving_rx) = watch::channel(false);
        let (drain_tx, drain_rx) = watch::channel(false);
        let task = Task {
            me: name.to_string(),
            listen,
            server: server.clone(),
            seeds,
            sessions: HashMap::new(),
            connected: connected_tx,
            fatal: fatal_tx,
            serving: serving_rx,
            drain: drain_tx,
            had_peer: false,
            connector: tls.map(|(_, c)| c),
        };
        tokio::spawn(task.run(rx, events));
        Ok(Membership {
            server,
            connected: connected_rx,
            seeds: n_seeds,
            fatal: fatal_rx,
            serving: serving_tx,
            drain: drain_rx,
        })
    }

    /// Waits for the seeds (up to `join_timeout_secs`), then for the Router
    /// to catch up with every connected node and start serving.
    pub async fn join(
        &mut self,
        config: &ClusterSection,
        router: &ActorRef<RouterMsg>,
    ) -> Result<(), JoinError> {
        let all_seeds = async {
            let _ = self.connected.wait_for(|c| c.seeds >= self.seeds).await;
        };
        let _ =
            tokio::time::timeout(Duration::from_secs(config.join_timeout_secs), all_seeds).await;
        self.check_fatal()?;
        let (tx, rx) = ractor::concurrency::oneshot();
        // The Router must have heard and caught up with every node we hold
        // a session with, not only those whose Routers it has seen so far.
        let expect = self.connected.borrow().names.clone();
        router
            .cast(RouterMsg::Serve {
                expect,
                reply: tx.into(),
            })
            .map_err(|e| JoinError::Listen(e.to_string()))?;
        let mut fatal = self.fatal.clone();
        tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(config.sync_timeout_secs), rx) => {
                if r.is_err() {
                    return Err(JoinError::SyncTimeout(config.sync_timeout_secs));
                }
            }
            _ = fatal.wait_for(|f| f.is_some()) => {}
        }
        self.check_fatal()?;
        let _ = self.serving.send(true);
        Ok(())
    }

    /// Resolves when the node must stop (another node has its name or id),
    /// with the reason.
    pub fn fatal(&self) -> impl std::future::Future<Output = String> + Send + 'static {
        let mut rx = self.fatal.clone();
        async move {
            let why = match rx.wait_for(|f| f.is_some()).await {
                Ok(f) => f.clone(),
                Err(_) => None,
            };
            match why {
                Some(w) => w,
                // The membership task is gone: never resolve.
                None => std::future::pending().await,
            }
        }
    }

    /// Resolves when an operator asked this node, from another node's admin
    /// console, to drain.
    pub fn drain_requested(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.drain.clone();
        async move {
            if rx.wait_for(|d| *d).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    fn check_fatal(&self) -> Result<(), JoinError> {
        match self.fatal.borrow().clone() {
            Some(m) => Err(JoinError::Duplicate(m)),
            None => Ok(()),
        }
    }

    /// Stops the node-to-node listener and every session.
    pub fn stop(&self) {
        self.server.stop(Some("node stopping".into()));
    }
}

struct Task {
    me: String,
    /// This node's node-to-node address, as it advertises it.
    listen: SocketAddr,
    server: ActorRef<NodeServerMessage>,
    seeds: Vec<Seed>,
    sessions: HashMap<String, ActorRef<NodeSessionMessage>>,
    connected: watch::Sender<Connected>,
    fatal: watch::Sender<Option<String>>,
    serving: watch::Receiver<bool>,
    drain: watch::Sender<bool>,
    had_peer: bool,
    connector: Option<TlsConnector>,
}

impl Task {
    async fn run(
        mut self,
        mut sessions: mpsc::UnboundedReceiver<SessionEvent>,
        mut events: mpsc::UnboundedReceiver<ClusterEvent>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(e) = sessions.recv() => self.session(e),
                Some(e) = events.recv() => self.cluster(e),
                _ = tick.tick() => self.dial(),
                else => return,
            }
        }
    }

    fn serving(&self) -> bool {
        *self.serving.borrow()
    }

    /// Whether a peer's advertised address is this node's own listener. A
    /// node restarted quickly is still listed, under its name and address,
    /// by peers that have not yet seen its previous run go: in a transitive
    /// mesh it then dials itself, which is no duplicate. A real duplicate
    /// cannot listen on this node's address (another process, or another
    /// host, has another), and the Redis claim catches it regardless.
    fn is_self(&self, connection_string: &str) -> bool {
        !self.listen.ip().is_unspecified()
            && addr_matches(&self.listen.to_string(), connection_string)
    }

    fn duplicate(&self, what: String) {
        // The node that was here first serves and has had peers (its
        // sessions may be down for a moment: ractor_cluster lets the
        // newcomer's connection displace it). The newcomer is not serving
        // yet, or serves alone because no seed answered in time: it stops.
        if self.serving() && self.had_peer {
            tracing::error!("{what}; the newer node must change it");
        } else {
            let _ = self.fatal.send(Some(what));
        }
    }

    fn session(&mut self, e: SessionEvent) {
        match e {
            SessionEvent::Ready(info) => {
                let Some(peer) = info.peer_name.clone() else {
                    return;
                };
                // ractor_cluster names nodes "name@host"; ours is the part
                // before the '@'.
                let name = short_name(&peer.name).to_string();
                if name == self.me && self.is_self(&peer.connection_string) {
                    // This node reached its own listener through a peer's
                    // list that still names its previous run: not a
                    // duplicate, just a loop.
                    info.actor.stop(Some("connected to itself".into()));
                    return;
                }
                if name == self.me {
                    self.duplicate(format!(
                        "a node named {name:?} is already in the cluster (at {})",
                        info.peer_addr
                    ));
                    info.actor.stop(Some("duplicate node name".into()));
                    return;
                }
                tracing::info!(peer = %name, addr = %info.peer_addr, "cluster session ready");
                self.had_peer = true;
                for s in &mut self.seeds {
                    // connection_string is the peer's own listen address,
                    // whichever side dialed.
                    if addr_matches(&s.addr, &peer.connection_string)
                        || (!info.is_server && addr_matches(&s.addr, &info.peer_addr))
                    {
                        s.name = Some(name.clone());
                        s.backoff = BACKOFF_MIN;
                    }
                }
                self.sessions.insert(name, info.actor);
            }
            SessionEvent::Down(info) => {
                if let Some(name) = info
                    .peer_name
                    .as_ref()
                    .map(|n| short_name(&n.name).to_string())
                {
                    // A peer with our name: ractor_cluster closes such a
                    // session before it is ready, so this is where it shows
                    // (unless it was this node itself, reached through a
                    // stale peer list: see `is_self`).
                    let own = info
                        .peer_name
                        .as_ref()
                        .is_some_and(|n| self.is_self(&n.connection_string));
                    if name == self.me && !own {
                        self.duplicate(format!(
                            "a node named {name:?} is already in the cluster (at {})",
                            info.peer_addr
                        ));
                        return;
                    }
                    if self
                        .sessions
                        .get(&name)
                        .is_some_and(|a| a.get_id() == info.actor.get_id())
                    {
                        tracing::warn!(peer = %name, "cluster session down");
                        self.sessions.remove(&name);
                    }
                }
            }
        }
        let seeds = self
            .seeds
            .iter()
            .filter(|s| {
                s.name
                    .as_ref()
                    .is_some_and(|n| self.sessions.contains_key(n))
            })
            .count();
        let names = self.sessions.keys().cloned().collect();
        let _ = self.connected.send(Connected { seeds, names });
    }

    fn cluster(&mut self, e: ClusterEvent) {
        match e {
            ClusterEvent::Stale(name) => {
                if let Some(s) = self.sessions.remove(&name) {
                    tracing::warn!(peer = %name, "dropping the session of a silent node");
                    s.stop(Some("peer silent".into()));
                }
            }
            ClusterEvent::DuplicateId { name, node_id } => self.duplicate(format!(
                "node {name:?} already uses node id {node_id} (node.id must be unique)"
            )),
            ClusterEvent::Drain { .. } => {
                let _ = self.drain.send(true);
            }
        }
    }

    /// Dials every seed that has no live session, with exponential backoff
    /// and jitter so a restarted cluster does not dial in lockstep.
    fn dial(&mut self) {
        let now = Instant::now();
        for s in &mut self.seeds {
            if s.name
                .as_ref()
                .is_some_and(|n| self.sessions.contains_key(n))
                || now < s.next_try
            {
                continue;
            }
            let jitter = Duration::from_millis(rand::random::<u64>() % 100);
            s.next_try = now + s.backoff + jitter;
            s.backoff = (s.backoff * 2).min(BACKOFF_MAX);
            let server = self.server.clone();
            let addr = s.addr.clone();
            let connector = self.connector.clone();
            tokio::spawn(async move {
                let r = match connector {
                    None => ractor_cluster::client_connect(&server, addr.as_str()).await,
                    Some(c) => {
                        // The seed's host is what its certificate must name.
                        let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
                        let host = host.trim_start_matches('[').trim_end_matches(']');
                        match ServerName::try_from(host.to_string()) {
                            Ok(name) => {
                                ractor_cluster::client_connect_enc(&server, addr.as_str(), c, name)
                                    .await
                            }
                            Err(e) => {
                                tracing::error!(%addr, error = %e, "seed host is not a valid TLS name");
                                return;
                            }
                        }
                    }
                };
                if let Err(e) = r {
                    tracing::debug!(%addr, error = %e, "seed not reachable");
                }
            });
        }
    }
}

/// Mutual TLS from the `[cluster]` PEM files: nodes accept only peers whose
/// certificate the cluster CA signed, and present their own when dialing.
fn tls_configs(config: &ClusterSection) -> Result<Option<(TlsAcceptor, TlsConnector)>, JoinError> {
    let (Some(cert), Some(key), Some(ca)) = (&config.tls_cert, &config.tls_key, &config.tls_ca)
    else {
        return Ok(None);
    };
    let bad =
        |what: &Path, e: &dyn std::fmt::Display| JoinError::Tls(format!("{}: {e}", what.display()));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(cert, &e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| bad(ca, &e))? {
        roots
            .add(c.map_err(|e| bad(ca, &e))?)
            .map_err(|e| bad(ca, &e))?;
    }
    let roots = Arc::new(roots);
    let verifier = WebPkiClientVerifier::builder(roots.clone())
        .build()
        .map_err(|e| bad(ca, &e))?;
    let server = ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| bad(cert, &e))?;
    let client = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| bad(cert, &e))?;
    Ok(Some((
        TlsAcceptor::from(Arc::new(server)),
        TlsConnector::from(Arc::new(client)),
    )))
}

fn short_name(full: &str) -> &str {
    full.split('@').next().unwrap_or(full)
}

/// Whether a seed's "host:port" is the address a session reached.
fn addr_matches(seed: &str, peer: &str) -> bool {
    if seed == peer {
        return true;
    }
    match (seed.parse::<SocketAddr>(), peer.parse::<SocketAddr>()) {
        (Ok(a), Ok(b)) => a == b,
        // A host name: compare ports only after resolving would block here;
        // the port is a good enough key on one machine, and a name is
        // re-learned at the next connect anyway.
        _ => seed.rsplit(':').next() == peer.rsplit(':').next(),
    }
}

/// Claims this node's name and id in Redis (shared by every node of a
/// cluster) for as long as it runs, so a second process with the same name or
/// id refuses to start even when ractor_cluster hides it (it drops a
/// same-named peer's connection before telling either side why).
///
/// The claim holds an instance id kept in the data directory: the same node
/// restarted on its data (after a crash too) takes its claim back at once;
/// another process must wait until the claim lapses (`CLAIM_TTL` after the
/// holder stopped refreshing it). Redis unreachable at start: the node starts
/// anyway (chat does not depend on Redis) and says so.
pub struct NodeClaim {
    task: tokio::task::JoinHandle<()>,
}

const CLAIM_TTL: Duration = Duration::from_secs(10);

/// Claims (or refreshes) every key, or names the first one someone else holds.
const LUA_CLAIM: &str = r#"
for _, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if v and v ~= ARGV[1] then return k .. ' (held by instance ' .. v .. ')' end
end
for _, k in ipairs(KEYS) do redis.call('SET', k, ARGV[1], 'PX', ARGV[2]) end
return false
"#;

impl NodeClaim {
    /// Claims `name` and `id`; `Err` when another live node holds either.
    pub async fn acquire(
        redis_url: &str,
        name: &str,
        id: u16,
        data_dir: &Path,
    ) -> Result<NodeClaim, JoinError> {
        use fred::interfaces::{ClientLike, LuaInterface};
        let instance = instance_id(data_dir)?;
        let config = fred::prelude::Config::from_url(redis_url)
            .map_err(|e| JoinError::Listen(format!("redis url: {e}")))?;
        let client = fred::prelude::Builder::from_config(config)
            .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(2))
            .set_policy(fred::prelude::ReconnectPolicy::new_exponential(
                0, 100, 2_000, 2,
            ))
            .build()
            .map_err(|e| JoinError::Listen(format!("redis client: {e}")))?;
        let _conn = client.connect();
        // One hash tag for both: on a Redis Cluster the script's keys must
        // share a slot.
        let keys = vec![
            format!("chat:{{node-claims}}:name:{name}"),
            format!("chat:{{node-claims}}:id:{id}"),
        ];
        let args = vec![instance.clone(), CLAIM_TTL.as_millis().to_string()];
        let up = tokio::time::timeout(Duration::from_secs(3), client.wait_for_connect()).await;
        if matches!(up, Ok(Ok(()))) {
            // A claim of another instance may be a killed process's (a node
            // restarted on an empty data directory has a new instance id):
            // it runs out within CLAIM_TTL unless a live node renews it.
            let deadline = tokio::time::Instant::now() + CLAIM_TTL + Duration::from_secs(1);
            loop {
                let held: Option<String> = client
                    .eval(LUA_CLAIM, keys.clone(), args.clone())
                    .await
                    .map_err(|e| JoinError::Listen(format!("redis: {e}")))?;
                let Some(key) = held else { break };
                if tokio::time::Instant::now() >= deadline {
                    return Err(JoinError::Duplicate(format!(
                        "another running node already uses this node's name or id: {key}"
                    )));
                }
                tracing::info!(%key, "name or id claimed by another instance; waiting for it to run out");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        } else {
            tracing::warn!(
                "Redis unreachable: starting without checking that node name and id are unique"
            );
        }
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(CLAIM_TTL / 3);
            loop {
                tick.tick().await;
                match client
                    .eval::<Option<String>, _, _, _>(LUA_CLAIM, keys.clone(), args.clone())
                    .await
                {
                    Ok(None) => {}
                    Ok(Some(key)) => {
                        tracing::error!(%key, "another node took this node's name or id")
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot refresh the node claim"),
                }
            }
        });
        Ok(NodeClaim { task })
    }
}

impl Drop for NodeClaim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// This data directory's instance id, made once.
fn instance_id(data_dir: &Path) -> Result<String, JoinError> {
    let path = data_dir.join("node_instance");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_string());
        }
    }
    let id = hex::encode(rand::random::<[u8; 16]>());
    std::fs::write(&path, &id)
        .map_err(|e| JoinError::Listen(format!("{}: {e}", path.display())))?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_addresses_match_sessions() {
        assert!(addr_matches("127.0.0.1:9001", "127.0.0.1:9001"));
        assert!(!addr_matches("127.0.0.1:9001", "127.0.0.1:9002"));
        assert!(addr_matches("node-a:9001", "127.0.0.2:9001"));
        assert_eq!(short_name("node-1@127.0.0.1"), "node-1");
    }
}
