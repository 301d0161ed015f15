//! The recent messages a conversation actor holds, newest last: what its
//! retries are answered from, what its edits start from, and what pages of
//! history are served from without the store. Each is held once, shared by
//! the pages that list it, with its client form encoded as JSON the first
//! time a page needs it ([`HeldMessage`]).
//!
//! It holds every message from its first one on: the actor puts each one it
//! stores here, so a range above the first held id is complete, and the
//! store is read only for what lies below. It is bounded by count and by
//! bytes, per conversation and for the whole node (the gauge
//! `chat_held_message_bytes`): past the node's budget a conversation keeps
//! only its newest `floor` messages.

use std::collections::VecDeque;
use std::sync::Arc;

use chat_protocol::{HeldMessage, HeldPage, Message, MessageId};
use chat_storage::{page_weight, PageQuery};
use prometheus_client::metrics::gauge::Gauge;

/// How much of the tail there may be.
#[derive(Debug, Clone, Copy)]
pub(super) struct TailBounds {
    /// Most messages held by one conversation.
    pub(super) len: usize,
    /// Most bytes (by [`weight`]) held by one conversation.
    pub(super) bytes: usize,
    /// Most bytes held by all the node's conversations together; past it a
    /// conversation keeps no more than `floor` messages.
    pub(super) node_bytes: usize,
    /// What a conversation keeps whatever the node holds.
    pub(super) floor: usize,
}

/// What a held message counts against the bounds: the most its client
/// form encodes to (its JSON is held too, once made) and the message itself.
pub(super) fn weight(m: &Message) -> usize {
    2 * m.encoded_len_bound() + std::mem::size_of::<HeldMessage>()
}

pub(super) struct Tail {
    held: VecDeque<Arc<HeldMessage>>,
    bytes: usize,
    /// Whether the first held message is the conversation's first: then a
    /// page that reaches it is complete without the store.
    from_start: bool,
    bounds: TailBounds,
    /// The node's total, shared by every conversation.
    node_bytes: Gauge,
}

impl Tail {
    pub(super) fn new(bounds: TailBounds, node_bytes: Gauge) -> Self {
        Tail {
            held: VecDeque::new(),
            bytes: 0,
            from_start: false,
            bounds,
            node_bytes,
        }
    }

    /// Forgets everything; `from_start` says whether the conversation has
    /// no message yet (then everything it gets is held from the first).
    pub(super) fn reset(&mut self, from_start: bool) {
        self.held.clear();
        self.node_bytes.dec_by(self.bytes as i64);
        self.bytes = 0;
        self.from_start = from_start;
    }

    /// Holds `m`, the newest message, and gives back the messages that
    /// fell off the old end to make room.
    pub(super) fn push(&mut self, m: Arc<HeldMessage>, mut dropped: impl FnMut(&Message)) {
        let w = weight(&m);
        self.bytes += w;
        self.node_bytes.inc_by(w as i64);
        self.held.push_back(m);
        let over_node = self.node_bytes.get() as usize > self.bounds.node_bytes;
        let len = if over_node {
            self.bounds.floor.min(self.bounds.len)
        } else {
            self.bounds.len
        };
        while self.held.len() > len.max(1)
            || (self.bytes > self.bounds.bytes && self.held.len() > 1)
        {
            let Some(old) = self.held.pop_front() else {
                break;
            };
            let w = weight(&old);
            self.bytes -= w;
            self.node_bytes.dec_by(w as i64);
            self.from_start = false;
            dropped(&old);
        }
    }

    /// Puts `m`'s new state where its old one is held, if it is.
    pub(super) fn refresh(&mut self, m: Arc<HeldMessage>) {
        if let Ok(at) = self.held.binary_search_by_key(&m.id, |t| t.id) {
            let (old, new) = (weight(&self.held[at]), weight(&m));
            self.bytes = self.bytes - old + new;
            self.node_bytes.inc_by(new as i64 - old as i64);
            self.held[at] = m;
        }
    }

    /// The message with id `id`, if held.
    pub(super) fn get(&self, id: MessageId) -> Option<&Arc<HeldMessage>> {
        let at = self.held.binary_search_by_key(&id, |t| t.id).ok()?;
        Some(&self.held[at])
    }

    /// The oldest id held.
    pub(super) fn first_id(&self) -> Option<MessageId> {
        self.held.front().map(|m| m.id)
    }

    /// The page `query` asks for, when the held messages answer it as the
    /// store would (the same messages, cut by the same rules); `None` when
    /// it reaches below them. `shown` gives what a client is shown of each
    /// held message.
    pub(super) fn page(
        &self,
        query: &PageQuery,
        shown: impl Fn(&Arc<HeldMessage>) -> Arc<HeldMessage>,
    ) -> Option<(HeldPage, bool)> {
        let first = self.held.front()?.id;
        // Whether every message of the range is held.
        let covered = self.from_start || query.after.is_some_and(|a| a >= first);
        let lo = match query.after {
            Some(a) => self.held.partition_point(|m| m.id <= a),
            None => 0,
        };
        let hi = match query.before {
            Some(b) => self.held.partition_point(|m| m.id < b),
            None => self.held.len(),
        };
        if lo >= hi {
            return covered.then(|| (HeldPage::default(), false));
        }
        // Oldest first from `after` alone, else newest first, as the store.
        // Oldest first starts at the range's bottom, which must be held.
        let oldest_first = query.after.is_some() && query.before.is_none();
        if oldest_first && !covered {
            return None;
        }
        let limit = query.limit.max(1);
        let mut picked = Vec::with_capacity(limit.min(hi - lo));
        let mut bytes = 0usize;
        let mut more = false;
        let mut take = |m: &Arc<HeldMessage>| -> bool {
            if picked.len() == limit {
                more = true;
                return false;
            }
            bytes = bytes.saturating_add(page_weight(0, m));
            if bytes > query.max_bytes && !picked.is_empty() {
                more = true;
                return false;
            }
            picked.push(shown(m));
            true
        };
        if oldest_first {
            for m in self.held.range(lo..hi) {
                if !take(m) {
                    break;
                }
            }
        } else {
            for m in self.held.range(lo..hi).rev() {
                if !take(m) {
                    break;
                }
            }
            picked.reverse();
        }
        // A page that stopped inside the held range is what the store would
        // give; one that ran out of it is only if nothing lies below.
        if !more && !covered {
            return None;
        }
        Some((HeldPage(picked), more))
    }
}

impl Drop for Tail {
    /// A stopped conversation's messages leave the node's total.
    fn drop(&mut self) {
        self.node_bytes.dec_by(self.bytes as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_protocol::{ClientMsgId, ConversationId, UserId};

    fn message(id: u64, body_len: usize) -> Message {
        Message {
            attachments: Vec::new(),
            id: MessageId(id),
            conversation: ConversationId::new("c").unwrap(),
            sender: UserId::new("a").unwrap(),
            body: "x".repeat(body_len),
            kind: Default::default(),
            ts: id,
            client_msg_id: ClientMsgId::new(&format!("k{id}")).unwrap(),
            reply_to: None,
            rev: id,
            edited_at: None,
            deleted: false,
            reactions: Vec::new(),
            mentions: Vec::new(),
        }
    }

    /// The page the store gives (`chat_storage`'s rule, on a list).
    fn reference(all: &[Message], q: &PageQuery) -> (Vec<MessageId>, bool) {
        let range: Vec<&Message> = all
            .iter()
            .filter(|m| q.after.is_none_or(|a| m.id > a) && q.before.is_none_or(|b| m.id < b))
            .collect();
        let oldest_first = q.after.is_some() && q.before.is_none();
        let ordered: Vec<&Message> = if oldest_first {
            range
        } else {
            range.into_iter().rev().collect()
        };
        let (mut ids, mut bytes, mut more) = (Vec::new(), 0usize, false);
        for m in ordered {
            if ids.len() == q.limit.max(1) {
                more = true;
                break;
            }
            bytes += page_weight(0, m);
            if bytes > q.max_bytes && !ids.is_empty() {
                more = true;
                break;
            }
            ids.push(m.id);
        }
        if !oldest_first {
            ids.reverse();
        }
        (ids, more)
    }

    fn tail(len: usize, node: &Gauge) -> Tail {
        let bounds = TailBounds {
            len,
            bytes: usize::MAX,
            node_bytes: usize::MAX,
            floor: len,
        };
        Tail::new(bounds, node.clone())
    }

    /// Every page the tail answers is the one the store would give, for
    /// every range, limit and byte bound around a tail that holds the whole
    /// conversation or only its newest messages; and what lies within the
    /// tail is answered from it.
    #[test]
    fn pages_from_the_tail_are_the_stores() {
        // Ids with gaps, as the generator gives them; bodies of two sizes.
        let all: Vec<Message> = (0..12u64)
            .map(|i| message(10 + 3 * i, if i % 3 == 0 { 200 } else { 10 }))
            .collect();
        let ids: Vec<Option<MessageId>> = std::iter::once(None)
            .chain((0..48).map(|i| Some(MessageId(8 + i))))
            .collect();
        let one = page_weight(0, &all[1]);
        for (held, from_start) in [(12, true), (12, false), (5, false), (1, false)] {
            let node = Gauge::default();
            let mut t = tail(held, &node);
            t.reset(from_start);
            for m in &all {
                t.push(Arc::new(HeldMessage::new(m.clone())), |_| {});
            }
            let mut served = 0;
            for before in &ids {
                for after in &ids {
                    for limit in [1, 2, 5, 20] {
                        for max_bytes in [usize::MAX, one * 2, 1] {
                            let q = PageQuery {
                                before: *before,
                                after: *after,
                                limit,
                                max_bytes,
                            };
                            let Some((page, more)) = t.page(&q, |m| m.clone()) else {
                                continue;
                            };
                            served += 1;
                            let got: Vec<MessageId> = page.0.iter().map(|m| m.id).collect();
                            assert_eq!((got, more), reference(&all, &q), "{q:?}, {held} held");
                        }
                    }
                }
            }
            assert!(served > 0);
            // The newest page, and one just below the newest held, come
            // from memory whenever the tail holds more than the page.
            let newest = PageQuery::new(None, None, held.saturating_sub(1).max(1));
            assert_eq!(
                t.page(&newest, |m| m.clone()).is_some(),
                held > 1 || from_start
            );
            let below = PageQuery::new(Some(all[11].id), None, 1);
            assert_eq!(
                t.page(&below, |m| m.clone()).is_some(),
                held > 2 || from_start
            );
        }
    }

    /// The tail keeps to its count and bytes, gives back what it drops,
    /// and keeps the node's total right through refreshes and its end.
    #[test]
    fn bounds_hold_and_the_node_total_follows() {
        let node = Gauge::default();
        let w = weight(&message(1, 10));
        let bounds = TailBounds {
            len: 10,
            bytes: 4 * w,
            node_bytes: usize::MAX,
            floor: 2,
        };
        let mut t = Tail::new(bounds, node.clone());
        t.reset(true);
        let mut dropped = Vec::new();
        for i in 1..=6 {
            t.push(Arc::new(HeldMessage::new(message(i, 10))), |m| {
                dropped.push(m.id.0)
            });
        }
        assert_eq!(dropped, [1, 2]);
        assert_eq!(t.first_id(), Some(MessageId(3)));
        assert_eq!(node.get() as usize, 4 * w);
        // An edit that grows a message is counted, and trims the next push.
        t.refresh(Arc::new(HeldMessage::new(message(6, 500))));
        let grown = weight(&message(6, 500));
        assert_eq!(node.get() as usize, 3 * w + grown);
        // Past the node's total the next push keeps the floor.
        let mut other = Tail::new(
            TailBounds {
                node_bytes: 0,
                ..bounds
            },
            node.clone(),
        );
        other.reset(true);
        for i in 1..=3 {
            other.push(Arc::new(HeldMessage::new(message(i, 10))), |_| {});
        }
        assert_eq!(other.first_id(), Some(MessageId(2)));
        drop(other);
        drop(t);
        assert_eq!(node.get(), 0);
    }
}
