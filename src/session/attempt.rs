//! A login try as the session sees the throttle: decided before the proof is
//! checked, then settled with its result, whichever throttle the server runs
//! (in memory with SQLite, shared in the database with PostgreSQL).
//!
//! A try that only tries in flight could refuse waits for them to settle
//! (bounded by `THROTTLE_IN_FLIGHT_WAIT`, see [`crate::throttle`]); still
//! undecided then, it is refused unchecked as throttled.
//!
//! The shared throttle failing (PostgreSQL down or slow) fails closed: the
//! try is refused unchecked, logged and counted as a store error.

use super::{Services, Session};
use crate::address::AddressKey;
use crate::throttle::{CheckedTry, Decision, SharedThrottle};
use std::net::IpAddr;
use std::time::Instant;

/// A try the throttle allowed; settle it with [`succeeded`](Self::succeeded)
/// or [`failed`](Self::failed).
pub(super) enum Attempt<'a> {
    Local(CheckedTry<'a>),
    Shared(SharedTry<'a>),
}

/// A try counted as pending in the shared throttle. Dropped unsettled (a
/// panic), it is reported abandoned so it stops counting.
pub(super) struct SharedTry<'a> {
    throttle: &'a dyn SharedThrottle,
    svc: &'a Services,
    peer: IpAddr,
    user: String,
    addr: AddressKey,
    settled: bool,
}

impl<'s, T> Session<'s, T> {
    /// Asks the throttle whether a try for `user` may be checked, waiting
    /// while tries in flight decide it; `None`: refuse it unchecked (the
    /// caller logs the refusal).
    pub(super) fn begin_try(&self, user: &str) -> Option<Attempt<'s>> {
        let Some(shared) = self.svc.shared_throttle.as_deref() else {
            return self
                .svc
                .throttle
                .begin(user, self.peer, Instant::now())
                .map(Attempt::Local);
        };
        let addr = AddressKey::from(self.peer);
        match shared.begin_waiting(user, addr) {
            Ok(Decision::Allowed) => Some(Attempt::Shared(SharedTry {
                throttle: shared,
                svc: self.svc,
                peer: self.peer,
                user: user.to_string(),
                addr,
                settled: false,
            })),
            Ok(Decision::Refused | Decision::Busy) => None,
            Err(e) => {
                throttle_failed(self.svc, self.peer, &e);
                None
            }
        }
    }
}

/// The shared throttle did not answer: logged, counted as a store error.
fn throttle_failed(svc: &Services, peer: IpAddr, e: &crate::store::StoreError) {
    svc.metrics.store_error();
    log::error!("{peer} throttle unavailable: {e}");
}

impl Attempt<'_> {
    pub(super) fn succeeded(self) {
        match self {
            Attempt::Local(t) => t.succeeded(),
            Attempt::Shared(mut t) => {
                t.settled = true;
                if let Err(e) = t.throttle.succeeded(&t.user, t.addr) {
                    throttle_failed(t.svc, t.peer, &e);
                }
            }
        }
    }

    pub(super) fn failed(self, now: Instant) {
        match self {
            Attempt::Local(t) => t.failed(now),
            Attempt::Shared(mut t) => {
                t.settled = true;
                if let Err(e) = t.throttle.failed(&t.user, t.addr) {
                    throttle_failed(t.svc, t.peer, &e);
                }
            }
        }
    }
}

impl Drop for SharedTry<'_> {
    fn drop(&mut self) {
        if !self.settled {
            if let Err(e) = self.throttle.abandoned(&self.user, self.addr) {
                throttle_failed(self.svc, self.peer, &e);
            }
        }
    }
}
