//! Brute-force throttling, kept in memory.
//!
//! Two counters, as the protocol fixes them:
//! - per (username, source address): after 5 consecutive failures, tries are
//!   refused for a window of 1 s, doubled by each further *checked* failure (2 s,
//!   4 s, ... at most 5 min). A success resets the pair. Another address is not
//!   affected, so an attacker cannot lock the real user out.
//! - per source address over all names: after 20 failures within 10 minutes,
//!   every try from the address is refused with the same doubling window. A
//!   success does not reset it.
//!
//! A refused try is answered at once (no thread sleeps) and is not counted.
//! Memory is bounded: expired entries are pruned and at most
//! [`THROTTLE_MAX_KEYS`] keys are kept, the oldest going first. Usernames are
//! kept as keyed 64-bit hashes, so long names cost no more than short ones.

use crate::config::{
    ADDR_FAILURE_SPAN, ADDR_FREE_FAILURES, PAIR_FREE_FAILURES, THROTTLE_BASE_WINDOW,
    THROTTLE_MAX_KEYS, THROTTLE_MAX_WINDOW,
};
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Failures per address remembered at most: past 20 + 9 the window is at its cap.
const ADDR_FAILURES_KEPT: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PairKey {
    user_hash: u64,
    addr: IpAddr,
}

#[derive(Debug)]
struct PairEntry {
    consecutive_failures: u32,
    blocked_until: Option<Instant>,
    last_failure: Instant,
}

#[derive(Debug)]
struct AddrEntry {
    /// Times of the latest failures, oldest first, none older than the span.
    failures: VecDeque<Instant>,
    blocked_until: Option<Instant>,
}

#[derive(Default)]
struct State {
    pairs: HashMap<PairKey, PairEntry>,
    addrs: HashMap<IpAddr, AddrEntry>,
    last_prune: Option<Instant>,
}

/// Shared by all sessions: decides whether a login try may be checked.
pub struct Throttle {
    state: Mutex<State>,
    hasher: RandomState,
    stats: ThrottleStats,
}

/// Counts of what the throttle decided since start (for logs, tests, figures).
#[derive(Debug, Default)]
pub struct ThrottleStats {
    /// Tries that were checked and failed.
    pub failures: AtomicU64,
    /// Tries refused unchecked inside a window.
    pub refused: AtomicU64,
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new()
    }
}

/// `base * 2^(failures - free)`, capped: the window after the `failures`-th failure.
fn window(failures: u32, free: u32) -> Duration {
    let doublings = failures.saturating_sub(free).min(20);
    THROTTLE_BASE_WINDOW
        .saturating_mul(1 << doublings)
        .min(THROTTLE_MAX_WINDOW)
}

impl Throttle {
    pub fn new() -> Self {
        Throttle {
            state: Mutex::new(State::default()),
            hasher: RandomState::new(),
            stats: ThrottleStats::default(),
        }
    }

    fn key(&self, user: &str, addr: IpAddr) -> PairKey {
        PairKey {
            user_hash: self.hasher.hash_one(user),
            addr,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// May a try for `user` from `addr` be checked now? `false`: refuse it
    /// unchecked and do not count it.
    pub fn allows(&self, user: &str, addr: IpAddr, now: Instant) -> bool {
        let key = self.key(user, addr);
        let state = self.lock();
        let blocked = |until: Option<Instant>| until.is_some_and(|t| now < t);
        let pair_blocked = state
            .pairs
            .get(&key)
            .is_some_and(|e| blocked(e.blocked_until));
        let addr_blocked = state
            .addrs
            .get(&addr)
            .is_some_and(|e| blocked(e.blocked_until));
        !(pair_blocked || addr_blocked)
    }

    /// A checked try failed.
    pub fn record_failure(&self, user: &str, addr: IpAddr, now: Instant) {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        let key = self.key(user, addr);
        let mut state = self.lock();

        let pair = state.pairs.entry(key).or_insert(PairEntry {
            consecutive_failures: 0,
            blocked_until: None,
            last_failure: now,
        });
        pair.consecutive_failures = pair.consecutive_failures.saturating_add(1);
        pair.last_failure = now;
        if pair.consecutive_failures >= PAIR_FREE_FAILURES {
            pair.blocked_until = Some(now + window(pair.consecutive_failures, PAIR_FREE_FAILURES));
        }

        let entry = state.addrs.entry(addr).or_insert(AddrEntry {
            failures: VecDeque::new(),
            blocked_until: None,
        });
        while entry
            .failures
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) > ADDR_FAILURE_SPAN)
        {
            entry.failures.pop_front();
        }
        if entry.failures.len() == ADDR_FAILURES_KEPT {
            entry.failures.pop_front();
        }
        entry.failures.push_back(now);
        let recent = entry.failures.len() as u32;
        if recent >= ADDR_FREE_FAILURES {
            entry.blocked_until = Some(now + window(recent, ADDR_FREE_FAILURES));
        }

        Self::prune_if_due(&mut state, now);
    }

    /// A checked try succeeded: the pair starts afresh (the address counter does not).
    pub fn record_success(&self, user: &str, addr: IpAddr) {
        let key = self.key(user, addr);
        self.lock().pairs.remove(&key);
    }

    pub fn stats(&self) -> &ThrottleStats {
        &self.stats
    }

    /// Keys held now (pairs + addresses), for tests and logs.
    pub fn len(&self) -> usize {
        let state = self.lock();
        state.pairs.len() + state.addrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops entries that can no longer refuse anything and, past the key limit,
    /// the oldest ones. Runs at most once a second unless the table is full.
    fn prune_if_due(state: &mut State, now: Instant) {
        let full = state.pairs.len() + state.addrs.len() > THROTTLE_MAX_KEYS;
        let due = state
            .last_prune
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
        if !(full || due) {
            return;
        }
        state.last_prune = Some(now);
        let active = |until: Option<Instant>| until.is_some_and(|t| now < t);
        // A pair below the threshold is kept while its failures are recent.
        state.pairs.retain(|_, e| {
            active(e.blocked_until)
                || now.saturating_duration_since(e.last_failure) <= ADDR_FAILURE_SPAN
        });
        state.addrs.retain(|_, e| {
            active(e.blocked_until)
                || e.failures
                    .back()
                    .is_some_and(|&t| now.saturating_duration_since(t) <= ADDR_FAILURE_SPAN)
        });
        let total = state.pairs.len() + state.addrs.len();
        if total > THROTTLE_MAX_KEYS {
            // Evict the oldest keys of either kind down to nine tenths of the
            // limit in one pass, so a full table costs one sort per tenth of the
            // limit failures, not a scan per failure.
            let remove = total - THROTTLE_MAX_KEYS * 9 / 10;
            let mut ages: Vec<(Instant, Key)> = state
                .pairs
                .iter()
                .map(|(k, e)| (e.last_failure, Key::Pair(*k)))
                .chain(
                    state
                        .addrs
                        .iter()
                        .map(|(a, e)| (e.failures.back().copied().unwrap_or(now), Key::Addr(*a))),
                )
                .collect();
            ages.select_nth_unstable_by_key(remove - 1, |(t, _)| *t);
            for (_, key) in ages.drain(..remove) {
                match key {
                    Key::Pair(k) => state.pairs.remove(&k).map(|_| ()),
                    Key::Addr(a) => state.addrs.remove(&a).map(|_| ()),
                };
            }
        }
    }
}

/// A key of either table, for eviction by age.
enum Key {
    Pair(PairKey),
    Addr(IpAddr),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
    }
    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn pair_window_starts_after_five_failures_and_doubles() {
        let t = Throttle::new();
        let t0 = Instant::now();
        for _ in 0..4 {
            assert!(t.allows("ann", ip(1), t0));
            t.record_failure("ann", ip(1), t0);
        }
        assert!(t.allows("ann", ip(1), t0), "4 failures: still checked");
        t.record_failure("ann", ip(1), t0); // 5th
        assert!(!t.allows("ann", ip(1), t0));
        assert!(!t.allows("ann", ip(1), t0 + Duration::from_millis(999)));
        assert!(t.allows("ann", ip(1), t0 + S(1)));
        t.record_failure("ann", ip(1), t0 + S(1)); // 6th: 2 s
        assert!(!t.allows("ann", ip(1), t0 + S(2)));
        assert!(t.allows("ann", ip(1), t0 + S(3)));
        t.record_failure("ann", ip(1), t0 + S(3)); // 7th: 4 s
        assert!(!t.allows("ann", ip(1), t0 + S(6)));
        assert!(t.allows("ann", ip(1), t0 + S(7)));
    }

    #[test]
    fn other_address_and_other_name_are_not_blocked() {
        let t = Throttle::new();
        let t0 = Instant::now();
        for _ in 0..5 {
            t.record_failure("ann", ip(1), t0);
        }
        assert!(!t.allows("ann", ip(1), t0));
        assert!(
            t.allows("ann", ip(2), t0),
            "the real user elsewhere gets in"
        );
        assert!(t.allows("bob", ip(1), t0));
    }

    #[test]
    fn success_resets_the_pair_but_not_the_address() {
        let t = Throttle::new();
        let t0 = Instant::now();
        for _ in 0..4 {
            t.record_failure("ann", ip(1), t0);
        }
        t.record_success("ann", ip(1));
        for _ in 0..4 {
            t.record_failure("ann", ip(1), t0);
        }
        assert!(t.allows("ann", ip(1), t0), "reset: 4 new failures only");
        // The address has 8 failures; 12 more on other names reach 20.
        for i in 0..12 {
            t.record_failure(&format!("n{i}"), ip(1), t0);
        }
        assert!(!t.allows("zed", ip(1), t0), "20 failures from the address");
        assert!(t.allows("zed", ip(2), t0));
        assert!(t.allows("zed", ip(1), t0 + S(1)));
    }

    #[test]
    fn address_failures_older_than_the_span_do_not_count() {
        let t = Throttle::new();
        let t0 = Instant::now();
        for i in 0..19 {
            t.record_failure(&format!("n{i}"), ip(1), t0);
        }
        let later = t0 + ADDR_FAILURE_SPAN + S(1);
        t.record_failure("x", ip(1), later);
        assert!(t.allows("y", ip(1), later));
    }

    #[test]
    fn window_is_capped_at_five_minutes() {
        assert_eq!(window(5, 5), S(1));
        assert_eq!(window(6, 5), S(2));
        assert_eq!(window(13, 5), S(256));
        assert_eq!(window(14, 5), S(300));
        assert_eq!(window(u32::MAX, 5), S(300));
    }

    #[test]
    fn expired_entries_are_pruned() {
        let t = Throttle::new();
        let t0 = Instant::now();
        for i in 0..50 {
            t.record_failure(&format!("n{i}"), ip(i), t0);
        }
        assert_eq!(t.len(), 100);
        let later = t0 + ADDR_FAILURE_SPAN + S(2);
        t.record_failure("last", ip(200), later);
        assert_eq!(t.len(), 2);
    }
}
