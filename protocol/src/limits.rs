//! The limits a node enforces on clients, with the defaults of the protocol.

use serde::{Deserialize, Serialize};

/// Per-node client limits; every field is configurable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest WebSocket frame (and message) accepted; larger closes with 1009.
    pub max_frame_bytes: usize,
    /// Largest message body; larger gets `too_large`.
    pub max_body_bytes: usize,
    /// Sustained sends per user per second.
    pub sends_per_second: u32,
    /// Burst of sends a user may make at once.
    pub send_burst: u32,
    /// Sustained reactions (added or taken back) per user per second.
    pub reactions_per_second: u32,
    /// Burst of reactions a user may make at once.
    pub reaction_burst: u32,
    /// Connections one user may hold on a node.
    pub connections_per_user: usize,
    /// Seconds without any frame from the client before it is closed.
    pub idle_timeout_secs: u64,
    /// Frames queued towards one connection before it is closed with 4003.
    pub outbound_queue: usize,
    /// Bytes queued towards one connection (and reserved for the replies
    /// of its requests in flight) past which the node reads no more of its
    /// requests; events past twice this close it with 4003.
    pub outbound_bytes: usize,
    /// Users one connection may watch.
    pub watch_per_connection: usize,
    /// Requests one connection may have in flight before the node stops reading it.
    pub inflight_per_connection: usize,
    /// Most members of a group.
    pub max_group_members: usize,
    /// Most members of a channel.
    pub max_channel_members: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 64 * 1024,
            max_body_bytes: 16 * 1024,
            sends_per_second: 100,
            send_burst: 1000,
            reactions_per_second: 5,
            reaction_burst: 30,
            connections_per_user: 16,
            idle_timeout_secs: 60,
            outbound_queue: 1024,
            outbound_bytes: 2 << 20,
            watch_per_connection: 1000,
            inflight_per_connection: 256,
            max_group_members: 1_000,
            max_channel_members: 10_000,
        }
    }
}

/// Most messages a `history` page returns.
pub const MAX_HISTORY_LIMIT: u32 = 200;
/// A `history` page stops once its messages take about this many bytes
/// (`more` is then true): a reply stays small enough to hold and write
/// whatever the limit asked.
pub const MAX_PAGE_BYTES: usize = 1 << 20;
/// An upper bound of one message as a client receives it, with a body of
/// at most `max_body_bytes` (JSON escapes a control character in six
/// bytes), its reactions as clients see them and its mentions: what the
/// reply to an `edit`, `delete` or `react` may take.
pub fn message_reply_bound(max_body_bytes: usize) -> usize {
    use crate::message::{MAX_DISTINCT_EMOJI, MAX_EMOJI_BYTES, MAX_MENTIONS, SHOWN_REACTORS};
    // An id in JSON, with its quotes and comma.
    const ID: usize = 64 + 3;
    let reactions = MAX_DISTINCT_EMOJI * (48 + 2 + 6 * MAX_EMOJI_BYTES + SHOWN_REACTORS * ID);
    512 + 6 * max_body_bytes + reactions + MAX_MENTIONS * ID + 3 * ID
}

/// Messages a `changes` page returns when the client gives no limit.
pub const DEFAULT_CHANGES_LIMIT: u32 = 100;
/// Messages a `history` page returns when the client gives no limit.
pub const DEFAULT_HISTORY_LIMIT: u32 = 50;
/// Most members a `create` or `invite` may name at once.
pub const MAX_MEMBERS_PER_REQUEST: usize = 1000;
/// Longest conversation title, in bytes.
pub const MAX_TITLE_BYTES: usize = 256;
