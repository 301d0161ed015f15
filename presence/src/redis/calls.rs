//! The commands of the backend: keys, scripts and pipelines, run within
//! the op timeout.

use std::collections::HashMap;
use std::future::Future;
use std::sync::MutexGuard;
use std::time::Duration;

use chat_protocol::UserId;
use fred::error::Error as RedisError;
use fred::interfaces::{ClientLike, LuaInterface};
use fred::prelude::Value;
use fred::types::{ClusterHash, CustomCommand};
use tokio::sync::oneshot;

use super::state::*;
use crate::PresenceError;

impl Shared {
    pub(super) fn local(&self) -> MutexGuard<'_, Local> {
        lock(&self.local)
    }

    pub(super) fn watched(&self) -> MutexGuard<'_, HashMap<UserId, Known>> {
        lock(&self.watched)
    }

    pub(super) fn presence_key(&self, user: &UserId) -> String {
        format!("{}p:{{{user}}}", self.prefix)
    }

    pub(super) fn last_seen_key(&self, user: &UserId) -> String {
        format!("{}ls:{{{user}}}", self.prefix)
    }

    pub(super) fn channel(&self, user: &UserId) -> String {
        format!("{}c:{user}", self.prefix)
    }

    pub(super) fn period(&self) -> Duration {
        self.ttl / 3
    }

    pub(super) fn redis_error(&self, e: &RedisError) -> PresenceError {
        PresenceError(format!("redis {}: {e}", self.server))
    }

    pub(super) fn too_slow(&self) -> PresenceError {
        PresenceError(format!(
            "redis {}: no answer within {:?}",
            self.server, self.op_timeout
        ))
    }

    /// Fails at once rather than queueing behind a reconnection.
    pub(super) fn check_connected(&self) -> Result<(), PresenceError> {
        if self.client.is_connected() {
            Ok(())
        } else {
            Err(PresenceError(format!(
                "redis {}: unreachable, reconnecting",
                self.server
            )))
        }
    }

    pub(super) async fn wait(
        &self,
        rx: oneshot::Receiver<Result<(), PresenceError>>,
    ) -> Result<(), PresenceError> {
        match tokio::time::timeout(self.op_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(stopped()),
            Err(_) => Err(self.too_slow()),
        }
    }

    /// Bounds `f` by `op_timeout`: the client's own timeout is per command
    /// and does not cover a sequence of them.
    pub(super) async fn bounded<T>(
        &self,
        f: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, PresenceError> {
        match tokio::time::timeout(self.op_timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.redis_error(&e)),
            Err(_) => Err(self.too_slow()),
        }
    }

    pub(super) fn call(&self, which: Which, user: &UserId, args: Vec<String>) -> Call {
        Call {
            cmd: Cmd::Script(which),
            keys: vec![self.presence_key(user), self.last_seen_key(user)],
            args,
        }
    }

    pub(super) fn nodes_key(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    pub(super) fn users_key(&self, incarnation: &str) -> String {
        format!("{}u:{{{incarnation}}}", self.prefix)
    }

    /// What every member this node adds starts with, whatever the
    /// incarnation (node names have no `/`).
    pub(super) fn node_head(&self) -> String {
        format!("{}/", self.node)
    }

    pub(super) fn touch(&self, incarnation: &str, user: &UserId, conn: u64) -> Call {
        let args = vec![
            format!("{incarnation}/{conn}"),
            self.channel(user),
            user.to_string(),
            self.node_head(),
            format!("/{conn}"),
        ];
        self.call(Which::Touch, user, args)
    }

    pub(super) fn leave(&self, leave: &Leave) -> Call {
        let args = vec![
            self.node_head(),
            format!("/{}", leave.conn),
            leave.at.to_string(),
            self.channel(&leave.user),
            leave.user.to_string(),
        ];
        self.call(Which::Leave, &leave.user, args)
    }

    /// Adds `user` to the users `incarnation` has entries for: listed
    /// before its entry is added, so a sweep finds it. Never taken off (a
    /// removal replayed onto a Redis restored from a snapshot would hide a
    /// resurrected entry from the sweep): the list is renewed instead.
    pub(super) fn listed(&self, incarnation: &str, user: &UserId) -> Call {
        Call {
            cmd: Cmd::Plain("SADD"),
            keys: vec![self.users_key(incarnation)],
            args: vec![user.to_string()],
        }
    }

    /// A heartbeat of `me`, or its registration while it has had none.
    pub(super) fn beat(&self, me: &Incarnation) -> Call {
        let fresh = if me.registered { "0" } else { "1" };
        Call {
            cmd: Cmd::Script(Which::Beat),
            keys: vec![self.nodes_key()],
            args: vec![me.id.to_string(), self.ttl_ms(), fresh.to_string()],
        }
    }

    pub(super) fn ttl_ms(&self) -> String {
        self.ttl.as_millis().to_string()
    }

    /// Runs `calls` in one pipeline; after a Redis restart emptied the script
    /// cache, loads the scripts and runs the refused calls again.
    pub(super) async fn run(&self, calls: &[Call]) -> Vec<Result<Value, PresenceError>> {
        let mut results = self.send(calls.iter()).await;
        let refused: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r, Err(e) if e.details().starts_with("NOSCRIPT")))
            .map(|(i, _)| i)
            .collect();
        if !refused.is_empty() {
            if let Err(e) = self.load_scripts().await {
                for &i in &refused {
                    results[i] = Err(e.clone());
                }
            } else {
                let again = self.send(refused.iter().map(|&i| &calls[i])).await;
                for (i, r) in refused.into_iter().zip(again) {
                    results[i] = r;
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.map_err(|e| self.redis_error(&e)))
            .collect()
    }

    pub(super) async fn send<'a>(
        &self,
        calls: impl ExactSizeIterator<Item = &'a Call>,
    ) -> Vec<Result<Value, RedisError>> {
        let n = calls.len();
        let everything = |e: RedisError| vec![Err(e); n];
        let pipeline = self.client.pipeline();
        for c in calls {
            let mut args = Vec::with_capacity(2 + c.keys.len() + c.args.len());
            let command = match c.cmd {
                Cmd::Script(which) => {
                    args.push(self.scripts[which as usize].sha1().to_string());
                    args.push(c.keys.len().to_string());
                    // Pipelines have no Lua interface; the slot is the first key's.
                    CustomCommand::new_static("EVALSHA", ClusterHash::Offset(2), false)
                }
                Cmd::Plain(name) => CustomCommand::new_static(name, ClusterHash::FirstKey, false),
            };
            args.extend(c.keys.iter().cloned());
            args.extend(c.args.iter().cloned());
            let queued: Result<(), RedisError> = pipeline.custom(command, args).await;
            if let Err(e) = queued {
                return everything(e);
            }
        }
        match tokio::time::timeout(self.op_timeout, pipeline.try_all::<Value>()).await {
            Ok(results) if results.len() == n => results,
            Ok(mut results) => everything(
                results
                    .pop()
                    .and_then(Result::err)
                    .unwrap_or_else(RedisError::new_canceled),
            ),
            Err(_) => everything(RedisError::new(
                fred::error::ErrorKind::Timeout,
                "no answer in time",
            )),
        }
    }

    pub(super) async fn load_scripts(&self) -> Result<(), RedisError> {
        for script in &self.scripts {
            if let Some(lua) = script.lua() {
                self.client
                    .script_load_cluster::<String, _>(lua.clone())
                    .await?;
            }
        }
        Ok(())
    }
}
