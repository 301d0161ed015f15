//! The cluster side of the Router: requests forwarded to owners and
//! served for other nodes, heartbeats and deadlines, the view of who serves.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_protocol::peer::{ConnRef, NodeStats, PeerMsg, TraceParent};
use chat_protocol::request::ConversationRequest;
use chat_protocol::{ConversationId, OkReply, UserId};
use ractor::ActorRef;

use super::{
    InFlight, Peer, RemoteRequest, RouterState, INTEREST_ASK_EVERY, PEER_DEADLINE,
    REQUEST_DEADLINE, RESYNC_EVERY,
};
use crate::catch_up::CatchUp;
use crate::cluster::{self, monotonic_us, Owner, View, NODES_GROUP, ROUTERS_GROUP};
use crate::error::ChatError;
use crate::metrics::PeerLabel;
use crate::msg::{ClusterEvent, ClusterStatus, PeerStatus, Request, RouterMsg};
use crate::placement::Placement;

impl RouterState {
    pub(super) fn me(&self) -> String {
        self.services.cluster.name().to_string()
    }

    /// Sends a request to the owner's Router and remembers where the answer
    /// goes.
    pub(super) fn forward(
        &mut self,
        node: Arc<str>,
        router: ActorRef<RouterMsg>,
        request: Request,
    ) {
        let Request {
            user,
            conn,
            body,
            reply,
            trace,
            ..
        } = request;
        let id = self.next_request;
        self.next_request += 1;
        if let Some(reply) = reply {
            let Some(peer) = self.peers.get_mut(&node) else {
                let _ = reply.send(Err(ChatError::Unavailable(
                    "owner node unreachable, retry".into(),
                )));
                return;
            };
            let weight = body.weight();
            if !peer.in_flight.admit(weight) {
                self.services.metrics.peer_rejected.inc();
                let _ = reply.send(Err(ChatError::Unavailable(
                    "owner node overloaded, retry".into(),
                )));
                return;
            }
            self.remote.insert(
                id,
                RemoteRequest {
                    reply,
                    peer: node.clone(),
                    deadline: Instant::now() + REQUEST_DEADLINE,
                    weight,
                },
            );
        }
        let msg = PeerMsg::Request {
            from: self.me(),
            id,
            user,
            conn: conn.unwrap_or(0),
            request: body,
            trace,
        };
        self.services.metrics.peer_requests.inc();
        if router.cast(RouterMsg::Peer(msg)).is_err() {
            self.finish_remote(
                id,
                Err(ChatError::Unavailable(
                    "owner node unreachable, retry".into(),
                )),
            );
        }
    }

    pub(super) fn finish_remote(&mut self, id: u64, result: Result<OkReply, ChatError>) {
        if let Some(r) = self.remote.remove(&id) {
            if let Some(p) = self.peers.get_mut(&r.peer) {
                p.in_flight.release(r.weight);
            }
            let _ = r.reply.send(result);
        }
    }

    /// One message from another node.
    pub(super) async fn peer(&mut self, myself: &ActorRef<RouterMsg>, msg: PeerMsg) {
        match msg {
            PeerMsg::Heartbeat {
                from,
                node_id,
                serving,
                stats,
                protocol,
            } => self.heartbeat(myself, from, node_id, serving, (stats, protocol)),
            PeerMsg::Request {
                from,
                id,
                user,
                conn,
                request,
                trace,
            } => {
                self.serve_request(myself, from, id, user, conn, (request, trace))
                    .await
            }
            PeerMsg::Reply { id, result } => {
                self.finish_remote(id, result.map(|ok| *ok).map_err(ChatError::from));
            }
            PeerMsg::Deliver(d) => self.services.fanout.from_peer(*d),
            PeerMsg::Replicate { from, op } => self.apply_replicated(myself, from, op),
            PeerMsg::Ack { from, origin, seq } => self.replication_acked(&from, origin, seq),
            PeerMsg::Pull { from, vector } => self.serve_pull(from, vector),
            PeerMsg::Ops { from, ops, more } => self.apply_pulled(myself, from, ops, more),
            PeerMsg::Interest {
                from,
                view,
                listening,
                conversations,
                ack,
            } => {
                let cluster = self.services.cluster.clone();
                let delay = cluster.faults().interest_ack_delay;
                let apply = {
                    let cluster = cluster.clone();
                    move || {
                        cluster.peer_interest(&from, view, listening, conversations);
                        if let Some(id) = ack {
                            cluster.send(&from, &PeerMsg::InterestAck { id });
                        }
                    }
                };
                if delay.is_zero() {
                    apply();
                } else {
                    // A slow owner, for tests (`[faults]`).
                    cluster.after(delay, apply);
                }
            }
            PeerMsg::InterestAck { id } => self.services.cluster.interest_acked(id),
            PeerMsg::InterestSync {
                from,
                view,
                conversations,
                first,
                last,
            } => {
                self.services
                    .cluster
                    .peer_interest_sync(&from, view, conversations, first, last);
            }
            PeerMsg::InterestAsk { from } => {
                let services = &self.services;
                services.interest.sync(Some(&from), &services.cluster);
            }
            PeerMsg::LoginRevoked { user, login } => self.login_revoked(myself, &user, login).await,
            PeerMsg::CloseUser { user, code } => self.close_user(myself, &user, code).await,
            PeerMsg::ToUsers { users, frame } => self.services.to_users(&users, *frame),
            PeerMsg::PresenceRestricted { user } => {
                let s = &self.services;
                s.watchers.recheck(s.store.clone(), user);
            }
            PeerMsg::Drain { by } => {
                tracing::warn!(admin = %by, "an operator asked this node to drain");
                self.services.cluster.emit(ClusterEvent::Drain { by });
            }
            PeerMsg::Ping { from, sent_us } => {
                let pong = PeerMsg::Pong {
                    from: self.me(),
                    sent_us,
                };
                self.services.cluster.send(&from, &pong);
            }
            PeerMsg::Pong { from, sent_us } => {
                self.services.cluster.ponged(&from, sent_us);
                let rtt = Duration::from_micros(monotonic_us().saturating_sub(sent_us));
                if let Some(p) = self.peers.get_mut(from.as_str()) {
                    p.rtt = Some(rtt);
                    self.services
                        .metrics
                        .peer_rtt
                        .get_or_create(&PeerLabel { peer: from })
                        .set(rtt.as_secs_f64());
                }
            }
        }
    }

    fn heartbeat(
        &mut self,
        myself: &ActorRef<RouterMsg>,
        from: String,
        node_id: u16,
        serving: bool,
        (stats, protocol): (Option<NodeStats>, u16),
    ) {
        if node_id == self.services.cluster.node_id() && *from != **self.services.cluster.name() {
            self.services.cluster.emit(ClusterEvent::DuplicateId {
                name: from.clone(),
                node_id,
            });
        }
        if let Some(p) = self.peers.get_mut(from.as_str()) {
            p.heard = Some(Instant::now());
            p.node_id = Some(node_id);
            p.serving = serving;
            p.reported_stale = None;
            p.stats = stats;
            p.protocol = protocol.max(1);
        }
        self.check_serve(myself);
    }

    /// A request another node routed here: served by the local actor, the
    /// answer sent back (typing has none).
    async fn serve_request(
        &mut self,
        myself: &ActorRef<RouterMsg>,
        from: String,
        id: u64,
        user: UserId,
        conn: ConnRef,
        (body, trace): (ConversationRequest, Option<TraceParent>),
    ) {
        let answered = body.expects_reply();
        let (tx, rx) = ractor::concurrency::oneshot();
        let conn = (conn != 0).then_some(conn);
        let mut request = Request::new(user, conn, body, answered.then(|| tx.into()));
        request.trace = trace;
        if self.draining {
            request.fail(ChatError::Unavailable("node is shutting down".into()));
        } else {
            // Served here even if our view names another owner: a second hop
            // could loop while views settle. But not kept (see
            // `retire_if_foreign`).
            let foreign = matches!(
                self.services.cluster.owner(request.body.conversation()),
                Owner::Remote(..)
            )
            .then(|| request.body.conversation().clone());
            self.route(myself, request).await;
            if let Some(conversation) = foreign {
                self.retire_if_foreign(&conversation);
            }
        }
        if !answered {
            return;
        }
        let services = self.services.clone();
        tokio::spawn(async move {
            let result = match tokio::time::timeout(REQUEST_DEADLINE, rx).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err(ChatError::Unavailable("request dropped, retry".into())),
                Err(_) => Err(ChatError::Unavailable("request timed out, retry".into())),
            };
            let reply = PeerMsg::Reply {
                id,
                result: result.map(Box::new).map_err(|e| (&e).into()),
            };
            services.cluster.send(&from, &reply);
        });
    }

    /// A peer is gone (or dropped): nothing waits on it any more.
    pub(super) fn forget_peer(&mut self, node: &Arc<str>) {
        self.serve_expect.remove(node);
        let failed: Vec<u64> = self
            .remote
            .iter()
            .filter(|(_, r)| r.peer == *node)
            .map(|(id, _)| *id)
            .collect();
        for id in failed {
            self.finish_remote(
                id,
                Err(ChatError::Unavailable("owner node left, retry".into())),
            );
        }
        let done: Vec<(String, u64)> = self
            .replication
            .iter_mut()
            .filter_map(|(k, r)| {
                r.waiting.remove(node);
                r.waiting.is_empty().then(|| k.clone())
            })
            .collect();
        for k in done {
            if let Some(r) = self.replication.remove(&k) {
                let _ = r.reply.send(Ok(()));
            }
        }
    }

    pub(super) fn tick(&mut self, myself: &ActorRef<RouterMsg>) {
        let now = Instant::now();
        let heartbeat = PeerMsg::Heartbeat {
            from: self.me(),
            node_id: self.services.cluster.node_id(),
            serving: self.serving,
            stats: Some(self.load.stats(&self.services, self.sessions.len())),
            protocol: chat_protocol::peer::PEER_PROTOCOL,
        };
        if let Ok(bytes) = chat_protocol::peer::encode(&heartbeat) {
            let bytes: Arc<[u8]> = Arc::from(bytes);
            self.services.cluster.broadcast(&bytes);
        }
        self.services.cluster.ping_all();
        let metrics = &self.services.metrics;
        for (name, p) in self.peers.iter_mut() {
            let label = PeerLabel {
                peer: name.to_string(),
            };
            // The stream's count restarts with each connection.
            let sent = self.services.cluster.peer_sent(name);
            let new = sent.checked_sub(p.sent_counted).unwrap_or(sent);
            p.sent_counted = sent;
            metrics.peer_sent_bytes.get_or_create(&label).inc_by(new);
            let heard = p.heard.unwrap_or(p.since);
            let up = p.heard.is_some() && now.duration_since(heard) <= PEER_DEADLINE;
            metrics.peer_up.get_or_create(&label).set(i64::from(up));
            let (requests, bytes) = p.in_flight.load();
            metrics
                .peer_inflight_requests
                .get_or_create(&label)
                .set(requests as i64);
            metrics
                .peer_inflight_bytes
                .get_or_create(&label)
                .set(bytes as i64);
            let backlog = self.services.cluster.peer_backlog(name);
            metrics
                .peer_backlog_bytes
                .get_or_create(&label)
                .set(backlog as i64);
        }
        metrics
            .peers_overloaded
            .inc_by(self.services.cluster.take_overloaded());
        // ractor_cluster pings but never times a session out: we do.
        let mut stale = Vec::new();
        for (name, p) in self.peers.iter_mut() {
            let last = p.heard.unwrap_or(p.since);
            if now.duration_since(last) > PEER_DEADLINE
                && p.reported_stale
                    .is_none_or(|t| now.duration_since(t) > PEER_DEADLINE)
            {
                p.reported_stale = Some(now);
                stale.push(name.clone());
            }
        }
        for (_, r) in self.replication.iter() {
            if r.deadline <= now {
                stale.extend(r.waiting.iter().cloned());
            }
        }
        stale.sort();
        stale.dedup();
        for name in stale {
            tracing::warn!(peer = %name, "peer is not answering; dropping it");
            self.services.metrics.peers_dropped.inc();
            self.services
                .cluster
                .emit(ClusterEvent::Stale(name.to_string()));
            // Writes go on without it; it catches up when it is back.
            self.forget_peer(&name);
        }
        let expired: Vec<u64> = self
            .remote
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.finish_remote(
                id,
                Err(ChatError::Unavailable(
                    "owner node did not answer, retry".into(),
                )),
            );
        }
        // A pull still unanswered after as long is asked again: its request
        // or its chunk was lost (a link replaced while it was on it, a peer
        // that could not read its log), and a node that waits for it to
        // start serving would wait for good. (Each chunk asked restarts the
        // clock, and a chunk applied twice changes nothing.)
        let due: Vec<Arc<str>> = self
            .peers
            .iter()
            .filter(|(_, p)| now.duration_since(p.last_pull) > RESYNC_EVERY)
            .map(|(n, _)| n.clone())
            .collect();
        for n in due {
            self.pull(&n);
        }
        self.ask_interest(now);
        self.check_serve(myself);
    }

    /// Asks each peer whose interest this node does not hold under its view
    /// (a sync lost, or sent while views differed) to send it again; until
    /// then the peer gets every delivery.
    fn ask_interest(&mut self, now: Instant) {
        let cluster = &self.services.cluster;
        let me = self.me();
        for (name, p) in self.peers.iter_mut() {
            let due = p
                .interest_asked
                .is_none_or(|t| now.duration_since(t) >= INTEREST_ASK_EVERY);
            if p.heard.is_none() || !due || cluster.interest_synced(name) {
                continue;
            }
            p.interest_asked = Some(now);
            cluster.send(name, &PeerMsg::InterestAsk { from: me.clone() });
        }
    }

    /// Joins the serving group once every connected node has been heard and
    /// caught up with.
    pub(super) fn check_serve(&mut self, myself: &ActorRef<RouterMsg>) {
        if self.serving || self.serve_waiters.is_empty() || self.draining {
            return;
        }
        if self
            .peers
            .values()
            .any(|p| p.node_id.is_none() || !p.synced)
            || self
                .serve_expect
                .iter()
                .any(|n| !self.peers.contains_key(n))
        {
            return;
        }
        self.serving = true;
        ractor::pg::join(ROUTERS_GROUP.into(), vec![myself.get_cell()]);
        tracing::info!(peers = self.peers.len(), "caught up; serving conversations");
        for w in self.serve_waiters.drain(..) {
            let _ = w.send(());
        }
        self.refresh_view(myself);
    }

    /// Rebuilds the view from the two groups; stops local conversation
    /// actors whose conversations another node owns now.
    pub(super) fn refresh_view(&mut self, myself: &ActorRef<RouterMsg>) {
        let me = myself.get_id();
        let mut peers = HashMap::new();
        for cell in ractor::pg::get_members(&NODES_GROUP.to_string()) {
            if cell.get_id() == me {
                continue;
            }
            let Some(name) = cell.get_name() else {
                continue;
            };
            let Some(node) = cluster::node_of_router(&name) else {
                continue;
            };
            peers.insert(Arc::<str>::from(node), ActorRef::<RouterMsg>::from(cell));
        }
        let mut serving: Vec<Arc<str>> = Vec::new();
        for cell in ractor::pg::get_members(&ROUTERS_GROUP.to_string()) {
            if cell.get_id() == me {
                serving.push(self.services.cluster.name().clone());
                continue;
            }
            if let Some(node) = cell.get_name().as_deref().and_then(cluster::node_of_router) {
                serving.push(Arc::from(node));
            }
        }
        // Peers that left: fail what waits on them.
        let gone: Vec<Arc<str>> = self
            .peers
            .keys()
            .filter(|n| !peers.contains_key(*n))
            .cloned()
            .collect();
        for n in gone {
            tracing::info!(peer = %n, "node left");
            // Its stream ends here (not when it is dropped for silence: a
            // peer still connected and stuck must stay refused).
            self.services.cluster.forget_flow(&n);
            let label = PeerLabel {
                peer: n.to_string(),
            };
            let m = &self.services.metrics;
            m.peer_rtt.remove(&label);
            m.peer_up.remove(&label);
            m.peer_inflight_requests.remove(&label);
            m.peer_inflight_bytes.remove(&label);
            self.forget_peer(&n);
            self.peers.remove(&n);
            self.services.cluster.forget_interest(&n);
        }
        let now = Instant::now();
        let mut joined = Vec::new();
        for (n, r) in &peers {
            match self.peers.get_mut(n) {
                Some(p) if p.router.get_id() == r.get_id() => {}
                _ => {
                    tracing::info!(peer = %n, "node connected");
                    self.services.cluster.forget_flow(n);
                    self.peers.insert(
                        n.clone(),
                        Peer {
                            router: r.clone(),
                            since: now,
                            heard: None,
                            node_id: None,
                            serving: false,
                            synced: false,
                            last_pull: now,
                            in_flight: InFlight::default(),
                            reported_stale: None,
                            interest_asked: None,
                            stats: None,
                            protocol: 1,
                            sent_counted: 0,
                            rtt: None,
                        },
                    );
                    joined.push(n.clone());
                }
            }
        }
        let view = View::new(Placement::new(serving), peers);
        self.services
            .metrics
            .cluster_members
            .set(view.placement.nodes().len() as i64);
        let old = self.services.cluster.view();
        let changed = old.fingerprint != view.fingerprint
            || old.peers.len() != view.peers.len()
            || old
                .peers
                .iter()
                .any(|(n, r)| view.peers.get(n).is_none_or(|v| v.get_id() != r.get_id()));
        self.services.cluster.set_view(view);
        if changed {
            // Every owner may have changed: each peer learns what it owns
            // that sessions here listen to.
            let services = &self.services;
            services.interest.sync(None, &services.cluster);
            // Then listeners of a conversation whose owner changed are told
            // to catch up: the owner before may have left with messages it
            // acknowledged and never fanned out (see `crate::catch_up`).
            let catch_up = CatchUp {
                directory: &services.directory,
                metrics: &services.metrics,
            };
            let new = services.cluster.view();
            let moved =
                catch_up.after_view_change(services.cluster.name(), &old, &new, &services.interest);
            if moved > 0 {
                tracing::info!(
                    conversations = moved,
                    "owners changed: listeners told to catch up"
                );
            }
        }
        for n in joined {
            self.pull(&n);
        }
        // Conversations that moved: their actors finish what they hold and
        // stop; new requests already go to the new owner.
        let running = &self.services.conversations;
        let moved: Vec<ConversationId> = running
            .ids()
            .into_iter()
            .filter(|c| matches!(self.services.cluster.owner(c), Owner::Remote(..)))
            .collect();
        for c in moved {
            if let Some(a) = self.services.conversations.remove(&c) {
                self.retiring.retire(c, &a);
            }
        }
    }

    pub(super) fn status(&mut self) -> ClusterStatus {
        let view = self.services.cluster.view();
        let now = Instant::now();
        let mut peers: Vec<PeerStatus> = self
            .peers
            .iter()
            .map(|(n, p)| PeerStatus {
                name: n.to_string(),
                node_id: p.node_id,
                serving: p.serving,
                synced: p.synced,
                heard_ms_ago: p.heard.map(|h| now.duration_since(h).as_millis() as u64),
                interest_synced: self.services.cluster.interest_synced(n),
                listening: self.services.cluster.listening(n),
                stats: p.stats.clone(),
                protocol: p.protocol,
                rtt_ms: p.rtt.map(|d| d.as_secs_f64() * 1e3),
            })
            .collect();
        peers.sort_by(|a, b| a.name.cmp(&b.name));
        ClusterStatus {
            node: self.me(),
            clustered: self.services.cluster.enabled(),
            serving: self.serving,
            serving_nodes: view
                .placement
                .nodes()
                .iter()
                .map(|n| n.to_string())
                .collect(),
            peers,
            conversations: self.services.conversations.len(),
            sessions: self.sessions.len(),
            stats: self.load.stats(&self.services, self.sessions.len()),
        }
    }
}
