//! The backend's tasks: the writer, the pub/sub listener and the checker.

use std::collections::VecDeque;
use std::sync::Arc;

use chat_protocol::Presence;
use fred::interfaces::ClientLike;
use fred::prelude::Server;
use fred::types::Message;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::state::*;

/// Owns every write of this node's entries, so they reach Redis in the order
/// the connections changed: connects and disconnects (batched), heartbeats,
/// replays of failed removals, and adding everything again.
pub(super) async fn writer(
    shared: Arc<Shared>,
    mut ops: mpsc::UnboundedReceiver<Op>,
    mut reconnects: broadcast::Receiver<Server>,
    stop: CancellationToken,
) {
    let mut w = WriterState {
        me: Incarnation::new(shared.node.clone()),
        pending: VecDeque::new(),
        add_all: false,
        renew: false,
        listed: 0,
    };
    *lock(&shared.current) = w.me.id.clone();
    // The first beat at once: a node that dies before it is never swept.
    let mut tick = tokio::time::interval(shared.period());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reconnects_open = true;
    let mut beat_due = false;
    let mut connected_before = false;
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            // Before the connects: a storm of them must not starve the
            // heartbeat, or the node would be swept as dead.
            _ = tick.tick() => beat_due = true,
            op = ops.recv() => {
                let Some(op) = op else { break };
                let mut batch = vec![op];
                while batch.len() < MAX_BATCH {
                    match ops.try_recv() {
                        Ok(op) => batch.push(op),
                        Err(_) => break,
                    }
                }
                shared.apply(batch, &mut w).await;
            }
            event = reconnects.recv(), if reconnects_open => match event {
                Err(broadcast::error::RecvError::Closed) => reconnects_open = false,
                // Redis may have restarted, empty or with removals it had
                // confirmed undone: a new incarnation, without waiting. (The
                // first connection undid nothing.)
                _ => {
                    (beat_due, w.add_all, w.renew) = (true, true, connected_before);
                    connected_before = true;
                }
            },
            // The client announces a reconnection before it accepts commands.
            _ = tokio::time::sleep(RECONNECT_POLL), if beat_due => {}
        }
        if beat_due && shared.client.is_connected() {
            beat_due = false;
            shared.heartbeat(&mut w).await;
        }
    }
    shared.close().await;
}

/// Forwards pub/sub messages about watched users to [`Presence::changes`].
pub(super) async fn listener(
    shared: Arc<Shared>,
    mut messages: broadcast::Receiver<Message>,
    stop: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            m = messages.recv() => m,
        };
        match message {
            Ok(message) => {
                let parsed = message
                    .value
                    .as_str()
                    .and_then(|text| fred::serde_json::from_str::<Presence>(&text).ok());
                match parsed {
                    Some(info) => shared.observed(info, Source::Message),
                    None => {
                        tracing::warn!(channel = %message.channel, "unreadable presence message")
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(skipped = n, "presence messages skipped; re-checking");
                shared.messages_lost();
                shared.recheck.notify_one();
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Keeps the subscriptions right and re-checks the watched users every
/// `ttl / 3`, and at once after the pub/sub connection came back.
pub(super) async fn checker(
    shared: Arc<Shared>,
    mut sub_reconnects: broadcast::Receiver<Server>,
    mut main_reconnects: broadcast::Receiver<Server>,
    stop: CancellationToken,
) {
    let period = shared.period();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sub_open = true;
    let mut main_open = true;
    let mut connected_before = false;
    let mut resubscribe = false;
    let mut check_due = false;
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            event = sub_reconnects.recv(), if sub_open => match event {
                Err(broadcast::error::RecvError::Closed) => sub_open = false,
                // The server forgot our subscriptions, and messages were lost.
                _ => {
                    // The first connection lost nothing: nothing was subscribed.
                    if connected_before {
                        shared.messages_lost();
                    }
                    connected_before = true;
                    (resubscribe, check_due) = (true, true);
                }
            },
            event = main_reconnects.recv(), if main_open => match event {
                Err(broadcast::error::RecvError::Closed) => main_open = false,
                // Checks were skipped while it was away.
                _ => check_due = true,
            },
            _ = shared.recheck.notified() => check_due = true,
            _ = tick.tick() => check_due = true,
            // Reconnections are announced before the clients accept commands.
            _ = tokio::time::sleep(RECONNECT_POLL), if resubscribe || check_due => {}
        }
        if resubscribe {
            if shared.subscriber.is_connected() {
                resubscribe = shared.sync_subscriptions(true).await.is_err();
            }
            if resubscribe {
                // Checking before the subscriptions are back would leave a
                // gap where a change is neither read nor heard.
                continue;
            }
        } else if check_due {
            if let Err(e) = shared.sync_subscriptions(false).await {
                tracing::debug!(error = %e, "presence subscriptions not in sync yet");
            }
        }
        if check_due {
            check_due = !shared.check().await;
            if !check_due {
                if let Err(e) = shared.sweep().await {
                    tracing::debug!(error = %e, "presence sweep failed");
                }
            }
        }
    }
}
