//! Hash maps keyed by user and conversation ids, on the per-message path.
//!
//! Every message looks up its conversation's actor, its members' roles and
//! their local connections; with std's SipHash those lookups took about 2 %
//! of a node's instructions in a small callgrind run (about 1 % of its CPU
//! time at 2,500 messages/s). foldhash is several times faster on
//! short keys. Its seed is drawn per process, so an outsider cannot
//! precompute ids that collide; the keys here are ids the node validated
//! (at most 64 bytes of a small alphabet), never arbitrary client bytes.

/// A hash map keyed by ids.
pub type IdMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A hash set of ids.
pub type IdSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
