//! Store replication through the Router, for a cluster on the embedded
//! store: every local write is made durable on each connected node before
//! it is acknowledged, and anti-entropy pulls whatever a dropped link lost.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use chat_protocol::peer::{PeerMsg, PeerOp};
use chat_storage::replicated::ReplicatedOp;
use chat_storage::StoreError;
use ractor::{ActorRef, RpcReplyPort};

use super::{Replication, RouterState, REPLICATION_DEADLINE, SYNC_CHUNK_BYTES, SYNC_CHUNK_OPS};
use crate::msg::RouterMsg;

impl RouterState {
    pub(super) fn replicate(
        &mut self,
        op: ReplicatedOp,
        reply: RpcReplyPort<Result<(), StoreError>>,
    ) {
        let waiting: HashSet<Arc<str>> = self.peers.keys().cloned().collect();
        if waiting.is_empty() {
            let _ = reply.send(Ok(()));
            return;
        }
        let key = (op.origin.clone(), op.seq);
        let msg = PeerMsg::Replicate {
            from: self.me(),
            op: op_to_wire(op),
        };
        let bytes: Arc<[u8]> = match chat_protocol::peer::encode(&msg) {
            Ok(b) => Arc::from(b),
            Err(e) => {
                let _ = reply.send(Err(StoreError::Unavailable(e.to_string())));
                return;
            }
        };
        // The view's peers are this table's (both come from refresh_view).
        self.services.cluster.broadcast(&bytes);
        self.replication.insert(
            key,
            Replication {
                waiting,
                reply,
                deadline: Instant::now() + REPLICATION_DEADLINE,
            },
        );
    }

    pub(super) fn pull(&mut self, node: &Arc<str>) {
        let Some(replica) = self.services.replica.clone() else {
            if let Some(p) = self.peers.get_mut(node) {
                p.synced = true;
            }
            return;
        };
        if let Some(p) = self.peers.get_mut(node) {
            p.last_pull = Instant::now();
        }
        let msg = PeerMsg::Pull {
            from: self.me(),
            vector: replica.vector(),
        };
        // Not sent (the link is gone): the tick asks again.
        self.services.cluster.send(node, &msg);
    }

    /// A peer's write: made durable here, then acknowledged to it.
    pub(super) fn apply_replicated(&self, myself: &ActorRef<RouterMsg>, from: String, op: PeerOp) {
        let Some(replica) = self.services.replica.clone() else {
            return;
        };
        let services = self.services.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            let (origin, seq) = (op.origin.clone(), op.seq);
            match replica.apply_remote(op_from_wire(op)).await {
                Ok(changed) => {
                    if !changed.is_empty() {
                        let _ = me.cast(RouterMsg::ReplicaChanged(changed));
                    }
                    let me = services.cluster.name().to_string();
                    services.cluster.send(
                        &from,
                        &PeerMsg::Ack {
                            from: me,
                            origin,
                            seq,
                        },
                    );
                }
                Err(e) => {
                    services.metrics.store_errors.inc();
                    tracing::warn!(%origin, seq, error = %e, "cannot apply a replicated write");
                }
            }
        });
    }

    /// Peer `from` has made the write `(origin, seq)` durable.
    pub(super) fn replication_acked(&mut self, from: &str, origin: String, seq: u64) {
        let key = (origin, seq);
        if let Some(r) = self.replication.get_mut(&key) {
            r.waiting.remove(from);
            if r.waiting.is_empty() {
                if let Some(r) = self.replication.remove(&key) {
                    let _ = r.reply.send(Ok(()));
                }
            }
        }
    }

    /// A peer's anti-entropy pull: the next chunk of ops it lacks.
    pub(super) fn serve_pull(&self, from: String, vector: std::collections::BTreeMap<String, u64>) {
        let Some(replica) = self.services.replica.clone() else {
            return;
        };
        let services = self.services.clone();
        tokio::spawn(async move {
            let me = services.cluster.name().to_string();
            match replica
                .ops_after(&vector, SYNC_CHUNK_OPS, SYNC_CHUNK_BYTES)
                .await
            {
                Ok(ops) => {
                    let more = !ops.is_empty();
                    let ops = ops.into_iter().map(op_to_wire).collect();
                    services.cluster.send(
                        &from,
                        &PeerMsg::Ops {
                            from: me,
                            ops,
                            more,
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(peer = %from, error = %e, "cannot read ops for a peer")
                }
            }
        });
    }

    /// A chunk of ops this node pulled: applied in order, then
    /// [`RouterMsg::Pulled`] says how it went.
    pub(super) fn apply_pulled(
        &self,
        myself: &ActorRef<RouterMsg>,
        from: String,
        ops: Vec<PeerOp>,
        more: bool,
    ) {
        let Some(replica) = self.services.replica.clone() else {
            return;
        };
        let me = myself.clone();
        let peer: Arc<str> = Arc::from(from.as_str());
        tokio::spawn(async move {
            let mut ok = true;
            let mut changed = Vec::new();
            for op in ops {
                match replica.apply_remote(op_from_wire(op)).await {
                    Ok(ids) => changed.extend(ids),
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "anti-entropy op not applied");
                        ok = false;
                        break;
                    }
                }
            }
            changed.sort_unstable();
            changed.dedup();
            let _ = me.cast(RouterMsg::Pulled {
                peer,
                more,
                ok,
                changed,
            });
        });
    }
}

pub(super) fn op_to_wire(op: ReplicatedOp) -> PeerOp {
    PeerOp {
        origin: op.origin,
        seq: op.seq,
        bytes: op.bytes,
    }
}

fn op_from_wire(op: PeerOp) -> ReplicatedOp {
    ReplicatedOp {
        origin: op.origin,
        seq: op.seq,
        bytes: op.bytes,
    }
}
