//! Limits of the sign-in page (`/devicelogin`), as Entra ID's smart lockout and its per-address
//! throttling: an account is locked for a while after repeated wrong passwords, and an address
//! that keeps failing (wrong user codes, wrong passwords) is throttled. Limits, not faults: a
//! person who signs in normally never reaches them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed sign-ins of an account are forgotten after this long without another.
const ACCOUNT_MEMORY: Duration = Duration::from_secs(3600);
/// The window of the per-address failure count.
pub(crate) const ADDRESS_WINDOW: Duration = Duration::from_secs(60);
/// A lockout grows (doubles) with each repeat, up to this.
const MAX_LOCKOUT: Duration = Duration::from_secs(3600);
/// Tracked accounts and addresses are swept once their maps grow past this.
const SWEEP_AT: usize = 1024;

/// The configured limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LockoutPolicy {
    /// Failed sign-ins in a row that lock an account.
    pub threshold: u32,
    /// The first lockout; each further one doubles it.
    pub duration: Duration,
    /// Failed attempts per address per [`ADDRESS_WINDOW`] before it is throttled.
    pub address_failures: u32,
}

#[derive(Debug, Clone, Copy)]
struct Account {
    failures: u32,
    lockouts: u32,
    locked_until: Option<Instant>,
    last_failure: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

/// Why an attempt is refused before the password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The account is locked for this much longer (AADSTS50053).
    AccountLocked(Duration),
    /// The address failed too often; it may try again after this long.
    AddressThrottled(Duration),
}

/// Failed sign-ins per account and per address.
pub(crate) struct SignInLimits {
    policy: LockoutPolicy,
    accounts: Mutex<HashMap<String, Account>>,
    addresses: Mutex<HashMap<IpAddr, Window>>,
}

fn account_key(upn: &str) -> String {
    upn.trim().to_lowercase()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SignInLimits {
    pub fn new(policy: LockoutPolicy) -> Self {
        SignInLimits {
            policy,
            accounts: Mutex::default(),
            addresses: Mutex::default(),
        }
    }

    /// Whether an attempt from `addr` (if known) for `upn` may go ahead. Known and unknown user
    /// names are treated alike, so the answer tells nothing about which accounts exist.
    pub fn check(&self, addr: Option<IpAddr>, upn: &str, now: Instant) -> Result<(), Refusal> {
        if let Some(ip) = addr
            && let Some(w) = lock(&self.addresses).get(&ip)
            && w.failures >= self.policy.address_failures
        {
            let end = w.start + ADDRESS_WINDOW;
            if end > now {
                return Err(Refusal::AddressThrottled(end - now));
            }
        }
        if let Some(a) = lock(&self.accounts).get(&account_key(upn))
            && let Some(until) = a.locked_until
            && until > now
        {
            return Err(Refusal::AccountLocked(until - now));
        }
        Ok(())
    }

    /// Counts a failed attempt of `addr` (a wrong user code or a failed sign-in).
    pub fn address_failed(&self, addr: Option<IpAddr>, now: Instant) {
        let Some(ip) = addr else { return };
        let mut map = lock(&self.addresses);
        if map.len() >= SWEEP_AT {
            map.retain(|_, w| w.start + ADDRESS_WINDOW > now);
        }
        let w = map.entry(ip).or_insert(Window {
            start: now,
            failures: 0,
        });
        if w.start + ADDRESS_WINDOW <= now {
            *w = Window {
                start: now,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
    }

    /// Counts a wrong password (or unknown user name) for `upn`; returns the lockout it starts,
    /// if this failure reached the threshold.
    pub fn account_failed(&self, upn: &str, now: Instant) -> Option<Duration> {
        let mut map = lock(&self.accounts);
        if map.len() >= SWEEP_AT {
            map.retain(|_, a| {
                a.locked_until.is_some_and(|u| u > now) || a.last_failure + ACCOUNT_MEMORY > now
            });
        }
        let a = map.entry(account_key(upn)).or_insert(Account {
            failures: 0,
            lockouts: 0,
            locked_until: None,
            last_failure: now,
        });
        if a.last_failure + ACCOUNT_MEMORY <= now {
            *a = Account {
                failures: 0,
                lockouts: 0,
                locked_until: None,
                last_failure: now,
            };
        }
        a.last_failure = now;
        a.failures += 1;
        if a.failures < self.policy.threshold {
            return None;
        }
        a.failures = 0;
        a.lockouts = a.lockouts.saturating_add(1);
        let factor = 1u32 << (a.lockouts - 1).min(16);
        let d = self.policy.duration.saturating_mul(factor).min(MAX_LOCKOUT);
        a.locked_until = Some(now + d);
        Some(d)
    }

    /// A successful sign-in clears the account's failures.
    pub fn account_succeeded(&self, upn: &str) {
        lock(&self.accounts).remove(&account_key(upn));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> SignInLimits {
        SignInLimits::new(LockoutPolicy {
            threshold: 3,
            duration: Duration::from_secs(60),
            address_failures: 4,
        })
    }

    #[test]
    fn an_account_locks_at_the_threshold_for_longer_each_time() {
        let l = limits();
        let t = Instant::now();
        assert_eq!(l.account_failed("A@x", t), None);
        assert_eq!(l.account_failed("a@x", t), None);
        assert_eq!(l.account_failed(" a@X ", t), Some(Duration::from_secs(60)));
        assert_eq!(
            l.check(None, "a@x", t + Duration::from_secs(10)),
            Err(Refusal::AccountLocked(Duration::from_secs(50)))
        );
        let later = t + Duration::from_secs(61);
        assert_eq!(l.check(None, "a@x", later), Ok(()));
        for _ in 0..2 {
            assert_eq!(l.account_failed("a@x", later), None);
        }
        assert_eq!(
            l.account_failed("a@x", later),
            Some(Duration::from_secs(120))
        );
        l.account_succeeded("a@x");
        assert_eq!(l.check(None, "a@x", later), Ok(()));
        assert_eq!(l.check(None, "b@x", t), Ok(()));
    }

    #[test]
    fn an_address_is_throttled_for_the_rest_of_its_window() {
        let l = limits();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t = Instant::now();
        for _ in 0..4 {
            assert_eq!(l.check(Some(ip), "a@x", t), Ok(()));
            l.address_failed(Some(ip), t);
        }
        assert_eq!(
            l.check(Some(ip), "a@x", t + Duration::from_secs(15)),
            Err(Refusal::AddressThrottled(Duration::from_secs(45)))
        );
        assert_eq!(l.check(Some("10.0.0.2".parse().unwrap()), "a@x", t), Ok(()));
        assert_eq!(l.check(Some(ip), "a@x", t + ADDRESS_WINDOW), Ok(()));
    }
}
