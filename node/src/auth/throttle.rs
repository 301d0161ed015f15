//! Limits on what an unauthenticated client can make the node do: token
//! buckets per source address for logins and registrations, and a growing
//! lock-out of an account after repeated wrong passwords, so neither a
//! password nor the node's CPU can be brute-forced.

use std::collections::HashMap;
use std::net::IpAddr;
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
    /// Wrong passwords in a row that lock an account for a while (at least
    /// one).
    pub free_failures: u32,
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
            lockout_secs: 1,
            max_lockout_secs: 900,
        }
    }
}

/// Accounts tracked for failures before the oldest are forgotten.
const MAX_ACCOUNTS: usize = 100_000;

struct Failures {
    count: u32,
    locked_until: Option<Instant>,
    last: Instant,
}

/// The node's limits on logins and registrations.
pub(crate) struct Throttle {
    config: ThrottleConfig,
    logins: RateLimiter<IpAddr>,
    registrations: RateLimiter<IpAddr>,
    failures: Mutex<HashMap<UserId, Failures>>,
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
            failures: Mutex::new(HashMap::new()),
            config: config.clone(),
        }
    }

    /// A login from `ip`: `Err(ms)` when over the address's rate.
    pub(crate) fn login(&self, ip: IpAddr) -> Result<(), u64> {
        self.logins.take(&ip)
    }

    /// A registration from `ip`: `Err(ms)` when over the address's rate.
    pub(crate) fn registration(&self, ip: IpAddr) -> Result<(), u64> {
        self.registrations.take(&ip)
    }

    /// Whether `user` may try a password now: `Err(ms)` while locked out.
    pub(crate) fn may_try(&self, user: &UserId) -> Result<(), u64> {
        self.may_try_at(user, Instant::now())
    }

    fn may_try_at(&self, user: &UserId, now: Instant) -> Result<(), u64> {
        let failures = self.lock();
        match failures.get(user).and_then(|f| f.locked_until) {
            Some(until) if until > now => Err(until.duration_since(now).as_millis() as u64 + 1),
            _ => Ok(()),
        }
    }

    /// A wrong password for `user`.
    pub(crate) fn failed(&self, user: &UserId) {
        self.failed_at(user, Instant::now())
    }

    fn failed_at(&self, user: &UserId, now: Instant) {
        let mut failures = self.lock();
        if failures.len() >= MAX_ACCOUNTS && !failures.contains_key(user) {
            // Forget accounts whose last failure is older than the longest
            // lock-out: they are not locked any more.
            let horizon = Duration::from_secs(self.config.max_lockout_secs);
            failures.retain(|_, f| now.duration_since(f.last) < horizon);
            if failures.len() >= MAX_ACCOUNTS {
                return;
            }
        }
        let f = failures.entry(user.clone()).or_insert(Failures {
            count: 0,
            locked_until: None,
            last: now,
        });
        f.count += 1;
        f.last = now;
        if f.count >= self.config.free_failures.max(1) {
            let doublings = (f.count - self.config.free_failures.max(1)).min(30);
            let secs = self
                .config
                .lockout_secs
                .saturating_mul(1 << doublings)
                .min(self.config.max_lockout_secs);
            f.locked_until = Some(now + Duration::from_secs(secs));
        }
    }

    /// The right password for `user`: its count starts over.
    pub(crate) fn succeeded(&self, user: &UserId) {
        self.lock().remove(user);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, Failures>> {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_is_locked_after_its_free_failures_for_longer_each_time() {
        let t = Throttle::new(&ThrottleConfig {
            free_failures: 2,
            lockout_secs: 1,
            max_lockout_secs: 4,
            ..ThrottleConfig::default()
        });
        let ann = UserId::new("ann").unwrap();
        let t0 = Instant::now();
        t.failed_at(&ann, t0);
        assert!(t.may_try_at(&ann, t0).is_ok(), "one of two");
        t.failed_at(&ann, t0);
        let wait = t.may_try_at(&ann, t0).unwrap_err();
        assert!((900..=1001).contains(&wait), "{wait}");
        assert!(t.may_try_at(&ann, t0 + Duration::from_secs(1)).is_ok());
        t.failed_at(&ann, t0 + Duration::from_secs(1));
        assert!(
            t.may_try_at(&ann, t0 + Duration::from_millis(2500))
                .is_err(),
            "2 s now"
        );
        for _ in 0..10 {
            t.failed_at(&ann, t0 + Duration::from_secs(3));
        }
        let capped = t.may_try_at(&ann, t0 + Duration::from_secs(3)).unwrap_err();
        assert!(capped <= 4001, "capped at the longest lock-out: {capped}");
        t.succeeded(&ann);
        assert!(t.may_try_at(&ann, t0 + Duration::from_secs(3)).is_ok());
    }
}
