//! Limits on what an unauthenticated client can make the node do: token
//! buckets per source address for logins and registrations, and a growing
//! lock-out after repeated wrong passwords, so neither a password nor the
//! node's CPU can be brute-forced.
//!
//! Wrong passwords lock an account for the address they came from, not for
//! everyone: a stranger who knows a name and guesses from one address locks
//! only that address out, and the owner signs in from theirs. Guesses from
//! all addresses together also count, against a much higher ceiling past
//! which the account locks for every address: many addresses buy a guesser
//! that many more tries, not unlimited ones. An IPv6 address counts by its
//! /64, what one client is usually given.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use chat_actors::rate::RateLimiter;
use chat_protocol::UserId;
use serde::{Deserialize, Serialize};

/// `[auth.throttle]`: how much one address and one account may try.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleConfig {
    /// Logins per minute from one address, sustained.
    pub logins_per_minute: u32,
    /// Logins from one address at once.
    pub login_burst: u32,
    /// Registrations per hour from one address, sustained.
    pub registrations_per_hour: u32,
    /// Registrations from one address at once.
    pub registration_burst: u32,
    /// Wrong passwords in a row for one account from one address that lock
    /// the account for that address for a while (at least one).
    pub free_failures: u32,
    /// Wrong passwords in a row for one account from all addresses together
    /// that lock it for every address (at least `free_failures`).
    pub account_free_failures: u32,
    /// The first lock-out, in seconds; each further failure doubles it.
    pub lockout_secs: u64,
    /// The longest lock-out, in seconds.
    pub max_lockout_secs: u64,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            logins_per_minute: 30,
            login_burst: 20,
            registrations_per_hour: 20,
            registration_burst: 5,
            free_failures: 5,
            account_free_failures: 100,
            lockout_secs: 1,
            max_lockout_secs: 900,
        }
    }
}

/// Entries tracked for failures, of each kind, before the oldest are
/// forgotten.
const MAX_TRACKED: usize = 100_000;

struct Failures {
    count: u32,
    locked_until: Option<Instant>,
    last: Instant,
}

/// Wrong passwords in a row by key, and the lock-outs they earned.
struct Lockouts<K> {
    free: u32,
    failures: HashMap<K, Failures>,
}

impl<K: Hash + Eq + Clone> Lockouts<K> {
    fn new(free: u32) -> Self {
        Lockouts {
            free: free.max(1),
            failures: HashMap::new(),
        }
    }

    fn locked(&self, key: &K, now: Instant) -> Result<(), u64> {
        match self.failures.get(key).and_then(|f| f.locked_until) {
            Some(until) if until > now => Err(until.duration_since(now).as_millis() as u64 + 1),
            _ => Ok(()),
        }
    }

    fn failed(&mut self, key: &K, now: Instant, config: &ThrottleConfig) {
        if self.failures.len() >= MAX_TRACKED && !self.failures.contains_key(key) {
            // Forget what failed last longer ago than the longest lock-out:
            // it is not locked any more.
            let horizon = Duration::from_secs(config.max_lockout_secs);
            self.failures
                .retain(|_, f| now.duration_since(f.last) < horizon);
            if self.failures.len() >= MAX_TRACKED {
                return;
            }
        }
        let f = self.failures.entry(key.clone()).or_insert(Failures {
            count: 0,
            locked_until: None,
            last: now,
        });
        f.count += 1;
        f.last = now;
        if f.count >= self.free {
            let doublings = (f.count - self.free).min(30);
            let secs = config
                .lockout_secs
                .saturating_mul(1 << doublings)
                .min(config.max_lockout_secs);
            f.locked_until = Some(now + Duration::from_secs(secs));
        }
    }
}

/// What one source tried: its address, or its /64 for IPv6 (an IPv4
/// address written as IPv6 is that IPv4 address).
fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !((1u128 << 64) - 1))),
        },
    }
}

struct Locks {
    /// By account and source: what locks a stranger out.
    sources: Lockouts<(UserId, IpAddr)>,
    /// By account: the ceiling over every source.
    accounts: Lockouts<UserId>,
}

/// Reset mails one address may be sent per hour, from one node.
const RESETS_PER_HOUR: u32 = 5;

/// The node's limits on logins and registrations.
pub(crate) struct Throttle {
    config: ThrottleConfig,
    logins: RateLimiter<IpAddr>,
    registrations: RateLimiter<IpAddr>,
    /// Password reset mails per address: however many sources ask, one
    /// inbox is not flooded (per node).
    resets: RateLimiter<String>,
    locks: Mutex<Locks>,
}

impl Throttle {
    pub(crate) fn new(config: &ThrottleConfig) -> Self {
        Throttle {
            logins: RateLimiter::per_period(
                config.logins_per_minute,
                Duration::from_secs(60),
                config.login_burst,
            ),
            registrations: RateLimiter::per_period(
                config.registrations_per_hour,
                Duration::from_secs(3600),
                config.registration_burst,
            ),
            resets: RateLimiter::per_period(RESETS_PER_HOUR, Duration::from_secs(3600), 1),
            locks: Mutex::new(Locks {
                sources: Lockouts::new(config.free_failures),
                accounts: Lockouts::new(config.account_free_failures.max(config.free_failures)),
            }),
            config: config.clone(),
        }
    }

    /// A login from `ip`: `Err(ms)` when over the address's rate.
    pub(crate) fn login(&self, ip: IpAddr) -> Result<(), u64> {
        self.logins.take(&source(ip))
    }

    /// A registration from `ip`: `Err(ms)` when over the address's rate.
    pub(crate) fn registration(&self, ip: IpAddr) -> Result<(), u64> {
        self.registrations.take(&source(ip))
    }

    /// A password reset for `address` asked from `ip`: counted as a login
    /// attempt of the source, and against the address's own rate.
    pub(crate) fn reset(&self, ip: IpAddr, address: &str) -> Result<(), u64> {
        self.logins.take(&source(ip))?;
        self.resets.take(&address.to_owned())
    }

    /// Whether `user` may try a password from `ip` now: `Err(ms)` while
    /// locked out there, or everywhere.
    pub(crate) fn may_try(&self, user: &UserId, ip: IpAddr) -> Result<(), u64> {
        self.may_try_at(user, ip, Instant::now())
    }

    fn may_try_at(&self, user: &UserId, ip: IpAddr, now: Instant) -> Result<(), u64> {
        let locks = self.lock();
        let here = locks.sources.locked(&(user.clone(), source(ip)), now);
        let everywhere = locks.accounts.locked(user, now);
        match (here, everywhere) {
            (Err(a), Err(b)) => Err(a.max(b)),
            (Err(ms), _) | (_, Err(ms)) => Err(ms),
            _ => Ok(()),
        }
    }

    /// A wrong password for `user` from `ip`.
    pub(crate) fn failed(&self, user: &UserId, ip: IpAddr) {
        self.failed_at(user, ip, Instant::now())
    }

    fn failed_at(&self, user: &UserId, ip: IpAddr, now: Instant) {
        let mut locks = self.lock();
        locks
            .sources
            .failed(&(user.clone(), source(ip)), now, &self.config);
        locks.accounts.failed(user, now, &self.config);
    }

    /// The right password for `user` from `ip`: the counts of that source
    /// and of the account start over (other sources' stay: a stranger's
    /// lock outlasts the owner's sign-in).
    pub(crate) fn succeeded(&self, user: &UserId, ip: IpAddr) {
        let mut locks = self.lock();
        locks.sources.failures.remove(&(user.clone(), source(ip)));
        locks.accounts.failures.remove(user);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Locks> {
        self.locks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_account_is_locked_for_a_source_after_its_free_failures_for_longer_each_time() {
        let t = Throttle::new(&ThrottleConfig {
            free_failures: 2,
            lockout_secs: 1,
            max_lockout_secs: 4,
            ..ThrottleConfig::default()
        });
        let ann = UserId::new("ann").unwrap();
        let here = ip("192.0.2.1");
        let t0 = Instant::now();
        t.failed_at(&ann, here, t0);
        assert!(t.may_try_at(&ann, here, t0).is_ok(), "one of two");
        t.failed_at(&ann, here, t0);
        let wait = t.may_try_at(&ann, here, t0).unwrap_err();
        assert!((900..=1001).contains(&wait), "{wait}");
        assert!(t
            .may_try_at(&ann, here, t0 + Duration::from_secs(1))
            .is_ok());
        t.failed_at(&ann, here, t0 + Duration::from_secs(1));
        assert!(
            t.may_try_at(&ann, here, t0 + Duration::from_millis(2500))
                .is_err(),
            "2 s now"
        );
        for _ in 0..10 {
            t.failed_at(&ann, here, t0 + Duration::from_secs(3));
        }
        let later = t0 + Duration::from_secs(3);
        let capped = t.may_try_at(&ann, here, later).unwrap_err();
        assert!(capped <= 4001, "capped at the longest lock-out: {capped}");
        assert!(
            t.may_try_at(&ann, ip("198.51.100.7"), later).is_ok(),
            "the owner, elsewhere"
        );
        t.succeeded(&ann, here);
        assert!(t.may_try_at(&ann, here, later).is_ok());
    }

    #[test]
    fn many_sources_together_lock_the_account_everywhere() {
        let t = Throttle::new(&ThrottleConfig {
            free_failures: 2,
            account_free_failures: 5,
            lockout_secs: 60,
            ..ThrottleConfig::default()
        });
        let ann = UserId::new("ann").unwrap();
        let t0 = Instant::now();
        for i in 1..=5 {
            let stranger = ip(&format!("192.0.2.{i}"));
            t.failed_at(&ann, stranger, t0);
            assert!(t.may_try_at(&ann, stranger, t0).is_ok() == (i < 5), "{i}");
        }
        assert!(t.may_try_at(&ann, ip("198.51.100.7"), t0).is_err());
        // The right password (from a source that is not locked, once the
        // lock is over) starts the account's count over.
        let owner = ip("198.51.100.7");
        t.succeeded(&ann, owner);
        assert!(t.may_try_at(&ann, owner, t0).is_ok());
    }

    #[test]
    fn an_ipv6_source_is_its_slash_64() {
        assert_eq!(
            source(ip("2001:db8:1:2:aaaa::1")),
            source(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(source(ip("2001:db8:1:2::1")), source(ip("2001:db8:1:3::1")));
        assert_eq!(source(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }
}
