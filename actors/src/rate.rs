//! Token buckets by key: a user's sends (shared by WebSocket and HTTP), an
//! address's logins and registrations.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use chat_protocol::UserId;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets, one per key, bounded in number.
pub struct RateLimiter<K = UserId> {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

/// A user's rates for what fans out to every member: sends, edits and
/// deletes share one; reactions have their own, lower one (a toggle costs
/// as little to make as a send, and each reaches every member).
pub struct UserRates {
    /// Sends, edits and deletes.
    pub sends: RateLimiter,
    /// Reactions added or taken back.
    pub reactions: RateLimiter,
}

impl UserRates {
    /// The rates `limits` set.
    pub fn new(limits: &chat_protocol::Limits) -> Self {
        UserRates {
            sends: RateLimiter::new(limits.sends_per_second, limits.send_burst),
            reactions: RateLimiter::new(limits.reactions_per_second, limits.reaction_burst),
        }
    }
}

/// Buckets kept before full (idle) ones are dropped, which bounds memory.
const MAX_BUCKETS: usize = 100_000;

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `per_second` sustained, bursts up to `burst`.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self::per_period(per_second, Duration::from_secs(1), burst)
    }

    /// `count` per `period` sustained, bursts up to `burst`.
    pub fn per_period(count: u32, period: Duration, burst: u32) -> Self {
        RateLimiter {
            per_second: count.max(1) as f64 / period.as_secs_f64().max(1e-3),
            burst: burst.max(1) as f64,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`, or says how many milliseconds until one
    /// is free.
    pub fn take(&self, key: &K) -> Result<(), u64> {
        self.take_at(key, Instant::now())
    }

    fn take_at(&self, key: &K, now: Instant) -> Result<(), u64> {
        let mut map = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_BUCKETS && !map.contains_key(key) {
            let (rate, burst) = (self.per_second, self.burst);
            map.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let b = map.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        b.tokens =
            (b.tokens + now.duration_since(b.at).as_secs_f64() * self.per_second).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - b.tokens) / self.per_second) * 1000.0).ceil() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refills() {
        let r: RateLimiter = RateLimiter::new(10, 3);
        let u = UserId::new("u").unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(r.take_at(&u, t0).is_ok());
        }
        let wait = r.take_at(&u, t0).unwrap_err();
        assert_eq!(wait, 100);
        assert!(r.take_at(&u, t0 + Duration::from_millis(100)).is_ok());
        assert!(r.take_at(&u, t0 + Duration::from_millis(100)).is_err());
    }
}
