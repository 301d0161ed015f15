//! When each reaction the harness made was sent, for the members who get
//! it. A reaction has no body to carry its send time (the node accepts only
//! real emoji, and sends members the reaction alone), so the reacting client
//! notes the time in a fixed table that every client of the process reads:
//! a slot per (message, emoji), found by hashing. Two reactions that share a
//! slot leave the later time (rare in 65,536 slots, and only ever a later
//! one); a receiver in another harness process finds none, and the
//! delivery counts as untimed.

use std::sync::atomic::{AtomicU64, Ordering};

/// The emoji a client reacts with, one per reaction to its latest message
/// (the scenario reacts at most this many times to one message).
pub const EMOJI: [&str; 19] = [
    "👍", "❤️", "😂", "🎉", "😮", "😢", "🔥", "💯", "🙏", "🚀", "✅", "👀", "🤔", "😍", "👏", "🙌",
    "🍕", "☕", "🌟",
];

const SLOTS: usize = 1 << 16;

static SENT: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];

fn slot(message: u64, emoji: usize) -> &'static AtomicU64 {
    let h = (message ^ (emoji as u64).rotate_left(48)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    &SENT[(h >> 48) as usize % SLOTS]
}

/// Notes that the reaction `EMOJI[emoji]` to `message` leaves at `sent_us`.
pub fn note(message: u64, emoji: usize, sent_us: u64) {
    slot(message, emoji).store(sent_us, Ordering::Relaxed);
}

/// When the reaction `emoji` to `message` was sent, if this process made it.
pub fn sent_us(message: u64, emoji: &str) -> Option<u64> {
    let i = EMOJI.iter().position(|e| *e == emoji)?;
    match slot(message, i).load(Ordering::Relaxed) {
        0 => None,
        t => Some(t),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_noted_reaction_is_found_by_its_message_and_emoji() {
        note(7, 3, 1234);
        assert_eq!(sent_us(7, EMOJI[3]), Some(1234));
        assert_eq!(sent_us(7, "not one of ours"), None);
        assert!(EMOJI
            .iter()
            .all(|e| chat_protocol::message::is_reaction_emoji(e)));
    }
}
