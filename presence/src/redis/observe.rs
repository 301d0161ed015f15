//! Reading presence: queries, what watchers are told, subscriptions.

use std::collections::HashSet;

use chat_protocol::{Presence, Status, UserId};
use fred::interfaces::{ClientLike, PubsubInterface};
use fred::prelude::Value;

use super::state::*;
use crate::PresenceError;

impl Shared {
    /// Reads (and, for a dead node's users, settles) the presence of `users`.
    pub(super) async fn observe(&self, users: &[UserId]) -> Vec<Result<Presence, PresenceError>> {
        let calls: Vec<Call> = users
            .iter()
            .map(|u| self.call(Which::Observe, u, vec![self.channel(u), u.to_string()]))
            .collect();
        self.run(&calls)
            .await
            .into_iter()
            .zip(users)
            .map(|(r, user)| {
                let pair: Vec<i64> = r?.convert().map_err(|e| self.redis_error(&e))?;
                match pair.as_slice() {
                    [1, _] => Ok(Presence {
                        user: user.clone(),
                        status: Status::Online,
                        last_seen: None,
                    }),
                    [0, seen] => Ok(Presence {
                        user: user.clone(),
                        status: Status::Offline,
                        last_seen: u64::try_from(*seen).ok(),
                    }),
                    other => Err(PresenceError(format!(
                        "redis {}: unexpected presence answer {other:?}",
                        self.server
                    ))),
                }
            })
            .collect()
    }

    pub(super) async fn query(&self, users: &[UserId]) -> Result<Vec<Presence>, PresenceError> {
        self.check_connected()?;
        let work = async {
            let mut out = Vec::with_capacity(users.len());
            for chunk in users.chunks(MAX_BATCH) {
                for result in self.observe(chunk).await {
                    out.push(result?);
                }
            }
            Ok(out)
        };
        tokio::time::timeout(self.op_timeout, work)
            .await
            .unwrap_or_else(|_| Err(self.too_slow()))
    }

    pub(super) fn generations(&self, users: &[UserId]) -> Vec<Option<u64>> {
        let watched = self.watched();
        users
            .iter()
            .map(|u| watched.get(u).map(|k| k.generation))
            .collect()
    }

    /// Records what was learnt about a watched user and tells watchers when
    /// it is news to them.
    pub(super) fn observed(&self, info: Presence, source: Source) {
        let mut watched = self.watched();
        let Some(known) = watched.get_mut(&info.user) else {
            return;
        };
        if let Source::Check(g) | Source::Query(g) = source {
            if g != known.generation {
                return;
            }
        }
        // Until a query has answered the watching session there is nothing
        // to compare with, and recording what a check read could swallow
        // the message of a change that is still on its way.
        if matches!(source, Source::Check(_)) && known.status.is_none() && !known.unsure {
            return;
        }
        known.generation += 1;
        let before = known.status.replace(info.status);
        // A query's first read is what the asking session is told anyway;
        // `unsure`: a query failed, so a session may know nothing.
        let news = match source {
            Source::Message | Source::Check(_) => before != Some(info.status) || known.unsure,
            Source::Query(_) => before.is_some_and(|s| s != info.status),
        };
        if news {
            // Every session watching hears it.
            known.unsure = false;
            // Sent under the lock so the order of changes matches the table.
            let _ = self.tx.send(info);
        }
    }

    /// Serialises changes of subscriptions, so that they reach Redis in the
    /// order the table changed: a watch racing an unwatch of the same user,
    /// or a resync working from an older view, could end unsubscribed.
    pub(super) async fn subscriptions(
        &self,
    ) -> Result<tokio::sync::MutexGuard<'_, ()>, PresenceError> {
        tokio::time::timeout(self.op_timeout, self.sub_order.lock())
            .await
            .map_err(|_| self.too_slow())
    }

    /// Subscribes to (or unsubscribes from) `channels`.
    pub(super) async fn subscribe(
        &self,
        channels: Vec<String>,
        on: bool,
    ) -> Result<(), PresenceError> {
        if channels.is_empty() {
            return Ok(());
        }
        if !self.subscriber.is_connected() {
            return Err(PresenceError(format!(
                "redis {}: pub/sub connection down, reconnecting",
                self.server
            )));
        }
        let work = async {
            for chunk in channels.chunks(MAX_BATCH) {
                let chunk = chunk.to_vec();
                if on {
                    self.subscriber.subscribe(chunk).await?;
                } else {
                    self.subscriber.unsubscribe(chunk).await?;
                }
            }
            // The client reports (un)subscribing done once the command is
            // sent, not once Redis applied it; a PING answered on the same
            // connection proves it was, so a watch never returns before it
            // can hear.
            self.subscriber.ping::<Value>(None).await.map(drop)
        };
        self.bounded(work).await
    }

    /// Brings the subscriptions in line with the watched users; `all`
    /// re-subscribes everything, after the server forgot it on reconnection.
    pub(super) async fn sync_subscriptions(&self, all: bool) -> Result<(), PresenceError> {
        let _order = self.subscriptions().await?;
        let tracked: HashSet<String> = self
            .subscriber
            .tracked_channels()
            .iter()
            .map(|c| c.to_string())
            .collect();
        let desired: HashSet<String> = self.watched().keys().map(|u| self.channel(u)).collect();
        let extra: Vec<String> = tracked.difference(&desired).cloned().collect();
        let missing: Vec<String> = if all {
            desired.into_iter().collect()
        } else {
            desired.difference(&tracked).cloned().collect()
        };
        self.subscribe(missing, true).await?;
        self.subscribe(extra, false).await
    }

    /// Re-reads every watched user: catches users whose node died (nobody
    /// publishes for them) and whatever pub/sub lost while Redis was away.
    /// Users nobody has read yet rely on messages alone; once some may have
    /// been lost, the next check must announce them.
    pub(super) fn messages_lost(&self) {
        for known in self.watched().values_mut() {
            if known.status.is_none() {
                known.unsure = true;
            }
        }
    }

    /// Returns false when it could not start because Redis is unreachable.
    pub(super) async fn check(&self) -> bool {
        if !self.client.is_connected() {
            return false;
        }
        let snapshot: Vec<(UserId, u64)> = self
            .watched()
            .iter()
            .map(|(u, k)| (u.clone(), k.generation))
            .collect();
        for chunk in snapshot.chunks(MAX_BATCH) {
            let users: Vec<UserId> = chunk.iter().map(|(u, _)| u.clone()).collect();
            for (result, (_, generation)) in self.observe(&users).await.into_iter().zip(chunk) {
                match result {
                    Ok(info) => self.observed(info, Source::Check(*generation)),
                    Err(e) => {
                        tracing::debug!(error = %e, "presence check failed");
                        return true;
                    }
                }
            }
        }
        true
    }
}
