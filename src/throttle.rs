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
//! A source address is its [`AddressKey`]: an IPv4 address, or an IPv6 /64 (one
//! host holds a whole /64, so counting its addresses apart would multiply its
//! guesses by millions).
//!
//! A refused try is answered at once (no thread sleeps) and is not counted.
//! The decision and the counting are one step: [`Throttle::begin`] counts an
//! allowed try as pending under the same lock, and a pending try counts as a
//! failure to come, so answers arriving together on many cores get no more
//! checks than answers arriving one by one.
//!
//! A try is refused only inside a window, never for tries in flight alone. One
//! that failures plus pending tries would refuse, though no window is open, is
//! [`Decision::Busy`]: whether it may be checked depends on how the tries in
//! flight end (failures open the window, successes reset the pair), so it waits
//! for them to settle and is decided again. That is queueing behind the tries
//! that decide it, not a punishment: a check takes milliseconds, a try nothing
//! in flight could refuse never waits, and the wait is bounded by
//! [`THROTTLE_IN_FLIGHT_WAIT`]; past it the try is refused unchecked, as
//! throttled, and not counted. In memory a waiter sleeps on a condition
//! variable (the lock released) that every settled try wakes; a
//! [`SharedThrottle`] is asked again after short pauses
//! ([`SharedThrottle::begin_waiting`]).
//! Memory is bounded: at most [`THROTTLE_MAX_KEYS`] keys are kept. Room for a
//! new key is made by dropping expired keys first (nothing to refuse, no failure
//! within the span), then the oldest keys with no open window; a key whose window
//! is still open is never dropped, since forgetting it would unblock its source.
//! When every key holds an open window, a new key is refused rather than any
//! kept key forgotten (its try is refused unchecked, failing closed).
//! Usernames are kept as keyed 64-bit hashes, so long names cost no more than
//! short ones.
//!
//! With PostgreSQL the counters live in the database instead, shared by every
//! server ([`SharedThrottle`], implemented by
//! [`PgThrottle`](crate::store::pg_throttle::PgThrottle)); the policy is the same.

use crate::address::AddressKey;
use crate::config::{
    ADDR_FAILURE_SPAN, ADDR_FREE_FAILURES, PAIR_FREE_FAILURES, THROTTLE_BASE_WINDOW,
    THROTTLE_BUSY_PAUSE_MAX, THROTTLE_BUSY_PAUSE_MIN, THROTTLE_IN_FLIGHT_WAIT, THROTTLE_MAX_KEYS,
    THROTTLE_MAX_WINDOW,
};
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Failures per address remembered at most: past 20 + 9 the window is at its cap.
const ADDR_FAILURES_KEPT: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PairKey {
    user_hash: u64,
    addr: AddressKey,
}

#[derive(Debug)]
struct PairEntry {
    consecutive_failures: u32,
    /// Tries allowed and not yet settled: each may still be a failure.
    pending: u32,
    blocked_until: Option<Instant>,
    last_failure: Instant,
}

#[derive(Debug)]
struct AddrEntry {
    /// Times of the latest failures, oldest first, none older than the span.
    failures: VecDeque<Instant>,
    /// Tries allowed and not yet settled: each may still be a failure.
    pending: u32,
    blocked_until: Option<Instant>,
}

impl AddrEntry {
    fn recent_failures(&self, now: Instant) -> u32 {
        let recent = |t: &&Instant| now.saturating_duration_since(**t) <= ADDR_FAILURE_SPAN;
        self.failures.iter().filter(recent).count() as u32
    }
}

#[derive(Default)]
struct State {
    pairs: HashMap<PairKey, PairEntry>,
    addrs: HashMap<AddressKey, AddrEntry>,
    last_prune: Option<Instant>,
    /// Tries waiting now for tries in flight to settle (so a settle wakes
    /// someone only when someone waits).
    waiting: usize,
}

/// What the throttle says of a try at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// To be checked; counted as pending until it is settled.
    Allowed,
    /// Refused unchecked, not counted: a window is open (or, in memory, there
    /// is no room for its keys).
    Refused,
    /// No window is open, but the tries in flight, were they all to fail,
    /// would open one: neither checked nor refused yet, not counted. Ask again
    /// once they have settled.
    Busy,
}

/// Shared by all sessions: decides whether a login try may be checked.
pub struct Throttle {
    state: Mutex<State>,
    /// Notified when a pending try settles, for the tries waiting on it.
    settled: Condvar,
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
    /// Tries refused because every kept key held an open window (no room).
    pub refused_full: AtomicU64,
    /// Tries that had to wait for tries in flight (whatever came of them).
    pub waited: AtomicU64,
    /// Tries refused because the tries in flight did not settle within
    /// [`THROTTLE_IN_FLIGHT_WAIT`].
    pub refused_in_flight: AtomicU64,
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
            settled: Condvar::new(),
            hasher: RandomState::new(),
            stats: ThrottleStats::default(),
        }
    }

    fn key(&self, user: &str, addr: AddressKey) -> PairKey {
        PairKey {
            user_hash: self.hasher.hash_one(user),
            addr,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Would a try for `user` from `addr` be checked now, without waiting? A
    /// query only (for tests and tools): sessions use [`begin`](Self::begin),
    /// which decides and counts the try as pending under one lock.
    pub fn allows(&self, user: &str, addr: impl Into<AddressKey>, now: Instant) -> bool {
        self.decision(user, addr, now) == Decision::Allowed
    }

    /// What [`begin`](Self::begin) would decide now before any wait (a query
    /// only, for tests and tools).
    pub fn decision(&self, user: &str, addr: impl Into<AddressKey>, now: Instant) -> Decision {
        let key = self.key(user, addr.into());
        Self::verdict(&self.lock(), &key, now)
    }

    /// Refused inside a window. Otherwise checked unless, counting every
    /// pending try as a failure to come, a window could open: so tries
    /// arriving together get no more checks than tries arriving one by one.
    /// Such a try is busy, not refused: the tries in flight decide it.
    fn verdict(state: &State, key: &PairKey, now: Instant) -> Decision {
        let open = |until: Option<Instant>| until.is_some_and(|t| now < t);
        let pair = state.pairs.get(key);
        let addr = state.addrs.get(&key.addr);
        if pair.is_some_and(|e| open(e.blocked_until))
            || addr.is_some_and(|e| open(e.blocked_until))
        {
            return Decision::Refused;
        }
        let pair_full = pair.is_some_and(|e| {
            e.pending > 0 && e.consecutive_failures + e.pending >= PAIR_FREE_FAILURES
        });
        let addr_full = addr.is_some_and(|e| {
            e.pending > 0 && e.recent_failures(now) + e.pending >= ADDR_FREE_FAILURES
        });
        if pair_full || addr_full {
            Decision::Busy
        } else {
            Decision::Allowed
        }
    }

    /// Decides whether a try for `user` from `addr` may be checked, and if so
    /// counts it as pending in the same critical section. A busy try (see
    /// [`Decision::Busy`]) waits for the tries in flight to settle, at most
    /// [`THROTTLE_IN_FLIGHT_WAIT`], and is decided again (the time it waited
    /// added to `now`). `None`: refuse it unchecked (not counted): inside a
    /// window, still busy at the end of the wait, or when it would need a new
    /// key and no room can be made without forgetting an open window. Settle
    /// the returned [`CheckedTry`] with [`failed`](CheckedTry::failed) or
    /// [`succeeded`](CheckedTry::succeeded); dropped unsettled, it only
    /// stops being pending.
    pub fn begin(
        &self,
        user: &str,
        addr: impl Into<AddressKey>,
        now: Instant,
    ) -> Option<CheckedTry<'_>> {
        self.begin_within(user, addr.into(), now, THROTTLE_IN_FLIGHT_WAIT)
    }

    /// [`begin`](Self::begin), waiting at most `max_wait` while busy.
    fn begin_within(
        &self,
        user: &str,
        addr: AddressKey,
        now: Instant,
        max_wait: Duration,
    ) -> Option<CheckedTry<'_>> {
        let key = self.key(user, addr);
        let started = Instant::now();
        let mut state = self.lock();
        let mut waited = false;
        let now = loop {
            let elapsed = started.elapsed();
            let now = now + elapsed;
            match Self::verdict(&state, &key, now) {
                Decision::Allowed => break now,
                Decision::Refused => {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                Decision::Busy => {
                    let left = max_wait.saturating_sub(elapsed);
                    if left.is_zero() {
                        self.stats.refused_in_flight.fetch_add(1, Ordering::Relaxed);
                        return None;
                    }
                    if !waited {
                        waited = true;
                        self.stats.waited.fetch_add(1, Ordering::Relaxed);
                    }
                    // The lock is released while waiting; woken by a settled
                    // try (or the deadline, or spuriously), decide again.
                    state.waiting += 1;
                    state = self
                        .settled
                        .wait_timeout(state, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                    state.waiting -= 1;
                }
            }
        };
        let new_keys = usize::from(!state.pairs.contains_key(&key))
            + usize::from(!state.addrs.contains_key(&addr));
        if !Self::make_room(&mut state, new_keys, now) {
            self.stats.refused_full.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Self::pair_entry(&mut state, key, now).pending += 1;
        Self::addr_entry(&mut state, addr).pending += 1;
        Some(CheckedTry {
            throttle: self,
            key,
            settled: false,
        })
    }

    fn pair_entry(state: &mut State, key: PairKey, now: Instant) -> &mut PairEntry {
        state.pairs.entry(key).or_insert(PairEntry {
            consecutive_failures: 0,
            pending: 0,
            blocked_until: None,
            last_failure: now,
        })
    }

    fn addr_entry(state: &mut State, addr: AddressKey) -> &mut AddrEntry {
        state.addrs.entry(addr).or_insert(AddrEntry {
            failures: VecDeque::new(),
            pending: 0,
            blocked_until: None,
        })
    }

    /// One pending try of `key` is settled (or abandoned). The caller wakes
    /// the waiters ([`wake_waiters`](Self::wake_waiters)) once the state
    /// shows the try's outcome.
    fn settle(state: &mut State, key: &PairKey) {
        if let Some(e) = state.pairs.get_mut(key) {
            e.pending = e.pending.saturating_sub(1);
        }
        if let Some(e) = state.addrs.get_mut(&key.addr) {
            e.pending = e.pending.saturating_sub(1);
        }
    }

    /// Tries waiting on tries in flight decide again (they run once the
    /// caller releases the lock).
    fn wake_waiters(&self, state: &State) {
        if state.waiting > 0 {
            self.settled.notify_all();
        }
    }

    /// Tries waiting now for tries in flight (for tests and logs).
    pub fn waiting(&self) -> usize {
        self.lock().waiting
    }

    /// A checked try failed.
    pub fn record_failure(&self, user: &str, addr: impl Into<AddressKey>, now: Instant) {
        let key = self.key(user, addr.into());
        self.failed(key, false, now);
    }

    fn failed(&self, key: PairKey, was_pending: bool, now: Instant) {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        if was_pending {
            Self::settle(&mut state, &key);
        }
        Self::count_failure(&mut state, key, now);
        self.wake_waiters(&state);
    }

    fn count_failure(state: &mut State, key: PairKey, now: Instant) {
        let addr = key.addr;
        Self::prune_if_due(state, now);
        let new_keys = usize::from(!state.pairs.contains_key(&key))
            + usize::from(!state.addrs.contains_key(&addr));
        if !Self::make_room(state, new_keys, now) {
            // Only reachable without a prior `allows` (which made the room).
            return;
        }

        let pair = Self::pair_entry(state, key, now);
        pair.consecutive_failures = pair.consecutive_failures.saturating_add(1);
        pair.last_failure = now;
        if pair.consecutive_failures >= PAIR_FREE_FAILURES {
            pair.blocked_until = Some(now + window(pair.consecutive_failures, PAIR_FREE_FAILURES));
        }

        let entry = Self::addr_entry(state, addr);
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
    }

    /// A checked try succeeded: the pair starts afresh (the address counter does not).
    pub fn record_success(&self, user: &str, addr: impl Into<AddressKey>) {
        let key = self.key(user, addr.into());
        let mut state = self.lock();
        Self::reset_pair(&mut state, &key);
        self.wake_waiters(&state);
    }

    /// The pair starts afresh; its entry stays while other tries are pending.
    fn reset_pair(state: &mut State, key: &PairKey) {
        if let Some(e) = state.pairs.get_mut(key) {
            if e.pending == 0 {
                state.pairs.remove(key);
            } else {
                e.consecutive_failures = 0;
                e.blocked_until = None;
            }
        }
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

    /// Drops expired entries (nothing to refuse, no failure within the span).
    /// Runs at most once a second.
    fn prune_if_due(state: &mut State, now: Instant) {
        let due = state
            .last_prune
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
        if due {
            Self::prune_expired(state, now);
        }
    }

    fn prune_expired(state: &mut State, now: Instant) {
        state.last_prune = Some(now);
        let open = |until: Option<Instant>| until.is_some_and(|t| now < t);
        let recent = |t: Instant| now.saturating_duration_since(t) <= ADDR_FAILURE_SPAN;
        // A pair below the threshold is kept while its failures are recent.
        state
            .pairs
            .retain(|_, e| e.pending > 0 || open(e.blocked_until) || recent(e.last_failure));
        state.addrs.retain(|_, e| {
            e.pending > 0 || open(e.blocked_until) || e.failures.back().is_some_and(|&t| recent(t))
        });
    }

    /// Makes room for `new_keys` more keys; false if that would mean forgetting
    /// a key whose window is open. When the table is full: expired keys go
    /// first; then the oldest keys with no open window, down to nine tenths of
    /// the limit in one pass (one sort per tenth of the limit, not a scan per
    /// try); keys with an open window are never dropped.
    fn make_room(state: &mut State, new_keys: usize, now: Instant) -> bool {
        let len = |s: &State| s.pairs.len() + s.addrs.len();
        if new_keys == 0 || len(state) + new_keys <= THROTTLE_MAX_KEYS {
            return true;
        }
        Self::prune_expired(state, now);
        if len(state) + new_keys <= THROTTLE_MAX_KEYS {
            return true;
        }
        let open = |until: Option<Instant>| until.is_some_and(|t| now < t);
        let mut closed: Vec<(Instant, Key)> = state
            .pairs
            .iter()
            .filter(|(_, e)| e.pending == 0 && !open(e.blocked_until))
            .map(|(k, e)| (e.last_failure, Key::Pair(*k)))
            .chain(
                state
                    .addrs
                    .iter()
                    .filter(|(_, e)| e.pending == 0 && !open(e.blocked_until))
                    .map(|(a, e)| (e.failures.back().copied().unwrap_or(now), Key::Addr(*a))),
            )
            .collect();
        let target = (THROTTLE_MAX_KEYS * 9 / 10).min(THROTTLE_MAX_KEYS - new_keys);
        let remove = (len(state) - target).min(closed.len());
        if remove > 0 {
            closed.select_nth_unstable_by_key(remove - 1, |(t, _)| *t);
            for (_, key) in closed.drain(..remove) {
                match key {
                    Key::Pair(k) => state.pairs.remove(&k).map(|_| ()),
                    Key::Addr(a) => state.addrs.remove(&a).map(|_| ()),
                };
            }
        }
        len(state) + new_keys <= THROTTLE_MAX_KEYS
    }
}

/// A try the throttle allowed to be checked, counted as pending until it is
/// settled with its result.
pub struct CheckedTry<'a> {
    throttle: &'a Throttle,
    key: PairKey,
    settled: bool,
}

impl CheckedTry<'_> {
    pub fn failed(mut self, now: Instant) {
        self.settled = true;
        self.throttle.failed(self.key, true, now);
    }

    pub fn succeeded(mut self) {
        self.settled = true;
        let mut state = self.throttle.lock();
        Throttle::settle(&mut state, &self.key);
        Throttle::reset_pair(&mut state, &self.key);
        self.throttle.wake_waiters(&state);
    }
}

impl Drop for CheckedTry<'_> {
    fn drop(&mut self) {
        // Abandoned (the session ended or panicked before the result).
        if !self.settled {
            let mut state = self.throttle.lock();
            Throttle::settle(&mut state, &self.key);
            self.throttle.wake_waiters(&state);
        }
    }
}

/// Asks `decide` until it says other than [`Decision::Busy`], or `max_wait`
/// has passed. A store cannot wake a waiter when a try settles, so the pause
/// between asks starts at [`THROTTLE_BUSY_PAUSE_MIN`] (a check takes a few
/// milliseconds) and doubles up to [`THROTTLE_BUSY_PAUSE_MAX`] (so many
/// waiters do not keep the database busy asking). Not a punishment: only a
/// try the tries in flight may still refuse waits.
pub fn ask_while_busy<E>(
    max_wait: Duration,
    mut decide: impl FnMut() -> Result<Decision, E>,
) -> Result<Decision, E> {
    let started = Instant::now();
    let mut pause = THROTTLE_BUSY_PAUSE_MIN;
    loop {
        let decision = decide()?;
        let left = max_wait.saturating_sub(started.elapsed());
        if decision != Decision::Busy || left.is_zero() {
            return Ok(decision);
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(THROTTLE_BUSY_PAUSE_MAX);
    }
}

/// A key of either table, for eviction by age.
enum Key {
    Pair(PairKey),
    Addr(AddressKey),
}

/// A throttle whose counters several servers share (PostgreSQL): the same
/// policy as [`Throttle`], the decision and the pending count one atomic step.
/// An error means the database did not answer: the caller refuses the try
/// (fails closed).
pub trait SharedThrottle: Send + Sync {
    /// May a try for `user` from `addr` be checked now (one look, no wait)?
    /// If [`Decision::Allowed`] it is counted as pending; settle it with
    /// exactly one of the three calls below.
    fn begin(&self, user: &str, addr: AddressKey) -> Result<Decision, crate::store::StoreError>;
    /// [`begin`](Self::begin), asked again while the try is busy (tries in
    /// flight decide it), at most [`THROTTLE_IN_FLIGHT_WAIT`]: `Busy` back
    /// means it still was at the end (the caller refuses it unchecked).
    fn begin_waiting(
        &self,
        user: &str,
        addr: AddressKey,
    ) -> Result<Decision, crate::store::StoreError> {
        ask_while_busy(THROTTLE_IN_FLIGHT_WAIT, || self.begin(user, addr))
    }
    /// The checked try failed.
    fn failed(&self, user: &str, addr: AddressKey) -> Result<(), crate::store::StoreError>;
    /// The checked try succeeded: the pair starts afresh.
    fn succeeded(&self, user: &str, addr: AddressKey) -> Result<(), crate::store::StoreError>;
    /// The try was never checked after all: it only stops being pending.
    fn abandoned(&self, user: &str, addr: AddressKey) -> Result<(), crate::store::StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

    /// The address `2001:db8:<net>:<host>`: `net` (32 bits) picks the /64,
    /// `host` the address inside it.
    fn v6(net: u32, host: u64) -> IpAddr {
        let bits = (0x2001_0db8_u128 << 96) | (u128::from(net) << 64) | u128::from(host);
        IpAddr::V6(Ipv6Addr::from(bits))
    }

    #[test]
    fn ipv6_addresses_of_one_64_share_one_count() {
        let t = Throttle::new();
        let t0 = Instant::now();
        // 1,000 addresses of one /64 guess one name: only 5 are checked.
        let mut checked = 0;
        for host in 0..1000u64 {
            let addr = v6(1, host.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            if t.allows("ann", addr, t0) {
                checked += 1;
                t.record_failure("ann", addr, t0);
            }
        }
        assert_eq!(checked, 5);
        assert!(
            t.allows("ann", v6(2, 1), t0),
            "another /64 is another source"
        );
        // The address counter too: 20 names from 20 addresses of one /64.
        let t = Throttle::new();
        for i in 0..20 {
            t.record_failure(&format!("n{i}"), v6(3, i), t0);
        }
        assert!(!t.allows("zed", v6(3, 999), t0));
        assert_eq!(t.len(), 21, "20 pairs and one address key");
    }

    #[test]
    fn eviction_never_frees_an_open_window() {
        let t = Throttle::new();
        let t0 = Instant::now();
        // The attacker's own address is blocked for the longest window.
        for i in 0..40 {
            t.record_failure(&format!("n{i}"), ip(1), t0);
        }
        assert!(!t.allows("x", ip(1), t0));
        // Then one failure each from many /64s (keys with no open window): the
        // table fills and is evicted several times over.
        let later = t0 + S(10);
        for net in 0..THROTTLE_MAX_KEYS as u32 {
            t.record_failure("victim", v6(net, 1), later);
            assert!(t.len() <= THROTTLE_MAX_KEYS);
        }
        assert!(
            t.len() > THROTTLE_MAX_KEYS / 2,
            "evicted in bulk, not emptied"
        );
        assert!(
            !t.allows("x", ip(1), later),
            "still blocked: its key was kept"
        );
    }

    #[test]
    fn a_table_full_of_open_windows_refuses_new_keys() {
        let t = Throttle::new();
        let t0 = Instant::now();
        // Each source fails 20 times on one name: its pair and its address key
        // both hold an open window.
        let sources = (THROTTLE_MAX_KEYS / 2) as u32;
        for net in 0..sources {
            for _ in 0..ADDR_FREE_FAILURES {
                t.record_failure("x", v6(net, 1), t0);
            }
        }
        assert_eq!(t.len(), THROTTLE_MAX_KEYS);
        let newcomer = v6(sources + 1, 1);
        assert!(
            t.begin("ann", newcomer, t0).is_none(),
            "no room: refused, not forgotten"
        );
        assert_eq!(t.stats().refused_full.load(Ordering::Relaxed), 1);
        assert!(
            !t.allows("x", v6(0, 1), t0),
            "the oldest window is still kept"
        );
        // Once the windows have closed, their keys may go and the newcomer is in.
        let later = t0 + THROTTLE_MAX_WINDOW + S(1);
        assert!(t.begin("ann", newcomer, later).is_some());
    }

    /// Many threads answer at the same moment for one (name, address) pair: the
    /// check and the counting must not leave a gap where all of them pass.
    #[test]
    fn simultaneous_tries_on_one_pair_check_exactly_five() {
        use std::sync::{Arc, Barrier};
        const THREADS: usize = 64;
        let t = Arc::new(Throttle::new());
        let t0 = Instant::now();
        // Every thread asks first, and only then do the checked ones fail: the
        // widest possible gap between check and count. (The others wait for
        // the 5 in flight, which settle only once every thread has asked: they
        // are refused when THROTTLE_IN_FLIGHT_WAIT runs out.)
        let asked = Arc::new(Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (t, asked) = (t.clone(), asked.clone());
                std::thread::spawn(move || {
                    let attempt = t.begin("ann", ip(1), t0);
                    asked.wait();
                    let checked = attempt.is_some();
                    if let Some(a) = attempt {
                        a.failed(t0);
                    }
                    checked
                })
            })
            .collect();
        let checked = threads
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|&c| c)
            .count();
        assert_eq!(checked, PAIR_FREE_FAILURES as usize);
        assert!(t.begin("ann", ip(1), t0).is_none());
    }

    /// Waits (bounded) until `n` tries wait on tries in flight.
    fn until_waiting(t: &Throttle, n: usize) {
        let deadline = Instant::now() + S(10);
        while t.waiting() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(t.waiting(), n, "tries waiting on the tries in flight");
    }

    /// No failure at all: tries in flight make the others wait, never refuse
    /// them (issue 11's bound refused up to two thirds of correct logins).
    #[test]
    fn tries_in_flight_with_no_failure_make_others_wait_not_refused() {
        use std::sync::Arc;
        const THREADS: usize = 16;
        let t = Arc::new(Throttle::new());
        let t0 = Instant::now();
        // Five tries in flight: each may still fail, so a sixth is not checked yet.
        let held: Vec<_> = (0..PAIR_FREE_FAILURES)
            .map(|_| t.begin("ann", ip(1), t0).expect("no failure: checked"))
            .collect();
        assert_eq!(t.decision("ann", ip(1), t0), Decision::Busy);
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    let attempt = t.begin("ann", ip(1), Instant::now());
                    let checked = attempt.is_some();
                    if let Some(a) = attempt {
                        a.succeeded();
                    }
                    checked
                })
            })
            .collect();
        until_waiting(&t, THREADS);
        for h in held {
            h.succeeded();
        }
        let checked = threads
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|&c| c)
            .count();
        assert_eq!(checked, THREADS, "every correct login is checked");
        let stats = t.stats();
        assert_eq!(stats.refused.load(Ordering::Relaxed), 0);
        assert_eq!(stats.refused_in_flight.load(Ordering::Relaxed), 0);
        assert_eq!(stats.waited.load(Ordering::Relaxed), THREADS as u64);
    }

    /// Wrong answers racing without a barrier between decision and result:
    /// the waiters are decided by the failures in flight, and exactly 5 are
    /// checked (the rest refused at once by the window, not by the deadline).
    #[test]
    fn racing_wrong_answers_are_checked_exactly_five_times_then_refused() {
        use std::sync::{Arc, Barrier};
        const THREADS: usize = 16;
        let t = Arc::new(Throttle::new());
        let start = Arc::new(Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (t, start) = (t.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let attempt = t.begin("ann", ip(1), Instant::now());
                    let checked = attempt.is_some();
                    if let Some(a) = attempt {
                        a.failed(Instant::now());
                    }
                    checked
                })
            })
            .collect();
        let checked = threads
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|&c| c)
            .count();
        assert_eq!(checked, PAIR_FREE_FAILURES as usize);
        assert_eq!(t.stats().refused_in_flight.load(Ordering::Relaxed), 0);
        assert_eq!(t.decision("ann", ip(1), Instant::now()), Decision::Refused);
    }

    /// The outcome of the try in flight decides the waiter: a failure that
    /// opens the window refuses it, a success lets it be checked.
    #[test]
    fn the_try_in_flight_decides_the_waiting_one() {
        for (fails, want_checked) in [(true, false), (false, true)] {
            let t = Throttle::new();
            let t0 = Instant::now();
            for _ in 0..PAIR_FREE_FAILURES - 1 {
                t.record_failure("ann", ip(1), t0);
            }
            let in_flight = t.begin("ann", ip(1), t0).expect("4 failures: checked");
            std::thread::scope(|s| {
                let waiter = s.spawn(|| t.begin("ann", ip(1), t0).is_some());
                until_waiting(&t, 1);
                if fails {
                    in_flight.failed(t0);
                } else {
                    in_flight.succeeded();
                }
                assert_eq!(waiter.join().unwrap(), want_checked, "fails: {fails}");
            });
        }
    }

    /// 20 tries in flight from one address (20 names, no failure): the 21st
    /// waits; past the wait it is refused unchecked and not counted.
    #[test]
    fn a_try_still_busy_at_the_deadline_is_refused_and_not_counted() {
        let t = Throttle::new();
        let t0 = Instant::now();
        let held: Vec<_> = (0..ADDR_FREE_FAILURES)
            .map(|i| t.begin(&format!("n{i}"), ip(1), t0).expect("checked"))
            .collect();
        assert_eq!(t.decision("zed", ip(1), t0), Decision::Busy);
        let wait = Duration::from_millis(20);
        assert!(t.begin_within("zed", ip(1).into(), t0, wait).is_none());
        let stats = t.stats();
        assert_eq!(stats.refused_in_flight.load(Ordering::Relaxed), 1);
        assert_eq!(stats.refused.load(Ordering::Relaxed), 0);
        assert_eq!(stats.failures.load(Ordering::Relaxed), 0);
        drop(held); // abandoned: nothing in flight any more
        assert!(t.begin_within("zed", ip(1).into(), t0, wait).is_some());
    }

    #[test]
    fn a_shared_throttle_is_asked_again_while_busy_until_the_deadline() {
        let mut asked = 0;
        let decided = ask_while_busy::<()>(S(10), || {
            asked += 1;
            Ok(if asked < 3 {
                Decision::Busy
            } else {
                Decision::Allowed
            })
        });
        assert_eq!((decided, asked), (Ok(Decision::Allowed), 3));
        let started = Instant::now();
        let mut asked = 0;
        let decided = ask_while_busy::<()>(Duration::from_millis(30), || {
            asked += 1;
            Ok(Decision::Busy)
        });
        assert_eq!(
            decided,
            Ok(Decision::Busy),
            "still busy: the caller refuses"
        );
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert!(asked >= 2, "asked again after a pause: {asked}");
        // A refusal or an error ends the asking at once.
        assert_eq!(
            ask_while_busy::<()>(S(10), || Ok(Decision::Refused)),
            Ok(Decision::Refused)
        );
        assert_eq!(
            ask_while_busy(S(10), || Err::<Decision, _>("down")),
            Err("down")
        );
    }
}
