//! The registration quota: at most N acknowledged registrations per source
//! address ([`AddressKey`]: IPv4 whole, IPv6 by /64) within
//! [`REGISTRATION_QUOTA_SPAN`] (10 minutes).
//!
//! Exact under concurrency, by reservation: `register` takes a
//! [`QuotaReservation`] under the lock before it asks anything, so the
//! acknowledged registrations plus those in progress never exceed N, however
//! many sessions from one address register at once. The alternative, counting
//! only at acknowledgement and checking at start, lets N sessions that all
//! passed the check before any committed acknowledge up to 2N-1 (or more): not
//! exact. A reservation that does not end in an acknowledged registration (the
//! client gave up, a name was taken, the store failed, the peer left, a panic)
//! is released on drop, so only acknowledged registrations stay counted, as the
//! protocol says. The price: while one session from an address is in the
//! middle of a registration, it holds one unit of that address's quota.
//!
//! Memory is bounded: timestamps older than the span are pruned, an address
//! keeps at most N of them, and at most [`REGISTRATION_QUOTA_MAX_KEYS`]
//! addresses are kept; when full, expired keys go first, then the key least
//! recently used that holds no reservation (that address gets a fresh count:
//! failing open for the oldest is better than refusing every new address).
//!
//! Where the counts live is the [`RegistrationQuota`] trait's business: in this
//! server's memory ([`InMemoryQuota`], SQLite), or in the database, shared by
//! every server on it ([`PgRegistrationQuota`](crate::store::pg_quota::PgRegistrationQuota),
//! from [`Store::shared_registration_quota`]); [`for_store`] picks one.

use crate::address::AddressKey;
use crate::config::{
    PG_QUOTA_STALE_AFTER_GRACE, REGISTRATION_QUOTA_MAX_KEYS, REGISTRATION_QUOTA_SPAN,
};
use crate::store::{Store, StoreError};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Acknowledged registrations per source address within
/// [`REGISTRATION_QUOTA_SPAN`], wherever the counts are kept.
pub trait RegistrationQuota: Send + Sync {
    /// Registrations per address per span; 0: no quota.
    fn limit(&self) -> usize;
    /// Reserves one registration for `from` before anything is asked;
    /// `Ok(None)` when its quota is used up (acknowledged within the span plus
    /// in progress). Dropped without [`Reservation::acknowledged`], the
    /// reservation is released. An error: the counts could not be read (the
    /// store failed), so nothing is reserved and nothing may be registered.
    fn reserve(&self, from: AddressKey) -> Result<Option<Box<dyn Reservation + '_>>, StoreError>;
}

/// One registration in progress under a [`RegistrationQuota`]; released on
/// drop unless acknowledged.
pub trait Reservation: Send {
    /// The registration is durable and acknowledged: it counts for the span.
    fn acknowledged(self: Box<Self>);
}

/// The quota a server on `store` keeps: `limit` registrations per address per
/// span, shared by every server on the store where the engine can
/// ([`Store::shared_registration_quota`]), else in memory. `login_grace`
/// bounds how long a live registration holds its reservation (it happens
/// before login), so a shared reservation older than it plus
/// [`PG_QUOTA_STALE_AFTER_GRACE`] was left by a server that died.
pub fn for_store(
    store: &dyn Store,
    limit: usize,
    login_grace: Duration,
) -> Arc<dyn RegistrationQuota> {
    if limit == 0 {
        // Off: nothing to count, nothing to share.
        return Arc::new(InMemoryQuota::new(0));
    }
    let stale = login_grace.saturating_add(PG_QUOTA_STALE_AFTER_GRACE);
    store
        .shared_registration_quota(limit, stale)
        .unwrap_or_else(|| Arc::new(InMemoryQuota::new(limit)))
}

/// One address's count: when its acknowledged registrations happened (oldest
/// first), and how many are in progress.
#[derive(Default)]
struct Usage {
    acknowledged: VecDeque<Instant>,
    reserved: usize,
    last_used: Option<Instant>,
}

impl Usage {
    fn prune(&mut self, now: Instant, span: Duration) {
        while let Some(&oldest) = self.acknowledged.front() {
            if now.saturating_duration_since(oldest) >= span {
                self.acknowledged.pop_front();
            } else {
                break;
            }
        }
    }

    fn is_idle(&self) -> bool {
        self.acknowledged.is_empty() && self.reserved == 0
    }
}

/// The per-address registration quota shared by every session of this server.
pub struct InMemoryQuota {
    /// 0: no quota.
    limit: usize,
    span: Duration,
    max_keys: usize,
    usage: Mutex<HashMap<AddressKey, Usage>>,
}

impl InMemoryQuota {
    /// A quota of `limit` registrations per address per 10 minutes; 0 turns it off.
    pub fn new(limit: usize) -> Self {
        Self::with_bounds(limit, REGISTRATION_QUOTA_SPAN, REGISTRATION_QUOTA_MAX_KEYS)
    }

    /// With another span and key cap (tests).
    pub fn with_bounds(limit: usize, span: Duration, max_keys: usize) -> Self {
        InMemoryQuota {
            limit,
            span,
            max_keys: max_keys.max(1),
            usage: Mutex::new(HashMap::new()),
        }
    }

    fn usage(&self) -> MutexGuard<'_, HashMap<AddressKey, Usage>> {
        // Every critical section leaves the map consistent: a panic elsewhere
        // must not take the quota away from the other sessions.
        self.usage.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reserves one registration for `from` at `now`, or `None` when its quota
    /// is used up (acknowledged within the span plus in progress).
    pub fn reserve_at(
        &self,
        from: impl Into<AddressKey>,
        now: Instant,
    ) -> Option<QuotaReservation<'_>> {
        let key = from.into();
        if self.limit == 0 {
            return Some(QuotaReservation {
                quota: self,
                key: None,
            });
        }
        let mut usage = self.usage();
        if !usage.contains_key(&key) && usage.len() >= self.max_keys {
            self.make_room(&mut usage, now);
        }
        let entry = usage.entry(key).or_default();
        entry.prune(now, self.span);
        entry.last_used = Some(now);
        if entry.acknowledged.len() + entry.reserved >= self.limit {
            return None;
        }
        entry.reserved += 1;
        Some(QuotaReservation {
            quota: self,
            key: Some(key),
        })
    }

    /// Frees at least one key: the expired ones, else the least recently used
    /// one without a reservation.
    fn make_room(&self, usage: &mut HashMap<AddressKey, Usage>, now: Instant) {
        usage.retain(|_, u| {
            u.prune(now, self.span);
            !u.is_idle()
        });
        if usage.len() < self.max_keys {
            return;
        }
        let oldest = usage
            .iter()
            .filter(|(_, u)| u.reserved == 0)
            .min_by_key(|(_, u)| u.last_used)
            .map(|(k, _)| *k);
        if let Some(key) = oldest {
            usage.remove(&key);
        }
    }

    /// Addresses kept in memory now.
    pub fn len(&self) -> usize {
        self.usage().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One registration in progress under the in-memory quota. [`acknowledged_at`]
/// counts it; dropped otherwise, it is released and does not count.
///
/// [`acknowledged_at`]: QuotaReservation::acknowledged_at
pub struct QuotaReservation<'a> {
    quota: &'a InMemoryQuota,
    /// `None`: no quota in force.
    key: Option<AddressKey>,
}

impl RegistrationQuota for InMemoryQuota {
    fn limit(&self) -> usize {
        self.limit
    }

    fn reserve(&self, from: AddressKey) -> Result<Option<Box<dyn Reservation + '_>>, StoreError> {
        Ok(self
            .reserve_at(from, Instant::now())
            .map(|r| Box::new(r) as Box<dyn Reservation + '_>))
    }
}

impl Reservation for QuotaReservation<'_> {
    fn acknowledged(self: Box<Self>) {
        (*self).acknowledged_at(Instant::now());
    }
}

impl QuotaReservation<'_> {
    /// The registration was acknowledged: it counts from `now` for the span.
    pub fn acknowledged_at(mut self, now: Instant) {
        if let Some(key) = self.key.take() {
            let mut usage = self.quota.usage();
            let entry = usage.entry(key).or_default();
            entry.reserved = entry.reserved.saturating_sub(1);
            entry.acknowledged.push_back(now);
            entry.last_used = Some(now);
        }
    }
}

impl Drop for QuotaReservation<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut usage = self.quota.usage();
            if let Some(entry) = usage.get_mut(&key) {
                entry.reserved = entry.reserved.saturating_sub(1);
                if entry.is_idle() {
                    usage.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_acknowledged_registrations_count() {
        let q = InMemoryQuota::new(2);
        let now = Instant::now();
        q.reserve_at(ip("127.0.0.2"), now)
            .unwrap()
            .acknowledged_at(now);
        // Given up: released, so it does not count.
        drop(q.reserve_at(ip("127.0.0.2"), now).unwrap());
        q.reserve_at(ip("127.0.0.2"), now)
            .unwrap()
            .acknowledged_at(now);
        assert!(q.reserve_at(ip("127.0.0.2"), now).is_none());
        // Another address is not touched.
        assert!(q.reserve_at(ip("127.0.0.3"), now).is_some());
    }

    #[test]
    fn reservations_in_progress_hold_the_quota() {
        let q = InMemoryQuota::new(2);
        let now = Instant::now();
        let a = q.reserve_at(ip("10.0.0.1"), now).unwrap();
        let _b = q.reserve_at(ip("10.0.0.1"), now).unwrap();
        assert!(q.reserve_at(ip("10.0.0.1"), now).is_none(), "2 in progress");
        drop(a);
        assert!(q.reserve_at(ip("10.0.0.1"), now).is_some());
    }

    #[test]
    fn the_window_passes() {
        let span = Duration::from_secs(600);
        let q = InMemoryQuota::with_bounds(1, span, 10);
        let t0 = Instant::now();
        q.reserve_at(ip("10.0.0.1"), t0)
            .unwrap()
            .acknowledged_at(t0);
        assert!(q.reserve_at(ip("10.0.0.1"), t0 + span / 2).is_none());
        assert!(q.reserve_at(ip("10.0.0.1"), t0 + span).is_some());
    }

    #[test]
    fn ipv6_counts_by_its_64() {
        let q = InMemoryQuota::new(1);
        let now = Instant::now();
        q.reserve_at(ip("2001:db8:1:2::1"), now)
            .unwrap()
            .acknowledged_at(now);
        assert!(q.reserve_at(ip("2001:db8:1:2:ffff::9"), now).is_none());
        assert!(q.reserve_at(ip("2001:db8:1:3::1"), now).is_some());
    }

    #[test]
    fn zero_turns_it_off_and_keeps_nothing() {
        let q = InMemoryQuota::new(0);
        let now = Instant::now();
        for _ in 0..1000 {
            q.reserve_at(ip("10.0.0.1"), now)
                .unwrap()
                .acknowledged_at(now);
        }
        assert!(q.is_empty());
    }

    #[test]
    fn memory_is_bounded() {
        let q = InMemoryQuota::with_bounds(5, Duration::from_secs(600), 100);
        let now = Instant::now();
        for n in 0..10_000u32 {
            let addr = IpAddr::from((0x0a00_0000 + n).to_be_bytes());
            q.reserve_at(addr, now).unwrap().acknowledged_at(now);
            assert!(q.len() <= 100);
        }
    }

    #[test]
    fn exact_under_concurrency() {
        let q = InMemoryQuota::new(10);
        let acked = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..50 {
                        if let Some(r) = q.reserve_at(ip("10.0.0.1"), Instant::now()) {
                            acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            r.acknowledged_at(Instant::now());
                        }
                    }
                });
            }
        });
        assert_eq!(acked.into_inner(), 10);
    }
}
