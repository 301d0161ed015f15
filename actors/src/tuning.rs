//! The knobs of a node's actors that are not client limits, in one leaf
//! type: set from `[actors]` (and a few `[limits]`) by the node, read by
//! conversation actors and user sessions.

use std::time::Duration;

/// Knobs of the node's actors (conversations and sessions) that are not
/// client limits: the composition root hands each actor the ones it uses.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// A conversation actor with no activity for this long stops.
    pub conversation_idle: Duration,
    /// Recent messages a conversation actor keeps in memory (pages of
    /// history within them are served without the store).
    pub tail: usize,
    /// Most bytes of them one conversation keeps.
    pub tail_bytes: usize,
    /// Most bytes of them all the node's conversations keep together; past
    /// it each keeps no more than `tail_floor` messages.
    pub tail_node_bytes: usize,
    /// What a conversation keeps whatever the node holds.
    pub tail_floor: usize,
    /// A typing indicator ends after this long without a refresh.
    pub typing_timeout: Duration,
    /// Most members of a group.
    pub max_group_members: usize,
    /// Most members of a channel.
    pub max_channel_members: usize,
    /// How long a starting session waits for the owners of its
    /// conversations to acknowledge its interest before it lets the client
    /// in anyway (then live delivery from a late owner starts when its
    /// acknowledgement comes, and the client's catch-up covers the gap).
    pub interest_ack_deadline: Duration,
    /// Whether sessions with nothing to do sleep (see [`crate::session`]).
    pub sessions_sleep: bool,
    /// How long a session whose last connection left sleeps before it ends
    /// (with `sessions_sleep`; zero ends it at once). A client back within
    /// it (a network blip, a node's clients reconnecting together) wakes
    /// its session as it was: its conversations are not read again and its
    /// interest not registered again.
    pub session_linger: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            conversation_idle: Duration::from_secs(120),
            tail: 1_024,
            tail_bytes: 1 << 20,
            tail_node_bytes: 256 << 20,
            tail_floor: 256,
            typing_timeout: Duration::from_secs(6),
            max_group_members: 1_000,
            max_channel_members: 10_000,
            interest_ack_deadline: Duration::from_secs(2),
            sessions_sleep: true,
            session_linger: Duration::from_secs(30),
        }
    }
}
