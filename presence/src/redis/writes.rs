//! Writing this node's entries: batches of connects and disconnects,
//! heartbeats, adding every connection again, sweeping dead nodes.

use std::collections::HashMap;

use chat_protocol::UserId;
use fred::interfaces::ClientLike;
use fred::prelude::Value;
use fred::types::{ClusterHash, CustomCommand};

use super::state::*;
use crate::PresenceError;

impl Shared {
    /// Applies a batch of connects and disconnects in one pipeline (after
    /// the incarnation's first heartbeat, if it has had none). A connect
    /// that fails makes everything due to be added again at the next beat.
    pub(super) async fn apply(&self, batch: Vec<Op>, w: &mut WriterState) {
        if let Err(e) = self.check_connected() {
            for op in batch {
                match op {
                    Op::Touch { reply, .. } => {
                        w.add_all = true;
                        let _ = reply.send(Err(e.clone()));
                    }
                    Op::Leave { leave, reply } => {
                        w.keep(leave);
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
            return;
        }
        let mut calls = Vec::with_capacity(batch.len() * 2 + 1);
        let beat = !w.me.registered && batch.iter().any(|op| matches!(op, Op::Touch { .. }));
        if beat {
            calls.push(self.beat(&w.me));
        }
        for op in &batch {
            match op {
                Op::Touch {
                    user, conn, first, ..
                } => {
                    w.listed += usize::from(*first);
                    calls.push(self.listed(&w.me.id, user));
                    calls.push(self.touch(&w.me.id, user, *conn));
                }
                Op::Leave { leave, .. } => calls.push(self.leave(leave)),
            }
        }
        let mut results = self.run(&calls).await.into_iter();
        if beat && results.next().is_some_and(|r| r.is_ok()) {
            w.me.registered = true;
        }
        for op in batch {
            match op {
                Op::Touch { reply, .. } => {
                    let listed = results.next().unwrap_or_else(|| Err(stopped()));
                    let touched = results.next().unwrap_or_else(|| Err(stopped()));
                    let result = listed.and(touched).map(drop);
                    w.add_all |= result.is_err();
                    let _ = reply.send(result);
                }
                Op::Leave { leave, reply } => {
                    let result = results.next().unwrap_or_else(|| Err(stopped())).map(drop);
                    // Replaying is harmless: a removal that did happen
                    // removes nothing the second time and announces nothing.
                    if result.is_err() {
                        w.keep(leave);
                    }
                    let _ = reply.send(result);
                }
            }
        }
    }

    /// The heartbeat: beats (first: nothing may delay it past the ttl),
    /// moves to a new incarnation when Redis lost track of this one or may
    /// hold removals it confirmed and then lost, adds every live local
    /// connection again when due, and replays failed removals.
    pub(super) async fn heartbeat(&self, w: &mut WriterState) {
        // The list only grows: renewed once it holds many more users than
        // are here, a sweep of the old one (a call per user, after the ttl)
        // trims it. Connects pay for that, a few calls each at most.
        let here = self.local().per_user.len();
        if w.listed > 2 * here + self.list_slack {
            w.renew = true;
        }
        match self.run(&[self.beat(&w.me)]).await.pop() {
            Some(Ok(v)) => {
                let continuous = v.convert::<i64>().is_ok_and(|v| v == 1);
                if w.me.registered && (!continuous || w.renew) {
                    // Redis restarted (empty, from a snapshot, or on a
                    // replica that lags: removals it confirmed may be back),
                    // this node was cut off long enough to be swept, or
                    // removals were dropped. A new incarnation holds the
                    // live connections from now on; the old one is swept
                    // once stale, with whatever it still holds.
                    if continuous {
                        tracing::info!(incarnation = %w.me.id, "presence: renewing this node's incarnation");
                    } else {
                        tracing::warn!(
                            incarnation = %w.me.id,
                            "presence: Redis lost track of this node; adding its connections again"
                        );
                    }
                    w.me.next();
                    *lock(&self.current) = w.me.id.clone();
                    w.add_all = true;
                    w.renew = false;
                    let registered = self.run(&[self.beat(&w.me)]).await.pop();
                    if registered.is_none_or(|r| r.is_err()) {
                        return;
                    }
                }
                w.me.registered = true;
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "presence heartbeat failed");
                return;
            }
            None => return,
        }
        if w.add_all {
            let users = self.add_all(&w.me).await;
            w.add_all = users.is_none();
            w.listed = users.unwrap_or(w.listed);
        }
        while !w.pending.is_empty() {
            let batch: Vec<Leave> = w.pending.drain(..w.pending.len().min(MAX_BATCH)).collect();
            let calls: Vec<Call> = batch.iter().map(|l| self.leave(l)).collect();
            let results = self.run(&calls).await;
            let failed = results.iter().any(Result::is_err);
            for (leave, result) in batch.into_iter().zip(results) {
                if result.is_err() {
                    w.keep(leave);
                }
            }
            if failed {
                break;
            }
        }
    }

    /// Adds every live local connection under `me`; how many users they
    /// have, or `None` when some failed.
    pub(super) async fn add_all(&self, me: &Incarnation) -> Option<usize> {
        let mut by_user: HashMap<UserId, Vec<u64>> = HashMap::new();
        for (key, user) in &self.local().conns {
            by_user.entry(user.clone()).or_default().push(key.conn);
        }
        let mut calls = Vec::new();
        let mut failures = 0usize;
        let mut last_error = None;
        let listed = by_user.len();
        let mut users = by_user.into_iter().peekable();
        while users.peek().is_some() {
            calls.clear();
            while calls.len() < MAX_BATCH {
                let Some((user, conns)) = users.next() else {
                    break;
                };
                calls.push(self.listed(&me.id, &user));
                calls.extend(conns.into_iter().map(|c| self.touch(&me.id, &user, c)));
            }
            for result in self.run(&calls).await {
                if let Err(e) = result {
                    failures += 1;
                    last_error = Some(e);
                }
            }
        }
        if let Some(e) = last_error {
            tracing::warn!(failures, error = %e, "presence: adding the connections again failed");
            return None;
        }
        Some(listed)
    }

    /// Sweeps the incarnations that stopped beating (nodes that died, or
    /// that went on under a new one), unless another node is at it.
    pub(super) async fn sweep(&self) -> Result<(), PresenceError> {
        let stale = Call {
            cmd: Cmd::Script(Which::Stale),
            keys: vec![self.nodes_key()],
            args: vec![self.ttl_ms()],
        };
        let dead: Vec<String> = match self.run(&[stale]).await.pop() {
            Some(r) => r?.convert().map_err(|e| self.redis_error(&e))?,
            None => return Ok(()),
        };
        let current = lock(&self.current).clone();
        for incarnation in dead.iter().filter(|i| ***i != *current) {
            let claim = Call {
                cmd: Cmd::Plain("SET"),
                keys: vec![format!("{}sweep:{{{incarnation}}}", self.prefix)],
                args: vec!["1".into(), "NX".into(), "PX".into(), self.ttl_ms()],
            };
            let claimed = match self.run(&[claim]).await.pop() {
                Some(r) => !matches!(r?, Value::Null),
                None => false,
            };
            if claimed {
                self.sweep_one(incarnation).await?;
            }
        }
        Ok(())
    }

    pub(super) async fn sweep_one(&self, incarnation: &str) -> Result<(), PresenceError> {
        let list = self.users_key(incarnation);
        let head = format!("{incarnation}/");
        let scan = CustomCommand::new_static("SSCAN", ClusterHash::FirstKey, false);
        let mut cursor = "0".to_string();
        let mut swept = 0usize;
        let mut offline = 0usize;
        loop {
            let args = vec![
                list.clone(),
                cursor.clone(),
                "COUNT".to_string(),
                MAX_BATCH.to_string(),
            ];
            let page: (String, Vec<String>) = self
                .bounded(self.client.custom::<Value, _>(scan.clone(), args))
                .await?
                .convert()
                .map_err(|e| self.redis_error(&e))?;
            let calls: Vec<Call> = page
                .1
                .iter()
                .filter_map(|u| UserId::new(u).ok())
                .map(|u| {
                    let args = vec![head.clone(), self.channel(&u), u.to_string()];
                    self.call(Which::Sweep, &u, args)
                })
                .collect();
            for r in self.run(&calls).await {
                offline += usize::from(r?.convert::<i64>().is_ok_and(|v| v == 1));
            }
            swept += calls.len();
            cursor = page.0;
            if cursor == "0" {
                break;
            }
        }
        let forget = [
            Call {
                cmd: Cmd::Plain("DEL"),
                keys: vec![list],
                args: Vec::new(),
            },
            Call {
                cmd: Cmd::Script(Which::Forget),
                keys: vec![self.nodes_key()],
                args: vec![incarnation.to_string(), self.ttl_ms()],
            },
        ];
        for r in self.run(&forget).await {
            r?;
        }
        tracing::info!(
            incarnation,
            users = swept,
            offline,
            "presence: swept a node that stopped"
        );
        Ok(())
    }

    pub(super) async fn close(&self) {
        let _ = tokio::time::timeout(self.op_timeout, async {
            let _ = tokio::join!(self.client.quit(), self.subscriber.quit());
        })
        .await;
        for handle in lock(&self.handles).drain(..) {
            handle.abort();
        }
    }
}
