//! Which node owns a conversation: rendezvous (highest random weight) hashing
//! of the conversation id over the names of the live nodes.
//!
//! Every node computes the same owner from the same live set without asking
//! anyone. When a node leaves, only the conversations it owned move (each to
//! its second choice); when one joins, it takes about 1/N of them. The hash is
//! explicit and stable across processes, versions and platforms (SHA-256 of
//! the two names), never `DefaultHasher`, and it hashes node *names*, never
//! the session counters that ractor_cluster assigns.

use std::sync::Arc;

use chat_protocol::ConversationId;
use sha2::{Digest, Sha256};

/// The weight of `node` for `key`: the first 8 bytes of SHA-256(node, 0, key).
pub fn weight(node: &str, key: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(node.as_bytes());
    h.update([0u8]);
    h.update(key.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// A set of live nodes, sorted by name so that every node holds it the same way.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Placement {
    nodes: Arc<[Arc<str>]>,
}

impl Placement {
    /// A placement over `nodes` (duplicates are ignored).
    pub fn new<I, S>(nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<Arc<str>>,
    {
        let mut v: Vec<Arc<str>> = nodes.into_iter().map(Into::into).collect();
        v.sort();
        v.dedup();
        Placement { nodes: v.into() }
    }

    /// The live nodes, sorted.
    pub fn nodes(&self) -> &[Arc<str>] {
        &self.nodes
    }

    /// The owner of `conversation`, if any node is live.
    pub fn owner(&self, conversation: &ConversationId) -> Option<&Arc<str>> {
        self.nodes
            .iter()
            .max_by_key(|n| (weight(n, conversation.as_str()), Arc::clone(n)))
    }

    /// A digest of the node set: two nodes with the same fingerprint agree on
    /// every owner. Stable across processes, like [`weight`].
    pub fn fingerprint(&self) -> u64 {
        let mut h = Sha256::new();
        for n in self.nodes.iter() {
            h.update(n.as_bytes());
            h.update([0u8]);
        }
        let d = h.finalize();
        u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    }

    /// The nodes in order of preference for `conversation`: the owner first,
    /// then the node that would own it if the owner left, and so on.
    pub fn preference(&self, conversation: &ConversationId) -> Vec<Arc<str>> {
        let mut v: Vec<(u64, Arc<str>)> = self
            .nodes
            .iter()
            .map(|n| (weight(n, conversation.as_str()), n.clone()))
            .collect();
        v.sort_by(|a, b| b.cmp(a));
        v.into_iter().map(|(_, n)| n).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(i: usize) -> ConversationId {
        ConversationId::new(&format!("g:{i}")).unwrap()
    }

    #[test]
    fn weights_are_stable_across_processes() {
        // Pinned values: changing the hash would move every conversation
        // of a running cluster during a rolling upgrade.
        // Computed independently: sha256(b"node-1\x00g:1")[..8], big-endian.
        assert_eq!(weight("node-1", "g:1"), 0x41ba_2b32_c735_02cc);
    }

    #[test]
    fn fingerprints_name_the_set_not_its_order() {
        let a = Placement::new(["n1", "n2", "n3"]).fingerprint();
        assert_eq!(a, Placement::new(["n3", "n1", "n2", "n1"]).fingerprint());
        assert_ne!(a, Placement::new(["n1", "n2"]).fingerprint());
        // Names are delimited: ["ab", "c"] is not ["a", "bc"].
        assert_ne!(
            Placement::new(["ab", "c"]).fingerprint(),
            Placement::new(["a", "bc"]).fingerprint()
        );
    }

    #[test]
    fn same_owner_whatever_the_order_nodes_are_listed() {
        let a = Placement::new(["n1", "n2", "n3"]);
        let b = Placement::new(["n3", "n1", "n2", "n1"]);
        for i in 0..100 {
            assert_eq!(a.owner(&c(i)), b.owner(&c(i)));
        }
    }

    #[test]
    fn losing_a_node_moves_only_its_conversations_to_their_second_choice() {
        let all = Placement::new(["n1", "n2", "n3", "n4"]);
        let without = Placement::new(["n1", "n2", "n4"]);
        let mut moved = 0;
        for i in 0..2000 {
            let before = all.owner(&c(i)).unwrap().clone();
            let after = without.owner(&c(i)).unwrap().clone();
            if &*before == "n3" {
                moved += 1;
                assert_eq!(after, all.preference(&c(i))[1]);
            } else {
                assert_eq!(before, after, "a conversation not on n3 moved");
            }
        }
        // About a quarter live on each node.
        assert!((350..650).contains(&moved), "n3 owned {moved} of 2000");
    }

    #[test]
    fn empty_placement_has_no_owner() {
        assert!(Placement::default().owner(&c(1)).is_none());
    }
}
